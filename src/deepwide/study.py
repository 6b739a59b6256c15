"""The study a config describes: every job of every stage, its identity and its paths.

One :class:`Study` is built from the validated config when the Snakefile is parsed and by
every CLI command that reads a config; the rule files only read from it. It owns

- the results layout (every path is built here, once),
- the upstream names (teacher, FBANK, one per student and distillation seed),
- each stage's job list.

Every job has two parts:

identity
    the settings that change its result. They, and only they, are the job's Snakemake
    ``params`` (the rerun trigger) and its output path. A SUPERB job's identity holds its
    own learning rate and head seed, not the task's lists.
execution
    threads, loader workers, device, log and checkpoint cadence, cache sizes: handed to
    the stage's CLI as flags (``--exec-json``), never params, so changing them reruns
    nothing. :data:`EXECUTION_KEYS` lists them.

Code versions: each stage has an explicit version in :data:`STAGE_VERSIONS` that is part
of its jobs' identity. A change to a stage's code that changes its results bumps that
number (and so reruns exactly that stage's jobs and what reads them); docstrings,
refactors and speed-ups do not. A user forces a rerun with ``snakemake --forcerun RULE``.

Config semantics: ``snakemake --configfile F`` and ``python -m deepwide ... --config F``
both read F alone; keys F does not set take the schema defaults (``workflow/schemas``),
never the values of ``config.yaml``. Without ``--configfile`` Snakemake reads
``config.yaml``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from deepwide.errors import DeepwideError
from deepwide.identity import (  # noqa: F401  (re-exported for the planner's callers)
    EXECUTION_KEYS,
    STAGE_VERSIONS,
    config_sha,
    get_dotted,
    split_execution,
    with_execution,
)
from deepwide.utils.io import canonical_json

# teacher depth a plan assumes while the checkpoint to import is missing (Base-sized models)
PLAN_TEACHER_DEPTH = 12

@dataclass(frozen=True)
class StudentJob:
    """One (KD method, student shape, distillation seed) job."""

    method: str
    shape: str
    seed: int
    depth: int
    layers: tuple[int, ...]  # teacher layers its KD targets come from
    cached: bool  # targets from the cache (else an online teacher)
    cache_frontend: bool  # the frozen front end's output read from the cache

    @property
    def upstream(self) -> str:
        return f"{self.method}-{self.shape}-seed{self.seed}"


@dataclass(frozen=True)
class SuperbJob:
    upstream: str
    task: str
    lr: str  # formatted (path component)
    seed: int


@dataclass
class Study:
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
        from deepwide.config import validate_config

        return cls(validate_config(config))

    @classmethod
    def from_file(cls, path: str | Path, overrides: dict | None = None, plan: bool = False) -> "Study":
        """From a config file alone (schema defaults fill what it does not set); ``plan``:
        see the ``plan`` field."""
        from deepwide.config import load_config

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
        from deepwide.superb.plan import check_config

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
        raise DeepwideError(f"no execution settings for stage {stage!r}")

    @property
    def exec(self) -> dict[str, str]:
        """``--exec-json`` value per stage, for the shell commands (``{STUDY.exec[distill]}``)."""
        return {stage: self.execution_json(stage) for stage in ("teacher", "distill", "superb")}

    def gpu_job(self, rule: str) -> dict:
        """A GPU rule's cluster request (config ``resources``: one GPU, CPUs and memory per GPU)."""
        from deepwide.resources import job_resources

        return job_resources(self.config["resources"], rule, gpu=True)

    def cpu_job(self, rule: str) -> dict:
        """A CPU rule's cluster request (memory and runtime; never a GPU)."""
        from deepwide.resources import job_resources

        return job_resources(self.config["resources"], rule, gpu=False)

    def rule_classes(self) -> dict[str, bool]:
        """rule name -> whether its jobs ask for a GPU, read from the ``STUDY.gpu_job(...)`` /
        ``STUDY.cpu_job(...)`` calls in workflow/rules/*.smk (``synth_{_name}`` and
        ``prepare_{_name}`` expanded over the study's corpora), for the rules this study runs."""
        import re

        rules_dir = Path(__file__).resolve().parents[2] / "workflow" / "rules"
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

    # ------------------------------------------------------------------ corpus
    @property
    def corpus_cfg(self) -> dict:
        return self.config["corpus"]

    @cached_property
    def corpora(self) -> list[str]:
        from deepwide.corpus.sources import enabled

        return enabled(self.corpus_cfg)

    @cached_property
    def synthesized(self) -> list[str]:
        from deepwide.corpus.sources import synthesized

        return synthesized(self.corpus_cfg)

    def corpus_dir(self, name: str) -> Path:
        """The synthesized tree of a corpus (the synth rule's directory output)."""
        from deepwide.corpus.sources import corpus_dir

        return corpus_dir(self.results, name)

    def manifest_dir(self, name: str) -> Path:
        return self.results / "manifests" / name

    def manifest(self, corpus: str, split: str) -> str:
        return str(self.manifest_dir(corpus) / f"{split}.parquet")

    def manifests(self, name: str) -> list[str]:
        """Every file the prepare job of a corpus declares."""
        if name in self.extra_corpora:
            from deepwide.corpus.real_extra import manifest_splits_extra

            return [str(self.manifest_dir(name) / f"{s}.parquet") for s in manifest_splits_extra(name)]
        from deepwide.corpus.prepare import manifest_outputs

        return [str(self.manifest_dir(name) / f) for f in manifest_outputs(name, self.corpus_cfg[name])]

    # LibriMix (SD), SNIPS (SF), QUESST14 (QbE): read by ``corpus prepare-extra``, built only
    # when a task of the study reads them through the pipeline (superb.<task>.root unset)
    @cached_property
    def extra_corpora(self) -> list[str]:
        from deepwide.superb.plan import EXTRA_TASK_CORPUS, enabled_tasks, qbe_enabled

        tasks = set(enabled_tasks(self.config)) | ({"qbe"} if qbe_enabled(self.config) else set())
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
        from deepwide.corpus.sources import sd_data_dir

        return str(sd_data_dir(self.results))

    def corpus_roots(self, name: str) -> tuple[Path, Path | None]:
        from deepwide.corpus.sources import roots

        return roots(name, self.corpus_cfg, self.results)

    def corpus_inputs(self, name: str) -> list[str]:
        """What a job reading corpus ``name``'s audio depends on: the synth output, or
        nothing for a real root (read in place)."""
        return [str(self.corpus_dir(name))] if name in self.synthesized or name in self.extra_synthesized else []

    def check_corpora(self) -> None:
        from deepwide.corpus.sources import check_sources

        check_sources(self.corpus_cfg)
        missing = [f"corpus.{c}.root: folder {self.extra_root(c)} does not exist"
                   for c in self.extra_corpora if c not in self.extra_synthesized and not self.extra_root(c).is_dir()]
        if "librimix" in self.extra_synthesized and "librispeech" not in self.corpora:
            missing.append("corpus.librimix: the embedded LibriMix is mixed from corpus.librispeech, which is disabled "
                           "(enable it or set corpus.librimix.root)")
        if missing:
            raise DeepwideError("corpus sources:\n  " + "\n  ".join(missing))

    # ------------------------------------------------------------------ teacher
    def check_teacher(self) -> None:
        """The pretrained teacher's shape, checked before any job (heads and pos_conv_groups
        dividing width, sizes >= 1): a bad one failed inside teacher_pretrain, after synthesis."""
        if self.teacher_source != "pretrain":
            return
        from deepwide.teacher.pretrain import teacher_arch

        try:
            teacher_arch(self.config["teacher"]["pretrain"]["arch"])
        except DeepwideError as err:
            raise DeepwideError(f"config key teacher.pretrain.arch: {err}") from None

    @property
    def teacher_dir(self) -> Path:
        return self.results / "teacher"

    @property
    def teacher_ckpt(self) -> str:
        return str(self.teacher_dir / "teacher.pt")

    @property
    def teacher_source(self) -> str:
        return self.config["teacher"]["source"]

    def teacher_import(self) -> tuple[str, Path]:
        from deepwide.teacher.rules import import_source

        return import_source(self.config)

    def teacher_pretrain_manifests(self) -> dict[str, str]:
        pt = self.config["teacher"]["pretrain"]
        out = {"train": self.manifest(pt["corpus"], pt["train_split"])}
        if pt["valid_split"]:
            out["valid"] = self.manifest(pt["corpus"], pt["valid_split"])
        return out

    @cached_property
    def teacher_depth(self) -> int:
        """Transformer layers of the teacher, known before it exists (config, or the
        imported checkpoint's own config)."""
        if self.teacher_source == "pretrain":
            return int(self.config["teacher"]["pretrain"]["arch"]["depth"])
        from deepwide.models.convert import checkpoint_depth

        try:
            fmt, path = self.teacher_import()
        except DeepwideError as err:
            if not self.plan:
                raise
            self._warn(f"{err}; the plan assumes a {PLAN_TEACHER_DEPTH}-layer teacher (HuBERT/wav2vec 2.0 Base) "
                       "for the students' target layers")
            return PLAN_TEACHER_DEPTH
        return checkpoint_depth(fmt, path)

    # ------------------------------------------------------------------ distill
    @property
    def dcfg(self) -> dict:
        return self.config["distill"]

    @cached_property
    def students(self) -> dict:
        """Student shape name -> ArchConfig (explicit shapes + the solver grid)."""
        from deepwide.distill.plan import resolve_students

        d = self.dcfg
        if d["frontend"] == "frozen" and d["init"] not in ("teacher_frontend", "distilhubert"):
            raise DeepwideError(
                "config key distill.frontend: `frozen` needs distill.init `teacher_frontend` or `distilhubert` "
                "(a frozen random front end learns nothing)"
            )
        return resolve_students(d)

    @property
    def methods(self) -> list[str]:
        return list(self.dcfg["methods"])

    @property
    def distill_seeds(self) -> list[int]:
        return [int(s) for s in self.dcfg["seeds"]]

    def method_cached(self, method: str) -> bool:
        t = self.dcfg["targets"]
        return t["mode"] == "cached" and method not in t["online_methods"]

    @property
    def cache_frontend(self) -> bool:
        d = self.dcfg
        return bool(d["frontend"] == "frozen" and d["targets"]["cache_frontend"])

    def student_layers(self, method: str, depth: int) -> tuple[int, ...]:
        from deepwide.distill.plan import layers_for

        return tuple(layers_for(method, self.dcfg[method], [depth], self.teacher_depth))

    @cached_property
    def student_jobs(self) -> list[StudentJob]:
        jobs = []
        for m in self.methods:
            cached = self.method_cached(m)
            for name, arch in self.students.items():
                layers = self.student_layers(m, arch.depth)
                for seed in self.distill_seeds:
                    jobs.append(StudentJob(m, name, seed, arch.depth, layers, cached, cached and self.cache_frontend))
        return jobs

    def student_job(self, method: str, shape: str, seed: int | str) -> StudentJob:
        key = (method, shape, int(seed))
        for j in self.student_jobs:
            if (j.method, j.shape, j.seed) == key:
                return j
        raise DeepwideError(f"student {method}/{shape}/seed{seed} is not in the study "
                            f"(known: {', '.join(sorted({j.shape for j in self.student_jobs}))})")

    def student_dir(self, method: str, shape: str, seed: int | str) -> str:
        return str(self.results / "students" / str(method) / str(shape) / f"seed{seed}")

    def student_ckpt(self, job: StudentJob) -> str:
        return str(Path(self.student_dir(job.method, job.shape, job.seed)) / "student.pt")

    def student_resume_dir(self, method: str, shape: str, seed: int | str) -> str:
        return str(self.results / "resume" / "distill" / str(method) / str(shape) / f"seed{seed}")

    def distill_manifests(self) -> list[str]:
        return [self.manifest(self.dcfg["corpus"], s) for s in self.dcfg["splits"]]

    def student_identity(self, job: StudentJob) -> dict:
        """Everything the (method, shape, seed) job's result depends on besides its input files."""
        d = self.dcfg
        train = self.identity("distill.train")
        return {
            "method": job.method,
            "method_config": d[job.method],
            "arch": self.students[job.shape].to_dict(),
            "loss": d["loss"],
            "init": d["init"],
            "frontend": d["frontend"],
            "frontend_grad_scale": d["frontend_grad_scale"],
            "train": {**train, "seed": job.seed},
            "targets": {"mode": "cached" if job.cached else "online", "frontend": job.cache_frontend,
                        "crop": self.targets_crop,  # cached and online students see the same windows
                        **({"key": self.targets_key, "layers": list(job.layers)} if job.cached else {})},
        }

    # targets: one cache per (corpus splits, dtype, crop policy); one job per teacher layer
    @cached_property
    def targets_crop(self) -> dict:
        """distill.targets.crop as :func:`deepwide.distill.data.crop_spec`: ``fixed`` windows are
        distill.train.max_seconds long, drawn from the config's seed and the utterance id."""
        from deepwide.distill.data import crop_spec

        return crop_spec(self.dcfg["targets"]["crop"], self.dcfg["train"]["max_seconds"], self.config["seed"])

    @cached_property
    def targets_spec(self) -> dict:
        d = self.dcfg
        spec = {"corpus": d["corpus"], "splits": list(d["splits"]), "dtype": d["targets"]["dtype"],
                "crop": self.targets_crop["policy"]}
        if spec["crop"] == "fixed":  # the windows' length and seed; `full` keeps the key it always had
            spec.update(crop_seconds=self.targets_crop["max_seconds"], crop_seed=self.targets_crop["seed"])
        return spec

    @property
    def targets_crop_flags(self) -> str:
        """``targets extract`` options of the crop policy."""
        c = self.targets_crop
        if c["policy"] == "full":
            return "--crop full"
        return f"--crop fixed --crop-seconds {c['max_seconds']!r} --crop-seed {c['seed']}"

    @property
    def targets_key(self) -> str:
        return f"{self.dcfg['corpus']}-{config_sha(self.targets_spec)[:10]}"

    def targets_part_dir(self, part: str, key: str | None = None) -> str:
        """``layer{k}`` or ``frontend`` of the targets cache."""
        return str(self.results / "targets" / (key or self.targets_key) / part)

    def student_targets(self, job: StudentJob) -> list[str]:
        if not job.cached:
            return []
        parts = [f"layer{k}" for k in job.layers] + (["frontend"] if job.cache_frontend else [])
        return [self.targets_part_dir(p) for p in parts]

    @cached_property
    def targets_parts(self) -> list[str]:
        parts = sorted({f"layer{k}" for j in self.student_jobs if j.cached for k in j.layers},
                       key=lambda p: int(p[5:]))
        if any(j.cache_frontend for j in self.student_jobs):
            parts.append("frontend")
        return parts

    def targets_identity(self, part: str) -> dict:
        if part != "frontend" and not (part.startswith("layer") and part[5:].isdigit()):
            raise DeepwideError(f"targets part {part!r}: expected layer<k> or frontend")
        return {**self.targets_spec, "part": part}

    # ------------------------------------------------------------------ superb
    @property
    def scfg(self) -> dict:
        return self.config["superb"]

    @cached_property
    def upstreams(self) -> dict[str, str]:
        """Upstream name -> source (``fbank``, a deepwide checkpoint or an HF directory)."""
        sup = self.scfg
        out: dict[str, str] = {}
        if sup["teacher"]:
            out["teacher"] = self.teacher_ckpt
        if sup["fbank"]:
            out["fbank"] = "fbank"
        if sup["students"]:
            for j in self.student_jobs:
                out[j.upstream] = self.student_ckpt(j)
        for name, src in (sup.get("extra_upstreams") or {}).items():
            if name in out:
                raise DeepwideError(f"superb.extra_upstreams.{name}: name already used by another upstream")
            out[name] = str(src)
        return out

    def upstream_inputs(self, upstream: str) -> list[str]:
        src = self.upstream_source(upstream)
        return [] if src == "fbank" else [src]

    def upstream_source(self, upstream: str) -> str:
        try:
            return self.upstreams[upstream]
        except KeyError:
            raise DeepwideError(f"upstream {upstream!r} is not in the study") from None

    def upstream_checkpoint(self, upstream: str) -> str | None:
        """The deepwide checkpoint of an upstream, or None (FBANK, HF directories)."""
        src = self.upstreams.get(upstream)
        return src if src and src.endswith(".pt") else None

    @property
    def student_upstreams(self) -> list[str]:
        return [j.upstream for j in self.student_jobs] if self.scfg["students"] else []

    def student_info(self, upstream: str) -> str:
        return str(Path(self.upstream_source(upstream)).parent / "info.json")

    @cached_property
    def superb_tasks(self) -> list[str]:
        """Tasks trained through s3prl (QbE, DTW only, is :attr:`qbe_enabled`)."""
        from deepwide.superb.plan import enabled_tasks
        from deepwide.superb.tasks import TASKS

        return [t for t in enabled_tasks(self.config) if TASKS[t].trainable]

    @property
    def superb_seeds(self) -> list[int]:
        return [int(s) for s in self.scfg["seeds"]]

    def superb_task_seeds(self, task: str) -> list[int]:
        """Head seeds of ``task``: superb.<task>.seeds, else superb.seeds."""
        own = (self.scfg.get(task) or {}).get("seeds")
        return [int(s) for s in own] if own else self.superb_seeds

    def superb_lrs(self, task: str) -> list[str]:
        from deepwide.superb.plan import format_lr, lrs

        return [format_lr(x) for x in lrs(self.config, task)]

    def superb_result(self, upstream: str, task: str, lr: str, seed: int | str) -> str:
        return str(self.results / "superb" / upstream / task / f"lr{lr}" / f"seed{seed}" / "result.json")

    def superb_selected(self, upstream: str, task: str) -> str:
        return str(self.results / "superb" / upstream / task / "selected.json")

    @cached_property
    def replicate_tasks(self) -> list[str] | None:
        """superb.replicate_tasks: tasks run for the students of every distillation seed
        (None: all tasks). Every entry must be one of superb.tasks."""
        rep = self.scfg.get("replicate_tasks")
        if rep is None:
            return None
        tasks = set(self.scfg["tasks"])
        missing = [t for t in rep if t not in tasks]
        if missing:
            raise DeepwideError(f"config key superb.replicate_tasks: {', '.join(missing)} not in superb.tasks "
                                f"({', '.join(self.scfg['tasks'])})")
        return list(rep)

    @cached_property
    def _later_seed_students(self) -> set[str]:
        """Student upstreams of distillation seeds after the first."""
        first = self.distill_seeds[0]
        return {j.upstream for j in self.student_jobs if j.seed != first} if self.scfg["students"] else set()

    def evaluates(self, upstream: str, task: str) -> bool:
        """Whether the study runs ``task`` on ``upstream``: every pair, except that students of
        later distillation seeds run only superb.replicate_tasks when it is set."""
        rep = self.replicate_tasks
        return rep is None or task in rep or upstream not in self._later_seed_students

    @cached_property
    def superb_jobs(self) -> list[SuperbJob]:
        return [SuperbJob(u, t, lr, s) for u in self.upstreams for t in self.superb_tasks if self.evaluates(u, t)
                for lr in self.superb_lrs(t) for s in self.superb_task_seeds(t)]

    def superb_task_results(self, upstream: str, task: str) -> list[str]:
        return [self.superb_result(upstream, task, lr, s) for lr, s in self.superb_heads(task)]

    # One SUPERB job per (upstream, task) trains all of its heads (lr x head seed) on one
    # upstream pass per batch (deepwide.superb.sweep). Its declared output is heads.json; each
    # head writes its own result.json at superb_result(). The job's identity lists its heads,
    # so adding an lr or seed reruns it, and the rerun restores every finished head from its
    # s3prl target dir (lr{lr}/seed{s}/work-<hash>) and trains only the new ones.
    def superb_heads(self, task: str) -> list[tuple[str, int]]:
        return [(lr, s) for lr in self.superb_lrs(task) for s in self.superb_task_seeds(task)]

    def superb_heads_file(self, upstream: str, task: str) -> str:
        return str(self.results / "superb" / upstream / task / "heads.json")

    @cached_property
    def superb_sweeps(self) -> list[tuple[str, str]]:
        """(upstream, task) of every SUPERB job (one sweep each)."""
        return [(u, t) for u in self.upstreams for t in self.superb_tasks if self.evaluates(u, t)]

    def superb_sweep_identity(self, upstream: str, task: str) -> dict:
        ident = self.superb_identity(upstream, task, "0", 0)
        del ident["lr"], ident["seed"]
        ident["heads"] = [[lr, int(s)] for lr, s in self.superb_heads(task)]
        return ident

    def superb_task_root(self, task: str) -> tuple[Path, bool]:
        from deepwide.superb.plan import task_root

        return task_root(self.config, task)

    def superb_corpus_inputs(self, task: str) -> list[str]:
        from deepwide.superb.tasks import get_task

        root, embedded = self.superb_task_root(task)
        if not embedded:
            return []
        if task == "sd":  # the Kaldi data dir LibriMix's prepare job writes
            return [str(root)]
        corpus = get_task(task).corpus
        extra = self.manifests(corpus) if corpus in self.extra_corpora else []
        return self.corpus_inputs(corpus) + extra

    def superb_identity(self, upstream: str, task: str, lr: str, seed: int | str) -> dict:
        from deepwide.superb.plan import task_config

        tcfg, _ = split_execution(task_config(self.config, task), f"superb.{task}")
        tcfg.pop("lr", None)  # the job's own lr below, never the task's list
        tcfg.pop("seeds", None)  # likewise its own head seed (a sweep's heads list them)
        ident = {"upstream": upstream, "source": self.upstream_source(upstream), "task": tcfg, "lr": lr, "seed": int(seed)}
        if task in ("asr", "pr"):  # s3prl reads the transcripts under the corpus's text policy
            ident["text_policy"] = self.text_policy
        return ident

    @property
    def text_policy(self) -> str:
        return self.corpus_cfg["librispeech"]["text_policy"]

    def superb_task_flags(self, task: str) -> str:
        """``superb run`` options that follow from the task's identity (text policy, PR lexicon)."""
        if task == "pr":
            return f"--text-policy {self.text_policy} --lexicon-dir {self.superb_lexicon_dir}"
        return f"--text-policy {self.text_policy}" if task == "asr" else ""

    def superb_task_inputs(self, task: str) -> list[str]:
        """Files a task's jobs read besides upstream and corpus: PR's lexicon."""
        return [str(Path(self.superb_lexicon_dir) / "lexicon.json")] if task == "pr" else []

    # PR's lexicon: one job per study, from the root's transcripts (or the user's s3prl files)
    @property
    def superb_lexicon_dir(self) -> str:
        return str(self.results / "superb" / "lexicon")

    def superb_lexicon_identity(self) -> dict:
        t = self.scfg["pr"]
        root, _ = self.superb_task_root("pr")
        return {"root": str(root), "splits": [*t["train_sets"], *t["valid_sets"], *t["test_sets"]],
                "lexicon": list(t["lexicon"]), "text_policy": self.text_policy}

    @property
    def superb_cache(self) -> str:
        return str(self.results / "superb" / "cache")

    @property
    def qbe_enabled(self) -> bool:
        from deepwide.superb.plan import qbe_enabled

        return qbe_enabled(self.config)

    def qbe_result(self, upstream: str) -> str:
        from deepwide.superb.plan import format_lr

        return str(self.results / "superb" / upstream / "qbe" / f"lr{format_lr(self.scfg['qbe']['lr'])}" / "result.json")

    @property
    def qbe_results(self) -> list[str]:
        return [self.qbe_result(u) for u in self.upstreams if self.evaluates(u, "qbe")] if self.qbe_enabled else []

    def check_superb(self) -> list[str]:
        from deepwide.superb.plan import check_config

        return check_config(self.config)

    # ------------------------------------------------------------------ report
    @property
    def report_dir(self) -> Path:
        return self.results / "report"

    @property
    def report_heldout(self) -> str:
        h = self.config["report"]["heldout"]
        return self.manifest(h["corpus"], h["split"])

    def report_result_files(self) -> list[str]:
        return [self.superb_result(j.upstream, j.task, j.lr, j.seed) for j in self.superb_jobs] + self.qbe_results

    def report_job_outputs(self) -> list[str]:
        """What report_collect waits for: every SUPERB job's heads.json and QbE's results."""
        return [self.superb_heads_file(u, t) for u, t in self.superb_sweeps] + self.qbe_results

    @property
    def report_upstreams(self) -> list[str]:
        return list(self.upstreams) if (self.superb_tasks or self.qbe_enabled) else []

    def report_cost(self, upstream: str) -> str:
        return str(self.report_dir / "cost" / f"{upstream}.json")

    def report_cka(self, upstream: str) -> str:
        return str(self.report_dir / "cka" / f"{upstream}.parquet")

    @property
    def report_costs(self) -> list[str]:
        return [self.report_cost(u) for u in self.report_upstreams if self.upstream_checkpoint(u)]

    @property
    def report_students(self) -> list[str]:
        ups = set(self.report_upstreams)
        return [u for u in self.student_upstreams if u in ups]

    @property
    def report_infos(self) -> list[str]:
        return [self.student_info(u) for u in self.report_students]

    @property
    def report_ckas(self) -> list[str]:
        if "teacher" not in self.upstreams:
            return []
        return [self.report_cka(u) for u in self.report_students]

    def report_kdloss(self, upstream: str) -> str:
        return str(self.report_dir / "kd_loss" / f"{upstream}.parquet")

    @property
    def report_kdlosses(self) -> list[str]:
        """Held-out KD loss per student (needs the teacher, as CKA does)."""
        if "teacher" not in self.upstreams:
            return []
        return [self.report_kdloss(u) for u in self.report_students]

    def report_identity(self, section: str) -> str:
        """The report.<section> options of a report rule (tables and figures: with the reference)."""
        r = self.config["report"]
        return canonical_json({**r[section], "reference": r["reference"]} if section in ("tables", "figures") else r[section])

    @property
    def report_teacher_info(self) -> list[str]:
        """The pretrained teacher's info.json (its cka_first_last feeds the report's warning); [] for an import."""
        return [str(self.teacher_dir / "info.json")] if self.teacher_source == "pretrain" else []

    REPORT_TABLES = ("results", "grid", "families", "score", "trend", "guard", "verdict", "kd_loss")
    REPORT_FIGURES = ("depth", "heatmap", "layer_weights", "cka", "pareto", "kd_loss")

    def report_table(self, name: str, ext: str) -> str:
        return str(self.report_dir / "tables" / f"{name}.{ext}")

    def report_figure(self, name: str, ext: str) -> str:
        return str(self.report_dir / "figures" / f"{name}.{ext}")

    @property
    def report_outputs(self) -> list[str]:
        if not self.report_upstreams:
            return []
        return ([self.report_table(n, e) for n in self.REPORT_TABLES for e in ("md", "csv", "tex")]
                + [self.report_figure(n, e) for n in self.REPORT_FIGURES for e in ("png", "pdf")])

    # ------------------------------------------------------------------ rule all
    def all_targets(self) -> list[str]:
        """The final outputs of the study (Snakemake's ``rule all``)."""
        out = [m for c in [*self.corpora, *self.extra_corpora] for m in self.manifests(c)]
        out.append(self.teacher_ckpt)
        if self.teacher_source == "pretrain":
            out.append(str(self.teacher_dir / "info.json"))
        out += [str(Path(self.student_dir(j.method, j.shape, j.seed)) / "info.json") for j in self.student_jobs]
        out += [self.superb_selected(u, t) for u, t in self.superb_sweeps]
        out += self.qbe_results
        out += self.report_outputs
        return out
