# teacher stage: pretrain a tiny HuBERT on the LibriSpeech-layout corpus (embedded default)
# or import a real checkpoint (hf | fairseq | s3prl-hubert). Both write RESULTS/teacher/teacher.pt.
from deepwide.teacher.rules import import_source, pretrain_manifests

TEACHER = RESULTS / "teacher"

if config["teacher"]["source"] == "import":
    # fails at config time, naming teacher.import.path, when the checkpoint is missing
    TEACHER_IMPORT_FORMAT, TEACHER_IMPORT_PATH = import_source(config)

    rule teacher_import:
        input:
            src=str(TEACHER_IMPORT_PATH),
        output:
            ckpt=TEACHER / "teacher.pt",
        params:
            fmt=TEACHER_IMPORT_FORMAT,
            cfg=config_slice("teacher", "import"),
            code=code_hash("teacher", "models"),
        resources:
            **cpu_job("teacher_import"),
        log:
            LOGS / "teacher_import" / "teacher.log",
        shell:
            "{PY} -m deepwide teacher import --format {params.fmt} {input.src:q} --out {output.ckpt:q} > {log:q} 2>&1"

    ALL_TARGETS.append(TEACHER / "teacher.pt")

else:
    TEACHER_MANIFESTS = pretrain_manifests(config, RESULTS)

    rule teacher_pretrain:
        input:
            **TEACHER_MANIFESTS,
        output:
            ckpt=TEACHER / "teacher.pt",
            info=TEACHER / "info.json",
            curve=TEACHER / "curve.parquet",
        params:
            cfg=config_slice("teacher", "pretrain"),
            code=code_hash("teacher", "models/arch.py", "models/checkpoint.py", "utils"),
            valid=lambda wildcards, input: f"--valid-manifest '{input.valid}'" if "valid" in input.keys() else "",
            # resume state (pseudo-labels, optimizer, RNG): outside the declared outputs
            workdir=TEACHER / "work",
        resources:
            **gpu_job("teacher_pretrain"),
        # snakemake scales this down to --cores on a laptop
        threads: config["teacher"]["pretrain"]["threads"] or 8
        log:
            LOGS / "teacher_pretrain" / "teacher.log",
        # passive OpenMP waits: with spinning threads a busy 2-core machine ran 5x slower
        shell:
            "OMP_WAIT_POLICY=PASSIVE {PY} -m deepwide teacher pretrain --manifest {input.train:q} {params.valid}"
            " --config-json {params.cfg:q} --workdir {params.workdir:q} --threads {threads}"
            " --out {output.ckpt:q} --info {output.info:q} --curve {output.curve:q} > {log:q} 2>&1"

    ALL_TARGETS.extend([TEACHER / "teacher.pt", TEACHER / "info.json"])
