"""What the SFT and RL trainers share: the base model with a LoRA adapter, tokens and
log-probs, the step loop with gradient accumulation, checkpoints and resume, progress, and
torch distributed.

A plain torch loop rather than TRL's trainers: TRL's ``GRPOTrainer`` samples its own
completions online, while our RL data are stored games and transcripts with their rewards
(SPC's released recipe is offline too), and one loop for both trainers keeps checkpoints,
resume, progress and the registry identical. TRL would also pull ``datasets``, ``pandas`` and
``pyarrow`` into every install for what is here a few hundred lines.

Distributed: launched by ``torchrun`` (``WORLD_SIZE`` > 1) each process trains on its slice of
every batch inside ``DistributedDataParallel`` (NCCL on GPUs, gloo on CPUs); only rank 0
prints, checkpoints, evaluates and writes the store. Single-process on a CPU is the same code
with a world of one.

Resume is exact: a checkpoint holds the adapter, the optimizer and scheduler, the step and the
random state, and the data order is a pure function of the seed and the step, so an interrupted
run resumed from step k ends with the weights an uninterrupted run would have.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from agents.backends.local.catalog import CATALOG
from agents.backends.local.config import LocalModelConfig
from agents.backends.local.hf_weights import load_transformers
from roles.messages import ChatMessage
from training.config import DEFAULT_BASE, TrainConfig, TrainingError

CHECKPOINT_MARKER = "complete.json"
STATE_FILE = "trainer_state.pt"
ProgressCallback = Callable[[dict[str, Any]], None]


# --------------------------------------------------------------------------- model


@dataclass
class Dist:
    """Where this process sits in a torchrun launch (a world of one without torchrun)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(preferred: str | None) -> Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if preferred is None:
        preferred = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(preferred)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local_rank)
    if world > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        torch.distributed.init_process_group(backend, timeout=timedelta(minutes=30))
    return Dist(rank, world, local_rank, device)


def close_distributed() -> None:
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def load_base(config: TrainConfig, device: torch.device) -> tuple[nn.Module, Any, str]:
    """The base model and tokenizer, through the local backend's own loader (its GGUF
    dequantization cache included), so training and serving read the same weights."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing may be fetched from a hub
    options: dict[str, Any] = {"device": str(device), "dtype": config.dtype}
    if config.threads is not None:
        options["threads"] = config.threads
    if config.base in CATALOG:
        options["model"] = config.base
    elif config.base == DEFAULT_BASE:
        options["model"] = "smollm2-135m"
    else:
        directory = Path(config.base)
        if not (directory / "config.json").is_file():
            raise TrainingError(
                f"base {config.base!r} is not {DEFAULT_BASE!r}, a base model "
                f"({', '.join(CATALOG)}), a transformers model directory (with config.json), "
                "or a registered model version"
            )
        options["model_dir"] = directory
    try:
        loaded = load_transformers(LocalModelConfig(engine="transformers", **options))
    except Exception as exc:
        raise TrainingError(f"could not load the base model {config.base!r}: {exc}") from exc
    tokenizer = loaded.tokenizer
    tokenizer.padding_side = "right"
    return loaded.model, tokenizer, loaded.name


@contextlib.contextmanager
def _quiet_peft() -> Iterator[None]:
    """peft still asks transformers a deprecated question; the warning is not ours to fix."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
        yield


def _checkpoint_activations(model: nn.Module) -> None:
    """Keep only layer inputs and recompute the rest in the backward pass (non-reentrant, so
    frozen base weights need no input gradients)."""
    enable = getattr(model, "activation_checkpointing_enable", None)
    if enable is not None:  # transformers >= 5
        enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def with_lora(model: nn.Module, config: TrainConfig) -> nn.Module:
    """Wrap the base in a trainable LoRA adapter: a fresh one, or the base version's."""
    from peft import LoraConfig, PeftModel, get_peft_model

    torch.manual_seed(config.seed)  # the same LoRA init on every rank and every attempt
    if config.base_adapter is not None:
        if config.gradient_checkpointing:
            _checkpoint_activations(model)
        if not (config.base_adapter / "adapter_config.json").is_file():
            raise TrainingError(f"adapter {config.base_adapter} of the base version is missing")
        with _quiet_peft():
            return PeftModel.from_pretrained(model, str(config.base_adapter), is_trainable=True)
    names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    missing = [target for target in config.target_modules if target not in names]
    if missing:
        raise TrainingError(f"the base model has no modules named {missing} for LoRA")
    lora = LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=list(config.target_modules),
        task_type="CAUSAL_LM",
    )
    if config.gradient_checkpointing:
        _checkpoint_activations(model)
    with _quiet_peft():
        return get_peft_model(model, lora)


