"""``python -m deepwide arch count|solve ...`` and ``python -m deepwide export hf ...``

``arch count`` prints the exact parameter count of one shape (distillation heads
excluded); ``arch solve`` prints, per depth, the shape closest to a parameter budget;
``export hf`` writes a checkpoint as a transformers HubertModel directory.
"""

from __future__ import annotations

import argparse
import json

from deepwide.models.arch import HUBERT_CONV, ArchConfig, conv_layers
from deepwide.utils.cli import add_command, command_group


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one integer")
    return values


def _conv_spec(text: str) -> list[tuple[int, int, int]]:
    """``512x10x5,512x3x2,...`` (channels x kernel x stride per layer)."""
    layers = []
    for item in text.replace(" ", "").split(","):
        parts = item.lower().split("x")
        if len(parts) != 3 or not all(p.isdigit() for p in parts):
            raise argparse.ArgumentTypeError(f"conv layer {item!r}: expected CHANNELSxKERNELxSTRIDE, e.g. 512x10x5")
        layers.append(tuple(int(p) for p in parts))
    return layers


def _add_frontend_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("front end and positional conv (default: HuBERT Base)")
    g.add_argument("--conv-channels", type=int, default=None,
                   help="channels of every conv layer, HuBERT kernels/strides (default 512)")
    g.add_argument("--conv", type=_conv_spec, default=None,
                   help="full conv front end, e.g. 512x10x5,512x3x2,... (overrides --conv-channels)")
    g.add_argument("--conv-bias", action="store_true", help="conv layers have biases")
    g.add_argument("--extractor-mode", choices=["group_norm", "layer_norm"], default="group_norm")
    g.add_argument("--pos-conv-kernel", type=int, default=128)
    g.add_argument("--pos-conv-groups", type=int, default=16)
    g.add_argument("--layer-norm-first", action="store_true", help="pre-LN layers (HuBERT Large)")


def _frontend_fields(args) -> dict:
    if args.conv is not None:
        conv = args.conv
    elif args.conv_channels is not None:
        conv = conv_layers(args.conv_channels)
    else:
        conv = list(HUBERT_CONV)
    return {
        "conv": conv,
        "conv_bias": args.conv_bias,
        "extractor_mode": args.extractor_mode,
        "pos_conv_kernel": args.pos_conv_kernel,
        "pos_conv_groups": args.pos_conv_groups,
        "layer_norm_first": args.layer_norm_first,
    }


def cmd_count(args) -> int:
    from deepwide.models.solver import count_breakdown, pick_heads

    ffn = args.ffn if args.ffn is not None else 4 * args.width
    heads = args.heads if args.heads is not None else pick_heads(args.width)
    arch = ArchConfig(depth=args.depth, width=args.width, ffn=ffn, heads=heads, **_frontend_fields(args))
    parts = count_breakdown(arch)
    if args.json:
        print(json.dumps({"name": arch.name, **parts, "params_m": round(parts["total"] / 1e6, 2), "arch": arch.to_dict()}, indent=2))
    else:
        print(f"{parts['total']} ({parts['total'] / 1e6:.2f} M) {arch.name}")
    return 0


def cmd_solve(args) -> int:
    from deepwide.models.solver import count_params, describe, parse_budget, solve

    budget = parse_budget(args.budget)
    shapes = solve(
        budget,
        args.depths,
        width_step=args.width_step,
        min_width=args.min_width,
        max_width=args.max_width,
        ffn_ratio=args.ffn_ratio,
        tune_ffn=args.tune_ffn,
        ffn_step=args.ffn_step,
        heads=args.heads,
        head_dim=args.head_dim,
        max_rel_error=args.max_error if args.max_error >= 0 else None,
        **_frontend_fields(args),
    )
    if args.json:
        print(json.dumps([describe(a, budget) for a in shapes], indent=2))
        return 0
    print(f"budget {budget:,} parameters ({budget / 1e6:.2f} M)")
    print(f"{'depth':>5} {'width':>6} {'ffn':>6} {'heads':>5} {'params':>12} {'M':>7} {'error':>8}  name")
    for a in shapes:
        n = count_params(a)
        print(f"{a.depth:>5} {a.width:>6} {a.ffn:>6} {a.heads:>5} {n:>12,} {n / 1e6:>7.2f} {(n - budget) / budget:>+8.2%}  {a.name}")
    return 0


def cmd_export_hf(args) -> int:
    from deepwide.models.convert import export_hf

    export_hf(args.checkpoint, args.outdir, force=args.force)
    print(args.outdir)
    return 0


def register(sub) -> None:
    cmds = command_group(sub, "arch", "parameter counts and the constant-budget architecture solver")

    c = add_command(cmds, "count", cmd_count, help="exact parameter count of one shape (no distillation heads)")
    c.add_argument("--depth", type=int, required=True, help="transformer layers")
    c.add_argument("--width", type=int, required=True, help="model dimension")
    c.add_argument("--ffn", type=int, default=None, help="FFN hidden units (default 4 x width)")
    c.add_argument("--heads", type=int, default=None, help="attention heads (default: head size near 64)")
    c.add_argument("--json", action="store_true", help="print a JSON breakdown")
    _add_frontend_args(c)

    s = add_command(cmds, "solve", cmd_solve, help="per depth, the shape closest to a parameter budget")
    s.add_argument("--budget", required=True, help="parameter budget, e.g. 26.87M, 900k, 1.2e6")
    s.add_argument("--depths", type=_int_list, required=True, help="comma-separated depths, e.g. 2,3,4,6,8,12")
    s.add_argument("--width-step", type=int, default=64, help="widths are multiples of this (default 64)")
    s.add_argument("--min-width", type=int, default=None)
    s.add_argument("--max-width", type=int, default=4096)
    s.add_argument("--ffn-ratio", type=float, default=4.0, help="FFN = ratio x width (default 4)")
    s.add_argument("--tune-ffn", action="store_true", help="tune the FFN size to hit the budget")
    s.add_argument("--ffn-step", type=int, default=8, help="tuned FFN sizes are multiples of this")
    s.add_argument("--heads", type=int, default=None, help="fixed head count (widths it does not divide are skipped)")
    s.add_argument("--head-dim", type=int, default=64, help="target head size when --heads is not given")
    s.add_argument("--max-error", type=float, default=0.25,
                   help="fail when a depth's best shape is further than this relative error from the budget (negative: never)")
    s.add_argument("--json", action="store_true", help="print JSON (one object per depth)")
    _add_frontend_args(s)

    ecmds = command_group(sub, "export", "export a checkpoint for use outside deepwide")
    h = add_command(ecmds, "hf", cmd_export_hf, help="transformers HubertModel directory (config.json, model.safetensors, preprocessor_config.json)")
    h.add_argument("checkpoint", help="deepwide checkpoint (.pt)")
    h.add_argument("outdir", help="output directory (written atomically); an existing non-empty one is refused")
    h.add_argument("--force", action="store_true",
                   help="write into an existing non-empty folder, replacing only the files the export writes")

