"""Training speed and memory on the CPU: LoRA SFT and RL optimizer steps on SmolLM2-135M.

Each trainer runs in a process of its own (so its peak memory is its own) on synthetic data of
about ``--seq-len`` tokens per example, for ``--steps`` optimizer steps after one warm-up step.
Reported: optimizer steps per second (median step time), trained tokens per second and the
process's peak resident memory (model, adapter, optimizer, activations). Run from the
repository root::

    python benchmarks/train_speed.py [--steps 5] [--batch-size 4] [--seq-len 128] [--threads N]
        [--kind sft|rl|both] [--gradient-checkpointing]

An RL step is one forward and backward pass like an SFT step: the reference's and the
initial policy's log-probs are computed once before training, not per step.
"""

from __future__ import annotations

import argparse
import itertools
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SENTENCE = (
    "the quick brown fox jumps over a lazy dog while seven wizards quietly judge "
    "boxing matches and every number between one and ninety nine is counted twice"
)
WORDS = SENTENCE.split(" ")


def words(count: int, offset: int) -> str:
    return " ".join(WORDS[(offset + i) % len(WORDS)] for i in range(count))


def write_data(kind: str, directory: Path, examples: int, seq_len: int) -> Path:
    """Prompts and answers of about seq_len/2 tokens each (a word is ~1.2 tokens here)."""
    half = max(4, int(seq_len / 2 / 1.2))
    path = directory / f"{kind}.jsonl"
    rows: list[dict[str, Any]] = []
    for i in range(examples):
        prompt = [{"role": "user", "content": words(half, i)}]
        if kind == "sft":
            rows.append(
                {"messages": [*prompt, {"role": "assistant", "content": words(half, i + 3)}]}
            )
        else:
            rows.append(
                {
                    "prompt": [{"role": "user", "content": words(half, i // 4)}],
                    "completion": words(half, i),
                    "reward": float(i % 2),
                    "group_id": f"g{i // 4}",
                }
            )
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def run_one(kind: str, args: argparse.Namespace) -> dict[str, Any]:
    """Train in this process and measure (the child side)."""
    from training.config import RLConfig, SFTConfig
    from training.rl import train_rl
    from training.sft import train_sft

    with tempfile.TemporaryDirectory() as scratch:
        directory = Path(scratch)
        steps = args.steps + 1
        data = write_data(kind, directory, args.batch_size * steps, args.seq_len)
        common: dict[str, Any] = {
            "data": data,
            "max_steps": steps,
            "batch_size": args.batch_size,
            "lora_r": args.lora_r,
            "eval_fraction": 0.0,
            "threads": args.threads,
            "checkpoint_every": 10_000,
            "log_every": 10_000,
            "gradient_checkpointing": args.gradient_checkpointing,
        }
        stamps: list[float] = []

        def progress(update: dict[str, Any]) -> None:
            stamps.append(time.perf_counter())

        started = time.perf_counter()
        if kind == "sft":
            result = train_sft(SFTConfig(**common), directory / "work", on_progress=progress)
        else:
            result = train_rl(RLConfig(**common), directory / "work", on_progress=progress)
        total = time.perf_counter() - started
    durations = [b - a for a, b in itertools.pairwise(stamps)]
    median = statistics.median(durations) if durations else float("nan")
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "kind": kind,
        "steps_timed": len(durations),
        "s_per_step": round(median, 3),
        "steps_per_s": round(1 / median, 3),
        "examples_per_s": round(args.batch_size / median, 2),
        "approx_tokens_per_s": round(args.batch_size * args.seq_len / median, 1),
        "peak_rss_mib": round(peak_mib, 1),
        "wall_s_incl_load_and_eval": round(total, 1),
        "status": result.status,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5, help="timed optimizer steps")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=128, help="approximate tokens/example")
    parser.add_argument("--lora-r", type=int, default=16)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--kind", choices=["sft", "rl", "both"], default="both")
    parser.add_argument(
        "--gradient-checkpointing", action="store_true", help="recompute activations"
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_one(args.kind, args)))
        return
    kinds = ["sft", "rl"] if args.kind == "both" else [args.kind]
    print(
        f"SmolLM2-135M on the CPU, LoRA r={args.lora_r}, batch {args.batch_size} x "
        f"~{args.seq_len} tokens, {args.steps} timed steps, threads {args.threads or 'default'}"
        + (", gradient checkpointing" if args.gradient_checkpointing else "")
    )
    for kind in kinds:
        command = [sys.executable, __file__, "--child", "--kind", kind]
        for flag in ("steps", "batch_size", "seq_len", "lora_r", "threads"):
            value = getattr(args, flag)
            if value is not None:
                command += [f"--{flag.replace('_', '-')}", str(value)]
        if args.gradient_checkpointing:
            command.append("--gradient-checkpointing")
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            print(done.stderr[-3000:], file=sys.stderr)
            raise SystemExit(f"{kind} benchmark failed")
        result = json.loads(done.stdout.strip().splitlines()[-1])
        print(
            f"{kind:>3}: {result['steps_per_s']:.3f} steps/s ({result['s_per_step']:.2f} s/step, "
            f"~{result['approx_tokens_per_s']:.0f} tokens/s), peak RSS "
            f"{result['peak_rss_mib']:.0f} MiB, {result['wall_s_incl_load_and_eval']:.0f} s "
            "with loading and evaluation"
        )


if __name__ == "__main__":
    main()
