"""Held-out KD loss per teacher layer: a readout of every student that needs no downstream training.

For each KD target of a student (a teacher layer), the student's prediction (its hidden
states through the KD heads saved beside it, ``kd_heads.pt``) against the frozen teacher's
layer on held-out audio, with the training loss's two terms: L1 and the cosine term
``-log sigmoid(cos)``, and their sum (cos_weight 1), each averaged over valid frames. The
teacher and the student see the same whole utterance, so the readout is the same for
students trained from cached or online targets.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
import torch

from deepwide.errors import DeepwideError

log = logging.getLogger(__name__)
COLUMNS = ["teacher_layer", "student_layer", "target", "l1", "cos_term", "loss", "cos", "frames", "utterances"]


@torch.inference_mode()
def compute_kd_loss(teacher_ckpt, student_ckpt, manifest, max_utterances: int = 16, max_seconds: float = 10.0,
                    device: str = "auto") -> pd.DataFrame:
    """Long table, one row per KD target: teacher_layer, student_layer, l1, cos_term, loss, cos, frames."""
    import torch.nn.functional as F

    from deepwide.distill.methods import KDHeads, kd_loss, target_name
    from deepwide.models.arch import hidden_states, normalize_waveforms
    from deepwide.models.checkpoint import load_checkpoint
    from deepwide.models.cka import read_clip
    from deepwide.utils.device import resolve_device
    from deepwide.utils.manifest import read_heldout

    dev = torch.device(resolve_device(device))
    heads_path = Path(student_ckpt).with_name("kd_heads.pt")
    if not heads_path.is_file():
        raise DeepwideError(f"KD heads not found: {heads_path} (students trained before the heads were saved: rerun distill)")
    h = torch.load(heads_path, map_location="cpu", weights_only=False)
    teacher, tarch, _ = load_checkpoint(teacher_ckpt)
    student, sarch, smeta = load_checkpoint(student_ckpt)
    if tarch.width != h["teacher_width"] or sarch.width != h["student_width"]:
        raise DeepwideError(f"{heads_path}: heads map width {h['student_width']} -> {h['teacher_width']}, "
                            f"the checkpoints are {sarch.width} -> {tarch.width}")
    pairs = [tuple(p) for p in h["pairs"]]
    heads = KDHeads(h["method"], pairs, sarch.width, tarch.width)
    heads.load_state_dict(h["state_dict"])
    teacher, student, heads = teacher.to(dev).eval(), student.to(dev).eval(), heads.to(dev).eval()
    normalize = bool(smeta.get("normalize", False))  # the input the teacher (and so the student) was trained on
    utts = read_heldout(manifest, max_utterances, max_seconds)
    sums = {p: {"l1": 0.0, "cos_term": 0.0, "cos": 0.0, "frames": 0} for p in pairs}
    for path in utts["path"]:
        wav = read_clip(path, max_seconds)[None].to(dev)
        if normalize:
            wav = normalize_waveforms(wav)
        t_states, _ = hidden_states(teacher, wav)
        s_states, _ = hidden_states(student, wav)
        preds = heads(s_states)
        for p, pred in zip(pairs, preds):
            tgt = t_states[p[1]]
            n = min(pred.shape[1], tgt.shape[1])
            pred, tgt = pred[:, :n].float(), tgt[:, :n].float()
            mask = torch.ones(1, n, dtype=torch.bool, device=dev)
            _, l1, cos_term = kd_loss(pred, tgt, mask)
            acc = sums[p]
            acc["l1"] += float(l1) * n
            acc["cos_term"] += float(cos_term) * n
            acc["cos"] += float(F.cosine_similarity(pred, tgt, dim=-1).mean()) * n
            acc["frames"] += n
    rows = []
    for p, acc in sums.items():
        n = max(acc["frames"], 1)
        l1, ct = acc["l1"] / n, acc["cos_term"] / n
        rows.append({"teacher_layer": p[1], "student_layer": p[0], "target": target_name(h["method"], p),
                     "l1": l1, "cos_term": ct, "loss": l1 + ct, "cos": acc["cos"] / n, "frames": acc["frames"],
                     "utterances": len(utts)})
    log.info("held-out KD loss of %s over %d utterances: %s", student_ckpt, len(utts),
             ", ".join(f"{r['target']} {r['loss']:.3f}" for r in rows))
    return pd.DataFrame(rows, columns=COLUMNS)
