"""The Celery app runs and campaign steps travel on: its configuration and its task names.

Senders (the API's executor, the campaign drivers, the workers' reapers) send tasks by these
names; only the worker (``services/worker``) registers the code behind them, so a process
that only sends never imports the worker or what its tasks run.
"""

from __future__ import annotations

from celery import Celery

DEFAULT_BROKER = "redis://127.0.0.1:6379/0"

RUNS_QUEUE = "runs"
CAMPAIGNS_QUEUE = "campaigns"

EXECUTE_RUN_TASK = "thinktank.execute_run"
CAMPAIGN_STEP_TASK = "thinktank.campaign.step"
CAMPAIGN_NEXT_ROUND_TASK = "thinktank.campaign.next_round"

# A run holds its task until it ends; Redis redelivers a task unacknowledged for longer.
VISIBILITY_TIMEOUT_S = 12 * 3600


def make_celery(broker_url: str) -> Celery:
    """An app on ``broker_url`` with thinktank's settings and no tasks registered."""
    app = Celery("thinktank", broker=broker_url)
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_default_queue=RUNS_QUEUE,
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        broker_transport_options={"visibility_timeout": VISIBILITY_TIMEOUT_S},
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
    )
    return app
