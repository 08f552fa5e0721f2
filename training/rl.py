"""Policy-gradient training on game rewards: group-relative advantages, a clipped importance
ratio, and a KL penalty to a frozen reference: the policy the training starts from.

The data are completions already played and scored (``RLExample`` records): SPC's games, RLAD's
abstraction and solution rewards, or any sampled group with a reward per member. Training is
offline on them, as SPC's released code is; an online campaign alternates sampling and this.

Per completion token t of example i, with advantage A_i:

    ratio  = exp(logp_t - old_t)                       (or, sequence-level, of the mean logp)
    pg     = -min(ratio * A_i, clip(ratio, 1 - clip_low, 1 + clip_high) * A_i)
    kl     = exp(ref_t - logp_t) - (ref_t - logp_t) - 1   (the low-variance "k3" estimator)
    loss_t = pg + kl_coef * kl - entropy_coef * entropy_t

averaged over tokens of the batch (``aggregation="token"``, DAPO) or per sequence first
(``"sequence"``, GRPO). ``old_t`` is the sampler's log-prob when the data carry it, else the
reference's (SPC's offline recipe; ``initial`` and ``reference`` name the same policy).

The reference (``ref_t``, and ``old_t`` unless the data carry the sampler's) is the policy the
training starts from: the base version's adapter when the base is a registered version with
one (a campaign's later rounds), else the base model (a fresh LoRA adapter starts as the
identity, so the two agree). Its log-probs are computed once, before the first step, and cached
in the work dir, so every epoch and a resumed run compare with the same numbers. SPC's released
code does this: its reference is the frozen round-0 SFT checkpoint, which is where its RL
training starts. The base model with the adapter switched off would not be: once training
starts from an adapter, the ratio against it starts away from 1, and SPC's 0.8-1.2 clip then
removes the gradient of every example it pushes past the bound. Departure: SPC trains Critic-0
straight into Critic-2 on both rounds' games against the round-0 reference; a campaign trains
once per round, so each round's reference is that round's starting version (the trust region
is per round). The final evaluation's ``_base`` numbers are of that starting policy too.

Recipes (``--recipe``) set the algorithm's choices; any flag given explicitly wins:

- ``grpo`` (default): advantage (r - group mean) / group std, token-level ratio, loss averaged
  per sequence, clip 0.2, KL 0.04 (DeepSeekMath's GRPO).
- ``spc``: advantage = the raw +-1 game outcome, ratio of the mean token log-prob against the
  reference, clip 0.2, KL only logged (coefficient 0), plus 0.15 x NLL on SFT data
  (``--sft-data``, SPC's round-0 SFT set, e.g. from ``thinktank data warm-start spc``).
  Without ``--sft-data`` the training still runs, on the RL term alone, and says so: a note on
  stderr, in every progress update (``notes``) and in the result (``notes``, ``sft_coef`` 0.0).
  It does not refuse, because a researcher may want the RL term alone and a campaign with no
  warm-start set must still train; ``--sft-coef 0`` says so explicitly and silences the note.
- ``rlad``: advantage (r - group mean) / group std, token-level ratio and loss (DAPO),
  clip 0.2 below / 0.5 above, KL 0.001, entropy bonus 0.001.

SPC: research notes section 2.5 (released code). RLAD: DAPO with the settings a third-party
reimplementation attributes to the paper's appendix (clip 0.2/0.5, KL 0.001, entropy 0.001);
bare prompts get ``advantage: 0`` in the data so only the KL term trains on them. Learning
rates are not part of a recipe: the papers fine-tune all weights (1e-6 to 2e-6); LoRA wants
roughly ten times more, hence the 2e-5 default.
"""

from __future__ import annotations

import math
import statistics
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from training.config import AdvantageMode, RLConfig
from training.datasets import DatasetError, RLExample, SFTExample, read_jsonl
from training.loop import (
    Dist,
    Encoded,
    ProgressCallback,
    ProgressLine,
    StepPlan,
    chat_ids,
    collate,
    end_of_turn_id,
    forward_logprobs,
    init_distributed,
    load_base,
    masked_mean,
    run_steps,
    save_adapter,
    split_holdout,
    unwrap,
    with_lora,
)
from training.sft import TrainResult, encode_chat, sft_loss

# --------------------------------------------------------------------------- the loss, pure


