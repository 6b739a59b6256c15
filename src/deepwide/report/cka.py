"""The report stage's CKA table: linear CKA of every student layer vs every teacher layer on
held-out audio (the computation: :mod:`deepwide.models.cka`)."""

from __future__ import annotations

import logging

import pandas as pd
import torch

from deepwide.errors import DeepwideError
from deepwide.models.cka import cka_matrix, frame_subset, layer_frames, read_clip
from deepwide.utils.device import resolve_device
from deepwide.utils.manifest import read_heldout

log = logging.getLogger(__name__)


def compute_cka(teacher_ckpt, student_ckpt, manifest, max_utterances=16, max_seconds=10.0,
                max_frames=8000, seed=0, device="auto") -> pd.DataFrame:
    """Long table: student_layer, teacher_layer, cka (+ frames used)."""
    from deepwide.models.checkpoint import load_checkpoint

    dev = torch.device(resolve_device(device))
    utts = read_heldout(manifest, max_utterances, max_seconds)
    teacher, tarch, _ = load_checkpoint(teacher_ckpt)
    student, sarch, _ = load_checkpoint(student_ckpt)
    if tarch.downsample_rate != sarch.downsample_rate:
        raise DeepwideError(
            f"CKA needs the same frame rate: teacher {teacher_ckpt} downsamples by {tarch.downsample_rate}, "
            f"student {student_ckpt} by {sarch.downsample_rate}"
        )
    wavs = [read_clip(p, max_seconds) for p in utts["path"]]
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
    idx = frame_subset(n, max_frames, seed)  # the same frames on both sides
    if idx is not None:
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
