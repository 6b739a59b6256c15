"""``python -m deepwide superb ...``: SUPERB jobs through s3prl's recipes.

- ``superb run``: one (upstream, task) job: every (lr, head seed) head on one upstream pass per
  batch -> ``lr{lr}/seed{s}/result.json`` per head and ``heads.json``; or one head -> ``result.json``.
- ``superb select``: pick the lr with the best dev score among a task's results.
- (the superb section's dataset roots are checked by ``python -m deepwide plan check``)
- ``superb lexicon``: PR's two s3prl lexicon files for a LibriSpeech-layout root (generated
  with espeak-ng IPA, or the user's s3prl files copied unchanged) + ``lexicon.json``.
- ``superb qbe``: QbE on QUESST14 by DTW (no training; :mod:`deepwide.superb.qbe`).
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

from deepwide.errors import DeepwideError
from deepwide.utils.cli import add_command, command_group

log = logging.getLogger(__name__)


def _run(args) -> int:
    from deepwide.identity import with_execution
    from deepwide.superb.runner import run_job, run_sweep
    from deepwide.superb.upstream import upstream_spec

    try:
        cfg = json.loads(args.cfg)
    except json.JSONDecodeError as err:
        raise DeepwideError(f"--cfg is not valid JSON: {err}") from err
    cfg = with_execution(cfg, args.exec_json)
    # per-task execution (log and save cadence) sits under exec's "tasks"
    tcfg = {**cfg["task"], **(cfg.get("tasks") or {}).get(args.task, {})}
    upstream = upstream_spec(args.upstream)
    upstream["cache_mb"] = float(cfg.get("cache_mb", 0))
    if args.cache_disk_mb and upstream["cache_mb"] > 0:  # superb.cache_mb 0: padded batches, no cache
        upstream["cache_disk_mb"] = float(args.cache_disk_mb)
        upstream["cache_dir"] = str(Path(args.cache_dir or Path(args.cache) / "features").resolve())
    out = Path(args.out)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    common = dict(task=args.task, upstream_name=args.upstream_name, upstream=upstream, root=args.root, tcfg=tcfg,
                  cache_root=args.cache, device=cfg.get("device", "auto"), num_workers=int(cfg.get("num_workers", 0)),
                  embedded=args.embedded, lexicon_dir=args.lexicon_dir, text_policy=args.text_policy)
    if "heads" in cfg:
        # a sweep (the pipeline's job): every head of the task, result.json per head in
        # OUT_DIR/lr{lr}/seed{s}/, then heads.json (the job's declared output) last
        if out.name != "heads.json":
            raise DeepwideError(f"--out must name a heads.json file for a job with heads, got {out}")
        if args.lr is not None:
            raise DeepwideError("superb run: --lr is for one head; this job's --cfg lists its heads")
        heads = _heads(cfg["heads"])
        t0 = time.time()
        results = run_sweep(heads=[(float(lr), seed, out.parent / f"lr{lr}" / f"seed{seed}") for lr, seed in heads], **common)
        _write_heads(out, heads, results, time.time() - t0)
    else:
        if out.name != "result.json":
            raise DeepwideError(f"--out must name a result.json file, got {out}")
        if args.lr is None:
            raise DeepwideError("superb run: give --lr (one head) or list the heads in --cfg")
        results = [run_job(lr=float(args.lr), out_dir=out.parent, seed=int(cfg.get("seed", 0)), **common)]
    for res in results:
        log.info(
            "superb %s/%s lr %s seed %s: dev %s %.3f (step %d), test %.3f, %.1f s on %s",
            res["upstream"], res["task"], res["lr"], res["seed"], res["metric"], res["dev_score"], res["best_step"],
            res["test_score"], res["runtime_s"], res["device"],
        )
    return 0


def _heads(value) -> list[tuple[str, int]]:
    """``[[lr, seed], ...]`` of a sweep's identity, checked; lr as its path component."""
    from deepwide.identity import format_lr

    if not isinstance(value, list) or not value:
        raise DeepwideError(f"--cfg heads: expected a non-empty list of [lr, seed] pairs, got {value!r}")
    heads = []
    for h in value:
        if not (isinstance(h, list) and len(h) == 2):
            raise DeepwideError(f"--cfg heads: each head is [lr, seed], got {h!r}")
        try:
            lr, seed = format_lr(float(h[0])), int(h[1])
        except (TypeError, ValueError):
            raise DeepwideError(f"--cfg heads: each head is [lr, seed] with a number and an integer, got {h!r}") from None
        if float(lr) <= 0 or seed < 0:
            raise DeepwideError(f"--cfg heads: lr must be > 0 and seed >= 0, got {h!r}")
        heads.append((lr, seed))
    if len(set(heads)) != len(heads):
        raise DeepwideError(f"--cfg heads: a head is listed twice in {value!r}")
    return heads


def _write_heads(out: Path, heads: list[tuple[str, int]], results: list[dict], wall_s: float) -> None:
    from deepwide.utils.io import atomic_write_text
    from deepwide.utils.usage import usage

    rows = []
    for (lr, seed), res in zip(heads, results):
        sweep = res.get("sweep") or {}
        rows.append({"lr": lr, "seed": seed, "result": str(out.parent / f"lr{lr}" / f"seed{seed}" / "result.json"),
                     "dev_score": res["dev_score"], "test_score": res["test_score"],
                     "restored": bool(sweep.get("restored_folds"))})
    first = results[0]
    atomic_write_text(out, json.dumps({"upstream": first["upstream"], "task": first["task"], "metric": first["metric"],
                                       "shared_pass": bool((first.get("sweep") or {}).get("shared_pass")),
                                       "wall_s": round(wall_s, 3), "heads": rows, "device": first.get("device"),
                                       "usage": usage()}, indent=1) + "\n")


