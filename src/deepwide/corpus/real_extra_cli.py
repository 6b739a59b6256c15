"""``corpus prepare-extra``'s argument parser, apart from :mod:`deepwide.corpus.real_extra`
so that building the main CLI does not import pandas."""

from __future__ import annotations

EXTRA_CORPORA = ("quesst14", "librimix", "snips")


def cmd_prepare_extra(args) -> int:
    from deepwide.corpus.real_extra import cmd_prepare_extra as run

    return run(args)


def register_extra(cmds) -> None:
    """Add ``prepare-extra`` to the corpus stage's subparsers (``python -m deepwide corpus prepare-extra``)."""
    q = cmds.add_parser("prepare-extra", help="QUESST14, LibriMix or SNIPS root -> Parquet manifests (+ SD Kaldi dirs)")
    q.add_argument("--corpus", required=True, choices=EXTRA_CORPORA)
    q.add_argument("--config-json", default="{}", help="the corpus.NAME section as JSON (languages / mode, rttm_dir / speakers, max_reject_share)")
    q.add_argument("--root", required=True)
    q.add_argument("--out-dir", required=True, help="folder for {split}.parquet and rejects.tsv")
    q.add_argument("--sd-data-dir", default=None, help="librimix: also write s3prl SuperbSD's Kaldi dirs (train/dev/test) here")
    q.add_argument("--jobs", type=int, default=1)
    q.set_defaults(func=cmd_prepare_extra)
