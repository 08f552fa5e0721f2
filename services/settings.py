"""Service settings: ``THINKTANK_*`` environment variables, then an optional TOML file.

The TOML file is ``$THINKTANK_CONFIG`` or ``thinktank.toml`` in the working directory. Nested
keys use ``__`` in environment variables (``THINKTANK_MODELS__DEFAULT__BACKEND=openai``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from agents.model_map import ModelMap
from services.serving.config import ServingSettings
from store.db import default_database_url


class ModelPrice(BaseModel):
    """What a model's tokens cost, in US dollars per million."""

    input_per_million: float = Field(0.0, ge=0)
    output_per_million: float = Field(0.0, ge=0)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="THINKTANK_",
        env_nested_delimiter="__",
        extra="ignore",
    )

    database_url: str = Field(
        default_factory=default_database_url,
        description="SQLAlchemy URL: sqlite+aiosqlite:///FILE or postgresql+psycopg://...",
    )
    models: ModelMap = Field(
        default_factory=ModelMap, description="logical model names to backends"
    )
    serving: ServingSettings = Field(
        default_factory=ServingSettings,
        description="the Ray Serve application (`thinktank serve --ray`)",
    )
    broker_url: str | None = Field(
        None,
        description="Celery broker (redis://HOST:6379/0): runs go to `thinktank worker` "
        "processes; unset, the API runs them in its own process",
    )
    redis_url: str | None = Field(
        None,
        description="Redis for live events, rate limits and quotas (default: the broker URL "
        "when it is Redis; unset: in-memory, single process)",
    )
    max_concurrent_runs: int = Field(
        4, ge=1, description="runs one process executes at once (in-process executor)"
    )
    max_body_bytes: int = Field(
        1_048_576, ge=1024, description="largest request body the API accepts (413 beyond)"
    )
    prices: dict[str, ModelPrice] = Field(
        default_factory=dict,
        description="model name (as recorded on turns) -> token prices; unlisted models cost 0",
    )
    stream_tokens: bool = Field(
        True,
        description="publish each model call's text as it is generated: live `token` events on "
        "/v1/runs/{id}/events (one event per piece; off, turns arrive whole)",
    )
    run_lease_s: float = Field(
        30.0,
        gt=0,
        description="a worker renews the lease on each run it executes every third of this; "
        "a run whose worker died is picked up again once its lease has expired",
    )
    requeue_after_s: float = Field(
        600.0,
        gt=0,
        description="a run still queued this long after it was enqueued is enqueued again "
        "(the broker may have lost it); executing it twice is harmless",
    )
    reap_interval_s: float = Field(
        10.0, gt=0, description="how often workers look for runs left unfinished"
    )
    campaign_stale_s: float = Field(
        120.0,
        gt=0,
        description="a campaign whose driver has written nothing for this long is taken over "
        "and resumed (its driver writes a heartbeat every 10 s)",
    )
    keyless_campaigns: int = Field(
        1,
        ge=0,
        le=100,
        description="with API keys off (the loopback default), how many campaigns started "
        "without a key may be queued or running at once (0: none can be started); with keys "
        "on, each key's own limit counts (`thinktank keys grant KEY campaigns`)",
    )
    auth: Literal["auto", "on", "off"] = Field(
        "auto",
        description="API keys: on, off, or auto (on unless the server binds a loopback address)",
    )
    trace_url_template: str | None = Field(
        None,
        description="link to a run's trace in a trace UI, with {trace_id} where the id goes "
        "(Jaeger: http://localhost:16686/trace/{trace_id}); unset, runs show no link",
    )

    @field_validator("trace_url_template")
    @classmethod
    def _has_trace_id(cls, template: str | None) -> str | None:
        if template is not None and "{trace_id}" not in template:
            raise ValueError("trace_url_template must contain {trace_id}")
        return template

    @property
    def events_redis_url(self) -> str | None:
        if self.redis_url:
            return self.redis_url
        if self.broker_url and self.broker_url.startswith(("redis://", "rediss://")):
            return self.broker_url
        return None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_file = Path(os.environ.get("THINKTANK_CONFIG", "thinktank.toml"))
        return (
            init_settings,
            env_settings,
            TomlConfigSettingsSource(settings_cls, toml_file=toml_file),
        )
