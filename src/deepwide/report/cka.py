"""Linear CKA between every student layer and every teacher layer on held-out audio.

Linear CKA (Kornblith et al., 2019) of two representations of the same n frames,
``X (n, d1)`` and ``Y (n, d2)``, column-centred::

    CKA(X, Y) = ||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F)

It is 1 for X = Y, invariant to orthogonal transforms and isotropic scaling of either side,
and needs no common width, so a 192-d student layer compares with a 768-d teacher layer.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from deepwide.errors import DeepwideError

log = logging.getLogger(__name__)


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


def read_heldout(manifest: str | Path, max_utterances: int, max_seconds: float) -> pd.DataFrame:
    """The first ``max_utterances`` utterances of a manifest by id (a fixed, reproducible set)."""
    manifest = Path(manifest)
    if not manifest.is_file():
        raise DeepwideError(f"held-out manifest not found: {manifest}")
    df = pd.read_parquet(manifest)
    for col in ("id", "path"):
        if col not in df:
            raise DeepwideError(f"{manifest}: missing column {col!r}")
    if df.empty:
        raise DeepwideError(f"{manifest}: no utterances")
    df = df.sort_values("id").head(max_utterances).reset_index(drop=True)
    df.attrs["max_seconds"] = max_seconds
    return df


def load_audio(path: str, max_seconds: float | None = None, sample_rate: int = 16000) -> torch.Tensor:
    import soundfile as sf

    try:
        wav, sr = sf.read(path, dtype="float32", always_2d=True)
    except Exception as err:
        raise DeepwideError(f"cannot read audio {path}: {err}") from err
    if sr != sample_rate:
        raise DeepwideError(f"{path}: sample rate {sr}, expected {sample_rate}")
    wav = torch.from_numpy(wav.mean(1))
    if max_seconds:
        wav = wav[: int(max_seconds * sample_rate)]
    return wav


def device_auto(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


@torch.inference_mode()
def layer_frames(model, wavs: list[torch.Tensor], device) -> list[list[torch.Tensor]]:
    """Per utterance, the L+1 hidden states ``(frames, width)`` in float32 on the CPU."""
    from deepwide.models.arch import hidden_states

    out = []
    for wav in wavs:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            states, _ = hidden_states(model, wav[None].to(device))
        out.append([s[0].float().cpu() for s in states])
    return out


def compute_cka(teacher_ckpt, student_ckpt, manifest, max_utterances=16, max_seconds=10.0,
                max_frames=8000, seed=0, device="auto") -> pd.DataFrame:
    """Long table: student_layer, teacher_layer, cka (+ frames used)."""
    from deepwide.models.checkpoint import load_checkpoint

    dev = device_auto(device)
    utts = read_heldout(manifest, max_utterances, max_seconds)
    teacher, tarch, _ = load_checkpoint(teacher_ckpt)
    student, sarch, _ = load_checkpoint(student_ckpt)
    if tarch.downsample_rate != sarch.downsample_rate:
        raise DeepwideError(
            f"CKA needs the same frame rate: teacher {teacher_ckpt} downsamples by {tarch.downsample_rate}, "
            f"student {student_ckpt} by {sarch.downsample_rate}"
        )
    wavs = [load_audio(p, max_seconds) for p in utts["path"]]
    t_states = layer_frames(teacher.to(dev), wavs, dev)
    s_states = layer_frames(student.to(dev), wavs, dev)
    # same frames on both sides (a frame may differ by one at the edge)
    ts, ss = [[] for _ in t_states[0]], [[] for _ in s_states[0]]
    for t_u, s_u in zip(t_states, s_states):
        n = min(t_u[0].shape[0], s_u[0].shape[0])
        for k, s in enumerate(t_u):
            ts[k].append(s[:n])
        for k, s in enumerate(s_u):
            ss[k].append(s[:n])
    ts = [torch.cat(x) for x in ts]
    ss = [torch.cat(x) for x in ss]
    n = ts[0].shape[0]
    if n < 2:
        raise DeepwideError(f"CKA: only {n} frame(s) of held-out audio in {manifest}")
    if n > max_frames:  # a fixed random subset of frames, the same on both sides
        idx = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:max_frames]
        ts, ss = [x[idx] for x in ts], [x[idx] for x in ss]
    on = dev if dev.type == "cuda" else torch.device("cpu")
    m = cka_matrix([x.to(on) for x in ss], [x.to(on) for x in ts])
    log.info("CKA over %d frames of %d utterances: %d student x %d teacher layers", min(n, max_frames), len(utts), *m.shape)
    rows = [{"student_layer": i, "teacher_layer": j, "cka": float(m[i, j])}
            for i in range(m.shape[0]) for j in range(m.shape[1])]
    df = pd.DataFrame(rows)
    df["frames"] = min(n, max_frames)
    df["utterances"] = len(utts)
    return df


def first_last_cka(model, paths: list[str], max_seconds: float = 10.0, max_frames: int = 8000, seed: int = 0,
                   device: str = "auto") -> float:
    """Linear CKA between the first and the last transformer layer of ``model`` over the
    frames of ``paths`` (a fixed random subset of at most ``max_frames``). Near 1: the layers
    carry the same information, no hierarchy for a deeper student to exploit."""
    dev = device_auto(device)
    wavs = [load_audio(p, max_seconds) for p in paths]
    states = layer_frames(model.to(dev).eval(), wavs, dev)
    if len(states[0]) < 3:
        raise DeepwideError("first-vs-last-layer CKA needs a model with at least 2 transformer layers")
    first = torch.cat([u[1] for u in states])
    last = torch.cat([u[-1] for u in states])
    n = first.shape[0]
    if n < 2:
        raise DeepwideError(f"first-vs-last-layer CKA: only {n} frame(s) of audio")
    if n > max_frames:
        idx = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:max_frames]
        first, last = first[idx], last[idx]
    return linear_cka(first, last)
