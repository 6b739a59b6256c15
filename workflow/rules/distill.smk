# distill stage: teacher targets cache (one per KD method's layer set) and one job per
# (KD method, student shape). Students come from distill.students (explicit shapes + the
# solver's constant-budget grid); each job's params hold exactly the settings it uses.
from deepwide.distill.plan import study_plan

DISTILL = study_plan(config)
DISTILL_MANIFESTS = [
    RESULTS / "manifests" / config["distill"]["corpus"] / f"{split}.parquet" for split in config["distill"]["splits"]
]
TEACHER_CKPT = RESULTS / "teacher" / "teacher.pt"
STUDENT_DIR = RESULTS / "students" / "{method}" / "{shape}"


def _manifest_args(wildcards=None):
    return " ".join(f"--manifest {m}" for m in DISTILL_MANIFESTS)


def _distill_inputs(wildcards):
    inputs = {"teacher": TEACHER_CKPT, "manifests": DISTILL_MANIFESTS}
    key = DISTILL.targets_key(wildcards.method)
    if key:
        inputs["targets"] = RESULTS / "targets" / key
    return inputs


rule targets:
    input:
        teacher=TEACHER_CKPT,
        manifests=DISTILL_MANIFESTS,
    output:
        directory(RESULTS / "targets" / "{key}"),
    wildcard_constraints:
        key="[A-Za-z0-9_.+-]+",
    params:
        spec=lambda wc: canonical_json(DISTILL.targets[wc.key]),
        method=lambda wc: DISTILL.targets[wc.key]["method"],
        method_cfg=lambda wc: canonical_json(DISTILL.targets[wc.key]["method_config"]),
        depths=lambda wc: ",".join(map(str, DISTILL.targets[wc.key]["student_depths"])) or "1",
        frontend=lambda wc: "--frontend" if DISTILL.targets[wc.key]["frontend"] else "",
        dtype=lambda wc: DISTILL.targets[wc.key]["dtype"],
        shard=lambda wc: DISTILL.targets[wc.key]["shard_seconds"],
        work=lambda wc: RESULTS / "resume" / "targets" / wc.key,
        manifests=_manifest_args,
        # the trainer's code does not change targets
        code=code_hash("distill/targets.py", "distill/data.py", "distill/methods.py", "distill/plan.py", "models"),
    log:
        LOGS / "targets" / "{key}.log",
    threads: config["distill"]["train"]["cpu_threads"]
    resources:
        **gpu_job("targets"),
    shell:
        "{PY} -m deepwide targets extract --threads {threads} --teacher {input.teacher} {params.manifests}"
        " --method {params.method} --method-config {params.method_cfg:q} --student-depths {params.depths}"
        " {params.frontend} --dtype {params.dtype} --shard-seconds {params.shard}"
        " --work {params.work} --out {output} > {log} 2>&1"


rule distill:
    input:
        unpack(_distill_inputs),
    output:
        ckpt=STUDENT_DIR / "student.pt",
        hf=directory(STUDENT_DIR / "hf"),
        curve=STUDENT_DIR / "curve.parquet",
        info=STUDENT_DIR / "info.json",
    wildcard_constraints:
        method="pred|l2l",
        shape=r"\d+x\d+f\d+h\d+",
    params:
        job=lambda wc: DISTILL.job_json(wc.method, wc.shape),
        targets=lambda wc, input: f"--targets {input.targets}" if "targets" in input.keys() else "",
        manifests=_manifest_args,
        resume=lambda wc: RESULTS / "resume" / "distill" / wc.method / wc.shape,
        code=code_hash("distill", "models"),
    log:
        LOGS / "distill" / "{method}" / "{shape}.log",
    threads: config["distill"]["train"]["cpu_threads"]
    resources:
        **gpu_job("distill"),
    shell:
        "{PY} -m deepwide distill train --threads {threads} --job {params.job:q} --teacher {input.teacher} {params.manifests}"
        " {params.targets} --resume-dir {params.resume} --hf {output.hf}"
        " --out $(dirname {output.ckpt}) > {log} 2>&1"


ALL_TARGETS.extend(
    expand(STUDENT_DIR / "info.json", zip, method=[m for m, _ in DISTILL.jobs()], shape=[s for _, s in DISTILL.jobs()])
)
