"""The one device choice: ``auto`` means CUDA when this machine has it, else the CPU."""

from __future__ import annotations

import os
import platform


def resolve_device(name: str | None = "auto", setting: str = "--device") -> str:
    """``auto``/None/"" → ``cuda`` or ``cpu``; a CUDA device on a machine without CUDA is an
    error naming ``setting`` (the config key or flag the value came from)."""
    import torch

    from deepwide.errors import DeepwideError

    name = (name or "auto").strip()
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise DeepwideError(f"{setting} is {name!r} but CUDA is not available on this machine")
    if not (name == "cpu" or name.startswith("cuda") or name == "mps"):
        raise DeepwideError(f"{setting} is {name!r}: use auto, cpu, cuda or cuda:N")
    return name


def device_name(device: str) -> str:
    """What a result JSON records as the machine: the card's name, or the CPU and threads."""
    import torch

    if str(device).startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads)"
