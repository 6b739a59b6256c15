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

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from deepwide.distill.spec import METHODS, l2l_pairs, method_pairs, pred_layers, round_half_up, target_name  # noqa: F401 (this module's API too)
from deepwide.errors import DeepwideError

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
