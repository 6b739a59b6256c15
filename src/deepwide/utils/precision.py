"""Training precision (bf16 autocast where the hardware computes in bf16 natively) and the
numerics that decide trained weights: CPU kernel flags, deterministic kernels, a record for
info.json and a hash of the weights."""

from __future__ import annotations

import os
from contextlib import contextmanager, nullcontext
from functools import lru_cache
from pathlib import Path

import torch

from deepwide.errors import DeepwideError

PRECISIONS = ("auto", "fp32", "bf16")


# /proc/cpuinfo flags that select CPU kernels (ATen's vector width, oneDNN and MKL code
# paths): two machines that differ in any of them may round differently
KERNEL_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512dq", "avx512bw", "avx512vl",
                "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8")

# environment variables that pin kernel choice or thread count (recorded when set)
KERNEL_ENV = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "MKL_CBWR", "MKL_ENABLE_INSTRUCTIONS",
              "OMP_NUM_THREADS", "MKL_NUM_THREADS", "CUBLAS_WORKSPACE_CONFIG")


@lru_cache(maxsize=1)
def cpu_info() -> tuple[str, frozenset[str]]:
    """``(model name, flags)`` of the first CPU in /proc/cpuinfo (Linux; elsewhere empty)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "", frozenset()
    model, flags = "", None
    for line in text.splitlines():
        if line.startswith("model name") and not model:
            model = line.split(":", 1)[1].strip()
        elif line.startswith("flags") and flags is None:
            flags = frozenset(line.split(":", 1)[1].split())
    return model, flags or frozenset()


def cpu_flags() -> frozenset[str]:
    return cpu_info()[1]


def cpu_kernel_flags() -> list[str]:
    """The :data:`KERNEL_FLAGS` this CPU has (sorted)."""
    return sorted(f for f in KERNEL_FLAGS if f in cpu_flags())


def cpu_has_native_bf16() -> bool:
    """Whether this CPU has bf16 dot-product instructions (AVX512-BF16 or AMX-BF16), so that
    bf16 autocast is faster than float32 rather than emulated (Linux: /proc/cpuinfo flags)."""
    return bool(cpu_flags() & {"avx512_bf16", "amx_bf16"})


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


# ---------------------------------------------------------------- reproducible numerics


@contextmanager
def deterministic(device: torch.device):
    """Deterministic kernels for a training run, restored on exit.

    ``torch.use_deterministic_algorithms`` (warn only: an op without a deterministic
    kernel warns instead of failing, on CPU and CUDA, torch 2.11 and 2.14); on CUDA also
    cuDNN's deterministic algorithms without autotuning, no TF32 (its use differs between
    GPU generations) and cuBLAS's fixed workspace (CUBLAS_WORKSPACE_CONFIG, set only if
    unset; it must precede the process's first cuBLAS call to take effect).
    """
    if device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    saved = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32,
             torch.backends.cuda.matmul.allow_tf32)
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved[2], saved[3]
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved[4], saved[5]


def numerics_record(device: torch.device, threads: int, precision: str) -> dict:
    """What, besides config and data, determines trained weights: library versions, the
    intra-op thread count (reduction order), the precision that ran, the kernels' ISA
    (ATen's dispatch level, the CPU's kernel-selecting flags, pinning variables) and on
    CUDA the device. Equal records on two machines are necessary, not sufficient, for
    bit-identical weights."""
    import sklearn
    import torchaudio

    model, _ = cpu_info()
    rec = {
        "torch": torch.__version__,
        "torchaudio": torchaudio.__version__,
        "sklearn": sklearn.__version__,
        "threads": int(threads),
        "precision": precision,
        "device": device.type,
        "cpu_model": model,
        "cpu_flags": cpu_kernel_flags(),
        "aten_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "env": {k: os.environ[k] for k in KERNEL_ENV if k in os.environ},
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
    }
    if device.type == "cuda":
        rec["cuda_device"] = torch.cuda.get_device_name(device)
        rec["cuda"] = torch.version.cuda
        rec["cudnn"] = torch.backends.cudnn.version()
    return rec


def state_sha256(state_dict: dict, prefix: bytes = b"") -> str:
    """sha256 over ``prefix``, then the names, dtypes, shapes and bytes of a state dict's
    tensors (sorted by name): equal iff the weights are bit-identical, whatever file holds
    them. (The checkpoint's own digest prefixes its architecture.)"""
    import hashlib

    h = hashlib.sha256(prefix)
    for name in sorted(state_dict):
        t = state_dict[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()
