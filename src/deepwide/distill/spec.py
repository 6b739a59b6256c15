"""What the planner and the distill runtime both need, torch-free: the KD methods' teacher
layers (:func:`method_pairs`, :func:`layers_for`) and the crop policy (:func:`crop_spec`).

:mod:`deepwide.distill.methods` (heads, loss) and :mod:`deepwide.distill.data` (crops) use
them at run time; :mod:`deepwide.plan` uses them to name the jobs before any runs.
"""

from __future__ import annotations

import math
from typing import Sequence

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


def layers_for(method: str, method_config: dict, student_depths, teacher_depth: int) -> list[int]:
    """Union of the teacher layers ``method`` needs for students of these depths."""
    if method not in METHODS:
        raise DeepwideError(f"unknown KD method {method!r} (known: {', '.join(METHODS)})")
    layers = set()
    for depth in student_depths or [1]:  # pred: the same layers for any depth
        layers.update(t for _, t in method_pairs(method, int(depth), teacher_depth, method_config))
    return sorted(layers)


CROP_POLICIES = ("fixed", "full")


def crop_spec(policy: str = "full", max_seconds: float | None = None, seed: int = 0) -> dict:
    """The crop policy as the JSON dict that job identities and cache.json hold:
    ``{"policy": "full"}`` or ``{"policy": "fixed", "max_seconds": S, "seed": N}``."""
    if policy not in CROP_POLICIES:
        raise DeepwideError(f"crop policy must be one of {', '.join(CROP_POLICIES)}, got {policy!r}")
    if policy == "full":
        return {"policy": "full"}
    if max_seconds is None or not float(max_seconds) > 0:
        raise DeepwideError(f"crop policy fixed needs max_seconds > 0, got {max_seconds!r}")
    return {"policy": "fixed", "max_seconds": float(max_seconds), "seed": int(seed)}
