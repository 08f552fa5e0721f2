"""The scripted backend's injected faults, as the soak benchmark configures them."""

from __future__ import annotations

import pytest

import agents.calls
from agents.backends.scripted import ScriptedBackend, ScriptedModelConfig
from agents.calls import RetryPolicy
from agents.model import ChatMessage, ModelError, ModelRequest
from tests.conftest import RunHarness


@pytest.fixture(autouse=True)
def one_try_per_call(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests are about the faults themselves, so each call is tried once (surviving them
    by retrying is tests/agents/test_retries.py's subject)."""
    monkeypatch.setattr(agents.calls, "MODEL_RETRY", RetryPolicy(attempts=1))


def backend(failure_rate: float, seed: int | None = 7) -> ScriptedBackend:
    config = ScriptedModelConfig(
        replies={"solver": ["2 + 3 = 5 so \\boxed{5}"]}, failure_rate=failure_rate, seed=seed
    )
    return ScriptedBackend.from_config(config)


async def test_an_injected_model_failure_fails_the_run_with_the_reason(
    harness: RunHarness,
) -> None:
    run_id, outcome = await harness.run(backend(1.0), "single", "What is 2+3?")
    assert outcome["status"] == "failed"
    assert "injected failure" in outcome["error"]
    (turn,) = await harness.store.turns(run_id)
    assert turn.error is not None and "injected failure" in turn.error


async def test_seeded_failures_repeat_and_off_by_default_nothing_fails(
    harness: RunHarness,
) -> None:
    async def statuses(model: ScriptedBackend) -> list[str]:
        return [
            (await harness.run(model, "single", f"What is 2+{i}?"))[1]["status"] for i in range(12)
        ]

    first = await statuses(backend(0.5))
    assert set(first) == {"succeeded", "failed"}
    assert await statuses(backend(0.5)) == first
    assert set(await statuses(backend(0.0, seed=None))) == {"succeeded"}
    assert ScriptedModelConfig().failure_rate == 0.0


async def test_an_injected_failure_types_nothing_before_it_fails() -> None:
    # as a dropped request would: no text, so a caller may retry without restarting any
    model = ScriptedBackend(default_reply="one two three", failure_rate=1.0, latency_s=0.05)
    pieces: list[str] = []
    request = ModelRequest(messages=[ChatMessage(role="user", content="count")])
    with pytest.raises(ModelError, match="injected failure") as caught:
        await model.generate(request, on_text=pieces.append)
    assert caught.value.retryable is True and pieces == []
