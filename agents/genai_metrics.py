"""OpenTelemetry metrics of model calls and agent invocations, after the GenAI conventions.

- ``gen_ai.client.token.usage`` (histogram, ``{token}``): the input and the output tokens of
  every model call that answered, told apart by ``gen_ai.token.type``;
- ``gen_ai.client.operation.duration`` (histogram, ``s``): every model call, failed ones too
  (with ``error.type``);
- ``gen_ai.invoke_agent.duration`` (histogram, ``s``): every agent turn (operation
  ``invoke_agent``) and every execution of a run (operation ``invoke_workflow``, the
  pattern as ``gen_ai.agent.name``: the conventions record workflows on this metric).

Each has the bucket boundaries the conventions advise. Only the OpenTelemetry *API* is used:
nothing is recorded until a meter provider is installed (``execution.tracing`` installs one
that exports over OTLP when the environment names an endpoint).
"""

from __future__ import annotations

from typing import Any

from opentelemetry import metrics

try:  # the API's stand-in until a provider is set; private, so looked up defensively
    from opentelemetry.metrics._internal import _ProxyMeterProvider
except ImportError:  # pragma: no cover
    _ProxyMeterProvider = None  # type: ignore[assignment,misc]

TOKEN_TYPE = "gen_ai.token.type"

# The explicit bucket boundaries the conventions advise for each histogram.
TOKEN_BUCKETS = [1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304,
                 16777216, 67108864]  # fmt: skip
OPERATION_BUCKETS = [0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48,
                     40.96, 81.92]  # fmt: skip
AGENT_BUCKETS = [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 12.8, 25.6, 51.2, 102.4, 204.8, 409.6]

meter = metrics.get_meter("thinktank.agents")
token_usage = meter.create_histogram(
    "gen_ai.client.token.usage",
    unit="{token}",
    description="Number of input and output tokens used.",
    explicit_bucket_boundaries_advisory=TOKEN_BUCKETS,
)
operation_duration = meter.create_histogram(
    "gen_ai.client.operation.duration",
    unit="s",
    description="GenAI operation duration.",
    explicit_bucket_boundaries_advisory=OPERATION_BUCKETS,
)
agent_duration = meter.create_histogram(
    "gen_ai.invoke_agent.duration",
    unit="s",
    description="The end-to-end duration of a single agent invocation.",
    explicit_bucket_boundaries_advisory=AGENT_BUCKETS,
)


def metrics_active() -> bool:
    """Whether a meter provider is installed; until one is, nothing is measured at all."""
    if _ProxyMeterProvider is None:
        return True
    return not isinstance(metrics.get_meter_provider(), _ProxyMeterProvider)


def record_model_call(
    attributes: dict[str, Any],
    duration_s: float,
    *,
    input_tokens: int | None = None,
    output_tokens: int | None = None,
) -> None:
    """One model call: its duration and, when it answered, its tokens of each type."""
    operation_duration.record(duration_s, attributes)
    if input_tokens is not None:
        token_usage.record(input_tokens, {**attributes, TOKEN_TYPE: "input"})
    if output_tokens is not None:
        token_usage.record(output_tokens, {**attributes, TOKEN_TYPE: "output"})


def record_invocation(attributes: dict[str, Any], duration_s: float) -> None:
    """One agent turn or one execution of a run (see the module docstring)."""
    agent_duration.record(duration_s, attributes)
