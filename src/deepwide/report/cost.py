"""Inference cost of an encoder: parameters, MACs per second of audio, real-time factor.

MACs come from ``torch.utils.flop_counter.FlopCounterMode`` over a fixed set of held-out
utterances, one at a time with no padding (MACs = FLOPs / 2; FLOPs of matmuls,
convolutions and attention as torch counts them). The real-time factor is forward time /
audio duration on the machine that ran it (named in the output: GPU name, or CPU model,
thread count and host name).
"""

from __future__ import annotations

import logging
import platform
import socket
import time

import torch

from deepwide.audio import SAMPLE_RATE
from deepwide.models.cka import read_clip
from deepwide.utils.device import resolve_device
from deepwide.utils.manifest import read_heldout

log = logging.getLogger(__name__)


def machine_label(device: torch.device) -> str:
    host = socket.gethostname()
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} ({host})"
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{cpu}, {torch.get_num_threads()} threads ({host})"


def _extra_formulas() -> dict:
    """Attention kernels torch's flop counter has no formula for (the CPU flash kernel)."""
    from torch.utils.flop_counter import sdpa_flop_count

    def sdpa(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs):
        return sdpa_flop_count(query_shape, key_shape, value_shape)

    ops = {}
    for name in ("_scaled_dot_product_flash_attention_for_cpu",):
        op = getattr(torch.ops.aten, name, None)
        if op is not None:
            ops[op] = sdpa
    return ops


def count_macs(model, wavs: list[torch.Tensor]) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    from deepwide.models.arch import hidden_states

    counter = FlopCounterMode(display=False, custom_mapping=_extra_formulas())
    # no_grad, not inference_mode: under inference_mode the weight-norm parametrisation of the
    # positional conv fails inside FlopCounterMode (torch 2.14)
    with torch.no_grad(), counter:
        for wav in wavs:
            hidden_states(model, wav[None])
    return counter.get_total_flops() // 2


@torch.inference_mode()
def time_forward(model, wavs: list[torch.Tensor], device: torch.device, repeats: int = 1) -> float:
    from deepwide.models.arch import hidden_states

    def run():
        for wav in wavs:
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                hidden_states(model, wav[None].to(device))

    run()  # warm-up (kernels, allocator)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    for _ in range(repeats):
        run()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - t0) / repeats


def measure_cost(upstream: str, checkpoint, manifest, max_utterances: int = 8, max_seconds: float = 10.0,
                 repeats: int = 1, device: str = "auto") -> dict:
    from deepwide.models.checkpoint import load_checkpoint

    dev = torch.device(resolve_device(device))
    model, arch, _ = load_checkpoint(checkpoint)
    utts = read_heldout(manifest, max_utterances, max_seconds)
    wavs = [read_clip(p, max_seconds) for p in utts["path"]]
    seconds = sum(w.numel() for w in wavs) / SAMPLE_RATE
    params = sum(p.numel() for p in model.parameters())
    macs = count_macs(model, wavs)  # on the CPU: counting does not depend on the device
    model = model.to(dev)
    elapsed = time_forward(model, wavs, dev, repeats)
    out = {
        "upstream": upstream, "checkpoint": str(checkpoint), "params": int(params),
        "arch": {k: getattr(arch, k) for k in ("depth", "width", "ffn", "heads")},
        "macs": int(macs), "macs_per_second": macs / seconds, "audio_seconds": seconds,
        "utterances": len(wavs), "forward_seconds": elapsed, "rtf": elapsed / seconds,
        "device": str(dev), "dtype": "bf16-autocast" if dev.type == "cuda" else "fp32",
        "machine": machine_label(dev), "torch": torch.__version__,
    }
    log.info("%s: %.1f M params, %.3f GMACs/s of audio, RTF %.4f on %s", upstream, params / 1e6,
             out["macs_per_second"] / 1e9, out["rtf"], out["machine"])
    return out
