"""The SUPERB stage's jobs: tasks, dataset roots, learning rates, head seeds, QbE options.

Module-level functions read the validated config (used by the rules and ``plan check``);
:class:`SuperbPlan` names the jobs and their paths. One SUPERB job per (upstream, task)
trains all of its heads (lr x head seed) on one upstream pass per batch
(:mod:`deepwide.superb.sweep`).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from deepwide.errors import DeepwideError
from deepwide.identity import format_lr, split_execution
from deepwide.plan.corpus import corpus_dir, sd_data_dir
from deepwide.plan.distill import StudentJob
from deepwide.superb.tasks import TASKS, check_root, get_task


@dataclass(frozen=True)
class SuperbJob:
    upstream: str
    task: str
    lr: str  # formatted (path component)
    seed: int


def task_root(config: dict, task: str) -> tuple[Path, bool]:
    """``(root, embedded)``: superb.<task>.root, else corpus.<corpus>.root, else the
    synthesized corpus under RESULTS/corpora/<corpus> (embedded)."""
    spec = get_task(task)
    tcfg = config["superb"].get(task, {})
    if tcfg.get("root"):
        return Path(tcfg["root"]), False
    corpus_cfg = (config.get("corpus") or {}).get(spec.corpus)
    if task == "sd":
        # s3prl's SD reads the Kaldi data dir that prepare-extra writes from LibriMix (a
        # real corpus.librimix.root or the embedded mixtures): always a pipeline output
        if isinstance(corpus_cfg, dict) and corpus_cfg.get("enabled") is False:
            raise DeepwideError("superb.sd: corpus.librimix is disabled and superb.sd.root (a Kaldi data dir) is not set: "
                                "enable the corpus, set a root, or drop sd from superb.tasks")
        return sd_data_dir(config["results"]), True
    if isinstance(corpus_cfg, dict) and corpus_cfg.get("root"):
        return Path(corpus_cfg["root"]), False
    if isinstance(corpus_cfg, dict) and corpus_cfg.get("enabled") is False:
        raise DeepwideError(
            f"superb.{task}: corpus.{spec.corpus} is disabled and superb.{task}.root is not set: "
            f"enable the corpus, set a root, or drop {task} from superb.tasks"
        )
    return corpus_dir(config["results"], spec.corpus), True


def task_config(config: dict, task: str) -> dict:
    """superb.<task> with the corpus stage's real roots folded in where superb needs them
    (Speech Commands: the train and test folders are separate roots there)."""
    tcfg = dict(config["superb"][task])
    corpus_cfg = (config.get("corpus") or {}).get(get_task(task).corpus)
    if task == "ks" and not tcfg.get("root") and isinstance(corpus_cfg, dict) and corpus_cfg.get("root"):
        tcfg["train_dir"] = str(Path(corpus_cfg["root"]).resolve())
        if corpus_cfg.get("test_root"):
            tcfg["test_dir"] = str(Path(corpus_cfg["test_root"]).resolve())
    return tcfg


def lrs(config: dict, task: str) -> list[float]:
    value = config["superb"][task]["lr"]
    values = value if isinstance(value, list) else [value]
    if not values:
        raise DeepwideError(f"superb.{task}.lr: empty list")
    return [float(v) for v in values]


def enabled_tasks(config: dict) -> list[str]:
    tasks = list(config["superb"]["tasks"])
    for t in tasks:
        get_task(t)
    return tasks


def check_config(config: dict, errors: list[str] | None = None) -> list[str]:
    """Raise DeepwideError (naming task and path) for an unusable real dataset root; with
    ``errors`` (a plan made before the data exists), append every such message there instead.

    Embedded roots are produced by the corpus stage later in the run, so only their
    presence in the plan is reported.
    """

    def check(*args, **kwargs):
        try:
            check_root(*args, **kwargs)
        except DeepwideError as err:
            if errors is None:
                raise
            errors.append(str(err))

    lines = []
    tasks = enabled_tasks(config)
    if qbe_enabled(config) and "qbe" not in tasks:
        tasks.append("qbe")
    for task in tasks:
        root, embedded = task_root(config, task)
        tcfg = task_config(config, task)
        if not TASKS[task].trainable:
            lines.append(f"{task}: {root} (no training; wired for real roots)")
            if not embedded:
                check(task, root, tcfg, embedded=False)
            continue
        if not embedded:
            check(task, root, tcfg, embedded=False)
        lines.append(f"{task}: {'embedded' if embedded else 'real'} root {root}, lr {lrs(config, task)}")
    return lines


# ------------------------------------------------------------------ QbE (DTW, no training)
def qbe_enabled(config: dict) -> bool:
    """QbE runs when superb.qbe.root is set or qbe is in superb.tasks (then the root must be)."""
    sup = config["superb"]
    return bool((sup.get("qbe") or {}).get("root")) or "qbe" in sup["tasks"]


def qbe_args(config: dict) -> list[str]:
    """``deepwide superb qbe`` options that set its result (superb.qbe)."""
    q = config["superb"]["qbe"]
    root, _ = task_root(config, "qbe")
    args = ["--root", str(root)]
    args += ["--layer", str(int(q["layer"]))] if q.get("layer") is not None else ["--select-on-dev"]
    args += ["--languages", *q["languages"], "--normalize", q["normalize"], "--distance", q["distance"],
             "--beta", repr(float(q["beta"])), "--lr", format_lr(q["lr"])]
    return args


class SuperbPlan:
    """The SUPERB part of :class:`deepwide.plan.Study`."""

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
        for j in self.superb_student_jobs:
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

    @cached_property
    def superb_student_jobs(self) -> list[StudentJob]:
        """The students evaluated (superb.students): true, all; false, none; a list of KD
        methods, those methods' students (each method must be one of distill.methods)."""
        value = self.scfg["students"]
        if isinstance(value, bool):
            return list(self.student_jobs) if value else []
        unknown = [m for m in value if m not in self.methods]
        if unknown:
            raise DeepwideError(f"config key superb.students: {value} names {', '.join(unknown)}, not in "
                                f"distill.methods ({', '.join(self.methods)})")
        return [j for j in self.student_jobs if j.method in value]

    @property
    def student_upstreams(self) -> list[str]:
        return [j.upstream for j in self.superb_student_jobs]

    def student_info(self, upstream: str) -> str:
        return str(Path(self.upstream_source(upstream)).parent / "info.json")

    @cached_property
    def superb_tasks(self) -> list[str]:
        """Tasks trained through s3prl (QbE, DTW only, is :attr:`qbe_enabled`)."""
        return [t for t in self.superb_enabled_tasks if TASKS[t].trainable]

    @cached_property
    def superb_enabled_tasks(self) -> list[str]:
        """superb.tasks, each one checked against the task registry."""
        return enabled_tasks(self.config)

    @property
    def superb_seeds(self) -> list[int]:
        return [int(s) for s in self.scfg["seeds"]]

    def superb_task_seeds(self, task: str) -> list[int]:
        """Head seeds of ``task``: superb.<task>.seeds, else superb.seeds."""
        own = (self.scfg.get(task) or {}).get("seeds")
        return [int(s) for s in own] if own else self.superb_seeds

    def superb_lrs(self, task: str) -> list[str]:
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
        return {j.upstream for j in self.superb_student_jobs if j.seed != first}

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
        return task_root(self.config, task)

    def superb_corpus_inputs(self, task: str) -> list[str]:
        root, embedded = self.superb_task_root(task)
        if not embedded:
            return []
        if task == "sd":  # the Kaldi data dir LibriMix's prepare job writes
            return [str(root)]
        corpus = get_task(task).corpus
        extra = self.manifests(corpus) if corpus in self.extra_corpora else []
        return self.corpus_inputs(corpus) + extra

    def superb_identity(self, upstream: str, task: str, lr: str, seed: int | str) -> dict:
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
        return qbe_enabled(self.config)

    def qbe_result(self, upstream: str) -> str:
        return str(self.results / "superb" / upstream / "qbe" / f"lr{format_lr(self.scfg['qbe']['lr'])}" / "result.json")

    @property
    def qbe_results(self) -> list[str]:
        return [self.qbe_result(u) for u in self.upstreams if self.evaluates(u, "qbe")] if self.qbe_enabled else []

    def check_superb(self) -> list[str]:
        return check_config(self.config)
