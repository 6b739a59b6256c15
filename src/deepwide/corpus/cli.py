"""``python -m deepwide corpus ...``: synthesize a corpus, or prepare its manifests.

    deepwide corpus synth --corpus NAME|snips|quesst14 --config-json JSON --tts-json JSON --seed N --out DIR [--jobs N]
    deepwide corpus prepare --corpus NAME --config-json JSON --root DIR [--test-root DIR] --out-dir DIR [--jobs N]
    deepwide corpus check --config-json JSON   (the whole corpus section: roots and programs)
    deepwide corpus prepare-extra --corpus quesst14|librimix|snips --root DIR --out-dir DIR [--sd-data-dir DIR]
    deepwide corpus synth-librimix --librispeech DIR --out DIR [--seed N] [--config-json JSON]

``--config-json`` is the corpus's config section (``corpus.NAME``) as the Snakefile passes
it; it is validated against the schema with defaults filled, so a hand-written call gets
the same checks as the pipeline.
"""

from __future__ import annotations

import json
import logging
import os

from deepwide.errors import DeepwideError
from deepwide.utils.cli import add_command, command_group

log = logging.getLogger(__name__)


def _section(corpus: str | None, text: str) -> dict:
    from deepwide.config import validate_config
    from deepwide.utils.io import json_object_arg

    value = json_object_arg(text, "--config-json")
    cfg = validate_config({"corpus": {corpus: value} if corpus else value})["corpus"]
    return cfg[corpus] if corpus else cfg


def _jobs(n: int | None) -> int:
    return n if n and n > 0 else (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


def cmd_synth(args) -> int:
    from deepwide.corpus.synth import synthesize

    cfg = _section(args.corpus, args.config_json)
    tts = _section(None, json.dumps({"tts": json.loads(args.tts_json)}))["tts"]
    summary = synthesize(args.corpus, cfg, tts, args.seed, args.out, _jobs(args.jobs), progress=not args.no_progress)
    print(json.dumps(summary, sort_keys=True))
    return 0


def _write(args, prepared, splits: list[str], max_reject_share: float, **extra) -> int:
    from deepwide.corpus.prepare import write_manifests

    counts = write_manifests(args.corpus, prepared, args.out_dir, splits, max_reject_share)
    print(json.dumps({**counts, **extra}, sort_keys=True))
    return 0


def cmd_prepare(args) -> int:
    from deepwide.corpus.prepare import prepare
    from deepwide.corpus.sources import manifest_splits

    cfg = _section(args.corpus, args.config_json)
    prepared = prepare(args.corpus, args.root, cfg, args.test_root, _jobs(args.jobs))
    return _write(args, prepared, manifest_splits(args.corpus, cfg), cfg["max_reject_share"])


def cmd_prepare_extra(args) -> int:
    from deepwide.corpus.real_extra import (
        extra_config,
        prepare_extra,
        write_sd_kaldi_dirs,
    )
    from deepwide.corpus.sources import manifest_splits_extra
    from deepwide.utils.io import json_object_arg

    cfg = extra_config(args.corpus, json_object_arg(args.config_json, "--config-json"))
    if args.sd_data_dir and args.corpus != "librimix":
        raise DeepwideError("--sd-data-dir is for --corpus librimix only")
    prepared = prepare_extra(args.corpus, args.root, cfg, max(1, args.jobs))
    extra = {}
    if args.sd_data_dir:
        extra["sd_segments"] = write_sd_kaldi_dirs(prepared.tables["segments"], args.sd_data_dir)
    return _write(args, prepared, manifest_splits_extra(args.corpus), cfg["max_reject_share"], **extra)


def cmd_synth_librimix(args) -> int:
    from deepwide.corpus.librimix import synth_librimix

    cfg = _section("librimix", args.config_json)
    summary = synth_librimix(args.librispeech, args.out, args.seed, cfg["synth"])
    print(json.dumps(summary, sort_keys=True))
    return 0


def cmd_check(args) -> int:
    from deepwide.corpus.sources import check_sources

    check_sources(_section(None, args.config_json))
    print("corpus sources ok")
    return 0


def register(sub):
    from deepwide.corpus.sources import CORPORA, EXTRA_CORPORA, SYNTH_EXTRA

    cmds = command_group(sub, "corpus", "synthesize corpora and write manifests")

    s = add_command(cmds, "synth", cmd_synth, help="synthesize one corpus in its real dataset's layout")
    s.add_argument("--corpus", required=True, choices=CORPORA + SYNTH_EXTRA)
    s.add_argument("--config-json", required=True, help="the corpus.NAME config section as JSON")
    s.add_argument("--tts-json", default="{}", help="the corpus.tts config section as JSON")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", required=True, help="corpus root to create (replaced atomically)")
    s.add_argument("--jobs", type=int, default=0, help="parallel TTS jobs (0: all cores)")
    s.add_argument("--no-progress", action="store_true")

    def prepare_parser(name: str, help: str, corpora, sections: str, func, jobs: int):
        q = add_command(cmds, name, func, help=help)
        q.add_argument("--corpus", required=True, choices=corpora)
        q.add_argument("--config-json", default="{}", help=f"the corpus.NAME config section as JSON{sections}")
        q.add_argument("--root", required=True)
        q.add_argument("--out-dir", required=True, help="folder for {split}.parquet and rejects.tsv")
        q.add_argument("--jobs", type=int, default=jobs)
        return q

    q = prepare_parser("prepare", "read a corpus root (real or synthesized) and write Parquet manifests", CORPORA, "",
                       cmd_prepare, 0)
    q.add_argument("--test-root", default=None, help="Speech Commands: the separate test-set folder")
    q = prepare_parser("prepare-extra", "QUESST14, LibriMix or SNIPS root -> Parquet manifests (+ SD Kaldi dirs)",
                       EXTRA_CORPORA, " (languages / mode, rttm_dir / speakers, max_reject_share)", cmd_prepare_extra, 1)
    q.add_argument("--sd-data-dir", default=None, help="librimix: also write s3prl SuperbSD's Kaldi dirs (train/dev/test) here")

    m = add_command(cmds, "synth-librimix", cmd_synth_librimix, help="mix a LibriSpeech root's utterances into an embedded Libri2Mix (SD)")
    m.add_argument("--librispeech", required=True, help="LibriSpeech root (train-clean-100, dev-clean, test-clean)")
    m.add_argument("--out", required=True, help="folder to create (replaced atomically): Libri2Mix/ and metadata/LibriSpeech/*.rttm")
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--config-json", default="{}", help="the corpus.librimix config section as JSON (sizes under synth)")

    c = add_command(cmds, "check", cmd_check, help="check real roots and TTS programs of a corpus config section")
    c.add_argument("--config-json", required=True, help="the whole corpus config section as JSON")