def group_advantages(
    rewards: Sequence[float],
    group_ids: Sequence[str],
    mode: AdvantageMode,
    overrides: Sequence[float | None] | None = None,
    eps: float = 1e-6,
) -> list[float]:
    """Advantage of each completion relative to its group.

    ``group_normalized``: (r - mean) / std with the sample standard deviation (as TRL's GRPO);
    a group whose rewards are all equal (std 0), or a group of one, has nothing to compare and
    gets 0. ``group_centered``: r - mean. ``raw``: r. An override (not None) wins.
    """
    if len(rewards) != len(group_ids):
        raise ValueError("one group id per reward")
    result = [float(r) for r in rewards]
    if mode != "raw":
        for indices in groups_of_ids(group_ids).values():
            values = [float(rewards[i]) for i in indices]
            mean = sum(values) / len(values)
            std = statistics.stdev(values) if len(values) > 1 else 0.0
            for i in indices:
                centered = float(rewards[i]) - mean
                if mode == "group_centered":
                    result[i] = centered
                else:
                    result[i] = centered / std if std > eps else 0.0
    if overrides is not None:
        result = [r if o is None else float(o) for r, o in zip(result, overrides, strict=True)]
    return result


def kl_k3(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Per-token estimate of KL(policy || reference) from sampled tokens; >= 0, unbiased."""
    delta = ref_logp - logp
    return torch.exp(delta) - delta - 1.0


def _rows_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    mask = mask.to(values.dtype)
    return (values * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)


def policy_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    ref_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    kl_coef: float = 0.0,
    ratio_level: Literal["token", "sequence"] = "token",
    aggregation: Literal["token", "sequence"] = "sequence",
    entropy: torch.Tensor | None = None,
    entropy_coef: float = 0.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The clipped surrogate with KL and entropy terms over completion tokens.

    ``logp``, ``old_logp``, ``ref_logp``, ``mask``, ``entropy``: [B, T] (mask: completion
    tokens); ``advantages``: [B]. Returns the loss and numbers to log.
    """
    mask = mask.to(logp.dtype)
    adv = advantages.to(logp.dtype)
    if ratio_level == "token":
        ratio = torch.exp(logp - old_logp)
        a = adv.unsqueeze(-1)
        unclipped = ratio * a
        clipped = torch.clamp(ratio, 1.0 - clip_low, 1.0 + clip_high) * a
        pg = -torch.minimum(unclipped, clipped)
        was_clipped = (clipped < unclipped).to(logp.dtype)
        ratio_shown = masked_mean(ratio.detach(), mask)
        clip_fraction = masked_mean(was_clipped, mask)
    else:
        seq_ratio = torch.exp(_rows_mean(logp, mask) - _rows_mean(old_logp, mask))
        unclipped = seq_ratio * adv
        clipped = torch.clamp(seq_ratio, 1.0 - clip_low, 1.0 + clip_high) * adv
        pg = (-torch.minimum(unclipped, clipped)).unsqueeze(-1).expand_as(logp)
        ratio_shown = seq_ratio.detach().mean()
        clip_fraction = (clipped < unclipped).to(logp.dtype).mean()
    kl = kl_k3(logp, ref_logp)
    per_token = pg + kl_coef * kl
    if entropy is not None and entropy_coef:
        per_token = per_token - entropy_coef * entropy
    if aggregation == "token":
        loss = masked_mean(per_token, mask)
    else:
        loss = _rows_mean(per_token, mask).mean()
    stats = {
        "pg_loss": float(masked_mean(pg.detach(), mask)),
        "kl": float(masked_mean(kl.detach(), mask)),
        "ratio": float(ratio_shown),
        "clip_frac": float(clip_fraction),
    }
    if entropy is not None:
        stats["entropy"] = float(masked_mean(entropy.detach(), mask))
    return loss, stats


def expected_group_reward(
    sequence_logps: Sequence[float], rewards: Sequence[float], group_ids: Sequence[str]
) -> float | None:
    """The reward a model would expect choosing among each group's completions by its own
    probability of generating them (softmax of summed log-probs), averaged over groups of two
    or more. None when no group has two members."""
    members = groups_of_ids(group_ids)
    values = []
    for indices in members.values():
        if len(indices) < 2:
            continue
        weights = torch.softmax(torch.tensor([sequence_logps[i] for i in indices]), dim=0)
        values.append(
            float(sum(w * rewards[i] for w, i in zip(weights.tolist(), indices, strict=True)))
        )
    return sum(values) / len(values) if values else None


def groups_of_ids(group_ids: Sequence[str]) -> dict[str, list[int]]:
    members: dict[str, list[int]] = {}
    for index, group in enumerate(group_ids):
        members.setdefault(group, []).append(index)
    return members


# --------------------------------------------------------------------------- data


@dataclass
class RLItem:
    encoded: Encoded
    advantage: float
    reward: float
    group_id: str
    data_logprobs: list[float] | None
    """the sampler's log-probs of the trained (completion) tokens kept after the left cut"""


def encode_rl(tokenizer: Any, example: RLExample, max_length: int) -> RLItem:
    prompt = chat_ids(tokenizer, example.prompt, generation_prompt=True)
    if example.completion_token_ids is not None:
        completion = list(example.completion_token_ids)
    else:
        completion = list(tokenizer(example.completion, add_special_tokens=False)["input_ids"])
        if not example.truncated:
            completion.append(end_of_turn_id(tokenizer))
    if not completion:
        raise DatasetError(f"example {example.id or example.group_id!r} has an empty completion")
    if example.old_logprobs is not None and len(example.old_logprobs) != len(completion):
        raise DatasetError(
            f"example {example.id or example.group_id!r}: {len(example.old_logprobs)} "
            f"old_logprobs for {len(completion)} completion tokens (store completion_token_ids "
            "with the log-probs)"
        )
    encoded = Encoded(prompt + completion, [False] * len(prompt) + [True] * len(completion))
    encoded = encoded.cut_left(max_length)
    kept = sum(encoded.trained)
    if kept == 0 or encoded.trained[0]:
        # the first token has no prediction: a sequence must keep one token of context
        encoded = Encoded(encoded.ids, [False, *encoded.trained[1:]])
        kept = sum(encoded.trained)
    if kept == 0:
        raise DatasetError(f"example {example.id or example.group_id!r}: max_length too small")
    data_logprobs = example.old_logprobs[-kept:] if example.old_logprobs is not None else None
    return RLItem(encoded, 0.0, example.reward, example.group_id, data_logprobs)


def _padded(rows: Sequence[torch.Tensor], items: Sequence[RLItem], width: int) -> torch.Tensor:
    """Per-example completion-token values laid out on the [B, T-1] target positions."""
    out = torch.zeros((len(items), width - 1))
    for row, (values, item) in enumerate(zip(rows, items, strict=True)):
        positions = [i - 1 for i, trained in enumerate(item.encoded.trained) if trained]
        out[row, positions] = values
    return out


@torch.no_grad()
def completion_logprobs(
    model: nn.Module, items: Sequence[RLItem], pad_id: int, device: torch.device, batch_size: int
) -> list[torch.Tensor]:
    """Each example's log-probs of its completion tokens under ``model`` as it is now."""
    was_training = model.training
    model.eval()
    result: list[torch.Tensor] = []
    for start in range(0, len(items), batch_size):
        chunk = items[start : start + batch_size]
        batch = collate([item.encoded for item in chunk], pad_id).to(device)
        logprobs, _ = forward_logprobs(model, batch)
        for row in range(len(chunk)):
            result.append(logprobs[row][batch.target_mask[row]].float().cpu())
    model.train(was_training)
    return result


def _cached_logprobs(
    path: Path,
    model: nn.Module,
    items: list[RLItem],
    extra: list[RLItem],
    config: RLConfig,
    pad_id: int,
    dist: Dist,
) -> dict[str, list[torch.Tensor]]:
    """The starting policy's log-probs of every example (``start``) and of the separate
    evaluation set's (``eval_start``, when there is one), computed before the first step and
    kept in the work dir.

    The model is the starting policy here even in a resumed run (its checkpoint is loaded
    later, by the loop), so a lost cache is recomputed to the same numbers; the cache saves that
    forward pass and keeps every attempt on the very same reference.
    """
    if path.is_file():
        return torch.load(path, weights_only=False)
    cached = {"start": completion_logprobs(model, items, pad_id, dist.device, config.batch_size)}
    if extra:
        cached["eval_start"] = completion_logprobs(
            model, extra, pad_id, dist.device, config.batch_size
        )
    if dist.main:
        partial = path.with_name(path.name + ".partial")
        torch.save(cached, partial)
        partial.replace(path)
    return cached


def _resolve_source(config: RLConfig, examples: Sequence[RLExample]) -> str:
    if config.old_logprobs == "auto":
        return "data" if all(ex.old_logprobs is not None for ex in examples) else "initial"
    if config.old_logprobs == "data" and any(ex.old_logprobs is None for ex in examples):
        raise DatasetError("old_logprobs=data, but some examples carry no old_logprobs")
    return config.old_logprobs


# --------------------------------------------------------------------------- training


def train_rl(
    config: RLConfig,
    work_dir: Path,
    *,
    on_progress: ProgressCallback | None = None,
    stop: threading.Event | None = None,
    dist: Dist | None = None,
) -> TrainResult:
    """Train a LoRA adapter on scored completions; resumes from ``work_dir``'s checkpoints.

    The final evaluation (rank 0) reports, on held-out groups (else the training groups), the
    KL to the reference and the expected reward of the trained policy and of the one the
    training started from (``_base``). What the settings do not say is in ``notes``.
    """
    dist = dist or init_distributed(config.device)
    examples = read_jsonl(config.data, RLExample)
    source = _resolve_source(config, examples)
    sft_examples = (
        read_jsonl(config.sft_data, SFTExample)
        if config.sft_data is not None and config.sft_coef > 0
        else []
    )
    model, tokenizer, base_name = load_base(config, dist.device)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    items = [encode_rl(tokenizer, ex, config.max_length) for ex in examples]
    advantages = group_advantages(
        [ex.reward for ex in examples],
        [ex.group_id for ex in examples],
        config.advantage,
        [ex.advantage for ex in examples],
    )
    for item, advantage in zip(items, advantages, strict=True):
        item.advantage = advantage
    sft_items = [
        encode_chat(tokenizer, ex.messages).cut_left(config.max_length) for ex in sft_examples
    ]

    groups = list(groups_of_ids([ex.group_id for ex in examples]).values())
    train_groups, held_groups = split_holdout(len(groups), config.eval_fraction, config.seed)
    train_idx = sorted(i for g in train_groups for i in groups[g])
    separate_eval: list[RLItem] = []
    if config.eval_data is not None:
        train_idx = list(range(len(items)))
        separate_eval = [
            encode_rl(tokenizer, ex, config.max_length)
            for ex in read_jsonl(config.eval_data, RLExample)
        ]
        eval_split = "eval_data"
    else:
        held = sorted(i for g in held_groups for i in groups[g])
        eval_idx = held or train_idx
        eval_split = "held_out" if held else "train"

    peft_model = with_lora(model, config).to(dist.device)
    if config.base_adapter is not None:
        _set_lora_dropout(peft_model, config.lora_dropout)
    work_dir.mkdir(parents=True, exist_ok=True)
    label = f"rl {config.name or ''}".strip()
    notes = _notes(config)
    if notes and dist.main:
        for note in notes:
            ProgressLine(label).note(f"note: {note}")
    # "start" in the name: caches of the adapter-off reference are not read as this one
    cached = _cached_logprobs(
        work_dir / "rl_start_logprobs.pt", peft_model, items, separate_eval, config, pad_id, dist
    )
    reference = cached["start"]
    if separate_eval:
        eval_items, eval_start = separate_eval, cached["eval_start"]
    else:
        eval_items = [items[i] for i in eval_idx]
        eval_start = [reference[i] for i in eval_idx]
    # "initial" and "reference" are one policy: the one the training starts from
    old = [torch.tensor(item.data_logprobs) for item in items] if source == "data" else reference
    trained_model: nn.Module = peft_model
    if dist.world > 1:
        trained_model = nn.parallel.DistributedDataParallel(
            peft_model, device_ids=[dist.device.index] if dist.device.type == "cuda" else None
        )
    plan = StepPlan(train_idx, config, dist)

    def micro_loss(indices: list[int], draw: int) -> tuple[torch.Tensor, dict[str, float]]:
        chosen = [items[i] for i in indices]
        batch = collate([item.encoded for item in chosen], pad_id).to(dist.device)
        width = batch.input_ids.shape[1]
        logp, entropy = forward_logprobs(trained_model, batch, with_entropy=config.entropy_coef > 0)
        loss, stats = policy_loss(
            logp,
            _padded([old[i] for i in indices], chosen, width).to(dist.device),
            _padded([reference[i] for i in indices], chosen, width).to(dist.device),
            torch.tensor([item.advantage for item in chosen], device=dist.device),
            batch.target_mask,
            clip_low=config.clip_low,
            clip_high=config.clip_high,
            kl_coef=config.kl_coef,
            ratio_level=config.ratio_level,
            aggregation=config.aggregation,
            entropy=entropy,
            entropy_coef=config.entropy_coef,
        )
        stats["reward"] = sum(item.reward for item in chosen) / len(chosen)
        if sft_items and config.sft_coef > 0:
            start = draw * config.batch_size
            mixed = [sft_items[(start + k) % len(sft_items)] for k in range(config.batch_size)]
            nll, _ = sft_loss(trained_model, collate(mixed, pad_id).to(dist.device))
            loss = loss + config.sft_coef * nll
            stats["sft_nll"] = float(nll.detach())
        stats["loss"] = float(loss.detach())
        return loss, stats

    result = run_steps(
        model=trained_model,
        config=config,
        plan=plan,
        micro_loss=micro_loss,
        work_dir=work_dir,
        dist=dist,
        label=label,
        on_progress=_with_notes(on_progress, notes),
        stop=stop,
    )
    if result.status == "interrupted" or not dist.main:
        return TrainResult(result.status, None, {}, base_name)
    metrics = _evaluate(peft_model, eval_items, eval_start, pad_id, dist, config)
    metrics.update(
        {
            "eval_split": eval_split,
            "eval_examples": len(eval_items),
            "train_examples": len(train_idx),
            "groups": len(groups),
            "data_mean_reward": round(sum(ex.reward for ex in examples) / len(examples), 6),
            "old_logprobs": source,
            "reference": "start_adapter" if config.base_adapter is not None else "base",
            "sft_coef": config.sft_coef if sft_items else 0.0,
            "sft_examples": len(sft_items),
            "steps": result.step,
            "train_loss_last": round(result.last.get("loss", math.nan), 6),
            "seconds": round(result.seconds, 2),
            "resumed_from_step": result.resumed_from,
            "world_size": dist.world,
        }
    )
    if notes:
        metrics["notes"] = notes
    adapter = save_adapter(unwrap(trained_model), work_dir / "adapter")
    return TrainResult("completed", adapter, metrics, base_name)


def _set_lora_dropout(model: nn.Module, p: float) -> None:
    """A continued adapter comes with the dropout it was trained with (SFT's 0.05, from its
    adapter_config.json); the ratio must compare the policy with itself, so RL trains it with
    ``lora_dropout`` (0 by default) as it would a fresh one."""
    for name, module in model.named_modules():
        if isinstance(module, nn.Dropout) and ".lora_dropout." in f".{name}.":
            module.p = p


def _notes(config: RLConfig) -> list[str]:
    """What a researcher must know about this training that the settings alone do not say."""
    missing = config.missing_sft_data()
    return [missing] if missing else []


def _with_notes(on_progress: ProgressCallback | None, notes: list[str]) -> ProgressCallback | None:
    """Every progress update carries the notes, so `train show` says them while it runs."""
    if on_progress is None or not notes:
        return on_progress
    sink = on_progress

    def report(update: dict[str, Any]) -> None:
        sink({**update, "notes": notes})

    return report


def _evaluate(
    model: nn.Module,
    items: list[RLItem],
    ref: list[torch.Tensor],
    pad_id: int,
    dist: Dist,
    config: RLConfig,
) -> dict[str, Any]:
    """KL to the reference, and the expected reward of the trained policy and of the policy
    the training started from (``_base``: the starting adapter, or the base model)."""
    policy = completion_logprobs(model, items, pad_id, dist.device, config.batch_size)
    kl_sum = sum(float(kl_k3(p, r).sum()) for p, r in zip(policy, ref, strict=True))
    tokens = sum(len(p) for p in policy)
    rewards = [item.reward for item in items]
    group_ids = [item.group_id for item in items]
    trained = expected_group_reward([float(p.sum()) for p in policy], rewards, group_ids)
    base = expected_group_reward([float(r.sum()) for r in ref], rewards, group_ids)
    return {
        "eval_kl": round(kl_sum / max(tokens, 1), 6),
        "eval_expected_reward": None if trained is None else round(trained, 6),
        "eval_expected_reward_base": None if base is None else round(base, 6),
        "eval_mean_logprob": round(sum(float(p.sum()) for p in policy) / max(tokens, 1), 6),
        "eval_mean_logprob_base": round(sum(float(r.sum()) for r in ref) / max(tokens, 1), 6),
    }


def check_rl_data(path: Path) -> int:
    """Read a dataset the way the trainer will, before a job is launched for it."""
    if not path.is_file():
        raise DatasetError(f"{path}: no such dataset file")
    return len(read_jsonl(path, RLExample))
