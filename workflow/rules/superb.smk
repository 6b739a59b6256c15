# superb stage: every upstream (teacher, FBANK, each student) on each SUPERB task through
# s3prl's own recipes; one job per (upstream, task, lr), then the lr with the best dev score.
# Include after distill.smk: students are DISTILL.jobs() -> upstream "{method}-{shape}" with
# results/students/{method}/{shape}/student.pt (or an explicit STUDENT_CHECKPOINTS
# {name: path}). Embedded corpora come from the corpus rules' directory outputs.
import shlex

from deepwide.superb import plan as superb_plan

# a real dataset root that is missing or malformed fails here, naming task and path
superb_plan.check_config(config)
if "STUDENT_CHECKPOINTS" in globals():
    _superb_students = dict(STUDENT_CHECKPOINTS)
elif "DISTILL" in globals():
    _superb_students = {
        f"{m}-{s}": str(RESULTS / "students" / m / s / "student.pt") for m, s in DISTILL.jobs()
    }
else:
    _superb_students = {}
SUPERB_UPSTREAMS = superb_plan.upstreams(config, _superb_students)


def superb_upstream_input(wildcards):
    src = SUPERB_UPSTREAMS[wildcards.upstream]
    return [] if src == "fbank" else [src]


def superb_corpus_input(wildcards):
    root, embedded = superb_plan.task_root(config, wildcards.task)
    if embedded:
        corpus = superb_plan.get_task(wildcards.task).corpus
        return globals().get("CORPUS_OUTPUTS", {}).get(corpus, [str(root)])
    return []


def superb_lr_results(wildcards):
    return expand(
        RESULTS / "superb" / wildcards.upstream / wildcards.task / "lr{lr}" / "result.json",
        lr=[superb_plan.format_lr(x) for x in superb_plan.lrs(config, wildcards.task)],
    )


wildcard_constraints:
    upstream="[A-Za-z0-9_.+-]+",
    task="asr|pr|sid|ks|ic|er|asv|sd|sf",
    lr="[0-9.e+-]+",


rule superb_run:
    input:
        upstream=superb_upstream_input,
        corpus=superb_corpus_input,
    output:
        RESULTS / "superb" / "{upstream}" / "{task}" / "lr{lr}" / "result.json",
    params:
        cfg=lambda w: canonical_json(superb_plan.job_cfg(config, w.task)),
        code=code_hash("superb", "models"),
        source=lambda w: SUPERB_UPSTREAMS[w.upstream],
        root=lambda w: superb_plan.task_root(config, w.task)[0],
        embedded=lambda w: "--embedded" if superb_plan.task_root(config, w.task)[1] else "",
        cache=RESULTS / "superb" / "cache",
        torch_threads=config["superb"]["threads"],
    log:
        LOGS / "superb_run" / "{upstream}" / "{task}" / "lr{lr}.log",
    threads: max(1, config["superb"]["threads"])
    resources:
        **gpu_job("superb_run"),
    shell:
        "NUMBA_CACHE_DIR=${{NUMBA_CACHE_DIR:-{params.cache}/numba}} "
        "{PY} -m deepwide superb run --task {wildcards.task} --upstream-name {wildcards.upstream} "
        "--upstream {params.source:q} --lr {wildcards.lr} --root {params.root:q} {params.embedded} "
        "--cfg {params.cfg:q} --cache {params.cache:q} --threads {params.torch_threads} --out {output:q} > {log:q} 2>&1"


rule superb_select:
    input:
        superb_lr_results,
    output:
        RESULTS / "superb" / "{upstream}" / "{task}" / "selected.json",
    params:
        code=code_hash("superb"),
    resources:
        **cpu_job("superb_select"),
    log:
        LOGS / "superb_select" / "{upstream}" / "{task}.log",
    shell:
        "{PY} -m deepwide superb select --inputs {input:q} --out {output:q} > {log:q} 2>&1"


# QbE on QUESST14 by DTW (no training, one job per upstream) when superb.qbe.root is set;
# its result.json has the same keys as every task's and the report reads it with them.
SUPERB_QBE_RESULTS = superb_plan.qbe_targets(config, SUPERB_UPSTREAMS)
if SUPERB_QBE_RESULTS:

    rule superb_qbe:
        input:
            upstream=superb_upstream_input,
        output:
            superb_plan.qbe_result(config, "{upstream}"),
        params:
            cfg=config_slice("superb", "qbe"),
            code=code_hash("superb"),
            source=lambda w: SUPERB_UPSTREAMS[w.upstream],
            args=" ".join(shlex.quote(a) for a in superb_plan.qbe_args(config)),
        log:
            LOGS / "superb_qbe" / "{upstream}.log",
        threads: max(1, config["superb"]["threads"])
        resources:
            **gpu_job("superb_qbe"),
        shell:
            "{PY} -m deepwide superb qbe --upstream {params.source:q} --upstream-name {wildcards.upstream} "
            "{params.args} --out {output:q} > {log:q} 2>&1"


ALL_TARGETS.extend(superb_plan.selected_targets(config, SUPERB_UPSTREAMS))
ALL_TARGETS.extend(SUPERB_QBE_RESULTS)
