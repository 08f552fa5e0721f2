"""PEFT LoRA adapters as GGUF files, the form llama.cpp loads.

Training saves adapters as PEFT writes them (``adapter_config.json`` and
``adapter_model.safetensors``, module names of the transformers model). llama.cpp wants one
GGUF file of type ``adapter``: the base model's architecture, ``adapter.lora.alpha``, and for
every adapted weight ``W`` two tensors ``W.lora_a`` (rank x in) and ``W.lora_b`` (out x rank)
under W's GGUF name. The names come from the ``gguf`` package's own map of transformers names
to GGUF names, for the architecture the base GGUF file declares, so no table of ours can drift
from llama.cpp's. llama.cpp scales the product by alpha / rank, as PEFT does without rsLoRA.

The file is written beside the adapter, once, atomically (a temporary file renamed into
place), the first time a llama.cpp backend is asked for the adapter, so a version registered
by ``thinktank train`` answers its first request without a restart.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from pathlib import Path

import gguf
import numpy as np
from safetensors.numpy import load_file

ADAPTER_FILE = "adapter.gguf"

_PEFT_NAME = re.compile(r"^(?:base_model\.model\.)?(?P<module>.+)\.lora_(?P<ab>[AB])\.weight$")


class AdapterConversionError(ValueError):
    """The adapter cannot be turned into a llama.cpp adapter for this base model."""


def base_architecture(base_gguf: Path) -> tuple[str, int]:
    """The architecture name and block count a GGUF model file declares."""
    reader = gguf.GGUFReader(base_gguf)
    field = reader.fields["general.architecture"]
    arch = bytes(field.parts[field.data[0]]).decode()
    blocks = reader.fields[f"{arch}.block_count"]
    return arch, int(blocks.parts[blocks.data[0]][0])


def converted_path(adapter_dir: Path) -> Path:
    return adapter_dir / ADAPTER_FILE


def convert_adapter(adapter_dir: Path, base_gguf: Path) -> Path:
    """``adapter_dir``'s GGUF twin, written on first use; returns its path."""
    target = converted_path(adapter_dir)
    if target.is_file() and target.stat().st_mtime >= _newest_source(adapter_dir):
        return target
    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    if config.get("use_rslora") or config.get("use_dora"):
        raise AdapterConversionError("rsLoRA and DoRA adapters have no llama.cpp form")
    alpha = float(config["lora_alpha"])
    arch, blocks = base_architecture(base_gguf)
    arch_ids = {name: arch_id for arch_id, name in gguf.MODEL_ARCH_NAMES.items()}
    if arch not in arch_ids:
        raise AdapterConversionError(f"the gguf package knows no architecture {arch!r}")
    names = gguf.get_tensor_name_map(arch_ids[arch], blocks)
    tensors = load_file(str(adapter_dir / "adapter_model.safetensors"))
    pairs: dict[str, dict[str, np.ndarray]] = {}
    for name, value in tensors.items():
        match = _PEFT_NAME.match(name)
        if match is None:
            raise AdapterConversionError(f"{name}: not a LoRA A/B weight (embeddings trained?)")
        module = match["module"]
        gguf_name = names.get_name(module)
        if gguf_name is None:
            raise AdapterConversionError(f"{module}: no GGUF name for it in {arch}")
        pairs.setdefault(gguf_name, {})[match["ab"]] = value.astype(np.float32)
    writer_handle, temporary = tempfile.mkstemp(prefix=".adapter.", suffix=".gguf", dir=adapter_dir)
    os.close(writer_handle)
    try:
        writer = gguf.GGUFWriter(temporary, arch)
        writer.add_type(gguf.GGUFType.ADAPTER)
        writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
        writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, alpha)
        for gguf_name, pair in sorted(pairs.items()):
            if set(pair) != {"A", "B"}:
                raise AdapterConversionError(f"{gguf_name}: LoRA A or B missing")
            writer.add_tensor(f"{gguf_name}.weight.lora_a", pair["A"])
            writer.add_tensor(f"{gguf_name}.weight.lora_b", pair["B"])
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.chmod(temporary, 0o644)
        os.replace(temporary, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
    return target


def _newest_source(adapter_dir: Path) -> float:
    return max(
        (adapter_dir / name).stat().st_mtime
        for name in ("adapter_config.json", "adapter_model.safetensors")
    )