def _select(args) -> int:
    from deepwide.superb.runner import select
    from deepwide.utils.io import atomic_write_text

    results = []
    for p in args.inputs:
        path = Path(p)
        if not path.is_file():
            raise DeepwideError(f"superb select: result file {path} not found")
        results.append(json.loads(path.read_text()))
    keys = {(r["upstream"], r["task"]) for r in results}
    if len(keys) != 1:
        raise DeepwideError(f"superb select: results mix upstream/task pairs {sorted(keys)}")
    chosen = select(results)
    atomic_write_text(args.out, json.dumps(chosen, indent=1) + "\n")
    log.info("superb %s/%s: lr %s selected by dev %s", chosen["upstream"], chosen["task"], chosen["selected_lr"], chosen["metric"])
    return 0


def _lexicon(args) -> int:
    from deepwide.superb.offline import write_lexicon_dir

    info = write_lexicon_dir(args.out_dir, args.root, args.splits, args.lexicon, args.text_policy)
    log.info("superb lexicon: %d words, phone set %s (%s) in %s", info["words"], info["phone_set"], info["source"], args.out_dir)
    print(json.dumps({k: info[k] for k in ("phone_set", "source", "words", "transcript_words")}, sort_keys=True))
    return 0


def register(sub):
    from deepwide.corpus.text import TEXT_POLICIES

    cmds = command_group(sub, "superb", "SUPERB evaluation through s3prl's recipes")

    r = add_command(cmds, "run", _run, help="train/validate/test a task's heads (lr x seed; one upstream pass per batch) or one head through s3prl")
    r.add_argument("--task", required=True)
    r.add_argument("--upstream-name", required=True, help="name in results/superb/{name}/ (teacher, fbank, pred-4x192f768h4...)")
    r.add_argument("--upstream", required=True, help="'fbank', a deepwide checkpoint file, or an HF model directory")
    r.add_argument("--lr", type=float, default=None, help="one head's lr (--out result.json); a job whose --cfg lists heads takes none")
    r.add_argument("--root", required=True, help="dataset root in the real dataset's layout")
    r.add_argument("--embedded", action="store_true", help="root is a synthesized corpus: derive split lists/lexicon from it")
    r.add_argument("--cfg", required=True, help='the job identity as JSON: {"task": {...superb.<task>...}, "heads": [[lr, seed], ...]} or, for one head, {"task", "seed"}')
    r.add_argument("--exec-json", help='execution settings as JSON: {"device", "num_workers", "cache_mb", "tasks": {TASK: {"log_step", "save_step"}}}')
    r.add_argument("--cache", required=True, help="cache folder for s3prl (data, download, numba)")
    r.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    r.add_argument("--cache-disk-mb", type=float, default=float(os.environ.get("DEEPWIDE_FEATURE_CACHE_DISK_MB", 0)),
                   help="feature cache: bf16 shards on disk up to this many MB once superb.cache_mb (> 0) is full "
                        "(execution; default $DEEPWIDE_FEATURE_CACHE_DISK_MB or 0)")
    r.add_argument("--cache-dir", default=os.environ.get("DEEPWIDE_FEATURE_CACHE_DIR"),
                   help="feature cache shards: a local-disk folder (default $DEEPWIDE_FEATURE_CACHE_DIR, else CACHE/features)")
    r.add_argument("--out", required=True, help=".../heads.json for a job with heads (each head's result.json in lr{lr}/seed{s}/ beside it), else .../result.json; written last")
    r.add_argument("--lexicon-dir", default=None,
                   help="pr: a `superb lexicon` output folder to use (default: superb.pr.lexicon, else generated)")
    r.add_argument("--text-policy", choices=TEXT_POLICIES, default="normalise",
                   help="asr/pr: transcript text outside A-Z ' space (corpus.librispeech.text_policy)")

    x = add_command(cmds, "lexicon", _lexicon, help="PR lexicon files for a LibriSpeech-layout root + lexicon.json (phone set)")
    x.add_argument("--root", required=True, help="LibriSpeech-layout root")
    x.add_argument("--splits", nargs="+", required=True, help="split folders whose words the lexicon must cover")
    x.add_argument("--lexicon", nargs=2, default=None, metavar=("F200K", "FALLOTHERS"),
                   help="s3prl's librispeech-lexicon-200k-g2p.txt and -allothers-g2p.txt, copied unchanged")
    x.add_argument("--text-policy", choices=TEXT_POLICIES, default="normalise",
                   help="as corpus.librispeech.text_policy (the words are those s3prl will read)")
    x.add_argument("--out-dir", required=True, help="folder for the two lexicon files and lexicon.json")

    s = add_command(cmds, "select", _select, help="pick the lr with the best dev score")
    s.add_argument("--inputs", nargs="+", required=True)
    s.add_argument("--out", required=True)

    from deepwide.superb.qbe.cli import register_qbe

    register_qbe(cmds)
