"""The study a config describes: every job of every stage, its identity and its paths.

One :class:`Study` is built from the validated config when the Snakefile is parsed and by
every ``plan`` command; the rule files only read from it. It is composed of one planner
per stage (:mod:`deepwide.plan.corpus`, ``teacher``, ``distill``, ``superb``, ``report``),
which together own

- the results layout: every path under ``results`` that a rule declares is built in this
  package, once (the stages' CLIs write what they are told to; superb.smk still joins PR's
  ``lexicon.json`` onto :attr:`superb_lexicon_dir` itself);
- the upstream names (teacher, FBANK, one per student and distillation seed);
- each stage's job list.

The planner is config-time code: it imports no torch and no stage runtime, only the
stages' light spec modules (``corpus.sources``, ``distill.spec``, ``teacher.spec``,
``superb.tasks``, ``models.arch``/``solver``).

Every job has two parts:

identity
    the settings that change its result. They, and only they, are the job's Snakemake
    ``params`` (the rerun trigger) and its output path. A SUPERB job's identity holds its
    own learning rate and head seed, not the task's lists.
execution
    threads, loader workers, device, log and checkpoint cadence, cache sizes: handed to
    the stage's CLI as flags (``--exec-json``), never params, so changing them reruns
    nothing. :data:`deepwide.identity.EXECUTION_KEYS` lists them.

Code versions: each stage has an explicit version in :data:`deepwide.identity.STAGE_VERSIONS` that is part
of its jobs' identity. A change to a stage's code that changes its results bumps that
number (and so reruns exactly that stage's jobs and what reads them); docstrings,
refactors and speed-ups do not. A user forces a rerun with ``snakemake --forcerun RULE``.

Config semantics: ``snakemake --configfile F`` and ``python -m deepwide ... --config F``
both read F alone; keys F does not set take the schema defaults (``workflow/schemas``),
never the values of ``config.yaml``. Without ``--configfile`` Snakemake reads
``config.yaml``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deepwide.config import load_config, validate_config
from deepwide.errors import DeepwideError
from deepwide.identity import EXECUTION_KEYS, STAGE_VERSIONS, get_dotted, split_execution
from deepwide.plan.corpus import CorpusPlan
from deepwide.plan.distill import DistillPlan
from deepwide.plan.report import ReportPlan
from deepwide.plan.superb import SuperbPlan, check_config
from deepwide.plan.teacher import TeacherPlan
from deepwide.resources import job_resources
from deepwide.utils.io import canonical_json

# Snakemake priority of the jobs on the way to the students (Study.priority)
CHAIN_PRIORITY = 10


@dataclass
class Study(CorpusPlan, TeacherPlan, DistillPlan, SuperbPlan, ReportPlan):
    """Every job of the study a validated config describes (see the module docstring)."""

    config: dict
    # A plan (`plan cost`, `plan resources`) is made before the data exists: then a missing
    # root or teacher checkpoint is recorded in ``warnings`` (see plan_warnings) and what it
    # would tell is assumed, instead of the DeepwideError a Snakemake run gets at parse time.
    plan: bool = False
    warnings: list[str] = field(default_factory=list)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_config(cls, config: dict) -> "Study":
        """From a config dict (validated here: defaults filled, unknown keys rejected)."""
        return cls(validate_config(config))

    @classmethod
    def from_file(cls, path: str | Path, overrides: dict | None = None, plan: bool = False) -> "Study":
        """From a config file alone (schema defaults fill what it does not set); ``plan``:
        see the ``plan`` field."""
        study = cls(load_config(path, overrides), plan=plan)
        if plan:
            study.plan_warnings()
        return study

    def _warn(self, message: str) -> None:
        if message not in self.warnings:
            self.warnings.append(message)

    def plan_warnings(self) -> list[str]:
        """Every check a Snakemake run makes at parse time (corpus roots, SUPERB roots, the
        teacher checkpoint to import), each failure recorded as a warning, not raised."""
        try:
            self.check_corpora()
        except DeepwideError as err:
            self._warn(str(err))
        errors: list[str] = []
        check_config(self.config, errors=errors)
        for e in errors:
            self._warn(e)
        if self.teacher_source == "import":
            self.teacher_depth  # noqa: B018 -- records the missing checkpoint, if it is
        return self.warnings

    # ------------------------------------------------------------------ layout
    @property
    def results(self) -> Path:
        return Path(self.config["results"])

    @property
    def logs(self) -> Path:
        return self.results / "logs"

    def log(self, stage: str, name: str) -> str:
        return str(self.logs / stage / f"{name}.log")

    def identity(self, dotted: str) -> Any:
        """The config node at ``dotted`` without its execution keys."""
        return split_execution(get_dotted(self.config, dotted), dotted)[0]

    def identity_json(self, dotted: str) -> str:
        return canonical_json(self.identity(dotted))

    def execution(self, dotted: str) -> dict:
        """Only the execution keys of the config node at ``dotted`` (nested as in config)."""
        return split_execution(get_dotted(self.config, dotted), dotted)[1]

    def params(self, stage: str, **identity) -> str:
        """A job's Snakemake params: canonical JSON of its identity and its stage version."""
        return canonical_json({"version": STAGE_VERSIONS[stage], **identity})

    def execution_json(self, stage: str) -> str:
        """The ``--exec-json`` flag value of a stage's jobs."""
        return canonical_json(self.execution_of(stage))

    def execution_of(self, stage: str) -> dict:
        if stage == "teacher":
            return self.execution("teacher.pretrain")
        if stage == "distill":
            return {"train": self.execution("distill.train")}
        if stage == "superb":
            sup = self.config["superb"]
            tasks = {t: self.execution(f"superb.{t}") for t in self.superb_tasks}
            return {**{k: sup[k] for k in EXECUTION_KEYS["superb"]}, "tasks": tasks}
        if stage == "qbe":  # device, threads, cache size and qbe.feature_cache
            return self.execution("superb")
        raise DeepwideError(f"no execution settings for stage {stage!r}")

    @property
    def exec(self) -> dict[str, str]:
        """``--exec-json`` value per stage, for the shell commands (``{STUDY.exec[distill]}``)."""
        return {stage: self.execution_json(stage) for stage in ("teacher", "distill", "superb", "qbe")}

    def gpu_job(self, rule: str) -> dict:
        """A GPU rule's cluster request (config ``resources``: one GPU, CPUs and memory per GPU)."""
        return job_resources(self.config["resources"], rule, gpu=True)

    def cpu_job(self, rule: str) -> dict:
        """A CPU rule's cluster request (memory and runtime; never a GPU)."""
        return job_resources(self.config["resources"], rule, gpu=False)

    def priority(self, rule: str) -> int:
        """Snakemake ``priority`` of a rule: the chain to the students (the teacher's and the
        students' corpus, the teacher, targets, distillation) goes first among the jobs ready
        to run, and the jobs that need no teacher (FBANK's SUPERB jobs, the other corpora)
        fill the cores around it. Without it the embedded study started its teacher 12
        minutes in, after every FBANK job. Priorities order jobs only: no rerun, no result."""
        corpora = {self.config["distill"]["corpus"]}
        if self.teacher_source == "pretrain":
            corpora.add(self.config["teacher"]["pretrain"]["corpus"])
        chain = {"teacher_pretrain", "teacher_import", "teacher_random", "targets", "distill"}
        chain |= {f"{step}_{c}" for c in corpora for step in ("synth", "prepare")}
        return CHAIN_PRIORITY if rule in chain else 0

    def rule_classes(self) -> dict[str, bool]:
        """rule name -> whether its jobs ask for a GPU, read from the ``STUDY.gpu_job(...)`` /
        ``STUDY.cpu_job(...)`` calls in workflow/rules/*.smk (``synth_{_name}`` and
        ``prepare_{_name}`` expanded over the study's corpora), for the rules this study runs."""
        rules_dir = Path(__file__).resolve().parents[3] / "workflow" / "rules"
        if not rules_dir.is_dir():
            raise DeepwideError(f"plan: workflow rules not found at {rules_dir} (run from a clone of the repository)")
        found: dict[str, bool] = {}
        for smk in sorted(rules_dir.glob("*.smk")):
            for kind, name in re.findall(r"STUDY\.(gpu|cpu)_job\(f?\"([^\"]+)\"\)", smk.read_text()):
                found[name] = kind == "gpu"
        names = {
            "synth_{_name}": [*self.synthesized, *[c for c in self.extra_synthesized if c != "librimix"]],
            "prepare_{_name}": [*self.corpora, *self.extra_corpora],
        }
        skip = set()
        if self.teacher_source != "import":
            skip.add("teacher_import")
        if self.teacher_source != "pretrain":
            skip.add("teacher_pretrain")
        if self.teacher_source != "random":
            skip.add("teacher_random")
        if not any(self.method_cached(m) for m in self.methods):
            skip.add("targets")
        if "librimix" not in self.extra_synthesized:
            skip.add("synth_librimix")
        if not self.qbe_enabled:
            skip.add("superb_qbe")
        if not self.superb_tasks:
            skip.update({"superb_run", "superb_select", "superb_lexicon"})
        out: dict[str, bool] = {}
        for name, gpu in found.items():
            if name in names:
                out.update({name.replace("{_name}", c): gpu for c in names[name]})
            elif name not in skip:
                out[name] = gpu
        return out

    # ------------------------------------------------------------------ rule all
    def all_targets(self) -> list[str]:
        """The final outputs of the study (Snakemake's ``rule all``)."""
        out = [m for c in [*self.corpora, *self.extra_corpora] for m in self.manifests(c)]
        out.append(self.teacher_ckpt)
        out += self.report_teacher_info
        out += [self.student_info_file(j) for j in self.student_jobs]
        out += [self.superb_selected(u, t) for u, t in self.superb_sweeps]
        out += self.qbe_results
        out += self.report_outputs
        return out
