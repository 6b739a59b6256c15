"""Linear CKA between layers of encoders, on the frames of held-out audio.

Linear CKA (Kornblith et al., 2019) of two representations of the same n frames,
``X (n, d1)`` and ``Y (n, d2)``, column-centred::

    CKA(X, Y) = ||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F)

It is 1 for X = Y, invariant to orthogonal transforms and isotropic scaling of either side,
and needs no common width, so a 192-d student layer compares with a 768-d teacher layer.

The teacher's pretraining (first-vs-last-layer CKA, :func:`first_last_cka`) and the report
stage (every student layer vs every teacher layer, ``deepwide.report.cka``) use it.
"""

from __future__ import annotations

import numpy as np
import torch

from deepwide.audio import SAMPLE_RATE, read_audio
from deepwide.errors import DeepwideError
from deepwide.utils.device import resolve_device


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Linear CKA of ``x (n, d1)`` and ``y (n, d2)`` (rows are the same n examples)."""
    if x.ndim != 2 or y.ndim != 2 or x.shape[0] != y.shape[0]:
        raise DeepwideError(f"linear CKA needs (n, d) matrices with the same n, got {tuple(x.shape)} and {tuple(y.shape)}")
    x = x.double() - x.double().mean(0, keepdim=True)
    y = y.double() - y.double().mean(0, keepdim=True)
    cross = (y.T @ x).square().sum()
    norm = torch.linalg.matrix_norm(x.T @ x) * torch.linalg.matrix_norm(y.T @ y)
    if norm <= 0:
        return float("nan")  # a constant representation: CKA undefined
    return float(cross / norm)


def cka_matrix(student: list[torch.Tensor], teacher: list[torch.Tensor]) -> np.ndarray:
    """(student layers, teacher layers) CKA; Gram norms computed once per layer."""
    def prep(states):
        out = []
        for s in states:
            s = s.double()
            s = s - s.mean(0, keepdim=True)
            out.append((s, torch.linalg.matrix_norm(s.T @ s)))
        return out

    ps, pt = prep(student), prep(teacher)
    m = np.full((len(ps), len(pt)), np.nan)
    for i, (xs, ns) in enumerate(ps):
        for j, (xt, nt) in enumerate(pt):
            if ns > 0 and nt > 0:
                m[i, j] = float((xt.T @ xs).square().sum() / (ns * nt))
    return m


def read_clip(path: str, max_seconds: float | None = None) -> torch.Tensor:
    """The first ``max_seconds`` (None: all) of an utterance as a float32 tensor."""
    stop = int(max_seconds * SAMPLE_RATE) if max_seconds else None
    return torch.from_numpy(read_audio(path, 0, stop, what="the held-out audio"))


@torch.inference_mode()
def layer_frames(model, wavs: list[torch.Tensor], device: torch.device) -> list[list[torch.Tensor]]:
    """Per utterance, the L+1 hidden states ``(frames, width)`` in float32 on the CPU."""
    from deepwide.models.arch import hidden_states

    out = []
    for wav in wavs:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            states, _ = hidden_states(model, wav[None].to(device))
        out.append([s[0].float().cpu() for s in states])
    return out


def frame_subset(n: int, max_frames: int, seed: int) -> torch.Tensor | None:
    """A fixed random subset of ``max_frames`` of ``n`` frames (None: keep all)."""
    if n <= max_frames:
        return None
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:max_frames]


def first_last_cka(model, paths: list[str], max_seconds: float = 10.0, max_frames: int = 8000, seed: int = 0,
                   device: str = "auto") -> float:
    """Linear CKA between the first and the last transformer layer of ``model`` over the
    frames of ``paths`` (a fixed random subset of at most ``max_frames``). Near 1: the layers
    carry the same information, no hierarchy for a deeper student to exploit."""
    dev = torch.device(resolve_device(device))
    wavs = [read_clip(p, max_seconds) for p in paths]
    states = layer_frames(model.to(dev).eval(), wavs, dev)
    if len(states[0]) < 3:
        raise DeepwideError("first-vs-last-layer CKA needs a model with at least 2 transformer layers")
    first = torch.cat([u[1] for u in states])
    last = torch.cat([u[-1] for u in states])
    n = first.shape[0]
    if n < 2:
        raise DeepwideError(f"first-vs-last-layer CKA: only {n} frame(s) of audio")
    idx = frame_subset(n, max_frames, seed)
    if idx is not None:
        first, last = first[idx], last[idx]
    return linear_cka(first, last)
