"""``python -m deepwide teacher {pretrain,import,random} ...``

``pretrain`` trains the embedded default's tiny HuBERT (see :mod:`deepwide.teacher.pretrain`);
``import`` converts a HuBERT checkpoint from transformers, fairseq or s3prl into the
deepwide checkpoint format (conversion code: ``deepwide.models.convert``); ``random``
writes an untrained teacher of a given shape (contract: :mod:`deepwide.teacher.random_init`).
All three write the same checkpoint format and an info.json (arch, params, source,
weights_sha256, usage).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from deepwide.errors import DeepwideError
from deepwide.utils.cli import add_command, command_group

log = logging.getLogger(__name__)

IMPORT_FORMATS = ("hf", "fairseq", "s3prl-hubert")


def register(sub):
    cmds = command_group(sub, "teacher", "pretrain a tiny HuBERT teacher, import a real one or draw a random one")

    pt = add_command(cmds, "pretrain", cmd_pretrain, "HuBERT masked-prediction pretraining on a manifest")
    pt.add_argument("--manifest", required=True, nargs="+", action="extend",
                    help="training manifest (Parquet: id, path, num_samples, ...); several (repeated or after one "
                         "flag) are trained on together")
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

    im = add_command(cmds, "import", cmd_import, "convert a HuBERT checkpoint (hf, fairseq, s3prl-hubert)")
    im.add_argument("src", help="checkpoint file or transformers model directory")
    im.add_argument("--format", required=True, choices=IMPORT_FORMATS, help="format of SRC")
    _checkpoint_outputs(im)

    rd = add_command(cmds, "random", cmd_random, "a randomly initialised teacher (HuBERT's pretraining init, no training)")
    rd.add_argument("--arch-json", default="{}",
                    help="ArchConfig fields (and/or conv_channels) as JSON; omitted fields are HuBERT Base's")
    rd.add_argument("--seed", type=int, required=True, help="draws every weight: equal seed and arch, equal bytes")
    _checkpoint_outputs(rd)


def _checkpoint_outputs(p) -> None:
    p.add_argument("--out", required=True, help="deepwide checkpoint to write")
    p.add_argument("--info", help="info.json to write (default: beside --out)")


def _parse_config_json(text: str) -> dict:
    from deepwide.utils.io import json_object_arg

    return json_object_arg(text, "--config-json")  # the teacher.pretrain section


def cmd_pretrain(args) -> int:
    from deepwide.identity import with_execution
    from deepwide.teacher.pretrain import pretrain

    cfg = with_execution(_parse_config_json(args.config_json), args.exec_json)
    if args.stop_at_step is not None and args.stop_at_step < 1:
        raise DeepwideError(f"--stop-at-step must be >= 1, got {args.stop_at_step}")
    info = pretrain(
        manifests=args.manifest,
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
    from deepwide.utils.io import atomic_write_text
    from deepwide.utils.precision import state_sha256
    from deepwide.utils.usage import usage

    out = Path(args.out)
    model, arch, meta = import_checkpoint(args.format, src, out)
    if not out.is_file():
        raise DeepwideError(f"teacher import wrote no checkpoint at {out}")
    info = {"source": "import", "import": meta["source"], "normalize": meta["normalize"], "arch": arch.to_dict(),
            "name": arch.name, "params": sum(p.numel() for p in model.parameters()), "weights_sha256": state_sha256(model.state_dict()),
            "usage": usage()}
    atomic_write_text(Path(args.info) if args.info else out.with_name("info.json"),
                      json.dumps(info, indent=2, sort_keys=True) + "\n")
    print(f"imported {args.format} checkpoint {src} -> {out}")
    return 0


def cmd_random(args) -> int:
    from deepwide.teacher.random_init import arch_from_json, write_random_teacher
    from deepwide.utils.io import json_object_arg

    arch = arch_from_json(json_object_arg(args.arch_json, "--arch-json"))
    info = write_random_teacher(arch, args.seed, args.out, args.info)
    print(f"random teacher {info['name']} ({info['params']} params, seed {args.seed}) -> {args.out}")
    return 0
