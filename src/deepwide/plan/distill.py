"""The distill stage's jobs: students (explicit shapes + the solver grid), one job per
(KD method, shape, distillation seed), and the teacher-targets cache they read.

:func:`resolve_students` turns ``distill.students`` into architectures; the KD methods'
teacher layers come from :mod:`deepwide.distill.spec`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from deepwide.distill.spec import crop_spec, layers_for
from deepwide.errors import DeepwideError
from deepwide.identity import config_sha
from deepwide.models.solver import solve
from deepwide.models.arch import ArchConfig, conv_layers


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


def _arch(d: dict, defaults: dict) -> ArchConfig:
    return ArchConfig(
        depth=int(d["depth"]),
        width=int(d["width"]),
        ffn=int(d["ffn"]),
        heads=int(d["heads"]),
        conv=conv_layers(int(d.get("conv_channels") or defaults["conv_channels"])),
        pos_conv_kernel=int(d.get("pos_conv_kernel") or defaults["pos_conv_kernel"]),
        pos_conv_groups=int(d.get("pos_conv_groups") or defaults["pos_conv_groups"]),
    )


def resolve_students(dcfg: dict) -> dict[str, ArchConfig]:
    """Explicit shapes plus the solver grid, keyed by ``ArchConfig.name``."""
    scfg = dcfg["students"]
    archs: list[tuple[str, ArchConfig]] = []
    for i, s in enumerate(scfg["shapes"]):
        try:
            archs.append((f"distill.students.shapes[{i}]", _arch(s, scfg)))
        except DeepwideError as err:
            raise DeepwideError(f"config key distill.students.shapes[{i}]: {err}") from err
    grid = scfg["grid"]
    if grid["depths"]:
        template = _arch({"depth": 1, "width": 64, "ffn": 256, "heads": 1}, scfg)
        kwargs = {k: grid[k] for k in ("width_step", "max_width", "ffn_ratio", "tune_ffn", "ffn_step", "heads",
                                       "head_dim", "max_rel_error")}
        kwargs["min_width"] = grid["min_width"]
        try:
            solved = solve(grid["budget"], grid["depths"], template=template, **kwargs)
        except DeepwideError as err:
            raise DeepwideError(f"config key distill.students.grid: {err}") from err
        archs.extend((f"distill.students.grid (depth {a.depth})", a) for a in solved)
    out: dict[str, ArchConfig] = {}
    for where, a in archs:
        if a.name in out and out[a.name].to_dict() != a.to_dict():
            raise DeepwideError(
                f"{where}: student name {a.name} is already used by a shape with another front end or positional conv"
            )
        out[a.name] = a
    return out


class DistillPlan:
    """The distill part of :class:`deepwide.plan.Study`."""

    @property
    def dcfg(self) -> dict:
        return self.config["distill"]

    @cached_property
    def students(self) -> dict:
        """Student shape name -> ArchConfig (explicit shapes + the solver grid)."""
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

    def student_file(self, method: str, shape: str, seed: int | str, name: str) -> str:
        return str(Path(self.student_dir(method, shape, seed)) / name)

    def student_ckpt(self, job: StudentJob) -> str:
        return self.student_file(job.method, job.shape, job.seed, "student.pt")

    def student_info_file(self, job: StudentJob) -> str:
        return self.student_file(job.method, job.shape, job.seed, "info.json")

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
        """distill.targets.crop as :func:`deepwide.distill.spec.crop_spec`: ``fixed`` windows are
        distill.train.max_seconds long, drawn from the config's seed and the utterance id."""
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

    def targets_work_dir(self, part: str) -> str:
        """Resume state of a targets job (outside its declared output)."""
        return str(self.results / "resume" / "targets" / self.targets_key / part)

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
