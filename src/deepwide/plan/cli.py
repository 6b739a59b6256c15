"""``python -m deepwide plan ...``: what a config would run, before anything runs.

    deepwide plan cost --config F [--figures JSON] [--json OUT]        GPU-hours per stage
    deepwide plan resources --config F [--measured DIR] [--safety X] [--figures JSON]
                                                                       SLURM requests vs measurements and the cost model
    deepwide plan students --config F [--json]                         the students and their jobs
    deepwide plan check --config F                                     the SUPERB dataset roots
    deepwide plan rehearse --config F [--out R.yaml]                   a rehearsal config of F (any machine)

A plan is made before the data exists: what a Snakemake run would stop on (missing roots,
teacher checkpoint) is printed as a warning, and the plan goes on.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from deepwide.errors import DeepwideError
from deepwide.plan.study import Study


def _study(args) -> Study:
    """The study of ``--config``, its plan warnings printed to stderr."""
    study = Study.from_file(args.config, plan=True)
    for w in study.warnings:
        print("warning: " + w.replace("\n", "\n  "), file=sys.stderr)
    return study


def _write_json(path: str | None, obj) -> None:
    if path:
        Path(path).write_text(json.dumps(obj, indent=1, default=str) + "\n")


def cmd_cost(args) -> int:
    from deepwide.plan.cost import cost, format_cost, load_figures

    c = cost(_study(args), load_figures(args.figures))
    print(format_cost(c))
    _write_json(args.json, c)
    return 0


def cmd_resources(args) -> int:
    from deepwide.plan.cost import load_figures
    from deepwide.plan.resources import compare, format_rows

    study = _study(args)
    run_dir = Path(args.measured) if args.measured else study.results
    if not run_dir.is_dir():
        if args.measured:
            raise DeepwideError(f"plan resources --measured: {run_dir} is not a folder")
        print(f"warning: {run_dir} does not exist yet: requests only, nothing measured", flush=True)
    if args.safety < 1:
        raise DeepwideError("plan resources --safety: must be at least 1")
    figures = load_figures(args.figures)
    rows = compare(study, run_dir, args.safety, figures)
    print(format_rows(rows, run_dir, args.safety, figures))
    _write_json(args.json, rows)
    return 0


def cmd_students(args) -> int:
    from deepwide.models.solver import count_params

    study = _study(args)
    rows = [{"shape": name, "depth": a.depth, "width": a.width, "ffn": a.ffn, "heads": a.heads, "params": count_params(a)}
            for name, a in study.students.items()]
    if args.json:
        jobs = [{"method": j.method, "shape": j.shape, "seed": j.seed, "upstream": j.upstream,
                 "teacher_layers": list(j.layers), "targets": study.student_targets(j)} for j in study.student_jobs]
        print(json.dumps({"students": rows, "methods": study.methods, "seeds": study.distill_seeds, "jobs": jobs,
                          "targets": study.targets_parts}, indent=1))
        return 0
    for r in rows:
        print(f"{r['shape']:>16}  depth {r['depth']:>3}  width {r['width']:>5}  ffn {r['ffn']:>5}  "
              f"heads {r['heads']:>3}  {r['params'] / 1e6:8.3f} M")
    print(f"methods: {', '.join(study.methods)}; seeds: {', '.join(map(str, study.distill_seeds))}; "
          f"jobs: {len(study.student_jobs)}")
    return 0


def cmd_check(args) -> int:
    from deepwide.config import load_config
    from deepwide.plan.superb import check_config

    for line in check_config(load_config(args.config)):
        print(line)
    return 0


def cmd_rehearse(args) -> int:
    from deepwide.plan.rehearse import write_rehearsal

    out, derived = write_rehearsal(args.config, args.out)
    reh = derived["rehearsal"]
    for title, lines in (("replaced", reh["replaced"]), ("thinned", reh["thinned"])):
        print(f"{title}:" + "".join(f"\n  {line}" for line in lines or ["nothing"]))
    print(f"cut to smoke sizes: {len(reh['cut'])} keys (rehearsal.cut in the config)")
    print(f"rehearsal config: {out}; results: {derived['results']}")
    print(f"run it: snakemake --cores all --configfile {out}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("plan", help="plan a study: cost, resource requests, students, dataset roots")
    cmds = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str, func):
        c = cmds.add_parser(name, help=help)
        c.add_argument("--config", default="config.yaml")
        c.set_defaults(func=func)
        return c

    c = command("cost", "GPU-hours per stage, ours vs one SUPERB job per lr", cmd_cost)
    c.add_argument("--figures", default=None, help="throughput JSON (benchmarks/superb_throughput.py output; default: shipped figures)")
    c.add_argument("--json", default=None, help="also write the table as JSON here")
    r = command("resources", "SLURM requests vs measured peak memory and wall time per rule", cmd_resources)
    r.add_argument("--measured", default=None, help="results folder of a finished run (default: the config's results)")
    r.add_argument("--safety", type=float, default=1.5, help="a request below measured x this is LOW (default 1.5)")
    r.add_argument("--figures", default=None, help="throughput JSON for the cost model's column, as for plan cost")
    r.add_argument("--json", default=None, help="also write the rows as JSON here")
    s = command("students", "the students a config describes (shape, depth, width, params) and their jobs", cmd_students)
    s.add_argument("--json", action="store_true", help="also the jobs and target layers, as JSON")
    command("check", "validate the superb section's dataset roots", cmd_check)
    h = command("rehearse", "a rehearsal of the config: every rule at toy size, missing data synthesized", cmd_rehearse)
    h.add_argument("--out", default=None, help="rehearsal config to write (default: <rehearsal results>/config.yaml)")
