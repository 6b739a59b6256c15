"""What the corpus stage reads and writes, known before any job runs (no numpy, no pandas):
the corpora, the manifests each ``prepare`` job declares, the layout a real root needs,
and the programs synthesis needs.

``check_sources`` runs when the Snakefile is parsed (and in the CLI), so a missing root
or a missing TTS program gives one clear error before any job starts. The planner
(:mod:`deepwide.plan.corpus`) and the corpus stage's modules both read this one module.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from deepwide.corpus.text import WORDLIST
from deepwide.errors import DeepwideError

CORPORA = ("librispeech", "voxceleb1", "speech_commands", "fluent_speech_commands", "iemocap")
# read by `corpus prepare-extra`; SNIPS and QUESST14 are synthesized by `corpus synth` too
# (deepwide.corpus.synth_extra), LibriMix by `corpus synth-librimix`
EXTRA_CORPORA = ("quesst14", "librimix", "snips")
SYNTH_EXTRA = ("snips", "quesst14")
# what synthesizing the embedded corpora needs on the machine
PROGRAMS = ("espeak-ng", "flite", "sox")
DEBIAN_PACKAGES = "espeak-ng flite sox libsox-fmt-all wamerican"

LIBRISPEECH_SPLITS = ["train-clean-100", "dev-clean", "test-clean"]
LIBRISPEECH_EXTRA_TRAIN = "train-clean-360"  # synthesized when synth.train_360_speakers > 0
IEMOCAP_SESSIONS = [f"Session{i}" for i in range(1, 6)]
KS_COMMANDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
KS_TRAIN_DIR = "speech_commands_v0.01"
KS_TEST_DIR = "speech_commands_test_set_v0.01"


def enabled(corpus_cfg: dict) -> list[str]:
    return [c for c in CORPORA if corpus_cfg[c]["enabled"]]


def synthesized(corpus_cfg: dict) -> list[str]:
    """Enabled corpora without a real root: the pipeline synthesizes them."""
    return [c for c in enabled(corpus_cfg) if not corpus_cfg[c].get("root")]


def librispeech_synth_splits(cfg: dict) -> list[str]:
    """The split folders the synthesized LibriSpeech has (``cfg``: corpus.librispeech)."""
    extra = [LIBRISPEECH_EXTRA_TRAIN] if (cfg.get("synth") or {}).get("train_360_speakers") else []
    return LIBRISPEECH_SPLITS + extra


def librispeech_split_problems(cfg: dict) -> list[str]:
    """corpus.librispeech.splits naming a split the synthesized corpus does not write."""
    have = librispeech_synth_splits(cfg)
    lacking = [s for s in cfg.get("splits", LIBRISPEECH_SPLITS) if s not in have]
    if not lacking:
        return []
    hint = (f"; set corpus.librispeech.synth.train_360_speakers above 0 for {LIBRISPEECH_EXTRA_TRAIN}"
            if LIBRISPEECH_EXTRA_TRAIN in lacking else "")
    n_360 = (cfg.get("synth") or {}).get("train_360_speakers", 0)
    return [(f"corpus.librispeech.splits: {', '.join(lacking)} not in the synthesized LibriSpeech "
             f"(corpus.librispeech.root is null, corpus.librispeech.synth.train_360_speakers is {n_360}: "
             f"it writes {', '.join(have)}){hint}")]


def require_programs(programs=PROGRAMS) -> None:
    """Raise one DeepwideError naming every missing TTS/audio program."""
    missing = [p for p in programs if shutil.which(p) is None]
    if missing:
        raise DeepwideError(
            f"missing programs needed to synthesize the embedded corpora: {', '.join(missing)}. "
            f"Install the Debian packages: {DEBIAN_PACKAGES} (e.g. `make setup` as root), "
            "or point every enabled corpus.<name>.root at a real dataset"
        )


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
                problems += layout_problems(c, cfg)
    synth = synthesized(corpus_cfg)
    if "librispeech" in synth:
        problems += librispeech_split_problems(corpus_cfg["librispeech"])
    if synth:
        try:
            require_programs(PROGRAMS)
        except DeepwideError as err:
            problems.append(f"{err} (needed for: {', '.join(synth)})")
        if not WORDLIST.is_file():
            problems.append(f"word list {WORDLIST} not found: install the Debian package wamerican")
    if problems:
        raise DeepwideError("corpus sources:\n  " + "\n  ".join(problems))


# ------------------------------------------------------------------ manifests
def manifest_splits(corpus: str, cfg: dict) -> list[str]:
    """The manifest files (without .parquet) ``prepare`` writes for a corpus."""
    return {
        "librispeech": lambda: list(cfg.get("splits", LIBRISPEECH_SPLITS)),
        "voxceleb1": lambda: ["train", "valid", "test", "trials"],
        "speech_commands": lambda: ["train", "valid", "test"],
        "fluent_speech_commands": lambda: ["train", "valid", "test"],
        "iemocap": lambda: list(IEMOCAP_SESSIONS),
    }[corpus]()


def layout_problems(corpus: str, cfg: dict) -> list[str]:
    """What a real root (``cfg["root"]``, an existing folder) lacks of the layout its
    ``prepare_*`` function reads, as config problems (checked before any job starts)."""
    root = Path(cfg["root"])
    need: list[tuple[Path, str]] = {
        "librispeech": lambda: [(root / s, "folder") for s in manifest_splits(corpus, cfg)],
        "voxceleb1": lambda: [(root / "iden_split.txt", "file")],
        "speech_commands": lambda: [(root / "validation_list.txt", "file"), (root / "testing_list.txt", "file")],
        "fluent_speech_commands": lambda: [(root / "data" / f"{s}_data.csv", "file") for s in ("train", "valid", "test")],
        "iemocap": lambda: [(root / s / "sentences" / "wav", "folder") for s in IEMOCAP_SESSIONS],
    }.get(corpus, lambda: [])()
    missing = [f"{p.relative_to(root)}{'/' if kind == 'folder' else ''}" for p, kind in need
               if not (p.is_dir() if kind == "folder" else p.is_file())]
    if not missing:
        return []
    return [f"corpus.{corpus}.root: {root} lacks the {corpus} layout: no {', '.join(missing[:6])}"
            f"{' ...' if len(missing) > 6 else ''} in it (is it the right folder?)"]


def manifest_outputs(corpus: str, cfg: dict) -> list[str]:
    """Every file name ``write_manifests`` declares for a corpus (rejects.tsv is extra)."""
    names = [f"{s}.parquet" for s in manifest_splits(corpus, cfg)]
    return names + (["lexicon.txt"] if corpus == "librispeech" else [])


def manifest_splits_extra(corpus: str) -> list[str]:
    """The manifest files (without .parquet) ``write_manifests`` writes for these corpora."""
    return {
        "quesst14": ["docs", "dev", "eval"] + [f"{s}_{k}" for s in ("dev", "eval") for k in ("docs", "terms", "truth")],
        "librimix": ["train", "dev", "test", "segments"],
        "snips": ["train", "valid", "test"],
    }[corpus]


SNIPS_SPEAKERS = {
    "train": ["Ivy", "Joanna", "Joey", "Justin", "Kendra", "Kimberly", "Matthew", "Salli"],
    "valid": ["Aditi", "Amy", "Geraint", "Nicole"],
    "test": ["Brian", "Emma", "Raveena", "Russell"],
}
