"""LoRA supervised fine-tuning on chat transcripts (M1's recipe on M500-style traces).

The loss is the token-mean negative log-likelihood of the assistant messages only: the system
and user turns and the chat template's headers are context, never targets (M1: "loss on
assistant, role-conditioned outputs"). Each assistant message is tokenized exactly as it would
be generated: the prompt up to the assistant header, then the message and its end-of-turn
token, so nothing shifts at the boundary between what the model reads and what it writes.

M1-32B itself was a full fine-tune (lr 1e-5, 5 epochs, cosine, warmup 0.05, weight decay 1e-4,
effective batch 16, 32k context); with LoRA the usual learning rate is some 10-20x higher, hence
the 2e-4 default. Runs start through ``thinktank train sft`` (``training.jobs``), or
:func:`train_sft` in-process.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from training.config import SFTConfig, TrainingError
from training.datasets import DatasetError, SFTExample, read_jsonl
from training.loop import (
    Batch,
    Dist,
    Encoded,
    ProgressCallback,
    StepPlan,
    chat_ids,
    collate,
    end_of_turn_id,
    forward_logprobs,
    init_distributed,
    load_base,
    reference_mode,
    run_steps,
    save_adapter,
    split_holdout,
    unwrap,
    with_lora,
)


@dataclass
class TrainResult:
    """What a finished (or interrupted) trainer hands the job: the adapter and its numbers."""

    status: str
    adapter: Path | None
    metrics: dict[str, Any]
    base_name: str


def encode_chat(tokenizer: Any, messages: list[Any]) -> Encoded:
    """Token ids of a chat, trained on the assistant messages (their text and end-of-turn).

    Rendered message by message with the chat template, so each assistant message starts where
    generation would: right after ``<|im_start|>assistant\\n``.
    """
    end_of_turn = end_of_turn_id(tokenizer)
    ids: list[int] = []
    trained: list[bool] = []
    for index, message in enumerate(messages):
        if message.role != "assistant":
            continue
        prompt = chat_ids(tokenizer, messages[:index], generation_prompt=True)
        full = chat_ids(tokenizer, messages[: index + 1], generation_prompt=False)
        if full[: len(ids)] != ids:
            raise DatasetError(
                "the chat template renders earlier turns differently once later ones follow; "
                "write one example per assistant message"
            )
        shared = _common_prefix(prompt, full)
        context = full[len(ids) : max(shared, len(ids))]
        answer = full[max(shared, len(ids)) :]
        # what the template writes after the end-of-turn token ("\n") is never generated
        ends = [i for i, token in enumerate(answer) if token == end_of_turn]
        tail = answer[ends[-1] + 1 :] if ends else []
        answer = answer[: len(answer) - len(tail)]
        ids += context + answer + tail
        trained += [False] * len(context) + [True] * len(answer) + [False] * len(tail)
    if not any(trained):
        raise DatasetError("an SFT example produced no assistant tokens to train on")
    return Encoded(ids, trained)


def _common_prefix(a: list[int], b: list[int]) -> int:
    length = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        length += 1
    return length


def sft_loss(model: nn.Module, batch: Batch) -> tuple[torch.Tensor, int]:
    """Token-mean NLL over the trained tokens of a batch, and how many there were."""
    logprobs, _ = forward_logprobs(model, batch)
    mask = batch.target_mask.to(logprobs.dtype)
    count = int(mask.sum().item())
    return -(logprobs * mask).sum() / max(count, 1), count


@torch.no_grad()
def evaluate_loss(
    model: nn.Module, encoded: list[Encoded], pad_id: int, device: torch.device, batch_size: int
) -> float:
    """Token-weighted mean NLL over a set of examples (the model in eval mode)."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for start in range(0, len(encoded), batch_size):
        batch = collate(encoded[start : start + batch_size], pad_id).to(device)
        loss, tokens = sft_loss(model, batch)
        total += float(loss) * tokens
        count += tokens
    model.train(was_training)
    return total / max(count, 1)


