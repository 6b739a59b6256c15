"""Exact parameter counts and the constant-budget architecture solver.

``count_params`` is a closed-form count of :func:`deepwide.models.arch.build_model`
(torchaudio ``Wav2Vec2Model``, no auxiliary head): it needs no model, so shapes of any
size are counted instantly, and a test checks it against ``sum(p.numel())``. Counts
exclude distillation and pretraining heads, as the published student sizes do::

    HuBERT Base (torchaudio hubert_base)      12 x 768 / 3072   94,370,944
    DistilHuBERT                               2 x 768 / 3072   23,492,224
    3-L One (Ashihara et al. 2022)             3 x 768 / 3072   30,580,096
    12-L Half (Ashihara et al. 2022)          12 x 384 / 1536   26,872,960

``solve`` returns, per depth, the shape whose count is closest to a budget: width on a
grid, heads dividing width, FFN a fixed multiple of width or tuned to hit the budget.
"""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING, Any, Iterable

from deepwide.errors import DeepwideError
from deepwide.models.arch import ArchConfig, conv_layers, hubert_base

if TYPE_CHECKING:
    import torch


def count_breakdown(arch: ArchConfig) -> dict[str, int]:
    """Parameter count of every part of the encoder (``total`` is their sum)."""
    w, f, k, g = arch.width, arch.ffn, arch.pos_conv_kernel, arch.pos_conv_groups
    frontend = 0
    c_in = 1
    for i, (c_out, kernel, _stride) in enumerate(arch.conv):
        frontend += c_in * c_out * kernel + (c_out if arch.conv_bias else 0)
        if arch.extractor_mode == "layer_norm" or i == 0:
            frontend += 2 * c_out  # GroupNorm(c, c) on the first layer, or LayerNorm per layer
        c_in = c_out
    projection = 2 * c_in + c_in * w + w  # LayerNorm over conv channels + Linear
    # grouped conv (weight + bias) under weight norm over dim 2: one gain per kernel tap
    pos_conv = w * (w // g) * k + w + k
    encoder_norm = 2 * w
    attention = 4 * (w * w + w)
    feed_forward = w * f + f + f * w + w
    layer = attention + feed_forward + 2 * (2 * w)  # two LayerNorms per layer
    parts = {
        "frontend": frontend,
        "projection": projection,
        "pos_conv": pos_conv,
        "encoder_norm": encoder_norm,
        "layers": arch.depth * layer,
        "per_layer": layer,
    }
    parts["total"] = frontend + projection + pos_conv + encoder_norm + arch.depth * layer
    return parts


def count_params(arch: ArchConfig) -> int:
    """Exact number of parameters of ``build_model(arch)``."""
    return count_breakdown(arch)["total"]


def model_params(model: torch.nn.Module, arch: ArchConfig | None = None) -> int:
    """Parameters of ``model``; with ``arch``, checked against the analytic :func:`count_params`."""
    n = sum(p.numel() for p in model.parameters())
    if arch is not None and count_params(arch) != n:
        raise DeepwideError(f"parameter count of {arch.name}: solver says {count_params(arch)}, model has {n}")
    return n


def parse_budget(value: str | int | float) -> int:
    """``"26.87M"``, ``"900k"``, ``"1.2e6"`` or a number -> parameter count."""
    if isinstance(value, (int, float)):
        n = float(value)
    else:
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([kKmMgGbB]?)\s*", str(value))
        if not m:
            raise DeepwideError(f"parameter budget {value!r}: expected a number like 26.87M, 900k or 1.2e6")
        scale = {"": 1, "k": 1e3, "m": 1e6, "g": 1e9, "b": 1e9}[m.group(2).lower()]
        n = float(m.group(1)) * scale
    if not n > 0:
        raise DeepwideError(f"parameter budget must be positive, got {value!r}")
    return int(round(n))


def pick_heads(width: int, head_dim: int = 64, heads: int | None = None) -> int | None:
    """Heads for ``width``: ``heads`` if it divides width (else None), otherwise the
    divisor of width whose head size is closest to ``head_dim`` (ties: more heads)."""
    if heads is not None:
        return heads if width % heads == 0 else None
    divisors = [h for h in range(1, width + 1) if width % h == 0]
    return min(divisors, key=lambda h: (abs(width / h - head_dim), -h))


_TEMPLATE_FIELDS = {
    "conv", "conv_bias", "extractor_mode", "pos_conv_kernel", "pos_conv_groups",
    "layer_norm_first", "dropout", "attention_dropout", "activation_dropout",
    "projection_dropout", "layer_drop",
}


def solve(
    budget: int | float | str,
    depths: Iterable[int],
    *,
    width_step: int = 64,
    min_width: int | None = None,
    max_width: int = 4096,
    ffn_ratio: float = 4.0,
    tune_ffn: bool = False,
    ffn_step: int = 8,
    heads: int | None = None,
    head_dim: int = 64,
    max_rel_error: float | None = 0.25,
    template: ArchConfig | None = None,
    **arch_fields: Any,
) -> list[ArchConfig]:
    """Per depth, the shape closest to ``budget`` parameters (same order as ``depths``).

    Widths are multiples of ``width_step`` in ``[min_width, max_width]`` that
    ``pos_conv_groups`` divides; heads are ``heads`` (widths it does not divide are
    skipped) or chosen by :func:`pick_heads` around ``head_dim``.
    Without ``tune_ffn`` FFN = round(``ffn_ratio`` x width) and the width with the
    smallest |count - budget| wins (ties: the narrower). With ``tune_ffn`` every width
    gets the FFN (multiple of ``ffn_step``) that brings it closest to the budget, and the
    width whose FFN/width is closest to ``ffn_ratio`` (log scale) wins, so the FFN only
    absorbs the rounding of the width grid.
    A depth whose best shape misses the budget by more than ``max_rel_error`` (relative;
    None: never) raises DeepwideError: the budget is out of the grid's reach.
    Front end, positional conv and the other fixed fields come from ``template`` (an
    ArchConfig) and/or keyword arguments (``conv`` or ``conv_channels`` (HuBERT kernels and
    strides), ``pos_conv_kernel``, ...).
    """
    target = parse_budget(budget)
    unknown = sorted(set(arch_fields) - _TEMPLATE_FIELDS - {"conv_channels"})
    if unknown:
        raise DeepwideError(f"solver: unknown constraint(s) {', '.join(unknown)}")
    depths = [int(d) for d in depths]
    if not depths or any(d < 1 for d in depths):
        raise DeepwideError(f"solver: depths must be positive integers, got {depths}")
    for name, value in (("width_step", width_step), ("max_width", max_width), ("ffn_step", ffn_step), ("head_dim", head_dim)):
        if int(value) < 1:
            raise DeepwideError(f"solver: {name} must be >= 1, got {value}")
    if not ffn_ratio > 0:
        raise DeepwideError(f"solver: ffn_ratio must be > 0, got {ffn_ratio}")
    if heads is not None and heads < 1:
        raise DeepwideError(f"solver: heads must be >= 1, got {heads}")
    base = template or hubert_base()
    fixed = {k: getattr(base, k) for k in _TEMPLATE_FIELDS}
    channels = arch_fields.pop("conv_channels", None)
    if channels is not None:
        fixed["conv"] = conv_layers(int(channels))
    fixed.update(arch_fields)
    groups = int(fixed["pos_conv_groups"])
    lo = max(width_step, min_width or width_step)
    widths = [w for w in range(math.ceil(lo / width_step) * width_step, max_width + 1, width_step) if w % groups == 0]
    shapes = []
    for depth in depths:
        best = None
        for width in widths:
            h = pick_heads(width, head_dim, heads)
            if h is None:
                continue
            if tune_ffn:
                ffn = _tuned_ffn(target, depth, width, h, fixed, ffn_step)
                if ffn is None:
                    continue
                arch = ArchConfig(depth=depth, width=width, ffn=ffn, heads=h, **fixed)
                key = (abs(math.log(ffn / width / ffn_ratio)), abs(count_params(arch) - target), width)
            else:
                arch = ArchConfig(depth=depth, width=width, ffn=max(1, round(ffn_ratio * width)), heads=h, **fixed)
                key = (abs(count_params(arch) - target), width)
            if best is None or key < best[0]:
                best = (key, arch)
        if best is None:
            raise DeepwideError(
                f"solver: no shape of depth {depth} fits a budget of {target:,} parameters "
                f"(widths {lo}-{max_width} step {width_step}, heads={heads}, tune_ffn={tune_ffn}); "
                "the front end alone may exceed it, or the grid excludes every width"
            )
        err = (count_params(best[1]) - target) / target
        if max_rel_error is not None and abs(err) > max_rel_error:
            raise DeepwideError(
                f"solver: at depth {depth} the closest shape {best[1].name} has {count_params(best[1]):,} "
                f"parameters, {err:+.1%} off the budget of {target:,} (limit {max_rel_error:.0%}); "
                "change the budget, the width grid or the front end"
            )
        shapes.append(best[1])
    return shapes


def _tuned_ffn(target: int, depth: int, width: int, heads: int, fixed: dict, step: int) -> int | None:
    """FFN size (multiple of ``step``, >= step) bringing the count closest to target."""
    zero = count_params(ArchConfig(depth=depth, width=width, ffn=1, heads=heads, **fixed)) - depth * (2 * width + 1)
    per_unit = depth * (2 * width + 1)  # each FFN unit: one row of fc1, its bias, one column of fc2
    ffn = round((target - zero) / per_unit / step) * step
    if ffn < step:
        return None
    return ffn


def describe(arch: ArchConfig, budget: int | None = None) -> dict[str, Any]:
    """JSON-ready summary of one solved shape."""
    n = count_params(arch)
    out = {
        "depth": arch.depth,
        "width": arch.width,
        "ffn": arch.ffn,
        "heads": arch.heads,
        "name": arch.name,
        "params": n,
        "params_m": round(n / 1e6, 2),
    }
    if budget is not None:
        out["budget"] = budget
        out["rel_error"] = round((n - budget) / budget, 6)
    out["arch"] = arch.to_dict()
    return out

