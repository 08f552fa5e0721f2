"""vLLM through Ray Serve LLM, for real: only on a machine with vLLM (the `vllm` extra), a CUDA
GPU, and THINKTANK_TEST_VLLM_MODEL naming a local weights folder (nothing is downloaded).
Everywhere else this module is skipped; tests/serving/test_config.py checks the same
configuration without a GPU."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

import jsonschema
import pytest

pytest.importorskip("vllm")
torch = pytest.importorskip("torch")
MODEL = os.environ.get("THINKTANK_TEST_VLLM_MODEL")
pytestmark = pytest.mark.skipif(
    not (MODEL and torch.cuda.is_available()),
    reason="needs a CUDA GPU and THINKTANK_TEST_VLLM_MODEL (a local model folder)",
)

import ray  # noqa: E402
from ray import serve  # noqa: E402

from agents.backends.serving_config import DeploymentSpec, VLLMModelConfig  # noqa: E402
from agents.backends.vllm import VLLMBackend, structured_outputs  # noqa: E402
from agents.model import ChatMessage, ModelRequest, SamplingParams  # noqa: E402
from services.serving.llm import build_llm_app  # noqa: E402
from tests.conftest import RunHarness  # noqa: E402

SCHEMA = {
    "type": "object",
    "properties": {"answer": {"type": "integer"}, "confidence": {"enum": ["low", "high"]}},
    "required": ["answer", "confidence"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
def llm() -> Iterator[VLLMBackend]:
    assert MODEL is not None
    spec = VLLMModelConfig(
        model_id="policy",
        model_source=MODEL,
        max_model_len=4096,
        gpu_memory_utilization=0.6,
        deployment=DeploymentSpec(num_cpus=0),
        runtime_env={"env_vars": {"HF_HUB_OFFLINE": "1"}},
    )
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    ray.init(include_dashboard=False, log_to_driver=False)
    serve.run(build_llm_app([spec]), name=spec.app_name, route_prefix="/llm")
    try:
        yield VLLMBackend(spec)
    finally:
        serve.shutdown()
        ray.shutdown()


def ask(text: str, **params: object) -> ModelRequest:
    return ModelRequest(
        messages=[ChatMessage(role="user", content=text)],
        params=SamplingParams.model_validate({"max_tokens": 64, "temperature": 0.8, **params}),
    )


async def test_a_json_schema_constraint_holds_even_for_a_prompt_that_asks_for_prose(
    llm: VLLMBackend,
) -> None:
    request = ask("Write a short poem about the number 42.", n=4)

    response = await llm.generate(request, constraint=structured_outputs(json_schema=SCHEMA))

    assert len(response.completions) == 4
    for completion in response.completions:
        jsonschema.validate(json.loads(completion.text), SCHEMA)


async def test_streamed_text_and_exact_token_counts(llm: VLLMBackend) -> None:
    pieces: list[str] = []

    response = await llm.generate(ask("Count from 1 to 20."), on_text=pieces.append)

    completion = response.completions[0]
    assert "".join(pieces) == completion.text
    assert 0 < completion.completion_tokens <= 64
    assert response.prompt_tokens > 0 and response.model == "policy"


async def test_a_discussion_runs_on_vllm(llm: VLLMBackend, harness: RunHarness) -> None:
    run_id, outcome = await harness.run(llm, "discussion", "What is 6 times 7?", max_rounds=1)

    assert outcome["status"] == "succeeded"
    turns = await harness.store.turns(run_id)
    assert turns and all(turn.model == "policy" for turn in turns)
