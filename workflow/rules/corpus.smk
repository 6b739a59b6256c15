# corpus stage: synthesize embedded corpora or read real roots; write Parquet manifests.
# One synth rule per synthesized corpus (atomic directory output), one prepare rule per
# enabled corpus. A real root (corpus.NAME.root) replaces synthesis: no synth rule then.

import shlex

# missing real roots / TTS programs: one clear error at parse time, before any job
STUDY.check_corpora()

for _name in STUDY.synthesized:

    rule:
        name:
            f"synth_{_name}"
        output:
            directory(STUDY.corpus_dir(_name)),
        params:
            corpus=_name,
            cfg=STUDY.identity_json(f"corpus.{_name}"),
            tts=STUDY.identity_json("corpus.tts"),
            seed=config["seed"],
            identity=STUDY.params("corpus"),
        # snakemake scales threads down to --cores locally; on a cluster this is the request
        threads: config["corpus"]["threads"]
        priority: STUDY.priority(f"synth_{_name}")
        conda:
            CONDA_ENV
        resources:
            **STUDY.cpu_job(f"synth_{_name}"),
        log:
            STUDY.log("corpus", f"synth_{_name}"),
        shell:
            "{PY} -m deepwide corpus synth --corpus {params.corpus} --config-json {params.cfg:q}"
            " --tts-json {params.tts:q} --seed {params.seed} --out {output[0]:q} --jobs {threads}"
            " > {log:q} 2>&1"


for _name in STUDY.corpora:
    _root, _test_root = STUDY.corpus_roots(_name)

    rule:
        name:
            f"prepare_{_name}"
        input:
            STUDY.corpus_inputs(_name),
        output:
            STUDY.manifests(_name),
        params:
            corpus=_name,
            cfg=STUDY.identity_json(f"corpus.{_name}"),
            root=str(_root),
            test_root=f"--test-root {_test_root}" if _test_root else "",
            out_dir=str(STUDY.manifest_dir(_name)),
            identity=STUDY.params("corpus"),
        threads: config["corpus"]["threads"]
        priority: STUDY.priority(f"prepare_{_name}")
        conda:
            CONDA_ENV
        resources:
            **STUDY.cpu_job(f"prepare_{_name}"),
        log:
            STUDY.log("corpus", f"prepare_{_name}"),
        shell:
            "{PY} -m deepwide corpus prepare --corpus {params.corpus} --config-json {params.cfg:q}"
            " --root {params.root:q} {params.test_root} --out-dir {params.out_dir:q} --jobs {threads}"
            " > {log:q} 2>&1"


# LibriMix (SD), SNIPS (SF), QUESST14 (QbE): only when a SUPERB task of the study reads
# them. Without corpus.NAME.root the pipeline synthesizes them: LibriMix by mixing the
# study's LibriSpeech (real or embedded), SNIPS and QUESST14 by TTS.
for _name in STUDY.extra_synthesized:
    if _name == "librimix":

        rule synth_librimix:
            input:
                STUDY.corpus_inputs("librispeech"),
            output:
                directory(STUDY.corpus_dir("librimix")),
            params:
                librispeech=str(STUDY.corpus_roots("librispeech")[0]),
                cfg=STUDY.identity_json("corpus.librimix"),
                seed=config["seed"],
                identity=STUDY.params("corpus"),
            conda:
                CONDA_ENV
            resources:
                **STUDY.cpu_job("synth_librimix"),
            log:
                STUDY.log("corpus", "synth_librimix"),
            shell:
                "{PY} -m deepwide corpus synth-librimix --librispeech {params.librispeech:q} --out {output[0]:q}"
                " --seed {params.seed} --config-json {params.cfg:q} > {log:q} 2>&1"

    else:

        rule:
            name:
                f"synth_{_name}"
            output:
                directory(STUDY.corpus_dir(_name)),
            params:
                corpus=_name,
                cfg=STUDY.identity_json(f"corpus.{_name}"),
                tts=STUDY.identity_json("corpus.tts"),
                seed=config["seed"],
                identity=STUDY.params("corpus"),
            threads: config["corpus"]["threads"]
            conda:
                CONDA_ENV
            resources:
                **STUDY.cpu_job(f"synth_{_name}"),
            log:
                STUDY.log("corpus", f"synth_{_name}"),
            shell:
                "{PY} -m deepwide corpus synth --corpus {params.corpus} --config-json {params.cfg:q}"
                " --tts-json {params.tts:q} --seed {params.seed} --out {output[0]:q} --jobs {threads}"
                " > {log:q} 2>&1"


for _name in STUDY.extra_corpora:

    rule:
        name:
            f"prepare_{_name}"
        input:
            STUDY.corpus_inputs(_name),
        output:
            STUDY.manifests(_name),
            *([directory(STUDY.sd_data_dir)] if _name == "librimix" else []),
        params:
            corpus=_name,
            cfg=STUDY.extra_prepare_json(_name),
            root=str(STUDY.extra_root(_name)),
            sd=f"--sd-data-dir {shlex.quote(STUDY.sd_data_dir)}" if _name == "librimix" else "",
            out_dir=str(STUDY.manifest_dir(_name)),
            identity=STUDY.params("corpus"),
        threads: config["corpus"]["threads"]
        priority: STUDY.priority(f"prepare_{_name}")
        conda:
            CONDA_ENV
        resources:
            **STUDY.cpu_job(f"prepare_{_name}"),
        log:
            STUDY.log("corpus", f"prepare_{_name}"),
        shell:
            "{PY} -m deepwide corpus prepare-extra --corpus {params.corpus} --config-json {params.cfg:q}"
            " --root {params.root:q} --out-dir {params.out_dir:q} {params.sd} --jobs {threads} > {log:q} 2>&1"
