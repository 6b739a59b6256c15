"""``python -m deepwide plan rehearse``: a study's rehearsal, runnable on any machine.

The rehearsal of a config is another config (:func:`rehearse`, config -> config) that runs
every rule of the study, on every task, with both methods and each kind of student init,
at toy cost, on a laptop or on the cluster before GPU-hours are spent:

- results go apart: ``results/rehearsal/<config stem>`` (relative, like every config's);
- a dataset root missing on this machine (``corpus.<name>.root``/``test_root``,
  ``superb.<task>.root``, ``superb.qbe.root``, ``superb.pr.lexicon``) is dropped, so the
  corpus stage synthesizes that corpus in the same layout; SD, SF and QbE then read the
  embedded LibriMix, SNIPS and QUESST14 (QbE, enabled by its root, joins ``superb.tasks``).
  Only the splits the embedded corpus has are kept. A root that exists is kept;
- every synthesized corpus gets the sizes of ``workflow/configs/smoke.yaml`` (the one place
  those sizes live; an embedded train-clean-360 gets the size of smoke's train-clean-100),
  and so do the step counts, batches and evaluation sets of every stage (teacher pretraining,
  distillation, each SUPERB task, the report's cost and CKA sets);
- a missing teacher checkpoint to import becomes ``teacher.source: random`` of shape
  ``teacher.random.arch`` ({}: HuBERT Base, the size a plan assumes for a missing import);
- model shapes and SUPERB heads stay the study's (no downstream override is added);
- repeated jobs of one code path are thinned: distillation and SUPERB seeds, SUPERB learning
  rates and ER folds to the first, explicit student shapes to one of the teacher's width
  (DistilHuBERT's layer copy) and one of another width (front end only), the solver grid to
  nothing (its students run the same code) or, in a study of grid shapes only, to its
  shallowest depth; the students evaluated on SUPERB to those of the first KD method (every
  method is still distilled: its code differs there, not in SUPERB). A SUPERB job trains to
  its first dev evaluation (smoke's eval_step).

What was replaced, cut and thinned is listed in the derived config's ``rehearsal`` section
(and its top comment): ``cut`` maps each dotted key to ``[study value, rehearsal value]``.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable
from pathlib import Path

import yaml

from deepwide.config import validate_config
from deepwide.corpus.sources import (
    CORPORA,
    EXTRA_CORPORA,
    LIBRISPEECH_SPLITS,
    librispeech_synth_splits,
)
from deepwide.identity import get_dotted
from deepwide.models.arch import hubert_base
from deepwide.plan.corpus import EXTRA_TASK_CORPUS
from deepwide.plan.teacher import random_arch
from deepwide.superb.tasks import TASKS

REPO = Path(__file__).resolve().parents[3]
SMOKE = REPO / "workflow" / "configs" / "smoke.yaml"
REHEARSAL_RESULTS = "results/rehearsal"

# keys cut to the smoke config's value (dotted, under the section named)
TEACHER_CUTS = ("max_valid_utterances", "kmeans.max_frames", "kmeans.batch_size", "kmeans.n_init", "train.steps",
                "train.batch_seconds", "train.crop_seconds", "train.log_every", "train.eval_every",
                "train.checkpoint_every")
DISTILL_CUTS = ("steps", "batch_seconds", "checkpoint_every", "log_every", "num_workers", "cpu_threads")


def _set(d: dict, dotted: str, value) -> None:
    *parents, last = dotted.split(".")
    for k in parents:
        d = d.setdefault(k, {})
    d[last] = value


class _Rehearsal:
    """The derived config being built (``raw``, the user's keys only), the study's values
    with defaults (``full``) and the record of every change."""

    def __init__(self, raw: dict, smoke: dict, exists: Callable[[str], bool]):
        self.raw = copy.deepcopy(raw)
        self.full = validate_config(copy.deepcopy(raw))
        self.smoke = validate_config(copy.deepcopy(smoke))
        self.exists = exists
        self.replaced: list[str] = []
        self.thinned: list[str] = []
        self.cut: dict[str, list] = {}

    def cut_to(self, dotted: str, value) -> None:
        old = get_dotted(self.full, dotted)
        if old != value:
            self.cut[dotted] = copy.deepcopy([old, value])
            _set(self.raw, dotted, copy.deepcopy(value))

    def thin(self, dotted: str, keep: list, why: str, old: list | None = None) -> None:
        """Set ``dotted`` to ``keep``, a part of ``old`` (default: the study's list there)."""
        old = get_dotted(self.full, dotted) if old is None else old
        if list(old) != list(keep):
            self.thinned.append(f"{dotted}: {len(old)} -> {len(keep)} ({why})")
            _set(self.raw, dotted, keep)

    def missing(self, path) -> bool:
        return bool(path) and not self.exists(str(Path(path).expanduser()))

    # ------------------------------------------------------------------ data
    def corpora(self) -> None:
        self.raw.setdefault("corpus", {})
        for name in (*CORPORA, *EXTRA_CORPORA):
            cfg = self.full["corpus"][name]
            for key in ("root", "test_root"):
                if self.missing(cfg.get(key)):
                    self.replaced.append(f"corpus.{name}.{key}: {cfg[key]} is missing here -> embedded corpus")
                    self.raw["corpus"][name].pop("test_root", None)
                    self.raw["corpus"][name]["root"] = None
            if not (self.raw["corpus"].get(name) or {}).get("root"):
                for key, value in self.smoke["corpus"][name]["synth"].items():
                    self.cut_to(f"corpus.{name}.synth.{key}", value)
        for key, value in self.smoke["corpus"]["tts"].items():
            self.cut_to(f"corpus.tts.{key}", value)
        if not (self.raw["corpus"].get("librispeech") or {}).get("root"):
            libri = self.full["corpus"]["librispeech"]
            if libri["synth"].get("train_360_speakers"):  # kept, as small as the rehearsal's train-clean-100
                self.cut_to("corpus.librispeech.synth.train_360_speakers",
                            self.smoke["corpus"]["librispeech"]["synth"]["train_speakers"])
            splits = libri["splits"]
            kept = [s for s in splits if s in librispeech_synth_splits(libri)] or list(LIBRISPEECH_SPLITS)
            if kept != splits:
                self.replaced.append(f"corpus.librispeech.splits: {splits} -> {kept} (the embedded corpus's)")
                _set(self.raw, "corpus.librispeech.splits", kept)
            self.librispeech_refs(kept)

    def librispeech_refs(self, kept: list[str]) -> None:
        """Splits named elsewhere that the embedded LibriSpeech lacks: the kept one of the
        same kind (train, dev, test)."""
        def same_kind(split: str) -> str:
            if split in kept:
                return split
            return next((s for s in kept if s.split("-")[0] == split.split("-")[0]), kept[0])

        refs = [("distill.splits", self.full["distill"]["corpus"])]
        refs += [(f"teacher.pretrain.{k}", self.full["teacher"]["pretrain"]["corpus"]) for k in ("train_split", "valid_split")]
        refs.append(("report.heldout.split", self.full["report"]["heldout"]["corpus"]))
        for dotted, corpus in refs:
            value = get_dotted(self.full, dotted)
            if corpus != "librispeech" or not value:
                continue
            new = list(dict.fromkeys(same_kind(s) for s in value)) if isinstance(value, list) else same_kind(value)
            if new != value:
                self.replaced.append(f"{dotted}: {value} -> {new} (the embedded LibriSpeech's splits)")
                _set(self.raw, dotted, new)

    def superb_roots(self) -> None:
        sup = self.full["superb"]
        for task in [*sup["tasks"], "qbe"]:
            root = (sup.get(task) or {}).get("root")
            if not self.missing(root):
                continue
            self.replaced.append(f"superb.{task}.root: {root} is missing here -> embedded {EXTRA_TASK_CORPUS.get(task, task)}")
            del self.raw["superb"][task]["root"]
            if task == "qbe" and "qbe" not in sup["tasks"]:
                self.raw["superb"]["tasks"] = [*sup["tasks"], "qbe"]  # its root enabled it
            corpus = EXTRA_TASK_CORPUS.get(task)
            if corpus and self.full["corpus"][corpus]["enabled"] is False:
                _set(self.raw, f"corpus.{corpus}.enabled", True)
        lexicon = (sup.get("pr") or {}).get("lexicon")
        if lexicon and any(self.missing(p) for p in lexicon):
            self.replaced.append("superb.pr.lexicon: files missing here -> lexicon generated with espeak-ng")
            del self.raw["superb"]["pr"]["lexicon"]

    # ------------------------------------------------------------------ jobs
    def teacher(self) -> None:
        t = self.full["teacher"]
        path = t["import"]["path"]
        if t["source"] == "import" and (not path or self.missing(path)):
            arch = t["random"]["arch"] or "HuBERT Base"
            self.replaced.append(f"teacher: import of {t['import']['path'] or '(no path)'} (missing here) -> "
                                 f"random teacher, arch {arch}, seed {self.full['seed']}")
            _set(self.raw, "teacher.source", "random")
            _set(self.raw, "teacher.random.seed", self.full["seed"])
        if t["source"] == "pretrain":
            for key in TEACHER_CUTS:
                self.cut_to(f"teacher.pretrain.{key}", get_dotted(self.smoke["teacher"]["pretrain"], key))

    def teacher_width(self) -> int:
        source = self.raw.get("teacher", {}).get("source", self.full["teacher"]["source"])
        if source == "pretrain":
            return self.full["teacher"]["pretrain"]["arch"]["width"]
        if source == "random":
            return random_arch(validate_config(copy.deepcopy(self.raw))).width
        return hubert_base().width  # an existing import: the Base size a plan assumes

    def distill(self) -> None:
        d, smoke = self.full["distill"], self.smoke["distill"]
        self.thin("distill.seeds", d["seeds"][:1], "one student per (method, shape)")
        for key in DISTILL_CUTS:
            self.cut_to(f"distill.train.{key}", smoke["train"][key])
        self.cut_to("distill.train.max_seconds", min(d["train"]["max_seconds"], smoke["train"]["batch_seconds"]))
        self.cut_to("distill.train.min_seconds", min(d["train"]["min_seconds"], smoke["train"]["min_seconds"]))
        self.cut_to("distill.targets.shard_seconds", smoke["targets"]["shard_seconds"])
        width = self.teacher_width()
        shapes = d["students"]["shapes"]
        copy_init = [s for s in shapes if s["width"] == width][:1]
        other = [s for s in shapes if s["width"] != width][:1]
        self.thin("distill.students.shapes", [s for s in shapes if s in copy_init + other],
                  f"one of the teacher's width {width} (layer copy), one of another width (front end only)")
        # grid shapes run the code of explicit ones: the grid is kept (at its shallowest
        # depth) only in a study without explicit shapes
        depths = d["students"]["grid"]["depths"]
        self.thin("distill.students.grid.depths", [] if shapes else sorted(depths)[:1],
                  "grid students run the explicit shapes' code" if shapes else "the solver grid at its shallowest depth")

    def superb(self) -> None:
        sup = self.full["superb"]
        self.thin("superb.seeds", sup["seeds"][:1], "one SUPERB head per (upstream, task, lr)")
        methods = self.full["distill"]["methods"]
        if sup["students"] is True and len(methods) > 1:
            # superb.students true: every method's students; keep the first method's
            self.thin("superb.students", methods[:1], f"the {methods[0]} students only: "
                      f"{' and '.join(methods)} students of one shape run the same SUPERB code path", old=methods)
        self.cut_to("superb.num_workers", 0)
        self.cut_to("superb.threads", 1)  # two single-thread jobs on 2 cores beat one with two threads
        tasks = self.raw["superb"].get("tasks", sup["tasks"])
        for task in [t for t in tasks if TASKS[t].trainable]:
            smoke = self.smoke["superb"][task]
            # one training stretch, one dev evaluation, one save: the official heads (ASR's
            # 2 x 1024 BiLSTM) take seconds per step on a CPU
            cuts = {"batch_size": smoke["batch_size"], "gradient_accumulate": smoke["gradient_accumulate"],
                    "total_steps": smoke["eval_step"], "eval_step": smoke["eval_step"], "save_step": smoke["eval_step"]}
            for key, value in cuts.items():
                self.cut_to(f"superb.{task}.{key}", value)
            tcfg = sup[task]
            if isinstance(tcfg["lr"], list):
                self.thin(f"superb.{task}.lr", tcfg["lr"][:1], "the first learning rate")
            if "folds" in tcfg:
                self.thin(f"superb.{task}.folds", tcfg["folds"][:1], "the first fold")

    def report(self) -> None:
        for section in ("cost", "cka"):
            for key, value in self.smoke["report"][section].items():
                self.cut_to(f"report.{section}.{key}", value)


def rehearse(raw: dict, stem: str, smoke: dict, exists: Callable[[str], bool] = os.path.exists) -> dict:
    """The rehearsal config of ``raw`` (a study config as read from its file, named ``stem``),
    with the sizes of ``smoke`` (workflow/configs/smoke.yaml) and the dataset roots for which
    ``exists`` is false replaced; see the module docstring. Pure: ``raw`` is not changed."""
    r = _Rehearsal(raw, smoke, exists)
    r.raw["results"] = f"{REHEARSAL_RESULTS}/{stem}"
    r.corpora()
    r.superb_roots()
    r.teacher()
    r.distill()
    r.superb()
    r.report()
    r.raw["rehearsal"] = {"of": stem, "results": r.full["results"], "replaced": r.replaced, "thinned": r.thinned,
                          "cut": r.cut}
    validate_config(copy.deepcopy(r.raw))
    return r.raw


def write_rehearsal(config_path: str | Path, out: str | Path | None = None) -> tuple[Path, dict]:
    """Write the rehearsal of the config file ``config_path`` (default: ``<results of the
    rehearsal>/config.yaml``); returns its path and the config."""
    config_path = Path(config_path)
    raw = yaml.safe_load(config_path.read_text()) or {}
    derived = rehearse(raw, config_path.stem, yaml.safe_load(SMOKE.read_text()))
    out = Path(out) if out else Path(derived["results"]) / "config.yaml"
    reh = derived["rehearsal"]
    head = [f"Rehearsal of {config_path} (python -m deepwide plan rehearse): every rule at toy size.",
            f"results: {derived['results']} (the study's: {reh['results']})", "replaced:",
            *[f"  {line}" for line in reh["replaced"] or ["nothing"]], "thinned:",
            *[f"  {line}" for line in reh["thinned"] or ["nothing"]],
            f"cut to smoke sizes: {len(reh['cut'])} keys (rehearsal.cut: [study, rehearsal])"]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(f"# {line}\n" for line in head) + yaml.safe_dump(derived, sort_keys=False))
    return out, derived
