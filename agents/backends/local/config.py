"""Options of the local backend, kept apart so reading them loads neither llama.cpp nor torch."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from agents.backends.local.catalog import DEFAULT_MODEL

ComputeWeights = Literal["auto", "shipped", "bf16"]


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def default_llama_threads() -> int:
    """Every core this process may use: llama.cpp's threads wait for the step's Python work
    (sampling, the event loop) without spinning it off the core (measured: see README)."""
    return available_cores()


class LocalModelConfig(BaseModel):
    """A model run in-process on this machine: the embedded default."""

    backend: Literal["local"] = "local"
    model: str = Field(
        DEFAULT_MODEL,
        description="a base model of `thinktank models base` (qwen2.5-coder-0.5b, "
        "qwen2.5-coder-1.5b, smollm2-135m), a GGUF file, a transformers model folder, or a "
        "Hugging Face id (transformers engine, where a hub is reachable)",
    )
    engine: Literal["llama.cpp", "transformers"] = Field(
        "llama.cpp",
        description="llama.cpp (GGUF, continuous batching, fast on the CPU) or transformers "
        "(torch; what training uses, and the engine for a model folder or a hub id)",
    )
    gguf_file: Path | None = Field(None, description="GGUF weights to load instead of `model`")
    compute_weights: ComputeWeights = Field(
        "auto",
        description="llama.cpp: `auto` widens a Q8_0 base model to BF16 once on a CPU with "
        "AVX512-BF16 (faster batched steps and prompts), `shipped` keeps the file as it is, "
        "`bf16` always widens",
    )
    model_dir: Path | None = Field(
        None, description="a transformers model folder to load instead of `model` (transformers)"
    )
    max_batch_size: int = Field(
        8,
        ge=1,
        le=64,
        description="most sequences decoded together (each of a request's n samples is one)",
    )
    context_tokens: int = Field(
        16384,
        ge=512,
        description="llama.cpp: KV-cache cells all running sequences share (a request's prompt "
        "plus max_tokens must fit)",
    )
    batch_tokens: int = Field(
        512,
        ge=32,
        description="llama.cpp: most tokens (generated and prompt) one decoding step takes",
    )
    threads: int | None = Field(
        None,
        ge=1,
        description="CPU threads (default: llama.cpp every core; transformers torch's count "
        "minus one, so a busy neighbour cannot stall every op; OMP_NUM_THREADS wins there)",
    )
    cache_dir: Path | None = Field(
        None,
        description="transformers: where the dequantized GGUF model is saved after the first "
        "load (default: the models folder under the data directory)",
    )
    device: str = Field("cpu", description="transformers: torch device")
    dtype: Literal["float32", "bfloat16", "float16"] = Field(
        "float32", description="transformers: weights' dtype"
    )
    batch_wait_ms: float = Field(
        10.0,
        ge=0.0,
        description="transformers: how long the first request waits for others to batch with",
    )
    interject_max_tokens: int = Field(
        8,
        ge=0,
        description="transformers: a greedy single-sample request for at most this many tokens "
        "is served between two decoding steps of a running batch instead of after it (0: never)",
    )
    adapters_dir: Path | None = Field(
        None,
        description="folder of LoRA adapters (one sub-folder per versioned name, as PEFT saves "
        "them); a request's `adapter` is loaded from it on first use (default: models/adapters "
        "under the data directory, where training publishes them)",
    )
    max_adapters: int = Field(
        8, ge=1, description="adapters kept loaded at once; the least recently used is dropped"
    )
