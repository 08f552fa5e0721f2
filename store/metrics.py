"""Prometheus metrics of runs and model calls, served by the API at ``GET /metrics``.

- ``thinktank_runs_total{pattern,status}``: runs that ended (``succeeded``, ``failed``,
  ``cancelled``; ``interrupted`` when the executing task was cancelled, e.g. a worker shutting
  down, and ``error`` when the runner itself raised), counted by the runner;
- ``thinktank_runs_in_progress{pattern}``: runs executing in this process now;
- ``thinktank_turn_latency_seconds{role,model}``: latency of each model call that answered;
- ``thinktank_tokens_total{model,kind}``: prompt and completion tokens of every model call.

Turn metrics are taken where a turn is stored (``Store.record_turn``): every model call, the
failed ones included, passes there exactly once, and a turn replayed on resume never does, so
the counters match the ``turns`` table and a resumed run is not counted twice.

Metrics live in the process that records them. The API serves its own (runs executed by its
in-process executor); Celery workers keep theirs. For several processes on one host set
``PROMETHEUS_MULTIPROC_DIR`` and ``/metrics`` aggregates them (prometheus_client's
multiprocess mode).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

if TYPE_CHECKING:
    from agents.calls import TurnRecord

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300)

RUNS = Counter("thinktank_runs", "Runs that ended, by pattern and status", ("pattern", "status"))
RUNS_IN_PROGRESS = Gauge(
    "thinktank_runs_in_progress",
    "Runs executing in this process",
    ("pattern",),
    multiprocess_mode="livesum",
)
TURN_LATENCY = Histogram(
    "thinktank_turn_latency_seconds",
    "Latency of model calls that answered, by agent role and model",
    ("role", "model"),
    buckets=LATENCY_BUCKETS,
)
TOKENS = Counter("thinktank_tokens", "Tokens of model calls, by model and kind", ("model", "kind"))

ALL = (RUNS, RUNS_IN_PROGRESS, TURN_LATENCY, TOKENS)


def observe_turn(turn: TurnRecord) -> None:
    """Count one stored turn's tokens and, when the model answered, its latency."""
    if turn.prompt_tokens:
        TOKENS.labels(turn.model, "prompt").inc(turn.prompt_tokens)
    if turn.completion_tokens:
        TOKENS.labels(turn.model, "completion").inc(turn.completion_tokens)
    if turn.error is None:
        TURN_LATENCY.labels(turn.role, turn.model).observe(turn.latency_s)


def run_started(pattern: str) -> None:
    RUNS_IN_PROGRESS.labels(pattern).inc()


def run_ended(pattern: str, status: str) -> None:
    RUNS_IN_PROGRESS.labels(pattern).dec()
    RUNS.labels(pattern, status).inc()


def clear() -> None:
    """Forget every labelled value (tests)."""
    for metric in ALL:
        metric.clear()


def exposition() -> tuple[bytes, str]:
    """The text exposition of this process's metrics (or of all processes in multiprocess
    mode) and its content type."""
    registry = REGISTRY
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    return generate_latest(registry), CONTENT_TYPE_LATEST
