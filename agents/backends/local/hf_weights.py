"""Weights for the transformers engine: GGUF files dequantized once into a cache, and loading.

transformers reads GGUF slowly (it parses the vocabulary and dequantizes every tensor in
Python, ~30 s for a 135M model), so the first load saves the dequantized model as an ordinary
transformers directory in a cache and later starts load that in a few seconds. Training loads
its base model through :func:`load_transformers` too, so it trains on the weights that serve.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from agents.backends.local.catalog import resolve_model
from agents.backends.local.config import LocalModelConfig
from agents.model import ModelError
from agents.paths import data_dir

ProgressCallback = Callable[[str], None]

CACHE_MARKER = "thinktank-cache.json"
"""Written last into a cache directory; names the GGUF file the cache was made from."""
STALE_PARTIAL_S = 3600.0
"""Half-written cache directories older than this were left by a killed process."""
_TORCH_THREADS_AT_IMPORT = torch.get_num_threads()


def default_threads() -> int:
    """torch's thread count minus one (at least one), unless OMP_NUM_THREADS sets it.

    torch's CPU kernels split each matmul across threads that meet at a barrier; when any other
    busy thread shares the cores (our own event loop, a test run, a second server), one torch
    thread is descheduled and every op waits a scheduler tick for it. Measured on a 2-core box
    with one competing process: 2 threads ran 5-10x slower than 1 thread, while on an idle box
    2 threads were only 25-40% faster. Leaving one core free is the robust default.
    """
    if os.environ.get("OMP_NUM_THREADS"):
        return _TORCH_THREADS_AT_IMPORT
    return max(1, _TORCH_THREADS_AT_IMPORT - 1)


# --------------------------------------------------------------------------- weights and cache


def default_cache_dir(gguf_file: Path) -> Path:
    """Per-user data directory, one folder per GGUF file (by its stem)."""
    return data_dir() / "models" / gguf_file.stem


def _source_fingerprint(gguf_file: Path) -> dict[str, Any]:
    """Enough to notice that the GGUF file behind a cache was replaced by a different one."""
    return {"gguf_file": gguf_file.name, "size": gguf_file.stat().st_size}


def cache_is_valid(cache_dir: Path, gguf_file: Path) -> bool:
    """A cache counts only if its marker (written last) matches the GGUF file it stands for."""
    marker = cache_dir / CACHE_MARKER
    try:
        recorded = json.loads(marker.read_text())
    except (OSError, ValueError):
        return False
    has_weights = any(cache_dir.glob("*.safetensors"))
    return (
        recorded == _source_fingerprint(gguf_file)
        and (cache_dir / "config.json").is_file()
        and has_weights
    )


def drop_gguf_quantization(model: PreTrainedModel) -> None:
    """Make a GGUF-loaded (already dequantized) model savable.

    transformers marks a model loaded with ``gguf_file=`` as quantized by its GGUF quantizer
    (``model.hf_quantizer``, ``model.is_quantized``, ``config.quantization_config``) even though
    the weights are plain float tensors, and ``save_pretrained`` refuses to save it. The saved
    config must not carry the marker either, or loading the cache would ask for a GGUF file.
    """
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None and hasattr(quantizer, "remove_quantization_config"):
        quantizer.remove_quantization_config(model)
    for attribute in ("hf_quantizer", "quantization_method"):
        if attribute in vars(model):
            delattr(model, attribute)
    model.is_quantized = False
    for module in model.modules():
        if isinstance(module, PreTrainedModel):
            config = module.config
            if getattr(config, "quantization_config", None) is not None:
                del config.quantization_config
            if "_is_quantized" in vars(config):
                del config._is_quantized


def _remove_stale_partials(parent: Path, name: str) -> None:
    """Old half-written caches (a process killed mid-save) are garbage; recent ones may be live."""
    now = time.time()
    for partial in parent.glob(f".{name}.partial-*"):
        with contextlib.suppress(OSError):
            if now - partial.stat().st_mtime > STALE_PARTIAL_S:
                shutil.rmtree(partial, ignore_errors=True)


def discard_cache(cache_dir: Path) -> None:
    """Remove a cache by first renaming it aside, so no reader ever sees it half-deleted."""
    if not cache_dir.exists():
        return
    aside = Path(tempfile.mkdtemp(prefix=f".{cache_dir.name}.stale-", dir=cache_dir.parent))
    cache_dir.rename(aside / cache_dir.name)
    shutil.rmtree(aside, ignore_errors=True)


def save_cache_atomically(
    model: PreTrainedModel, tokenizer: Any, cache_dir: Path, gguf: Path
) -> bool:
    """Save model and tokenizer to ``cache_dir`` so that it exists complete or not at all.

    Everything is written into a temporary sibling directory and renamed into place, and the
    marker file is written last, so a process killed mid-save leaves only a hidden
    ``.partial-`` folder that no load ever reads. Returns False when another process
    finished the same cache first (its copy is kept).
    """
    drop_gguf_quantization(model)
    parent = cache_dir.parent
    parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_partials(parent, cache_dir.name)
    partial = Path(tempfile.mkdtemp(prefix=f".{cache_dir.name}.partial-", dir=parent))
    try:
        model.save_pretrained(partial)
        tokenizer.save_pretrained(partial)
        (partial / CACHE_MARKER).write_text(json.dumps(_source_fingerprint(gguf)))
        if cache_dir.exists():
            if cache_is_valid(cache_dir, gguf):
                return False
            discard_cache(cache_dir)  # stale or broken; a rename cannot replace a full directory
        try:
            partial.rename(cache_dir)
        except OSError:
            if cache_is_valid(cache_dir, gguf):
                return False  # another process won the race
            raise
        return True
    finally:
        if partial.exists():
            shutil.rmtree(partial, ignore_errors=True)


# --------------------------------------------------------------------------- loading


@dataclass
class LoadedModel:
    model: PreTrainedModel
    tokenizer: Any
    name: str
    eos_ids: frozenset[int]
    pad_id: int
    context: int


def _load_dir(directory: Path | str, dtype: torch.dtype) -> tuple[PreTrainedModel, Any]:
    tokenizer = AutoTokenizer.from_pretrained(directory)
    model = AutoModelForCausalLM.from_pretrained(directory, dtype=dtype)
    return model, tokenizer


def _load_gguf(
    config: LocalModelConfig, gguf: Path, progress: ProgressCallback
) -> tuple[PreTrainedModel, Any]:
    """Load GGUF weights, through the dequantized cache when there is a valid one."""
    dtype = getattr(torch, config.dtype)
    cache_dir = config.cache_dir or default_cache_dir(gguf)
    if cache_is_valid(cache_dir, gguf):
        progress(f"loading {gguf.stem} from cache {cache_dir}")
        try:
            return _load_dir(cache_dir, dtype)
        except Exception as error:  # a damaged cache is rebuilt, not fatal
            progress(f"cache unreadable ({error}); loading the GGUF file instead")
            with contextlib.suppress(OSError):
                discard_cache(cache_dir)
    progress(f"loading {gguf.name} (first load dequantizes it, ~30 s a 100M parameters)")
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # Dequantize to float32 once: the cache keeps full precision whatever dtype runs.
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32
    )
    try:
        if save_cache_atomically(model, tokenizer, cache_dir, gguf):
            progress(f"saved dequantized model to cache {cache_dir}")
    except Exception as error:  # no cache only costs the next start time
        progress(f"could not save the model cache ({error}); next start reloads the GGUF")
    return model.to(dtype), tokenizer


def load_transformers(
    config: LocalModelConfig, progress: ProgressCallback | None = None
) -> LoadedModel:
    """The model ``config`` names, on its device, in eval mode, with its tokenizer.

    ``model_dir`` wins, then ``gguf_file``, then ``model`` (a base model of the catalog, a
    GGUF file, a folder, or a hub id). Call it on the thread that will run the model: torch
    keeps its thread count per thread.
    """
    say = progress or (lambda _message: None)
    started = time.perf_counter()
    torch.set_num_threads(config.threads or default_threads())
    dtype = getattr(torch, config.dtype)
    if config.model_dir is not None:
        say(f"loading {config.model_dir}")
        model, tokenizer = _load_dir(config.model_dir, dtype)
        name = config.model_dir.name
    elif config.gguf_file is not None:
        model, tokenizer = _load_gguf(config, config.gguf_file, say)
        name = config.gguf_file.stem
    else:
        name, source = resolve_model(config.model, say)
        if isinstance(source, Path) and source.is_file():
            model, tokenizer = _load_gguf(config, source, say)
        else:
            say(f"loading {source}")
            model, tokenizer = _load_dir(source, dtype)
    loaded = _prepare(config, model, tokenizer, name)
    say(f"model ready in {time.perf_counter() - started:.1f} s")
    return loaded


def _prepare(
    config: LocalModelConfig, model: PreTrainedModel, tokenizer: Any, name: str
) -> LoadedModel:
    model = model.to(config.device)
    model.eval()
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    eos = model.generation_config.eos_token_id
    eos_ids = {eos} if isinstance(eos, int) else set(eos or [])
    if tokenizer.eos_token_id is not None:
        eos_ids.add(tokenizer.eos_token_id)
    if not eos_ids:
        raise ModelError(f"model {name} defines no end-of-sequence token")
    context = getattr(model.config, "max_position_embeddings", None) or 2048
    return LoadedModel(model, tokenizer, name, frozenset(eos_ids), tokenizer.pad_token_id, context)
