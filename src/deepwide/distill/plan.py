"""The distillation study a config describes: students, jobs, targets caches.

Used by ``workflow/rules/distill.smk`` at parse time (so it needs no teacher on disk) and
by ``python -m deepwide distill students``. Every job gets a self-contained JSON
(:meth:`StudyPlan.job`) holding exactly the settings that job uses: it is both the rule's
rerun trigger and the trainer's input, so adding a student or changing another method's
settings reruns nothing else.

Teacher layers are resolved at run time from the teacher checkpoint's depth (the teacher
may be produced by the pipeline itself); a targets cache is therefore specified by the
method, its settings and the student depths it serves, and named by a hash of that spec.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from deepwide.distill.methods import METHODS
from deepwide.errors import DeepwideError
from deepwide.models.arch import ArchConfig, conv_layers
from deepwide.utils.io import canonical_json


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
        # the solver lives in the models stage; imported only when a grid is asked for
        try:
            from deepwide.models import solver
        except ImportError as err:
            raise DeepwideError(f"config key distill.students.grid needs deepwide.models.solver ({err})") from err

        template = _arch({"depth": 1, "width": 64, "ffn": 256, "heads": 1}, scfg)
        kwargs = {k: grid[k] for k in ("width_step", "max_width", "ffn_ratio", "tune_ffn", "ffn_step", "heads",
                                       "head_dim", "max_rel_error")}
        kwargs["min_width"] = grid["min_width"]
        try:
            solved = solver.solve(grid["budget"], grid["depths"], template=template, **kwargs)
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


@dataclass
class StudyPlan:
    config: dict
    students: dict[str, ArchConfig]
    methods: list[str]
    targets: dict[str, dict] = field(default_factory=dict)  # key -> spec
    _method_key: dict[str, str | None] = field(default_factory=dict)

    @property
    def dcfg(self) -> dict:
        return self.config["distill"]

    def targets_key(self, method: str) -> str | None:
        """Name of the targets cache ``method`` trains from (None: online teacher)."""
        return self._method_key[method]

    def job(self, method: str, shape: str) -> dict:
        """Everything the (method, shape) job depends on besides its input files."""
        if method not in self.methods:
            raise DeepwideError(f"KD method {method!r} is not in distill.methods {self.methods}")
        if shape not in self.students:
            raise DeepwideError(f"student {shape!r} is not in the study (known: {', '.join(sorted(self.students))})")
        d = self.dcfg
        key = self.targets_key(method)
        seed = d["train"]["seed"]
        return {
            "method": method,
            "method_config": d[method],
            "arch": self.students[shape].to_dict(),
            "loss": d["loss"],
            "init": d["init"],
            "frontend": d["frontend"],
            "frontend_grad_scale": d["frontend_grad_scale"],
            "train": {**d["train"], "seed": self.config.get("seed", 0) if seed is None else seed},
            "targets": {"mode": "cached" if key else "online",
                        "frontend": bool(key and self.targets[key]["frontend"])},
        }

    def job_json(self, method: str, shape: str) -> str:
        return canonical_json(self.job(method, shape))

    def jobs(self) -> list[tuple[str, str]]:
        return [(m, s) for m in self.methods for s in self.students]


def study_plan(config: dict) -> StudyPlan:
    """The plan of a validated config (``deepwide.config.validate_config``)."""
    d = config["distill"]
    if d["frontend"] == "frozen" and d["init"] != "teacher_frontend":
        raise DeepwideError(
            "config key distill.frontend: `frozen` needs distill.init `teacher_frontend` (a frozen random front end learns nothing)"
        )
    students = resolve_students(d)
    plan = StudyPlan(config=config, students=students, methods=list(d["methods"]))
    t = d["targets"]
    for m in plan.methods:
        if t["mode"] == "online" or m in t["online_methods"]:
            plan._method_key[m] = None
            continue
        spec = {
            "corpus": d["corpus"],
            "splits": list(d["splits"]),
            "method": m,
            "method_config": d[m],
            # pred targets do not depend on the student; l2l's depend on its depth
            "student_depths": sorted({a.depth for a in students.values()}) if m == "l2l" else [],
            "frontend": bool(d["frontend"] == "frozen" and t["cache_frontend"]),
            "dtype": t["dtype"],
            "shard_seconds": t["shard_seconds"],
        }
        h = hashlib.sha256(canonical_json({k: v for k, v in spec.items() if k != "shard_seconds"}).encode()).hexdigest()
        key = f"{d['corpus']}-{m}-{h[:10]}"
        plan.targets[key] = spec
        plan._method_key[m] = key
    return plan


def layers_for(method: str, method_config: dict, student_depths, teacher_depth: int) -> list[int]:
    """Union of the teacher layers ``method`` needs for students of these depths."""
    from deepwide.distill.methods import method_pairs

    if method not in METHODS:
        raise DeepwideError(f"unknown KD method {method!r} (known: {', '.join(METHODS)})")
    layers = set()
    for depth in student_depths or [1]:  # pred: the same layers for any depth
        layers.update(t for _, t in method_pairs(method, int(depth), teacher_depth, method_config))
    return sorted(layers)
