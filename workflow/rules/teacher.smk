# teacher stage: pretrain a tiny HuBERT on the LibriSpeech-layout corpus (embedded default),
# import a real checkpoint (hf | fairseq | s3prl-hubert) or draw an untrained one (random:
# what a rehearsal uses for a missing checkpoint). All three write STUDY.teacher_ckpt.

STUDY.check_teacher()

if STUDY.teacher_source == "import":
    # fails at config time, naming teacher.import.path, when the checkpoint is missing
    _fmt, _src = STUDY.teacher_import()

    rule teacher_import:
        input:
            src=str(_src),
        output:
            ckpt=STUDY.teacher_ckpt,
        params:
            fmt=_fmt,
            identity=STUDY.params("teacher", cfg=STUDY.identity("teacher.import")),
        conda:
            CONDA_ENV
        priority: STUDY.priority("teacher_import")
        resources:
            **STUDY.cpu_job("teacher_import"),
        log:
            STUDY.log("teacher_import", "teacher"),
        shell:
            "{PY} -m deepwide teacher import --format {params.fmt} {input.src:q} --out {output.ckpt:q} > {log:q} 2>&1"

elif STUDY.teacher_source == "random":

    # identity: teacher.random (arch fields given, HuBERT Base's for the rest, and seed)
    rule teacher_random:
        output:
            ckpt=STUDY.teacher_ckpt,
            info=STUDY.teacher_info,
        params:
            arch=STUDY.identity_json("teacher.random.arch"),
            seed=config["teacher"]["random"]["seed"],
            identity=STUDY.params("teacher", cfg=STUDY.identity("teacher.random")),
        conda:
            CONDA_ENV
        priority: STUDY.priority("teacher_random")
        resources:
            **STUDY.cpu_job("teacher_random"),
        log:
            STUDY.log("teacher_random", "teacher"),
        shell:
            "{PY} -m deepwide teacher random --arch-json {params.arch:q} --seed {params.seed}"
            " --out {output.ckpt:q} --info {output.info:q} > {log:q} 2>&1"

else:

    rule teacher_pretrain:
        input:
            **STUDY.teacher_pretrain_manifests(),
        output:
            ckpt=STUDY.teacher_ckpt,
            info=STUDY.teacher_info,
            curve=STUDY.teacher_file("curve.parquet"),
        params:
            cfg=STUDY.identity_json("teacher.pretrain"),
            identity=STUDY.params("teacher"),
            valid=lambda wildcards, input: f"--valid-manifest '{input.valid}'" if "valid" in input.keys() else "",
            # resume state (pseudo-labels, optimizer, RNG): outside the declared outputs
            workdir=STUDY.teacher_file("work"),
        conda:
            CONDA_ENV
        priority: STUDY.priority("teacher_pretrain")
        resources:
            **STUDY.gpu_job("teacher_pretrain"),
        # snakemake scales this down to --cores on a laptop
        threads: config["teacher"]["pretrain"]["threads"] or 8
        log:
            STUDY.log("teacher_pretrain", "teacher"),
        # passive OpenMP waits: with spinning threads a busy 2-core machine ran 5x slower
        shell:
            "OMP_WAIT_POLICY=PASSIVE {PY} -m deepwide teacher pretrain --manifest {input.train:q} {params.valid}"
            " --config-json {params.cfg:q} --exec-json {STUDY.exec[teacher]:q} --workdir {params.workdir:q} --threads {threads}"
            " --out {output.ckpt:q} --info {output.info:q} --curve {output.curve:q} > {log:q} 2>&1"
