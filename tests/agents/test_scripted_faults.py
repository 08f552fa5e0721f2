"""The scripted backend's injected faults, as the soak benchmark configures them."""

from __future__ import annotations

from agents.backends.scripted import ScriptedBackend, ScriptedModelConfig
from tests.conftest import RunHarness


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
