"""The corpus stage's jobs: which corpora a study synthesizes and prepares, where their
trees and manifests live, and the checks a Snakemake run makes on their roots."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

from deepwide.corpus.sources import (
    KS_TEST_DIR,
    KS_TRAIN_DIR,
    check_sources,
    enabled,
    manifest_outputs,
    manifest_splits_extra,
    synthesized,
)
from deepwide.errors import DeepwideError
from deepwide.utils.io import canonical_json

# tasks whose corpus ``corpus prepare-extra`` reads (and, without a root, the pipeline synthesizes)
EXTRA_TASK_CORPUS = {"sd": "librimix", "sf": "snips", "qbe": "quesst14"}


def corpus_dir(results: str | Path, corpus: str) -> Path:
    """Where the pipeline synthesizes a corpus: RESULTS/corpora/NAME."""
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


class CorpusPlan:
    """The corpus part of :class:`deepwide.plan.Study`."""

    @property
    def corpus_cfg(self) -> dict:
        return self.config["corpus"]

    @cached_property
    def corpora(self) -> list[str]:
        return enabled(self.corpus_cfg)

    @cached_property
    def synthesized(self) -> list[str]:
        return synthesized(self.corpus_cfg)

    def corpus_dir(self, name: str) -> Path:
        """The synthesized tree of a corpus (the synth rule's directory output)."""
        return corpus_dir(self.results, name)

    def manifest_dir(self, name: str) -> Path:
        return self.results / "manifests" / name

    def manifest(self, corpus: str, split: str) -> str:
        return str(self.manifest_dir(corpus) / f"{split}.parquet")

    def manifests(self, name: str) -> list[str]:
        """Every file the prepare job of a corpus declares."""
        if name in self.extra_corpora:
            return [str(self.manifest_dir(name) / f"{s}.parquet") for s in manifest_splits_extra(name)]
        return [str(self.manifest_dir(name) / f) for f in manifest_outputs(name, self.corpus_cfg[name])]

    # LibriMix (SD), SNIPS (SF), QUESST14 (QbE): read by ``corpus prepare-extra``, built only
    # when a task of the study reads them through the pipeline (superb.<task>.root unset)
    @cached_property
    def extra_corpora(self) -> list[str]:
        tasks = set(self.superb_enabled_tasks) | ({"qbe"} if self.qbe_enabled else set())
        out = []
        for task, corpus in EXTRA_TASK_CORPUS.items():
            if task in tasks and not (self.scfg.get(task) or {}).get("root"):
                if (self.corpus_cfg.get(corpus) or {}).get("enabled") is False:
                    raise DeepwideError(f"superb.{task}: corpus.{corpus} is disabled and superb.{task}.root is not set: "
                                        f"enable the corpus, set a root, or drop {task} from superb.tasks")
                out.append(corpus)
        return out

    @cached_property
    def extra_synthesized(self) -> list[str]:
        """Extra corpora without a real root: the pipeline synthesizes them (LibriMix from the
        study's LibriSpeech, SNIPS and QUESST14 by TTS)."""
        return [c for c in self.extra_corpora if not (self.corpus_cfg.get(c) or {}).get("root")]

    def extra_root(self, name: str) -> Path:
        """The root ``prepare-extra`` reads: the real one, or the synthesized tree."""
        root = (self.corpus_cfg.get(name) or {}).get("root")
        if root:
            return Path(root)
        return self.corpus_dir(name) / "Libri2Mix" if name == "librimix" else self.corpus_dir(name)

    def extra_prepare_json(self, name: str) -> str:
        """``prepare-extra --config-json``: corpus.NAME, with the embedded LibriMix's own RTTMs."""
        cfg = dict(self.identity(f"corpus.{name}") or {})
        if name == "librimix" and name in self.extra_synthesized:
            cfg["rttm_dir"] = str(self.corpus_dir(name) / "metadata" / "LibriSpeech")
        return canonical_json(cfg)

    @property
    def sd_data_dir(self) -> str:
        return str(sd_data_dir(self.results))

    def corpus_roots(self, name: str) -> tuple[Path, Path | None]:
        return roots(name, self.corpus_cfg, self.results)

    def corpus_inputs(self, name: str) -> list[str]:
        """What a job reading corpus ``name``'s audio depends on: the synth output, or
        nothing for a real root (read in place)."""
        return [str(self.corpus_dir(name))] if name in self.synthesized or name in self.extra_synthesized else []

    def check_corpora(self) -> None:
        check_sources(self.corpus_cfg)
        missing = [f"corpus.{c}.root: folder {self.extra_root(c)} does not exist"
                   for c in self.extra_corpora if c not in self.extra_synthesized and not self.extra_root(c).is_dir()]
        if "librimix" in self.extra_synthesized and "librispeech" not in self.corpora:
            missing.append("corpus.librimix: the embedded LibriMix is mixed from corpus.librispeech, which is disabled "
                           "(enable it or set corpus.librimix.root)")
        if missing:
            raise DeepwideError("corpus sources:\n  " + "\n  ".join(missing))