def unwrap(model: nn.Module) -> nn.Module:
    """The PEFT model inside a DistributedDataParallel wrapper (or the model itself)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


@contextlib.contextmanager
def reference_mode(model: nn.Module) -> Iterator[None]:
    """The frozen reference: the base model with the adapter switched off, no gradients."""
    with unwrap(model).disable_adapter(), torch.no_grad():
        yield


def trainable_parameters(model: nn.Module) -> list[nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


# --------------------------------------------------------------------------- tokens


def chat_ids(
    tokenizer: Any, messages: Sequence[ChatMessage], *, generation_prompt: bool
) -> list[int]:
    if not messages:
        return []
    text = tokenizer.apply_chat_template(
        [m.model_dump() for m in messages], add_generation_prompt=generation_prompt, tokenize=False
    )
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def end_of_turn_id(tokenizer: Any) -> int:
    """The token a chat model ends its turn with (``<|im_end|>`` for SmolLM2)."""
    if tokenizer.eos_token_id is None:
        raise TrainingError("the tokenizer defines no end-of-sequence token")
    return int(tokenizer.eos_token_id)


@dataclass
class Encoded:
    """A sequence's token ids and, per token, whether the loss is taken on it."""

    ids: list[int]
    trained: list[bool]

    def cut_left(self, max_length: int) -> Encoded:
        """Keep the last ``max_length`` tokens: the end, where the trained completion is."""
        if len(self.ids) <= max_length:
            return self
        return Encoded(self.ids[-max_length:], self.trained[-max_length:])


@dataclass
class Batch:
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    target_mask: torch.Tensor
    """[B, T-1]: which next-token predictions the loss counts (position t predicts t+1)."""

    def to(self, device: torch.device) -> Batch:
        return Batch(
            self.input_ids.to(device), self.attention_mask.to(device), self.target_mask.to(device)
        )


def collate(items: Sequence[Encoded], pad_id: int) -> Batch:
    width = max(len(item.ids) for item in items)
    ids = torch.full((len(items), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(items), width), dtype=torch.long)
    trained = torch.zeros((len(items), width), dtype=torch.bool)
    for row, item in enumerate(items):
        ids[row, : len(item.ids)] = torch.tensor(item.ids)
        attention[row, : len(item.ids)] = 1
        trained[row, : len(item.ids)] = torch.tensor(item.trained)
    return Batch(ids, attention, trained[:, 1:])


def token_logprobs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log p(target) per position, without materialising a second vocab-sized tensor."""
    logits = logits.float()
    chosen = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return chosen - torch.logsumexp(logits, dim=-1)


def token_entropy(logits: torch.Tensor) -> torch.Tensor:
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    return -(logprobs.exp() * logprobs).sum(-1)


def forward_logprobs(
    model: nn.Module, batch: Batch, *, with_entropy: bool = False
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """[B, T-1] log-probabilities of each next token (and entropies, when asked)."""
    output = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
    logits = output.logits[:, :-1]
    logprobs = token_logprobs(logits, batch.input_ids[:, 1:])
    return logprobs, token_entropy(logits) if with_entropy else None


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp(min=1.0)


# --------------------------------------------------------------------------- data order


def split_holdout(count: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Train and held-out indices; with too little data the evaluation reuses the training
    set (the caller reports which it did)."""
    held = math.floor(count * fraction)
    if fraction == 0 or held < 1 or count - held < 1:
        return list(range(count)), []
    order = torch.randperm(count, generator=torch.Generator().manual_seed(seed + 7919)).tolist()
    return sorted(order[held:]), sorted(order[:held])


class StepPlan:
    """Which examples each process uses at each step: an endless stream of seeded epoch
    permutations, cut into global batches. A pure function of (seed, step): resume needs
    nothing but the step number."""

    def __init__(self, indices: Sequence[int], config: TrainConfig, dist: Dist) -> None:
        if not indices:
            raise TrainingError("no training examples left after the evaluation split")
        self.indices = list(indices)
        self.config = config
        self.dist = dist
        self.global_batch = config.batch_size * config.grad_accum * dist.world
        if config.max_steps is not None:
            self.total_steps = config.max_steps
        else:
            self.total_steps = max(
                1, math.ceil(config.epochs * len(self.indices) / self.global_batch)
            )

    def _epoch(self, epoch: int) -> list[int]:
        generator = torch.Generator().manual_seed(self.config.seed * 1_000_003 + epoch)
        order = torch.randperm(len(self.indices), generator=generator).tolist()
        return [self.indices[i] for i in order]

    def micro_batches(self, step: int) -> list[list[int]]:
        """This process's micro-batches for optimizer step ``step`` (0-based)."""
        start = step * self.global_batch
        items: list[int] = []
        epoch, offset = divmod(start, len(self.indices))
        while len(items) < self.global_batch:
            order = self._epoch(epoch)
            items.extend(order[offset : offset + self.global_batch - len(items)])
            epoch, offset = epoch + 1, 0
        size = self.config.batch_size
        mine = items[self.dist.rank :: self.dist.world]
        return [mine[i : i + size] for i in range(0, len(mine), size)]

    def epoch_at(self, step: int) -> float:
        return step * self.global_batch / len(self.indices)


