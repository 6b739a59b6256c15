"""KD methods: which teacher layers each student output regresses, the heads, the loss.

- ``pred`` (DistilHuBERT, Chang et al. 2022): separate prediction heads
  (Linear, GELU, Linear) on the *last* student layer, one per target teacher layer;
  layers 4, 8, 12 of a 12-layer teacher, evenly spaced for another depth.
- ``l2l`` (layer-to-layer): student layer k regresses teacher layer round(k * T / L)
  through its own Linear(student width -> teacher width). ``student_layers`` keeps a
  sparse subset; ``pairs`` gives the mapping explicitly.

Loss per target: L1 + cos_weight * (-log sigmoid(cos(pred, target))), averaged over
*valid* frames only (DistilHuBERT's reference code averaged over padding too). The total is
the *mean* over targets (:func:`kd_total`), as s3prl's distiller and DPHuBERT average it:
a sum would scale the loss, and so the effective learning rate, with the number of targets,
giving dense L2L on a deep student a larger step than pred KD's three heads.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from deepwide.errors import DeepwideError

METHODS = ("pred", "l2l")


def round_half_up(x: float) -> int:
    return int(math.floor(x + 0.5))


def pred_layers(teacher_depth: int, num_targets: int = 3, layers: Sequence[int] | None = None) -> list[int]:
    """Target teacher layers of the prediction heads (4, 8, 12 for a 12-layer teacher)."""
    if layers:
        out = [int(k) for k in layers]
    else:
        if num_targets < 1:
            raise DeepwideError(f"distill.pred.num_targets must be >= 1, got {num_targets}")
        out = sorted({max(1, round_half_up(teacher_depth * (i + 1) / num_targets)) for i in range(num_targets)})
    bad = [k for k in out if not 0 <= k <= teacher_depth]
    if bad:
        raise DeepwideError(f"distill.pred.layers {bad}: the teacher has layers 0..{teacher_depth}")
    return out


def l2l_pairs(
    student_depth: int,
    teacher_depth: int,
    student_layers: Sequence[int] | None = None,
    pairs: Sequence[Sequence[int]] | None = None,
) -> list[tuple[int, int]]:
    """(student layer, teacher layer) pairs; student layer k -> teacher round(k*T/L)."""
    if pairs:
        out = [(int(a), int(b)) for a, b in pairs]
    else:
        ks = [int(k) for k in student_layers] if student_layers else list(range(1, student_depth + 1))
        out = [(k, round_half_up(k * teacher_depth / student_depth)) for k in ks]
    for k, t in out:
        if not 1 <= k <= student_depth:
            raise DeepwideError(f"distill.l2l: student layer {k} out of range 1..{student_depth}")
        if not 0 <= t <= teacher_depth:
            raise DeepwideError(f"distill.l2l: teacher layer {t} out of range 0..{teacher_depth}")
    if not out:
        raise DeepwideError("distill.l2l: empty layer mapping")
    return out


def method_pairs(method: str, student_depth: int, teacher_depth: int, cfg: dict) -> list[tuple[int, int]]:
    """(student layer, teacher layer) per target for ``method`` with its config section."""
    if method == "pred":
        layers = pred_layers(teacher_depth, cfg.get("num_targets", 3), cfg.get("layers"))
        return [(student_depth, t) for t in layers]
    if method == "l2l":
        return l2l_pairs(student_depth, teacher_depth, cfg.get("student_layers"), cfg.get("pairs"))
    raise DeepwideError(f"unknown KD method {method!r} (known: {', '.join(METHODS)})")


def target_name(method: str, pair: tuple[int, int]) -> str:
    return f"t{pair[1]}" if method == "pred" else f"s{pair[0]}t{pair[1]}"


class KDHeads(nn.Module):
    """Maps the student's hidden states to one prediction per target.

    ``forward(states)`` takes the L+1 student states (index 0 = input of layer 1) and
    returns a list of ``(batch, frames, teacher_width)`` tensors in ``pairs`` order.
    """

    def __init__(self, method: str, pairs: list[tuple[int, int]], student_width: int, teacher_width: int):
        super().__init__()
        self.method = method
        self.pairs = [tuple(p) for p in pairs]
        if method == "pred":
            self.heads = nn.ModuleList(
                nn.Sequential(nn.Linear(student_width, student_width), nn.GELU(), nn.Linear(student_width, teacher_width))
                for _ in pairs
            )
        elif method == "l2l":
            self.heads = nn.ModuleList(nn.Linear(student_width, teacher_width) for _ in pairs)
        else:
            raise DeepwideError(f"unknown KD method {method!r} (known: {', '.join(METHODS)})")

    def forward(self, states: list[Tensor]) -> list[Tensor]:
        return [head(states[k]) for head, (k, _) in zip(self.heads, self.pairs)]


def kd_loss(pred: Tensor, target: Tensor, mask: Tensor, cos_weight: float = 1.0) -> tuple[Tensor, Tensor, Tensor]:
    """(loss, l1, cos term) of one target over valid frames.

    ``pred``, ``target``: (B, F, D); ``mask``: (B, F) bool, True on valid frames.
    Computed in float32 whatever the autocast dtype.
    """
    pred = pred.float()
    target = target.float()
    m = mask.to(pred.dtype)
    n = m.sum().clamp(min=1.0)
    l1 = ((pred - target).abs().mean(-1) * m).sum() / n
    cos = F.cosine_similarity(pred, target, dim=-1)
    cos_term = (-F.logsigmoid(cos) * m).sum() / n
    return l1 + cos_weight * cos_term, l1, cos_term


def kd_total(losses: Sequence[Tensor]) -> Tensor:
    """The KD objective of one batch: the mean of the per-target losses (not their sum)."""
    if not losses:
        raise DeepwideError("KD loss: no targets")
    return torch.stack([torch.as_tensor(x) for x in losses]).mean()
