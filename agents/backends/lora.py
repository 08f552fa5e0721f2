"""LoRA adapters for the local backend: loaded with PEFT by versioned name, per request.

An adapter is a folder that PEFT's ``save_pretrained`` wrote (``adapter_config.json`` and the
weights) under the backend's ``adapters_dir``, named by version (``critic-v0003``). The default
folder is ``models/adapters`` under the data directory, where training publishes model versions
(store/model_versions.py). Training
publishes a new version under a new name and the next request that names it loads it, so a new
model version is served without a restart. Loaded adapters are cached by name, as vLLM and Ray
Serve LLM do, which is why a name is never reused for other weights.

The base model is wrapped in a ``PeftModel`` the first time an adapter is asked for; rows of one
batch may use different adapters or none (PEFT's ``adapter_names``, ``"__base__"`` for the base
model), so requests for different adapters still share one ``generate`` call.

Everything here runs on the local backend's worker thread.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agents.backends.serving_config import check_adapter_name
from agents.model import ModelError
from agents.paths import data_dir

log = logging.getLogger(__name__)

BASE = "__base__"
"""PEFT's name for "no adapter" in a mixed batch."""


def default_adapters_dir() -> Path:
    """``models/adapters`` in the data directory (``$THINKTANK_HOME`` or the user's)."""
    return data_dir() / "models" / "adapters"


class AdapterSet:
    """The adapters loaded into one model, at most ``max_loaded`` at once (LRU)."""

    def __init__(self, root: Path | None, max_loaded: int = 8) -> None:
        self.root = root or default_adapters_dir()
        self.max_loaded = max_loaded
        self._loaded: OrderedDict[str, Path] = OrderedDict()
        self.loads = 0

    def check(self, name: str) -> None:
        """Refuse a request for an adapter this backend cannot serve, before it is queued."""
        try:
            check_adapter_name(name)
        except ValueError as error:
            raise ModelError(str(error), retryable=False) from error
        if name not in self._loaded:
            self._path(name)

    def _path(self, name: str) -> Path:
        path = self.root / name
        if not (path / "adapter_config.json").is_file():
            raise ModelError(
                f"no LoRA adapter {name!r} in {self.root} (expected {name}/adapter_config.json)",
                retryable=False,
            )
        return path

    def prepare(self, model: Any, names: Sequence[str | None]) -> tuple[Any, dict[str, Any]]:
        """The model to generate with and the extra ``generate`` arguments for rows that use
        ``names`` (``None``: the base model). Loads adapters not loaded yet."""
        wanted = {name for name in names if name is not None}
        if not wanted and not self._loaded:
            return model, {}
        for name in wanted:
            if name in self._loaded:
                self._loaded.move_to_end(name)
                continue
            model = self._load(model, name)
        self._evict(model, keep=wanted)
        return model, {"adapter_names": [name or BASE for name in names]}

    def _load(self, model: Any, name: str) -> Any:
        from peft import PeftModel

        path = self._path(name)
        try:
            if isinstance(model, PeftModel):
                model.load_adapter(str(path), adapter_name=name)
            else:
                model = PeftModel.from_pretrained(model, str(path), adapter_name=name)
        except Exception as error:
            raise ModelError(f"could not load LoRA adapter {name!r}: {error}") from error
        model.eval()
        self._loaded[name] = path
        self.loads += 1
        log.info("loaded LoRA adapter %s from %s", name, path)
        return model

    def _evict(self, model: Any, keep: set[str]) -> None:
        while len(self._loaded) > self.max_loaded:
            victim = next((name for name in self._loaded if name not in keep), None)
            if victim is None:  # this batch alone needs more; trimmed after it
                return
            del self._loaded[victim]
            model.delete_adapter(victim)
            log.info("unloaded LoRA adapter %s (least recently used)", victim)

    def remember(self, name: str, path: Path) -> None:
        """Note an adapter another engine loaded itself (llama.cpp keeps its own handles, LRU
        by the same bound), so ``loaded`` tells the same for every engine."""
        self._loaded[name] = path
        self._loaded.move_to_end(name)
        while len(self._loaded) > self.max_loaded:
            self._loaded.popitem(last=False)

    @property
    def loaded(self) -> list[str]:
        return list(self._loaded)
