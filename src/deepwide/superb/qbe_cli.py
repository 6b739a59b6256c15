"""``superb qbe``'s argument parser, apart from :mod:`deepwide.superb.qbe` so that building
the main CLI (every ``python -m deepwide`` job) does not import torch."""

from __future__ import annotations

NIST_STD_BETA = 999.9  # TWV false-alarm weight of the NIST STD 2006 evaluation


def _cmd_qbe(args) -> int:
    from deepwide.superb.qbe import _cmd_qbe as run

    return run(args)


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
