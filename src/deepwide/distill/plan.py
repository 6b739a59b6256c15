"""Students and KD target layers of a distill config section.

:func:`resolve_students` turns ``distill.students`` (explicit shapes + the solver grid)
into architectures; :func:`layers_for` names the teacher layers a method needs. The jobs
built from them (one per method, shape and seed) live in :class:`deepwide.study.Study`.
"""

from __future__ import annotations

from deepwide.distill.methods import METHODS
from deepwide.errors import DeepwideError
from deepwide.models.arch import ArchConfig, conv_layers


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


def layers_for(method: str, method_config: dict, student_depths, teacher_depth: int) -> list[int]:
    """Union of the teacher layers ``method`` needs for students of these depths."""
    from deepwide.distill.methods import method_pairs

    if method not in METHODS:
        raise DeepwideError(f"unknown KD method {method!r} (known: {', '.join(METHODS)})")
    layers = set()
    for depth in student_depths or [1]:  # pred: the same layers for any depth
        layers.update(t for _, t in method_pairs(method, int(depth), teacher_depth, method_config))
    return sorted(layers)
