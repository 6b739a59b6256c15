"""``python -m deepwide superb qbe``: QbE on QUESST14 by DTW (no training) -> result.json.

Building the parser (every ``python -m deepwide`` job does) imports no torch; the command
imports the QbE modules when it runs.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path

from deepwide.errors import DeepwideError
from deepwide.superb.qbe.twv import NIST_STD_BETA

log = logging.getLogger(__name__)


def _cmd_qbe(args) -> int:
    import torch

    from deepwide.superb.qbe.dtw import DTWConfig
    from deepwide.superb.qbe.features import resolve_upstream
    from deepwide.superb.qbe.quesst import load_quesst14, result_record, run_qbe
    from deepwide.utils.device import device_name, resolve_device
    from deepwide.utils.io import atomic_write_text
    from deepwide.utils.usage import usage

    out = Path(args.out)
    if out.name != "result.json":
        raise DeepwideError(f"--out must name a result.json file, got {out}")
    if args.layer is None and not args.select_on_dev:
        raise DeepwideError("superb qbe: give --layer L or --select-on-dev")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device, "--device")
    cfg = DTWConfig(normalize=args.normalize, metric=args.distance)
    t0 = time.time()
    languages = None if args.languages == ["all"] else args.languages
    data = load_quesst14(args.root, languages=languages, jobs=args.jobs)
    extractor = resolve_upstream(args.upstream, device)
    work = out.parent / ".qbe_work"
    res = run_qbe(extractor, data, layer=args.layer, select_on_dev=args.select_on_dev, cfg=cfg, beta=args.beta,
                  device=device, feature_dir=work / "features" if args.feature_cache else None, stdlist_dir=work)
    rec = result_record(res, args.upstream_name, args.lr, time.time() - t0, device, cfg, args.beta)
    rec["device_name"] = device_name(device)
    for f in ("dev.stdlist.xml", "eval.stdlist.xml"):
        (work / f).replace(out.parent / f)
    shutil.rmtree(work, ignore_errors=True)
    rec["usage"] = usage()  # peak memory and wall time of this job (plan resources)
    atomic_write_text(out, json.dumps(rec, indent=1) + "\n")
    log.info("superb qbe %s: layer %d, dev MTWV %.4f, test MTWV %.4f, %.1f s on %s", args.upstream_name, res["layer"],
             res["dev_score"], res["test_score"], rec["runtime_s"], rec["device_name"])
    return 0


def register_qbe(subparsers) -> None:
    """Add the ``qbe`` command to a stage's subparsers (``python -m deepwide superb qbe``)."""
    q = subparsers.add_parser("qbe", help="QbE on QUESST14 by DTW over one layer (no training) -> result.json")
    q.add_argument("--upstream", required=True, help="deepwide checkpoint file ('fbank' or an HF directory through the superb adapter)")
    q.add_argument("--upstream-name", default="upstream", help="name written to result.json (teacher, fbank, pred-4x192f768h4...)")
    q.add_argument("--root", required=True, help="quesst14Database folder (Audio/, dev_queries/, eval_queries/, scoring/)")
    sel = q.add_mutually_exclusive_group()
    sel.add_argument("--layer", type=int, default=None, help="hidden state to use (0 = transformer input)")
    sel.add_argument("--select-on-dev", action="store_true", help="use the layer with the best dev MTWV")
    q.add_argument("--languages", nargs="+", default=["nnenglish"], help="language keys to search ('all': every language); SUPERB: nnenglish")
    q.add_argument("--normalize", choices=["global", "utterance", "none"], default="global", help="feature standardisation (SUPERB: global)")
    q.add_argument("--distance", choices=["cosine_exp", "cosine"], default="cosine_exp", help="frame distance (SUPERB: cosine_exp)")
    q.add_argument("--beta", type=float, default=NIST_STD_BETA, help="TWV false-alarm weight (NIST STD 2006: 999.9)")
    q.add_argument("--lr", type=float, default=1.0, help="unused (no training); written to result.json as the job's lr")
    q.add_argument("--device", default="auto", help="auto, cpu or cuda")
    q.add_argument("--jobs", type=int, default=4, help="threads checking audio files")
    q.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    q.add_argument("--feature-cache", action="store_true", help="keep features memory-mapped on disk (full-scale QUESST)")
    q.add_argument("--out", required=True, help=".../result.json (written last; stdlist.xml files beside it)")
    q.set_defaults(func=_cmd_qbe)
