# report stage: tidy results table, tables (md/csv/tex), figures (png/pdf), linear CKA and
# cost per upstream, and the captions of `snakemake --report`.
#
# Generic over the upstreams, tasks and learning rates the other rule files define: it reads
#   SUPERB_UPSTREAMS  {upstream name: source} of superb.smk (teacher, fbank, students,
#                     extra upstreams), with superb's task list and lrs from config, or
#                     plus superb/{upstream}/qbe/lr{lr}/result.json when QbE is enabled, or
#   SUPERB_RESULTS    an explicit list of superb/{upstream}/{task}/lr{lr}/result.json paths.
# Cost and CKA run for every upstream whose source is a deepwide checkpoint (*.pt); student
# info.json sits beside its student.pt. Include this file after superb.smk.
import re

REPORT = RESULTS / "report"
REPORT_TABLES = ["results", "grid", "families", "score", "trend"]
REPORT_FIGURES = ["depth", "heatmap", "layer_weights", "cka", "pareto"]
REPORT_HELDOUT = RESULTS / "manifests" / config["report"]["heldout"]["corpus"] / f"{config['report']['heldout']['split']}.parquet"
_REPORT_STUDENT_RE = re.compile(r"^(?P<method>[A-Za-z0-9_]+)-(?P<shape>\d+x\d+f\d+h\d+)(?:-seed\d+)?$")


def report_result_files():
    if "SUPERB_RESULTS" in globals():
        return [str(p) for p in globals()["SUPERB_RESULTS"]]
    ups = globals().get("SUPERB_UPSTREAMS")
    if not ups:
        return []
    from deepwide.superb import plan as superb_plan_
    from deepwide.superb.tasks import TASKS as SUPERB_TASKS_

    return [
        str(RESULTS / "superb" / up / task / f"lr{superb_plan_.format_lr(lr)}" / "result.json")
        for up in ups
        for task in superb_plan_.enabled_tasks(config)
        if SUPERB_TASKS_[task].trainable
        for lr in superb_plan_.lrs(config, task)
    ] + superb_plan_.qbe_targets(config, ups)


def report_upstreams():
    """Upstream names, in order of first appearance."""
    names = []
    for p in report_result_files():
        name = Path(p).parts[-4]  # superb/{upstream}/{task}/lr{lr}/result.json
        if name not in names:
            names.append(name)
    return names


def report_checkpoint(upstream):
    """The deepwide checkpoint of an upstream, or None (FBANK, HF directories)."""
    src = (globals().get("SUPERB_UPSTREAMS") or {}).get(upstream)
    if src is not None:
        return str(src) if str(src).endswith(".pt") else None
    if upstream == "teacher":
        return str(RESULTS / "teacher" / "teacher.pt")
    m = _REPORT_STUDENT_RE.match(upstream)
    if m:
        return str(RESULTS / "students" / m["method"] / m["shape"] / "student.pt")
    return None


def report_students():
    return [u for u in report_upstreams() if _REPORT_STUDENT_RE.match(u) and report_checkpoint(u)]


def report_infos():
    return sorted({str(Path(report_checkpoint(u)).parent / "info.json") for u in report_students()})


def report_costs():
    return [str(REPORT / "cost" / f"{u}.json") for u in report_upstreams() if report_checkpoint(u)]


def report_ckas():
    if not report_checkpoint("teacher"):
        return []
    return [str(REPORT / "cka" / f"{u}.parquet") for u in report_students()]


report: "../report/workflow.rst"


wildcard_constraints:
    report_upstream=r"[^/]+",


rule report_cost:
    input:
        ckpt=lambda w: report_checkpoint(w.report_upstream),
        manifest=REPORT_HELDOUT,
    output:
        REPORT / "cost" / "{report_upstream}.json",
    params:
        cfg=config_slice("report", "cost"),
        code=code_hash("report", "models"),
    resources:
        **gpu_job("report_cost"),
    log:
        LOGS / "report_cost" / "{report_upstream}.log",
    shell:
        "{PY} -m deepwide report cost --checkpoint {input.ckpt:q} --upstream {wildcards.report_upstream:q}"
        " --manifest {input.manifest:q} --options {params.cfg:q} --out {output:q} > {log:q} 2>&1"


rule report_cka:
    input:
        teacher=lambda w: report_checkpoint("teacher"),
        student=lambda w: report_checkpoint(w.report_upstream),
        manifest=REPORT_HELDOUT,
    output:
        REPORT / "cka" / "{report_upstream}.parquet",
    params:
        cfg=config_slice("report", "cka"),
        code=code_hash("report", "models"),
    resources:
        **gpu_job("report_cka"),
    log:
        LOGS / "report_cka" / "{report_upstream}.log",
    shell:
        "{PY} -m deepwide report cka --teacher {input.teacher:q} --student {input.student:q}"
        " --upstream {wildcards.report_upstream:q} --manifest {input.manifest:q} --options {params.cfg:q}"
        " --out {output:q} > {log:q} 2>&1"


rule report_collect:
    input:
        results=lambda w: report_result_files(),
        infos=lambda w: report_infos(),
        costs=lambda w: report_costs(),
    output:
        results=REPORT / "results.parquet",
        weights=REPORT / "layer_weights.parquet",
    params:
        code=code_hash("report"),
    resources:
        **cpu_job("report_collect"),
    log:
        LOGS / "report_collect" / "collect.log",
    shell:
        "{PY} -m deepwide report collect --results {input.results:q} --infos {input.infos:q}"
        " --costs {input.costs:q} --out {output.results:q} --layer-weights {output.weights:q} > {log:q} 2>&1"


rule report_tables:
    input:
        REPORT / "results.parquet",
    output:
        **{
            f"{name}_{ext}": (
                report(REPORT / "tables" / f"{name}.{ext}", caption=f"../report/{name}.rst", category="Tables",
                       labels={"table": name})
                if ext == "csv"
                else REPORT / "tables" / f"{name}.{ext}"
            )
            for name in REPORT_TABLES
            for ext in ("md", "csv", "tex")
        },
    params:
        cfg=canonical_json({**config["report"]["tables"], "reference": config["report"]["reference"]}),
        code=code_hash("report"),
    resources:
        **cpu_job("report_tables"),
    log:
        LOGS / "report_tables" / "tables.log",
    shell:
        "{PY} -m deepwide report tables --results {input:q} --options {params.cfg:q}"
        " --out-dir {REPORT}/tables > {log:q} 2>&1"


rule report_figures:
    input:
        results=REPORT / "results.parquet",
        weights=REPORT / "layer_weights.parquet",
        cka=lambda w: report_ckas(),
    output:
        **{
            f"{name}_{ext}": (
                report(REPORT / "figures" / f"{name}.{ext}", caption=f"../report/{name}.rst", category="Figures",
                       labels={"figure": name})
                if ext == "png"
                else REPORT / "figures" / f"{name}.{ext}"
            )
            for name in REPORT_FIGURES
            for ext in ("png", "pdf")
        },
    params:
        cfg=canonical_json({**config["report"]["figures"], "reference": config["report"]["reference"]}),
        code=code_hash("report"),
    resources:
        **cpu_job("report_figures"),
    log:
        LOGS / "report_figures" / "figures.log",
    shell:
        "{PY} -m deepwide report figures --results {input.results:q} --layer-weights {input.weights:q}"
        " --cka {input.cka:q} --options {params.cfg:q} --out-dir {REPORT}/figures > {log:q} 2>&1"


# the report needs SUPERB results; until a rule file defines them, `rule all` leaves it out
if report_result_files():
    ALL_TARGETS += rules.report_tables.output + rules.report_figures.output