# --------------------------------------------------------------------------- checkpoints


def _write_state(path: Path, state: dict[str, Any]) -> None:
    torch.save(state, path / STATE_FILE)


class Checkpoints:
    """``step-NNNNNNN`` folders under one directory, each written aside then renamed, and
    counted only once its marker is there: a kill mid-save leaves nothing a resume would read."""

    def __init__(self, directory: Path, keep: int) -> None:
        self.directory = directory
        self.keep = keep

    def _complete(self) -> list[Path]:
        if not self.directory.is_dir():
            return []
        return sorted(
            path
            for path in self.directory.glob("step-*")
            if path.is_dir() and (path / CHECKPOINT_MARKER).is_file()
        )

    def latest(self) -> Path | None:
        found = self._complete()
        return found[-1] if found else None

    def save(
        self,
        step: int,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
    ) -> Path:
        self.directory.mkdir(parents=True, exist_ok=True)
        final = self.directory / f"step-{step:07d}"
        partial = self.directory / f".step-{step:07d}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir()
        unwrap(model).save_pretrained(str(partial))
        _write_state(
            partial,
            {
                "step": step,
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            },
        )
        (partial / CHECKPOINT_MARKER).write_text(json.dumps({"step": step}))
        shutil.rmtree(final, ignore_errors=True)
        partial.rename(final)
        for old in self._complete()[: -self.keep]:
            shutil.rmtree(old, ignore_errors=True)
        return final

    @staticmethod
    def load(
        path: Path,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
    ) -> int:
        """Restore a checkpoint into the model, optimizer, scheduler and RNG; its step."""
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        weights = load_file(str(path / "adapter_model.safetensors"))
        set_peft_model_state_dict(unwrap(model), weights)
        state = torch.load(path / STATE_FILE, weights_only=False)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
        if state.get("cuda_rng") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        return int(state["step"])


# --------------------------------------------------------------------------- the loop


def make_optimizer(
    model: nn.Module, config: TrainConfig, total_steps: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    optimizer = torch.optim.AdamW(
        trainable_parameters(model), lr=config.learning_rate, weight_decay=config.weight_decay
    )
    warmup = math.floor(config.warmup_ratio * total_steps)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        if config.schedule == "constant":
            return 1.0
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


MicroLoss = Callable[[list[int], int], tuple[torch.Tensor, dict[str, float]]]
"""Loss of one micro-batch (example indices, and a number unique to this micro-batch of this
process in the whole run, for anything drawn alongside) and numbers worth showing."""


@dataclass
class LoopResult:
    status: Literal["completed", "interrupted"]
    step: int
    total_steps: int
    last: dict[str, float]
    history: list[dict[str, float]]
    seconds: float
    resumed_from: int | None


class ProgressLine:
    """One line per logged step on stderr; on a terminal the line is rewritten in place."""

    def __init__(self, label: str, stream: Any = None) -> None:
        self.label = label
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())

    def show(self, text: str, *, final: bool = False) -> None:
        line = f"[{self.label}] {text}"
        if self.tty:
            self.stream.write("\r\033[K" + line + ("\n" if final else ""))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def note(self, text: str) -> None:
        if self.tty:
            self.stream.write("\r\033[K")
        self.stream.write(f"[{self.label}] {text}\n")
        self.stream.flush()


def _describe(step: int, total: int, numbers: dict[str, float], s_per_step: float) -> str:
    shown = " ".join(f"{key} {value:.4g}" for key, value in numbers.items() if key not in ("lr",))
    eta = timedelta(seconds=round(s_per_step * (total - step)))
    return (
        f"step {step}/{total} {shown} lr {numbers.get('lr', 0.0):.2e} "
        f"{s_per_step:.2f} s/step eta {eta}"
    )


def _all_agree_to_stop(stop: threading.Event | None, dist: Dist) -> bool:
    """Every rank stops at the same step, or DDP's next all-reduce would hang."""
    wanted = bool(stop is not None and stop.is_set())
    if dist.world == 1:
        return wanted
    flag = torch.tensor([1.0 if wanted else 0.0], device=dist.device)
    torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
    return bool(flag.item() > 0)


def _average_across_ranks(numbers: dict[str, float], dist: Dist) -> dict[str, float]:
    if dist.world == 1 or not numbers:
        return numbers
    keys = sorted(numbers)
    values = torch.tensor([numbers[k] for k in keys], device=dist.device, dtype=torch.float64)
    torch.distributed.all_reduce(values)
    return {k: float(v) / dist.world for k, v in zip(keys, values.tolist(), strict=True)}


