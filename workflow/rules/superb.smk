# superb stage: every upstream (teacher, FBANK, each student and seed) on each SUPERB task
# through s3prl's own recipes; one job per (upstream, task) trains every (lr, head seed) head
# on one upstream pass per batch, then the lr with the best mean dev score is selected.
import shlex
from pathlib import Path

from deepwide.plan.superb import qbe_args
from deepwide.superb import tasks as superb_tasks

# a real dataset root that is missing or malformed fails here, naming task and path
STUDY.check_superb()

wildcard_constraints:
    upstream="[A-Za-z0-9_.+-]+",
    task="|".join(superb_tasks.trainable()),
    lr="[0-9.e+-]+",
    seed=r"\d+",


# one job per (upstream, task): every head (lr x head seed) of the task on one upstream pass
# per batch; heads.json lists them, each head's result.json sits in lr{lr}/seed{s}/
rule superb_run:
    input:
        upstream=lambda w: STUDY.upstream_inputs(w.upstream),
        corpus=lambda w: STUDY.superb_corpus_inputs(w.task),
        task=lambda w: STUDY.superb_task_inputs(w.task),
    output:
        STUDY.superb_heads_file("{upstream}", "{task}"),
    params:
        identity=lambda w: STUDY.params("superb", **STUDY.superb_sweep_identity(w.upstream, w.task)),
        source=lambda w: STUDY.upstream_source(w.upstream),
        root=lambda w: STUDY.superb_task_root(w.task)[0],
        embedded=lambda w: "--embedded" if STUDY.superb_task_root(w.task)[1] else "",
        flags=lambda w: STUDY.superb_task_flags(w.task),
    log:
        STUDY.log("superb_run", "{upstream}/{task}"),
    threads: max(1, config["superb"]["threads"])
    conda:
        CONDA_ENV
    resources:
        **STUDY.gpu_job("superb_run"),
    shell:
        "NUMBA_CACHE_DIR=${{NUMBA_CACHE_DIR:-{STUDY.superb_cache}/numba}} "
        "{PY} -m deepwide superb run --task {wildcards.task} --upstream-name {wildcards.upstream} "
        "--upstream {params.source:q} --root {params.root:q} {params.embedded} {params.flags} "
        "--cfg {params.identity:q} --exec-json {STUDY.exec[superb]:q} --cache {STUDY.superb_cache:q} "
        "--threads {config[superb][threads]} --out {output:q} > {log:q} 2>&1"


if "pr" in STUDY.superb_tasks:

    # PR's phone lexicon, written once from the root's transcripts with espeak-ng (IPA) or
    # copied from the user's s3prl files (superb.pr.lexicon); every PR job reads it
    rule superb_lexicon:
        input:
            corpus=STUDY.superb_corpus_inputs("pr"),
            lexicon=STUDY.scfg["pr"]["lexicon"],
        output:
            str(Path(STUDY.superb_lexicon_dir) / "lexicon.json"),
        params:
            identity=STUDY.params("superb", **STUDY.superb_lexicon_identity()),
            root=STUDY.superb_lexicon_identity()["root"],
            splits=STUDY.superb_lexicon_identity()["splits"],
            files=f"--lexicon {' '.join(STUDY.scfg['pr']['lexicon'])}" if STUDY.scfg["pr"]["lexicon"] else "",
            out_dir=STUDY.superb_lexicon_dir,
            policy=STUDY.text_policy,
        conda:
            CONDA_ENV
        resources:
            **STUDY.cpu_job("superb_lexicon"),
        log:
            STUDY.log("superb_lexicon", "pr"),
        shell:
            "{PY} -m deepwide superb lexicon --root {params.root:q} --splits {params.splits:q} {params.files}"
            " --text-policy {params.policy} --out-dir {params.out_dir:q} > {log:q} 2>&1"


rule superb_select:
    input:
        STUDY.superb_heads_file("{upstream}", "{task}"),
    output:
        STUDY.superb_selected("{upstream}", "{task}"),
    params:
        identity=STUDY.params("superb"),
        results=lambda w: " ".join(shlex.quote(p) for p in STUDY.superb_task_results(w.upstream, w.task)),
    conda:
        CONDA_ENV
    resources:
        **STUDY.cpu_job("superb_select"),
    log:
        STUDY.log("superb_select", "{upstream}/{task}"),
    shell:
        "{PY} -m deepwide superb select --inputs {params.results} --out {output:q} > {log:q} 2>&1"


# QbE on QUESST14 by DTW (no training, one job per upstream) when qbe is in superb.tasks or
# superb.qbe.root is set (embedded: the synthesized QUESST14);
# its result.json has the same keys as every task's and the report reads it with them.
if STUDY.qbe_enabled:
    # execution settings (device, threads, qbe.feature_cache) reach the job through --exec-json only
    QBE_EXEC = "--exec-json " + shlex.quote(STUDY.exec["qbe"])

    rule superb_qbe:
        input:
            upstream=lambda w: STUDY.upstream_inputs(w.upstream),
            corpus=STUDY.superb_corpus_inputs("qbe"),
        output:
            STUDY.qbe_result("{upstream}"),
        params:
            identity=STUDY.params("qbe", cfg=STUDY.identity("superb.qbe")),
            source=lambda w: STUDY.upstream_source(w.upstream),
            args=" ".join(shlex.quote(a) for a in qbe_args(config)),
        log:
            STUDY.log("superb_qbe", "{upstream}"),
        threads: max(1, config["superb"]["threads"])
        conda:
            CONDA_ENV
        resources:
            **STUDY.gpu_job("superb_qbe"),
        shell:
            "{PY} -m deepwide superb qbe --upstream {params.source:q} --upstream-name {wildcards.upstream} "
            "{params.args} {QBE_EXEC} --out {output:q} > {log:q} 2>&1"