def load_sft_examples(path: Path) -> list[SFTExample]:
    return read_jsonl(path, SFTExample)


def train_sft(
    config: SFTConfig,
    work_dir: Path,
    *,
    on_progress: ProgressCallback | None = None,
    stop: threading.Event | None = None,
    dist: Dist | None = None,
) -> TrainResult:
    """Train a LoRA adapter on ``config.data``; checkpoints and the final adapter go under
    ``work_dir`` (a second call with the same ``work_dir`` resumes from its last checkpoint).

    The final evaluation (rank 0) reports the held-out loss of the base and of the trained
    model; ``metrics`` is what the model version stores.
    """
    dist = dist or init_distributed(config.device)
    examples = load_sft_examples(config.data)
    model, tokenizer, base_name = load_base(config, dist.device)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    encoded = [encode_chat(tokenizer, ex.messages).cut_left(config.max_length) for ex in examples]
    if config.eval_data is not None:
        train_idx = list(range(len(encoded)))
        eval_set = [
            encode_chat(tokenizer, ex.messages).cut_left(config.max_length)
            for ex in load_sft_examples(config.eval_data)
        ]
        eval_split = "eval_data"
    else:
        train_idx, held = split_holdout(len(encoded), config.eval_fraction, config.seed)
        eval_set = [encoded[i] for i in held] if held else [encoded[i] for i in train_idx]
        eval_split = "held_out" if held else "train"
    peft_model = with_lora(model, config).to(dist.device)
    trained_model: nn.Module = peft_model
    if dist.world > 1:
        trained_model = nn.parallel.DistributedDataParallel(
            peft_model, device_ids=[dist.device.index] if dist.device.type == "cuda" else None
        )
    plan = StepPlan(train_idx, config, dist)

    def micro_loss(indices: list[int], _draw: int) -> tuple[torch.Tensor, dict[str, float]]:
        batch = collate([encoded[i] for i in indices], pad_id).to(dist.device)
        loss, tokens = sft_loss(trained_model, batch)
        return loss, {"loss": float(loss.detach()), "tokens": float(tokens)}

    label = f"sft {config.name or ''}".strip()
    result = run_steps(
        model=trained_model,
        config=config,
        plan=plan,
        micro_loss=micro_loss,
        work_dir=work_dir,
        dist=dist,
        label=label,
        on_progress=on_progress,
        stop=stop,
    )
    if result.status == "interrupted" or not dist.main:
        return TrainResult(result.status, None, {}, base_name)
    batch_size = config.batch_size
    eval_loss = evaluate_loss(peft_model, eval_set, pad_id, dist.device, batch_size)
    with reference_mode(peft_model):
        eval_loss_base = evaluate_loss(peft_model, eval_set, pad_id, dist.device, batch_size)
    losses = [entry["loss"] for entry in result.history]
    metrics: dict[str, Any] = {
        "eval_loss": round(eval_loss, 6),
        "eval_loss_base": round(eval_loss_base, 6),
        "eval_split": eval_split,
        "eval_examples": len(eval_set),
        "train_examples": len(train_idx),
        "steps": result.step,
        "train_loss_first": round(losses[0], 6) if losses else None,
        "train_loss_last": round(losses[-1], 6) if losses else None,
        "seconds": round(result.seconds, 2),
        "resumed_from_step": result.resumed_from,
        "world_size": dist.world,
    }
    adapter = save_adapter(unwrap(trained_model), work_dir / "adapter")
    return TrainResult("completed", adapter, metrics, base_name)


def check_sft_data(path: Path) -> int:
    """Read a dataset the way the trainer will, before a job is launched for it."""
    if not path.is_file():
        raise DatasetError(f"{path}: no such dataset file")
    return len(load_sft_examples(path))


__all__ = [
    "SFTConfig",
    "TrainResult",
    "TrainingError",
    "check_sft_data",
    "encode_chat",
    "evaluate_loss",
    "sft_loss",
    "train_sft",
]
