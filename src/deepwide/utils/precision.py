"""Training precision: bf16 autocast where the hardware computes in bf16 natively."""

from __future__ import annotations

from contextlib import nullcontext
from functools import lru_cache
from pathlib import Path

import torch

from deepwide.errors import DeepwideError

PRECISIONS = ("auto", "fp32", "bf16")


@lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """Whether this CPU has bf16 dot-product instructions (AVX512-BF16 or AMX-BF16), so that
    bf16 autocast is faster than float32 rather than emulated (Linux: /proc/cpuinfo flags)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    for line in text.splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            return bool(flags & {"avx512_bf16", "amx_bf16"})
    return False


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto``: bf16 on CUDA and on CPUs with native bf16, else fp32."""
    if precision not in PRECISIONS:
        raise DeepwideError(f"precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
    if precision != "auto":
        return precision
    if device.type == "cuda" or (device.type == "cpu" and cpu_has_native_bf16()):
        return "bf16"
    return "fp32"


def autocast(precision: str, device: torch.device):
    """The autocast context of a resolved precision on ``device``."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext()