def run_steps(
    *,
    model: nn.Module,
    config: TrainConfig,
    plan: StepPlan,
    micro_loss: MicroLoss,
    work_dir: Path,
    dist: Dist,
    label: str,
    on_progress: ProgressCallback | None = None,
    stop: threading.Event | None = None,
) -> LoopResult:
    """Optimizer steps from the last checkpoint (if any) to ``plan.total_steps``.

    ``model`` may be DDP-wrapped; gradients are synchronised on each step's last micro-batch.
    Returns early, after a checkpoint, when ``stop`` is set (SIGINT/SIGTERM in a job).
    """
    total = plan.total_steps
    optimizer, scheduler = make_optimizer(model, config, total)
    checkpoints = Checkpoints(work_dir / "checkpoints", config.keep_checkpoints)
    printer = ProgressLine(label)
    step, resumed_from = 0, None
    latest = checkpoints.latest()
    if latest is not None:
        step = Checkpoints.load(latest, model, optimizer, scheduler)
        resumed_from = step
        if dist.main:
            printer.note(f"resuming from checkpoint {latest.name} (step {step}/{total})")
    history: list[dict[str, float]] = []
    started = time.perf_counter()
    step_times: list[float] = []
    last: dict[str, float] = {}

    def report(status: str) -> None:
        if on_progress is None or not dist.main:
            return
        latest_checkpoint = checkpoints.latest()
        with contextlib.suppress(Exception):  # a progress sink must never stop training
            on_progress(
                {
                    "status": status,
                    "step": step,
                    "total_steps": total,
                    "epoch": round(plan.epoch_at(step), 3),
                    "last_checkpoint_step": int(latest_checkpoint.name[5:])
                    if latest_checkpoint
                    else None,
                    "s_per_step": round(sum(step_times[-20:]) / max(1, len(step_times[-20:])), 3),
                    **{k: round(v, 6) for k, v in last.items()},
                }
            )

    def save() -> None:
        if dist.main:
            checkpoints.save(step, model, optimizer, scheduler)
        if dist.world > 1:
            torch.distributed.barrier()

    model.train()
    while step < total:
        if _all_agree_to_stop(stop, dist):
            save()
            report("interrupted")
            if dist.main:
                printer.note(f"stopped at step {step}/{total}; checkpoint saved")
            return LoopResult(
                "interrupted", step, total, last, history, time.perf_counter() - started,
                resumed_from,
            )  # fmt: skip
        tick = time.perf_counter()
        micro = plan.micro_batches(step)
        sums: dict[str, float] = {}
        for position, indices in enumerate(micro):
            sync = position == len(micro) - 1
            context = (
                model.no_sync()
                if not sync and isinstance(model, nn.parallel.DistributedDataParallel)
                else contextlib.nullcontext()
            )
            with context:
                draw = ((step * len(micro)) + position) * dist.world + dist.rank
                loss, numbers = micro_loss(indices, draw)
                (loss / len(micro)).backward()
            for key, value in numbers.items():
                sums[key] = sums.get(key, 0.0) + value / len(micro)
        if config.max_grad_norm is not None:
            norm = torch.nn.utils.clip_grad_norm_(trainable_parameters(model), config.max_grad_norm)
            sums["grad_norm"] = float(norm)
        sums["lr"] = scheduler.get_last_lr()[0]
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        step_times.append(time.perf_counter() - tick)
        last = _average_across_ranks(sums, dist)
        history.append({"step": float(step), **last})
        if dist.main and (step % config.log_every == 0 or step == total):
            recent = step_times[-20:]
            printer.show(
                _describe(step, total, last, sum(recent) / len(recent)), final=step == total
            )
        if step % config.checkpoint_every == 0 or step == total:
            save()
        report("running")
    return LoopResult(
        "completed", step, total, last, history, time.perf_counter() - started, resumed_from
    )


def save_adapter(model: nn.Module, directory: Path) -> Path:
    """The trained adapter (what vLLM and PEFT load) into ``directory``, written aside first."""
    partial = directory.with_name(f".{directory.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    unwrap(model).save_pretrained(str(partial))
    shutil.rmtree(directory, ignore_errors=True)
    partial.rename(directory)
    return directory


def load_adapted(
    base: str, adapter: Path, *, device: str = "cpu", threads: int | None = None
) -> tuple[nn.Module, Any]:
    """A registered version as a model for inference: its base with its adapter applied."""
    from peft import PeftModel

    config = TrainConfig(data=Path("."), base=base, threads=threads, device=device)
    model, tokenizer, _ = load_base(config, torch.device(device))
    with _quiet_peft():
        adapted = PeftModel.from_pretrained(model, str(adapter))
    adapted.eval()
    return adapted, tokenizer
