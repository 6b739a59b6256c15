# corpus stage: synthesize embedded corpora or read real roots; write Parquet manifests.
# One synth rule per synthesized corpus (atomic directory output), one prepare rule per
# enabled corpus. A real root (corpus.NAME.root) replaces synthesis: no synth rule then.
from deepwide.corpus.prepare import manifest_outputs
from deepwide.corpus.sources import check_sources, enabled, roots, synthesized

# missing real roots / TTS programs: one clear error at parse time, before any job
check_sources(config["corpus"])

CORPORA_DIR = RESULTS / "corpora"
MANIFESTS = RESULTS / "manifests"


def corpus_manifests(name):
    """The manifest files of one corpus (what later stages take as input): one Parquet
    per split, plus lexicon.txt (word -> espeak-ng phonemes) for LibriSpeech."""
    return [MANIFESTS / name / f for f in manifest_outputs(name, config["corpus"][name])]


for _name in synthesized(config["corpus"]):

    rule:
        name:
            f"synth_{_name}"
        output:
            directory(CORPORA_DIR / _name),
        params:
            corpus=_name,
            cfg=config_slice("corpus", _name),
            tts=config_slice("corpus", "tts"),
            seed=config["seed"],
            code=code_hash("corpus"),
        # snakemake scales threads down to --cores locally; on a cluster this is the request
        threads: config["corpus"]["threads"]
        resources:
            **cpu_job(f"synth_{_name}"),
        log:
            LOGS / "corpus" / f"synth_{_name}.log",
        shell:
            "{PY} -m deepwide corpus synth --corpus {params.corpus} --config-json {params.cfg:q}"
            " --tts-json {params.tts:q} --seed {params.seed} --out {output[0]:q} --jobs {threads}"
            " > {log:q} 2>&1"


for _name in enabled(config["corpus"]):
    _root, _test_root = roots(_name, config["corpus"], RESULTS)

    rule:
        name:
            f"prepare_{_name}"
        input:
            [] if config["corpus"][_name]["root"] else [CORPORA_DIR / _name],
        output:
            corpus_manifests(_name),
        params:
            corpus=_name,
            cfg=config_slice("corpus", _name),
            root=str(_root),
            test_root=f"--test-root {_test_root}" if _test_root else "",
            out_dir=str(MANIFESTS / _name),
            code=code_hash("corpus"),
        threads: config["corpus"]["threads"]
        resources:
            **cpu_job(f"prepare_{_name}"),
        log:
            LOGS / "corpus" / f"prepare_{_name}.log",
        shell:
            "{PY} -m deepwide corpus prepare --corpus {params.corpus} --config-json {params.cfg:q}"
            " --root {params.root:q} {params.test_root} --out-dir {params.out_dir:q} --jobs {threads}"
            " > {log:q} 2>&1"

    ALL_TARGETS.extend(corpus_manifests(_name))
