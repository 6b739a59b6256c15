# distill stage: the teacher's targets cache, one job per teacher layer it serves (plus the
# frozen front end's output), and one job per (KD method, student shape, seed). A student
# depends on exactly the layers it distils from: adding a student extracts only layers no
# other student needed. All names, paths and identities come from STUDY.

wildcard_constraints:
    method="pred|l2l",
    shape=r"\d+x\d+f\d+h\d+",
    seed=r"\d+",
    part=r"layer\d+|frontend",


rule targets:
    input:
        teacher=STUDY.teacher_ckpt,
        manifests=STUDY.distill_manifests(),
    output:
        directory(STUDY.targets_part_dir("{part}")),
    params:
        identity=lambda w: STUDY.params("targets", **STUDY.targets_identity(w.part)),
        select=lambda w: "--frontend" if w.part == "frontend" else f"--layers {w.part[5:]}",
        dtype=STUDY.dcfg["targets"]["dtype"],
        crop=STUDY.targets_crop_flags,
        work=lambda w: STUDY.targets_work_dir(w.part),
    log:
        STUDY.log("targets", f"{STUDY.targets_key}/{{part}}"),
    threads: config["distill"]["train"]["cpu_threads"]
    conda:
        CONDA_ENV
    priority: STUDY.priority("targets")
    resources:
        **STUDY.gpu_job("targets"),
    shell:
        "{PY} -m deepwide targets extract --threads {threads} --teacher {input.teacher:q}"
        " --manifest {input.manifests:q} {params.select} --dtype {params.dtype} {params.crop}"
        " --shard-seconds {config[distill][targets][shard_seconds]} --work {params.work:q} --out {output:q} > {log:q} 2>&1"


def _student(w):
    return STUDY.student_job(w.method, w.shape, w.seed)


rule distill:
    input:
        teacher=STUDY.teacher_ckpt,
        manifests=STUDY.distill_manifests(),
        targets=lambda w: STUDY.student_targets(_student(w)),
    output:
        ckpt=STUDY.student_file("{method}", "{shape}", "{seed}", "student.pt"),
        hf=directory(STUDY.student_file("{method}", "{shape}", "{seed}", "hf")),
        curve=STUDY.student_file("{method}", "{shape}", "{seed}", "curve.parquet"),
        info=STUDY.student_file("{method}", "{shape}", "{seed}", "info.json"),
    params:
        job=lambda w: STUDY.params("distill", **STUDY.student_identity(_student(w))),
        resume=lambda w: STUDY.student_resume_dir(w.method, w.shape, w.seed),
    log:
        STUDY.log("distill", "{method}/{shape}/seed{seed}"),
    threads: config["distill"]["train"]["cpu_threads"]
    conda:
        CONDA_ENV
    priority: STUDY.priority("distill")
    resources:
        **STUDY.gpu_job("distill"),
    shell:
        "{PY} -m deepwide distill train --threads {threads} --job {params.job:q} --exec-json {STUDY.exec[distill]:q}"
        " --teacher {input.teacher:q} --manifest {input.manifests:q}"
        " --targets {input.targets:q} --resume-dir {params.resume:q} --hf {output.hf:q}"
        " --out $(dirname {output.ckpt:q}) > {log:q} 2>&1"
