"""``python -m deepwide teacher {pretrain,import} ...``

``pretrain`` trains the embedded default's tiny HuBERT (see :mod:`deepwide.teacher.pretrain`);
``import`` converts a HuBERT checkpoint from transformers, fairseq or s3prl into the
deepwide checkpoint format (conversion code: ``deepwide.models.convert``).
"""

from __future__ import annotations

import logging
from pathlib import Path

from deepwide.errors import DeepwideError

log = logging.getLogger(__name__)

IMPORT_FORMATS = ("hf", "fairseq", "s3prl-hubert")


def register(sub):
    p = sub.add_parser("teacher", help="pretrain a tiny HuBERT teacher or import a real one")
    cmds = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    pt = cmds.add_parser("pretrain", help="HuBERT masked-prediction pretraining on a manifest")
    pt.add_argument("--manifest", required=True, help="training manifest (Parquet: id, path, num_samples, ...)")
    pt.add_argument("--valid-manifest", help="held-out manifest; without it a fraction of --manifest is held out")
    pt.add_argument("--config-json", default="{}", help="teacher.pretrain config slice as JSON (defaults filled)")
    pt.add_argument("--exec-json", help="execution settings merged into the config (threads, train.log_every, train.eval_every, train.checkpoint_every)")
    pt.add_argument("--out", required=True, help="teacher checkpoint to write (deepwide format)")
    pt.add_argument("--info", help="info.json to write (default: beside --out)")
    pt.add_argument("--curve", help="training curve Parquet to write (default: curve.parquet beside --out)")
    pt.add_argument("--workdir", required=True, help="resume state and pseudo-labels (kept across restarts)")
    pt.add_argument("--threads", type=int, default=0, help="torch CPU threads when teacher.pretrain.threads is 0 (a pinned config count wins: it sets the weights' reduction order); 0: all usable CPUs")
    pt.add_argument("--stop-at-step", type=int, help="save resume state and stop at this global step (no outputs)")
    pt.add_argument("--no-progress", action="store_true", help="no progress bar")
    pt.set_defaults(func=cmd_pretrain)

    im = cmds.add_parser("import", help="convert a HuBERT checkpoint (hf, fairseq, s3prl-hubert)")
    im.add_argument("src", help="checkpoint file or transformers model directory")
    im.add_argument("--format", required=True, choices=IMPORT_FORMATS, help="format of SRC")
    im.add_argument("--out", required=True, help="deepwide checkpoint to write")
    im.set_defaults(func=cmd_import)


def _parse_config_json(text: str) -> dict:
    from deepwide.utils.io import json_object_arg

    return json_object_arg(text, "--config-json")  # the teacher.pretrain section


def cmd_pretrain(args) -> int:
    from deepwide.teacher.pretrain import pretrain

    from deepwide.identity import with_execution

    cfg = with_execution(_parse_config_json(args.config_json), args.exec_json)
    if args.stop_at_step is not None and args.stop_at_step < 1:
        raise DeepwideError(f"--stop-at-step must be >= 1, got {args.stop_at_step}")
    info = pretrain(
        manifest=args.manifest,
        cfg=cfg,
        out=args.out,
        workdir=args.workdir,
        valid_manifest=args.valid_manifest,
        info_path=args.info,
        curve_path=args.curve,
        threads=args.threads or None,
        stop_at_step=args.stop_at_step,
        progress=not args.no_progress,
    )
    if info is None:
        print(f"stopped at step {args.stop_at_step}; resume state in {args.workdir}")
    else:
        print(
            f"teacher {info['name']}: {info['params']} params, {info['steps']} steps, "
            f"held-out masked accuracy {info['valid_masked_acc']:.4f} vs majority-class rate "
            f"{info['majority_rate']:.4f}, {info['wall_time_s']:.0f} s -> {args.out}"
        )
    return 0


def cmd_import(args) -> int:
    src = Path(args.src)
    if not src.exists():
        raise DeepwideError(f"teacher import: source checkpoint not found: {src}")
    if args.format == "hf" and not src.is_dir():
        raise DeepwideError(f"teacher import --format hf expects a transformers model directory, got file {src}")
    if args.format in ("fairseq", "s3prl-hubert") and not src.is_file():
        raise DeepwideError(f"teacher import --format {args.format} expects a .pt file, got directory {src}")
    from deepwide.models.convert import import_checkpoint

    import_checkpoint(args.format, src, Path(args.out))
    if not Path(args.out).is_file():
        raise DeepwideError(f"teacher import wrote no checkpoint at {args.out}")
    print(f"imported {args.format} checkpoint {src} -> {args.out}")
    return 0
