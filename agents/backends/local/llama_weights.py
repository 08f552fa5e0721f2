"""The form of the weights llama.cpp computes with on this CPU.

Qwen2.5-Coder-0.5B ships as Q8_0. On a CPU with AVX512-BF16, llama.cpp multiplies BF16
weights several times faster than Q8_0 ones in batched steps and prompts (measured on this
project's 2-core machine, one decoding step of 4 sequences: 86 tokens/s in BF16 against 65 in
Q8_0; prompts 355-400 against 225 tokens/s), because its BF16 kernels reuse each weight across
the sequences of a step. So an entry that says so is converted once, beside its file, to BF16:
a widening of the 8-bit values (each Q8_0 weight is an int8 times an fp16 scale; the product
is rounded to BF16's 8-bit mantissa, a relative error under 0.4%), written to a temporary file
and renamed into place. Where the CPU lacks AVX512-BF16, the shipped file is used as it is.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

import llama_cpp as lc

from agents.backends.local.config import ComputeWeights
from agents.backends.local.llama_model import init_backend


def cpu_has_bf16() -> bool:
    """Whether this CPU and this llama.cpp build both do AVX512-BF16."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    init_backend()
    built = lc.llama_print_system_info().decode()
    return "avx512_bf16" in flags and "AVX512_BF16 = 1" in built


def compute_file(shipped: Path, mode: ComputeWeights, *, widen: bool) -> Path:
    """The file to load: ``shipped``, or its BF16 twin (made on first use) when ``mode`` asks
    for it, or is ``auto``, the entry allows it (``widen``) and the CPU gains by it."""
    if mode == "shipped" or (mode == "auto" and not (widen and cpu_has_bf16())):
        return shipped
    target = shipped.with_name(f"{shipped.stem}-bf16.gguf")
    if target.is_file() and target.stat().st_mtime >= shipped.stat().st_mtime:
        return target
    init_backend()
    params = lc.llama_model_quantize_default_params()
    params.ftype = lc.LLAMA_FTYPE_MOSTLY_BF16
    params.allow_requantize = True
    params.nthread = max(1, os.cpu_count() or 1)
    handle, temporary = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    os.close(handle)
    try:
        status = lc.llama_model_quantize(str(shipped).encode(), temporary.encode(), params)
        if status != 0:
            raise ValueError(f"llama.cpp could not convert {shipped.name} to BF16 ({status})")
        os.chmod(temporary, 0o644)  # mkstemp makes it private; weights are not secret
        os.replace(temporary, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
    return target
