"""What request handlers share: the store, the executor, the event bus, the settings."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from execution.executor import Executor
from services.campaign_drivers import CampaignDrivers
from services.settings import Settings
from store.bus import EventBus
from store.runs import Store


@dataclass
class Services:
    settings: Settings
    store: Store
    executor: Executor
    bus: EventBus
    campaigns: CampaignDrivers


def get_services(request: Request) -> Services:
    return request.app.state.services
