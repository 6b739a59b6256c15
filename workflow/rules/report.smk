# report stage: tidy results table, tables (md/csv/tex), figures (png/pdf), linear CKA and
# cost per upstream, and the captions of `snakemake --report`. Every input list comes from
# STUDY (results of every SUPERB job, student info.json, cost and CKA per checkpoint).

import shlex

report: "../report/workflow.rst"


wildcard_constraints:
    report_upstream=r"[^/]+",


rule report_cost:
    input:
        ckpt=lambda w: STUDY.upstream_checkpoint(w.report_upstream),
        manifest=STUDY.report_heldout,
    output:
        STUDY.report_cost("{report_upstream}"),
    params:
        cfg=STUDY.report_identity("cost"),
        identity=STUDY.params("report"),
    conda:
        CONDA_ENV
    resources:
        **STUDY.gpu_job("report_cost"),
    log:
        STUDY.log("report_cost", "{report_upstream}"),
    shell:
        "{PY} -m deepwide report cost --checkpoint {input.ckpt:q} --upstream {wildcards.report_upstream:q}"
        " --manifest {input.manifest:q} --options {params.cfg:q} --out {output:q} > {log:q} 2>&1"


rule report_cka:
    input:
        teacher=STUDY.teacher_ckpt,
        student=lambda w: STUDY.upstream_checkpoint(w.report_upstream),
        manifest=STUDY.report_heldout,
    output:
        STUDY.report_cka("{report_upstream}"),
    params:
        cfg=STUDY.report_identity("cka"),
        identity=STUDY.params("report"),
    conda:
        CONDA_ENV
    resources:
        **STUDY.gpu_job("report_cka"),
    log:
        STUDY.log("report_cka", "{report_upstream}"),
    shell:
        "{PY} -m deepwide report cka --teacher {input.teacher:q} --student {input.student:q}"
        " --upstream {wildcards.report_upstream:q} --manifest {input.manifest:q} --options {params.cfg:q}"
        " --out {output:q} > {log:q} 2>&1"


rule report_kdloss:
    input:
        teacher=STUDY.teacher_ckpt,
        student=lambda w: STUDY.upstream_checkpoint(w.report_upstream),
        manifest=STUDY.report_heldout,
    output:
        STUDY.report_kdloss("{report_upstream}"),
    params:
        cfg=STUDY.report_identity("cka"),  # the same held-out utterances as CKA
        identity=STUDY.params("report"),
    conda:
        CONDA_ENV
    resources:
        **STUDY.gpu_job("report_kdloss"),
    log:
        STUDY.log("report_kdloss", "{report_upstream}"),
    shell:
        "{PY} -m deepwide report kdloss --teacher {input.teacher:q} --student {input.student:q}"
        " --upstream {wildcards.report_upstream:q} --manifest {input.manifest:q} --options {params.cfg:q}"
        " --out {output:q} > {log:q} 2>&1"


rule report_collect:
    input:
        jobs=STUDY.report_job_outputs(),
        infos=STUDY.report_infos,
        costs=STUDY.report_costs,
    output:
        results=STUDY.report_file("results.parquet"),
        weights=STUDY.report_file("layer_weights.parquet"),
        test_items=STUDY.report_file("items.parquet"),
    params:
        identity=STUDY.params("report"),
        # every head's result.json (written by its SUPERB job beside heads.json) and QbE's
        results=" ".join(shlex.quote(p) for p in STUDY.report_result_files()),
    conda:
        CONDA_ENV
    resources:
        **STUDY.cpu_job("report_collect"),
    log:
        STUDY.log("report_collect", "collect"),
    shell:
        "{PY} -m deepwide report collect --results {params.results} --infos {input.infos:q}"
        " --costs {input.costs:q} --out {output.results:q} --layer-weights {output.weights:q}"
        " --items {output.test_items:q} > {log:q} 2>&1"


rule report_tables:
    input:
        results=STUDY.report_file("results.parquet"),
        test_items=STUDY.report_file("items.parquet"),
        teacher_info=STUDY.report_teacher_info,
        kd_loss=STUDY.report_kdlosses,
    output:
        **{
            f"{name}_{ext}": (
                report(STUDY.report_table(name, ext), caption=f"../report/{name}.rst", category="Tables",
                       labels={"table": name})
                if ext == "csv"
                else STUDY.report_table(name, ext)
            )
            for name in STUDY.REPORT_TABLES
            for ext in ("md", "csv", "tex")
        },
    params:
        cfg=STUDY.report_identity("tables"),
        identity=STUDY.params("report"),
        out_dir=STUDY.report_file("tables"),
    conda:
        CONDA_ENV
    resources:
        **STUDY.cpu_job("report_tables"),
    log:
        STUDY.log("report_tables", "tables"),
    shell:
        "{PY} -m deepwide report tables --results {input.results:q} --items {input.test_items:q} --options {params.cfg:q}"
        " --teacher-info {input.teacher_info:q} --kd-loss {input.kd_loss:q} --out-dir {params.out_dir:q} > {log:q} 2>&1"


rule report_figures:
    input:
        results=STUDY.report_file("results.parquet"),
        weights=STUDY.report_file("layer_weights.parquet"),
        test_items=STUDY.report_file("items.parquet"),
        cka=STUDY.report_ckas,
        kd_loss=STUDY.report_kdlosses,
    output:
        **{
            f"{name}_{ext}": (
                report(STUDY.report_figure(name, ext), caption=f"../report/{name}.rst", category="Figures",
                       labels={"figure": name})
                if ext == "png"
                else STUDY.report_figure(name, ext)
            )
            for name in STUDY.REPORT_FIGURES
            for ext in ("png", "pdf")
        },
    params:
        cfg=STUDY.report_identity("figures"),
        identity=STUDY.params("report"),
        out_dir=STUDY.report_file("figures"),
    conda:
        CONDA_ENV
    resources:
        **STUDY.cpu_job("report_figures"),
    log:
        STUDY.log("report_figures", "figures"),
    shell:
        "{PY} -m deepwide report figures --results {input.results:q} --items {input.test_items:q} --layer-weights {input.weights:q}"
        " --cka {input.cka:q} --kd-loss {input.kd_loss:q} --options {params.cfg:q} --out-dir {params.out_dir:q} > {log:q} 2>&1"
