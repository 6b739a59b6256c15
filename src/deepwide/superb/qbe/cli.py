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
from deepwide.utils.cli import add_command
from deepwide.utils.io import json_object_arg

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
    exe = _execution(args.exec_json)
    threads = int(exe.get("threads") or 0)
    if threads:
        torch.set_num_threads(threads)
    device = resolve_device(exe.get("device"), "superb.device")
    cfg = DTWConfig(normalize=args.normalize, metric=args.distance)
    t0 = time.time()
    languages = None if args.languages == ["all"] else args.languages
    data = load_quesst14(args.root, languages=languages, jobs=threads or 4)  # threads checking audio files
    extractor = resolve_upstream(args.upstream, device)
    work = out.parent / ".qbe_work"
    res = run_qbe(extractor, data, layer=args.layer, select_on_dev=args.select_on_dev, cfg=cfg, beta=args.beta,
                  device=device, feature_dir=work / "features" if (exe.get("qbe") or {}).get("feature_cache") else None, stdlist_dir=work)
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


def _execution(text: str | None) -> dict:
    """The superb section's execution settings (``--exec-json``): device, threads and
    ``qbe.feature_cache`` are read here; absent keys take their defaults."""
    if not text:
        return {}
    return json_object_arg(text, "superb qbe --exec-json")


def register_qbe(subparsers) -> None:
    """Add the ``qbe`` command to a stage's subparsers (``python -m deepwide superb qbe``)."""
    q = add_command(subparsers, "qbe", _cmd_qbe, help="QbE on QUESST14 by DTW over one layer (no training) -> result.json")
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
    q.add_argument("--exec-json", default=None,
                   help='execution settings of the superb section as JSON (change no result): {"device": "auto|cpu|cuda", '
                        '"threads": N (torch threads, also the audio checks; 0: defaults), "qbe": {"feature_cache": true}} '
                        '(feature_cache: features memory-mapped on disk, full-scale QUESST)')
    q.add_argument("--out", required=True, help=".../result.json (written last; stdlist.xml files beside it)")
