"""Where each corpus comes from: a real root named in config, or synthesis.

``check_sources`` runs when the Snakefile is parsed (and in the CLI), so a missing root
or a missing TTS program gives one clear error before any job starts.
"""

from __future__ import annotations

from pathlib import Path

from deepwide.corpus.synth import KS_TEST_DIR, KS_TRAIN_DIR
from deepwide.corpus.text import WORDLIST
from deepwide.corpus.tts import PROGRAMS, require_programs
from deepwide.errors import DeepwideError

CORPORA = ("librispeech", "voxceleb1", "speech_commands", "fluent_speech_commands", "iemocap")
# synthesized by `corpus synth` too (deepwide.corpus.synth_extra), read by `corpus prepare-extra`
SYNTH_EXTRA = ("snips", "quesst14")


def enabled(corpus_cfg: dict) -> list[str]:
    return [c for c in CORPORA if corpus_cfg[c]["enabled"]]


def synthesized(corpus_cfg: dict) -> list[str]:
    """Enabled corpora without a real root: the pipeline synthesizes them."""
    return [c for c in enabled(corpus_cfg) if not corpus_cfg[c].get("root")]


def corpus_dir(results: str | Path, corpus: str) -> Path:
    """Where the pipeline synthesizes a corpus: RESULTS/corpora/NAME (the one place this is built)."""
    return Path(results) / "corpora" / corpus


def sd_data_dir(results: str | Path) -> Path:
    """s3prl SuperbSD's Kaldi data dir (train/dev/test), written by LibriMix's prepare job."""
    return Path(results) / "manifests" / "librimix" / "sd"


def roots(corpus: str, corpus_cfg: dict, results: str | Path) -> tuple[Path, Path | None]:
    """(root, test_root) that ``prepare`` reads: the real roots or the synthesized tree."""
    cfg = corpus_cfg[corpus]
    if cfg.get("root"):
        test_root = cfg.get("test_root")
        return Path(cfg["root"]), (Path(test_root) if test_root else None)
    base = corpus_dir(results, corpus)
    if corpus == "speech_commands":
        return base / KS_TRAIN_DIR, base / KS_TEST_DIR
    return base, None


def check_sources(corpus_cfg: dict) -> None:
    """Raise one DeepwideError listing every missing real root and missing program."""
    problems = []
    for c in enabled(corpus_cfg):
        cfg = corpus_cfg[c]
        if not cfg.get("root"):
            continue
        for key in ("root", "test_root"):
            if key not in cfg:
                continue
            value = cfg.get(key)
            if key == "test_root" and not value:
                problems.append(f"corpus.{c}.test_root must be set when corpus.{c}.root is (the separate test-set folder)")
            elif value and not Path(value).is_dir():
                problems.append(f"corpus.{c}.{key}: folder {value} does not exist")
            elif key == "root":
                from deepwide.corpus.prepare import layout_problems

                problems += layout_problems(c, cfg)
    synth = synthesized(corpus_cfg)
    if synth:
        try:
            require_programs(PROGRAMS)
        except DeepwideError as err:
            problems.append(f"{err} (needed for: {', '.join(synth)})")
        if not WORDLIST.is_file():
            problems.append(f"word list {WORDLIST} not found: install the Debian package wamerican")
    if problems:
        raise DeepwideError("corpus sources:\n  " + "\n  ".join(problems))
