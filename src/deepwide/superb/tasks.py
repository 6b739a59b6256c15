"""The SUPERB tasks: which s3prl problem, corpus, metric and data arguments each one uses.

Every task runs through s3prl's own problem class (``s3prl.problem.SuperbKS`` ...) and its
own ``prepare_data`` on a corpus root in the real dataset's layout. :func:`check_root`
tells a missing or malformed root apart before any job runs; :func:`prepare_args` gives the
``prepare_data`` section of s3prl's config for a root.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from deepwide.errors import DeepwideError


@dataclass(frozen=True)
class TaskSpec:
    name: str
    problem: str  # s3prl.problem class name
    corpus: str  # corpus name under RESULTS/corpora (and in config corpus.*)
    metric: str  # key of s3prl's valid/test logs
    higher_is_better: bool
    scale: float = 100.0  # s3prl reports fractions; results are in percent
    trainable: bool = True
    embedded: bool = True  # runs on the embedded (synthesized) corpora


TASKS: dict[str, TaskSpec] = {
    t.name: t
    for t in [
        TaskSpec("asr", "SuperbASR", "librispeech", "wer", False),
        TaskSpec("pr", "SuperbPR", "librispeech", "per", False),
        TaskSpec("sid", "SuperbSID", "voxceleb1", "accuracy", True),
        TaskSpec("ks", "SuperbKS", "speech_commands", "accuracy", True),
        TaskSpec("ic", "SuperbIC", "fluent_speech_commands", "accuracy", True),
        TaskSpec("er", "SuperbER", "iemocap", "accuracy", True),
        TaskSpec("asv", "SuperbASV", "voxceleb1", "EER", False),  # embedded voxceleb1 ships the trial list
        TaskSpec("sd", "SuperbSD", "librimix", "der", False),
        TaskSpec("sf", "SuperbSF", "snips", "slot_type_f1", True),
        TaskSpec("qbe", "DTW", "quesst14", "mtwv", True, scale=1.0, trainable=False),
    ]
}

EMBEDDED_TASKS = [name for name, t in TASKS.items() if t.embedded]


def get_task(name: str) -> TaskSpec:
    if name not in TASKS:
        raise DeepwideError(f"unknown SUPERB task {name!r} (known: {', '.join(TASKS)})")
    return TASKS[name]


def _need(task: str, root: Path, rel: str, what: str) -> None:
    if not (root / rel).exists():
        raise DeepwideError(
            f"superb.{task}: dataset root {root} is malformed: missing {root / rel} ({what})"
        )


def check_root(task: str, root: str | Path, tcfg: dict | None = None, embedded: bool = False) -> None:
    """Raise DeepwideError naming task and path when ``root`` cannot serve ``task``.

    ``embedded`` roots are synthesized by the corpus stage; derived files (split lists,
    lexicons) may then be generated instead of supplied.
    """
    tcfg = tcfg or {}
    root = Path(root)
    if not root.is_dir():
        raise DeepwideError(f"superb.{task}: dataset root {root} does not exist (set superb.{task}.root or corpus.*.root)")
    if task in ("asr", "pr"):
        _need(task, root, "SPEAKERS.TXT", "LibriSpeech speaker list")
        for split in [*tcfg.get("train_sets", ["train-clean-100"]), *tcfg.get("valid_sets", ["dev-clean"]), *tcfg.get("test_sets", ["test-clean"])]:
            _need(task, root, split, "LibriSpeech split folder")
        if task == "pr":
            # no files: the lexicon is generated from the root's transcripts (espeak-ng IPA)
            files = tcfg.get("lexicon") or []
            if len(files) not in (0, 2):
                raise DeepwideError(
                    f"superb.pr.lexicon: give both s3prl lexicon files (librispeech-lexicon-200k-g2p.txt, "
                    f"librispeech-lexicon-allothers-g2p.txt) or none (generated with espeak-ng), got {len(files)}"
                )
            for f in files:
                if not Path(f).is_file():
                    raise DeepwideError(f"superb.pr.lexicon: file {f} does not exist")
    elif task in ("sid", "asv"):
        if not any(root.glob("*/wav")):
            raise DeepwideError(f"superb.{task}: dataset root {root} is malformed: no {root}/*/wav folder (VoxCeleb1 layout)")
        if task == "sid" and not embedded:
            split = tcfg.get("split_file") or root / "iden_split.txt"
            if not Path(split).is_file():
                raise DeepwideError(
                    f"superb.sid.split_file: VoxCeleb1 root {root} needs the official iden_split.txt "
                    f"(not found at {split}); nothing is downloaded"
                )
        if task == "asv":
            for key, name in (("split_file", "iden_split.txt"), ("trial_file", "voxceleb1_test_v2.txt")):
                path = Path(tcfg.get(key) or root / name)
                if not path.is_file():
                    raise DeepwideError(f"superb.asv.{key}: VoxCeleb1 root {root} needs {name} (not found at {path}); nothing is downloaded")
    elif task == "ks":
        _need(task, root, tcfg.get("train_dir", "speech_commands_v0.01"), "Speech Commands v0.01 train folder")
        _need(task, root, tcfg.get("test_dir", "speech_commands_test_set_v0.01"), "Speech Commands v0.01 test folder")
        _need(task, root, Path(tcfg.get("train_dir", "speech_commands_v0.01")) / "_background_noise_", "noise clips for _silence_")
    elif task == "ic":
        for split in ("train", "valid", "test"):
            _need(task, root, f"data/{split}_data.csv", "Fluent Speech Commands split list")
    elif task == "er":
        for s in range(1, 6):
            _need(task, root, f"Session{s}/dialog/EmoEvaluation", "IEMOCAP labels")
            _need(task, root, f"Session{s}/sentences/wav", "IEMOCAP sentences")
    elif task == "sd":
        for split in ("train", "dev", "test"):
            _need(task, root, f"{split}/wav.scp", "Kaldi-style LibriMix data dir (s3prl's SD recipe: train/dev/test with wav.scp, reco2dur, segments, utt2spk)")
    elif task == "sf":
        _need(task, root, "all.iob.snips.txt", "SNIPS slot file")
        for split in ("train", "valid", "test"):
            _need(task, root, split, "Audio SNIPS wav folder")
    elif task == "qbe":
        from deepwide.corpus.real_extra import QUESST_LISTS, _quesst_root

        root = _quesst_root(root)  # quesst14Database itself, or the folder holding it
        _need(task, root, "scoring", "QUESST14 scoring folder")
        for name in QUESST_LISTS.values():
            _need(task, root, f"scoring/{name}", "QUESST14 language key")
        for split in ("dev", "eval"):
            _need(task, root, f"scoring/groundtruth_quesst14_{split}", f"QUESST14 {split} ground truth folder")


def prepare_args(task: str, root: str | Path, tcfg: dict) -> dict:
    """The ``prepare_data`` section of s3prl's config for ``task`` on ``root``."""
    root = str(Path(root).resolve())
    if task in ("asr", "pr"):
        return {
            "dataset_root": root,
            "train_sets": list(tcfg.get("train_sets", ["train-clean-100"])),
            "valid_sets": list(tcfg.get("valid_sets", ["dev-clean"])),
            "test_sets": list(tcfg.get("test_sets", ["test-clean"])),
        }
    if task == "ks":
        return {
            "gsc1": str(Path(root) / tcfg.get("train_dir", "speech_commands_v0.01")),
            "gsc1_test": str(Path(root) / tcfg.get("test_dir", "speech_commands_test_set_v0.01")),
        }
    if task in ("sid", "ic", "asv", "sf"):
        return {"dataset_root": root}
    if task == "er":
        return {"iemocap": root}
    if task == "sd":
        return {"data_dir": root}
    raise DeepwideError(f"task {task} has no s3prl prepare_data")
