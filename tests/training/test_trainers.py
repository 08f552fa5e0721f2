"""The trainers on the real SmolLM2-135M, on the CPU: a few steps on a handful of examples.

One SFT run (module-scoped) overfits three chats that all give the same answer; the tests read
its loss, its evaluation and what the adapted model now says, and check that a run interrupted
half-way and resumed ends with the very same weights. One RL step on a group of two scored
completions must make the rewarded one likelier and the other less likely.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from roles.messages import ChatMessage
from training.config import RLConfig, SFTConfig
from training.datasets import RLExample
from training.loop import chat_ids, load_adapted, reference_mode
from training.rl import completion_logprobs, encode_rl, train_rl
from training.sft import TrainResult, train_sft

pytestmark = pytest.mark.local_model

SYSTEM = {"role": "system", "content": "Answer briefly."}
QUESTIONS = ["What is the secret word?", "Tell me the secret word.", "Which word is secret?"]
ANSWER = "The secret word is pineapple."


def write_lines(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def sft_config(data: Path, **overrides: Any) -> SFTConfig:
    settings: dict[str, Any] = {
        "data": data,
        "max_steps": 4,
        "batch_size": 2,
        "learning_rate": 3e-3,
        "warmup_ratio": 0.0,
        "lora_r": 8,
        "eval_fraction": 0.34,
        "threads": 1,
        "checkpoint_every": 100,
        **overrides,
    }
    return SFTConfig(**settings)


@pytest.fixture(scope="module")
def sft_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rows = [
        {
            "messages": [
                SYSTEM,
                {"role": "user", "content": q},
                {"role": "assistant", "content": ANSWER},
            ]
        }
        for q in QUESTIONS
    ]
    return write_lines(tmp_path_factory.mktemp("data") / "sft.jsonl", rows)


@pytest.fixture(scope="module")
def sft_run(sft_data: Path, tmp_path_factory: pytest.TempPathFactory) -> TrainResult:
    return train_sft(sft_config(sft_data), tmp_path_factory.mktemp("sft-run"))


def greedy(model: Any, tokenizer: Any, question: str) -> str:
    messages = [ChatMessage(**SYSTEM), ChatMessage(role="user", content=question)]
    ids = torch.tensor([chat_ids(tokenizer, messages, generation_prompt=True)])
    with torch.no_grad():
        out = model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=10,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
        )
    return tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)


def test_sft_loss_falls_and_the_adapter_changes_what_the_model_says(
    sft_run: TrainResult,
) -> None:
    metrics = sft_run.metrics
    assert sft_run.status == "completed"
    assert metrics["steps"] == 4
    assert metrics["train_loss_last"] < metrics["train_loss_first"] / 3
    # the held-out chat (same answer, a question it never saw) got likelier too
    assert metrics["eval_split"] == "held_out" and metrics["eval_examples"] == 1
    assert metrics["eval_loss"] < metrics["eval_loss_base"]
    assert sft_run.adapter is not None
    assert (sft_run.adapter / "adapter_config.json").is_file()

    model, tokenizer = load_adapted("smollm2", sft_run.adapter, threads=1)
    tuned = greedy(model, tokenizer, "What is the secret word?")
    with model.disable_adapter():
        base = greedy(model, tokenizer, "What is the secret word?")
    assert "pineapple" in tuned.lower(), tuned
    assert "pineapple" not in base.lower(), base


def test_an_interrupted_run_resumes_to_the_same_weights(
    sft_run: TrainResult, sft_data: Path, tmp_path: Path
) -> None:
    config = sft_config(sft_data, checkpoint_every=2)
    stop = threading.Event()
    seen: list[dict[str, Any]] = []

    def progress(update: dict[str, Any]) -> None:
        seen.append(update)
        if update["step"] == 2:
            stop.set()  # what SIGINT does in a job

    first = train_sft(config, tmp_path, on_progress=progress, stop=stop)
    assert (first.status, first.adapter) == ("interrupted", None)
    assert seen[-1]["status"] == "interrupted" and seen[-1]["last_checkpoint_step"] == 2

    second = train_sft(config, tmp_path)
    assert second.status == "completed"
    assert second.metrics["resumed_from_step"] == 2
    assert second.adapter is not None and sft_run.adapter is not None
    resumed = load_file(str(second.adapter / "adapter_model.safetensors"))
    straight = load_file(str(sft_run.adapter / "adapter_model.safetensors"))
    assert resumed.keys() == straight.keys()
    for name, weights in straight.items():
        torch.testing.assert_close(resumed[name], weights, rtol=0, atol=1e-6)


def test_an_rl_step_moves_probability_towards_the_reward(tmp_path: Path) -> None:
    prompt = [{"role": "user", "content": "Is 7 a prime number? Answer yes or no."}]
    rows = [
        {"prompt": prompt, "completion": "Yes, 7 is prime.", "reward": 1.0, "group_id": "q7"},
        {"prompt": prompt, "completion": "No, 7 is not prime.", "reward": 0.0, "group_id": "q7"},
    ]
    data = write_lines(tmp_path / "rl.jsonl", rows)
    config = RLConfig(
        data=data,
        max_steps=1,
        batch_size=2,
        learning_rate=1e-3,
        warmup_ratio=0.0,
        lora_r=8,
        eval_fraction=0.0,
        threads=1,
    )
    result = train_rl(config, tmp_path / "work")
    assert result.status == "completed" and result.adapter is not None
    metrics = result.metrics
    assert metrics["old_logprobs"] == "initial" and metrics["steps"] == 1
    assert metrics["eval_expected_reward"] > metrics["eval_expected_reward_base"]

    model, tokenizer = load_adapted("smollm2", result.adapter, threads=1)
    items = [encode_rl(tokenizer, RLExample.model_validate(row), 512) for row in rows]
    pad = tokenizer.pad_token_id
    after = completion_logprobs(model, items, pad, torch.device("cpu"), 2)
    with reference_mode(model):
        before = completion_logprobs(model, items, pad, torch.device("cpu"), 2)
    rewarded, punished = (float(a.sum() - b.sum()) for a, b in zip(after, before, strict=True))
    assert rewarded > 0, "the rewarded completion should have become likelier"
    assert punished < 0, "the unrewarded completion should have become less likely"


PRIME_PROMPT = [{"role": "user", "content": "Is 7 a prime number? Answer yes or no."}]
PRIME_ROWS = [
    {"prompt": PRIME_PROMPT, "completion": "Yes, 7 is prime.", "reward": 1.0, "group_id": "q7"},
    {"prompt": PRIME_PROMPT, "completion": "No, 7 is not prime.", "reward": -1.0, "group_id": "q7"},
]


def rl_config(data: Path, **overrides: Any) -> RLConfig:
    settings: dict[str, Any] = {
        "data": data,
        "max_steps": 1,
        "batch_size": 2,
        "learning_rate": 1e-3,
        "warmup_ratio": 0.0,
        "lora_r": 8,
        "eval_fraction": 0.0,
        "threads": 1,
        **overrides,
    }
    return RLConfig(**settings)


def test_an_spc_training_from_an_adapter_starts_at_ratio_one(
    sft_run: TrainResult, sft_data: Path, tmp_path: Path
) -> None:
    """A later campaign round starts from the last round's adapter: the ratio compares with
    that adapter, so it is 1 at the first step and the 0.8-1.2 clip removes nothing."""
    assert sft_run.adapter is not None
    data = write_lines(tmp_path / "rl.jsonl", PRIME_ROWS)
    # against the base with the adapter switched off, the ratio would start past the clip
    model, tokenizer = load_adapted("smollm2", sft_run.adapter, threads=1)
    items = [encode_rl(tokenizer, RLExample.model_validate(row), 512) for row in PRIME_ROWS]
    pad = tokenizer.pad_token_id
    adapted = completion_logprobs(model, items, pad, torch.device("cpu"), 2)
    with reference_mode(model):
        bare = completion_logprobs(model, items, pad, torch.device("cpu"), 2)
    off_ratios = [float(torch.exp(a.mean() - b.mean())) for a, b in zip(adapted, bare, strict=True)]
    assert any(not 0.8 <= r <= 1.2 for r in off_ratios), off_ratios

    seen: list[dict[str, Any]] = []
    config = rl_config(data, recipe="spc", base_adapter=sft_run.adapter, sft_data=sft_data)
    result = train_rl(config, tmp_path / "work", on_progress=seen.append)

    assert result.status == "completed"
    first = next(update for update in seen if update["step"] == 1)
    assert first["ratio"] == pytest.approx(1.0, abs=1e-4)
    assert first["clip_frac"] == 0.0
    assert "sft_nll" in first and "notes" not in first
    metrics = result.metrics
    assert metrics["reference"] == "start_adapter" and metrics["old_logprobs"] == "reference"
    assert (metrics["sft_coef"], metrics["sft_examples"]) == (0.15, 3)
    assert "notes" not in metrics
    # the trained adapter moved away from the one it started from, towards the reward
    assert metrics["eval_kl"] > 0
    assert metrics["eval_expected_reward"] > metrics["eval_expected_reward_base"]


def test_spc_without_sft_data_trains_on_the_rl_term_and_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = write_lines(tmp_path / "rl.jsonl", PRIME_ROWS)
    seen: list[dict[str, Any]] = []
    result = train_rl(rl_config(data, recipe="spc"), tmp_path / "work", on_progress=seen.append)

    assert result.status == "completed"
    note = result.metrics["notes"][0]
    assert "0.15 x NLL term on SFT data is off" in note and "--sft-data" in note
    assert (result.metrics["sft_coef"], result.metrics["sft_examples"]) == (0.0, 0)
    assert seen and all(update["notes"] == [note] for update in seen)
    assert "sft_nll" not in seen[-1]
    assert f"note: {note}" in capsys.readouterr().err
