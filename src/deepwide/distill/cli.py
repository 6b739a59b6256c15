"""``python -m deepwide targets ...`` and ``python -m deepwide distill ...``.

targets extract   run the frozen teacher once over manifests, write the targets cache
distill train     train one student (one KD method) from cached targets or an online teacher
(the students a config describes: ``python -m deepwide plan students``)
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from deepwide.errors import DeepwideError
from deepwide.utils.cli import add_command, command_group
from deepwide.utils.device import resolve_device
from deepwide.utils.io import json_object_arg

log = logging.getLogger(__name__)


def _int_list(text: str) -> list[int]:
    try:
        return [int(x) for x in text.replace(",", " ").split()]
    except ValueError as err:
        raise DeepwideError(f"expected a comma-separated list of integers, got {text!r}") from err


def _json_arg(text: str, what: str) -> dict:
    """A JSON object given inline or as ``@file``."""
    if text.startswith("@"):
        path = Path(text[1:])
        if not path.is_file():
            raise DeepwideError(f"{what}: file not found: {path}")
        text = path.read_text()
    return json_object_arg(text, what)


def cmd_extract(args) -> int:
    from deepwide.distill import targets
    from deepwide.distill.spec import layers_for
    from deepwide.models.checkpoint import load_checkpoint

    _set_threads(args)
    if args.layers:
        layers = _int_list(args.layers)
    elif args.frontend and not args.method:
        layers = []  # the front end's output alone
    elif args.method:
        _, tarch, _ = load_checkpoint(args.teacher)
        mcfg = _json_arg(args.method_config, "--method-config")
        depths = _int_list(args.student_depths) if args.student_depths else []
        layers = layers_for(args.method, mcfg, depths, tarch.depth)
        log.info("method %s needs teacher layers %s", args.method, layers)
    else:
        raise DeepwideError("give --layers, or --method (with --method-config and --student-depths)")
    from deepwide.distill.data import crop_spec

    if args.crop == "fixed" and args.crop_seconds is None:
        raise DeepwideError("--crop fixed needs --crop-seconds (the students' distill.train.max_seconds)")
    crop = crop_spec(args.crop, args.crop_seconds, args.crop_seed)
    info = targets.extract(
        args.teacher, args.manifest, layers, args.out, work=args.work, frontend=args.frontend, dtype=args.dtype,
        shard_seconds=args.shard_seconds, device=resolve_device(args.device), stop_after_shards=args.stop_after_shards, crop=crop,
    )
    if info:
        print(json.dumps({k: info[k] for k in ("key", "layers", "dtype", "frontend", "crop", "num_utterances",
                                              "audio_seconds", "bytes", "bytes_per_audio_second")}, indent=1))
    return 0


def cmd_train(args) -> int:
    from deepwide.distill.trainer import Preempted, train

    _set_threads(args)
    from deepwide.identity import with_execution

    job = with_execution(_json_arg(args.job, "--job"), args.exec_json)
    try:
        train(job, args.teacher, args.manifest, args.out, args.resume_dir, targets_dirs=args.targets or (),
              hf_dir=args.hf, device=resolve_device(args.device))
    except Preempted as p:
        print(f"preempted: {p}", file=sys.stderr)
        return 128 + p.signum
    return 0


def _device_arg(p):
    p.add_argument("--device", default="auto", help="cuda, cpu or auto (cuda when available)")
    p.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0: torch's default)")


def _set_threads(args):
    if getattr(args, "threads", 0):
        import torch

        torch.set_num_threads(args.threads)


def register(sub):
    # targets stage
    cmds = command_group(sub, "targets", "teacher targets cache for distillation")
    e = add_command(cmds, "extract", cmd_extract, "run the frozen teacher once over manifests; write memory-mapped shards")
    e.add_argument("--teacher", required=True, help="teacher checkpoint (deepwide format)")
    e.add_argument("--manifest", required=True, nargs="+", action="extend", help="manifest Parquet files")
    e.add_argument("--layers", help="teacher layers, e.g. 4,8,12 (0 = input of the first layer)")
    e.add_argument("--method", choices=["pred", "l2l"], help="derive the layers from a KD method instead (without --layers or --method and with --frontend: the front end alone)")
    e.add_argument("--method-config", default="{}", help="the method's config section as JSON (or @file)")
    e.add_argument("--student-depths", help="student depths the l2l mapping is computed for, e.g. 1,2,4,8")
    e.add_argument("--frontend", action="store_true", help="also store the conv front-end output")
    e.add_argument("--dtype", choices=["bf16", "fp16"], default="bf16", help="storage precision")
    e.add_argument("--shard-seconds", type=float, default=3600.0, help="audio seconds per shard")
    e.add_argument("--crop", choices=["full", "fixed"], default="full",
                   help="what the teacher sees: whole utterances, or each one's fixed crop window (distill.targets.crop)")
    e.add_argument("--crop-seconds", type=float, help="window length for --crop fixed (the students' train.max_seconds)")
    e.add_argument("--crop-seed", type=int, default=0, help="seed of the fixed windows (the config's seed)")
    e.add_argument("--out", required=True, help="cache folder to write (created atomically)")
    e.add_argument("--work", help="resume folder for finished shards (default: .OUT.partial beside OUT)")
    e.add_argument("--stop-after-shards", type=int, help=argparse.SUPPRESS)
    _device_arg(e)

    # distill stage
    cmds = command_group(sub, "distill", "distil students from the teacher")
    t = add_command(cmds, "train", cmd_train, "train one student with one KD method")
    t.add_argument("--job", required=True, help="job settings as JSON (or @file): see deepwide.plan.distill")
    t.add_argument("--teacher", required=True, help="teacher checkpoint")
    t.add_argument("--manifest", required=True, nargs="+", action="extend", help="manifest Parquet files")
    t.add_argument("--targets", nargs="*", action="extend", help="targets cache folders (cached mode: one per teacher layer, and the front end)")
    t.add_argument("--exec-json", help="execution settings merged into the job (train.num_workers, log_every, ...): never change the result")
    t.add_argument("--out", required=True, help="folder for student.pt, curve.parquet, info.json")
    t.add_argument("--hf", help="also export a transformers HubertModel folder here")
    t.add_argument("--resume-dir", required=True, help="resume state folder (outside declared outputs)")
    _device_arg(t)

