"""Embedded Audio SNIPS (SF) and QUESST 2014 (QbE), built through the project CLI the way
the pipeline builds them (``corpus synth --corpus snips|quesst14``), with an empty HOME:
the readers (``corpus prepare-extra``, ``check_root``) take them with no reject, the same
seed gives the same bytes, and FBANK runs SF (``superb run``) and QbE (``superb qbe``) on them."""

import hashlib
import json
import math
import os
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pandas as pd
import pytest

from sd_trees import cli

# tiny sizes (seconds each): 4/2/2 sentences x 8/4/4 speakers; 4 queries, 6 documents
SNIPS_TINY = {"synth": {"train_sentences": 4, "valid_sentences": 2, "test_sentences": 2, "values_per_slot": 2}}
QUESST_TINY = {"synth": {"dev_queries": 2, "eval_queries": 2, "docs_per_term": 1, "filler_docs": 2,
                         "doc_speakers": 2, "query_speakers": 1}}
TTS = {"vocab_size": 300}
# tiny SF head: a 32-unit BiLSTM, 20 steps, about 10 s (s3prl SuperbSF otherwise: 2 x 1024 units, 200k steps)
SF_TASK = {"lr": 0.004, "total_steps": 20, "eval_step": 10, "batch_size": 8, "gradient_accumulate": 1,
           "downstream": {"model_conf": {"proj_size": 32, "hidden_size": [32], "dropout": [0.1], "layer_norm": [False],
                                         "proj": [False], "sample_rate": [1]}}}


def offline_env(tmp_path: Path) -> dict:
    """An empty HOME and caches (what a fresh cluster node or container gives)."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    drop = ("XDG_CACHE_HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME", "NUMBA_CACHE_DIR", "HF_HOME", "TORCH_HOME")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env["HOME"] = str(home)
    return env


def synth(corpus: str, section: dict, out: Path, env: dict, seed: int = 0) -> dict:
    proc = cli(["corpus", "synth", "--corpus", corpus, "--config-json", json.dumps(section), "--tts-json", json.dumps(TTS),
                "--seed", str(seed), "--out", str(out), "--jobs", "2", "--no-progress"], env)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def prepare_extra(corpus: str, root: Path, out: Path, env: dict) -> dict:
    proc = cli(["corpus", "prepare-extra", "--corpus", corpus, "--root", str(root), "--config-json", "{}",
                "--out-dir", str(out), "--jobs", "2"], env)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def synth_in_fresh_home(tmp_path_factory, name: str, corpus: str, section: dict):
    """``corpus`` synthesized into BASE/``corpus`` with an empty HOME: (BASE, env, summary)."""
    base = tmp_path_factory.mktemp(name)
    env = offline_env(base)
    return base, env, synth(corpus, section, base / corpus, env)


def same_bytes_again(synthesized, corpus: str, section: dict, out: Path):
    """Synthesize ``corpus`` again into ``out`` with the same seed: the same files, byte for byte."""
    base, env, _ = synthesized
    synth(corpus, section, out, env)
    assert tree_digest(out) == tree_digest(base / corpus)
    return base, env


@pytest.fixture(scope="module")
def snips(tmp_path_factory):
    return synth_in_fresh_home(tmp_path_factory, "snips", "snips", SNIPS_TINY)


@pytest.fixture(scope="module")
def quesst(tmp_path_factory):
    return synth_in_fresh_home(tmp_path_factory, "quesst", "quesst14", QUESST_TINY)


# ------------------------------------------------------------------ SNIPS
def test_snips_layout_reads_back_with_no_rejects(snips):
    from deepwide.corpus.real_extra import prepare_snips
    from deepwide.corpus.sources import SNIPS_SPEAKERS
    from deepwide.superb.tasks import check_root

    base, env, summary = snips
    root = base / "snips"
    assert summary["utterances"] == 4 * 8 + 2 * 4 + 2 * 4
    assert sorted(p.name for p in root.iterdir()) == ["all.iob.snips.txt", "deepwide_synth.json", "test", "train", "valid"]
    for split, names in SNIPS_SPEAKERS.items():
        files = sorted(p.name for p in (root / split).iterdir())
        n = {"train": 4, "valid": 2, "test": 2}[split]
        assert files == sorted(f"{s}-snips-{split}-{i}.wav" for s in names for i in range(n))
    check_root("sf", root, embedded=True)

    counts = prepare_extra("snips", root, base / "manifests", env)
    assert counts == {"train": 32, "valid": 8, "test": 8}
    assert pd.read_csv(base / "manifests" / "rejects.tsv", sep="\t").empty
    train = pd.read_parquet(base / "manifests" / "train.parquet")
    assert set(train["speaker"]) == set(SNIPS_SPEAKERS["train"]) and set(train["sample_rate"]) == {16000}
    # every sentence of a split is spoken by each of its speakers; one tag per word; slots of the four types
    for _, g in train.groupby(train["id"].str.split("-").str[-1]):
        assert g["text"].nunique() == 1 and len(g) == 8
    tags = {t for iob in train["iob"] for t in iob.split()}
    assert tags <= {"O", "B-artist", "B-city", "B-playlist", "B-cuisine"} and len(tags) >= 3
    assert set(train["intent"]) <= {"PlayMusic", "GetWeather", "AddToPlaylist", "BookRestaurant"}
    assert all(any(t != "O" for t in iob.split()) for iob in train["iob"])
    # the reader and s3prl's (via the same file) agree on the line format
    again = prepare_snips(root)
    assert len(again.records) == 48 and not again.rejects


def test_snips_same_seed_same_bytes_other_seed_other_text(snips, tmp_path):
    base, env = same_bytes_again(snips, "snips", SNIPS_TINY, tmp_path / "again")
    synth("snips", SNIPS_TINY, tmp_path / "seed1", env, seed=1)
    assert (tmp_path / "seed1" / "all.iob.snips.txt").read_text() != (base / "snips" / "all.iob.snips.txt").read_text()


def test_snips_config_checks(tmp_path):
    from deepwide.config import validate_config
    from deepwide.corpus.real_extra import extra_config

    cfg = validate_config({})["corpus"]
    assert cfg["snips"]["enabled"] is True and cfg["snips"]["root"] is None and cfg["snips"]["synth"]["train_sentences"] == 80
    assert cfg["quesst14"]["enabled"] is True and cfg["quesst14"]["synth"]["sample_rate"] == 8000
    # every key of the schema sections is one extra_config accepts (prepare-extra gets the same JSON)
    for corpus in ("snips", "quesst14"):
        assert extra_config(corpus, cfg[corpus]) == cfg[corpus]
    with pytest.raises(Exception, match="train_sentence"):
        validate_config({"corpus": {"snips": {"synth": {"train_sentence": 3}}}})
    # a speaker name with '-' would break the {speaker}-snips-{split}-{n} file names
    from deepwide.corpus.synth_extra import plan_snips
    from deepwide.errors import DeepwideError

    bad = validate_config({"corpus": {"snips": {"speakers": {"train": ["a-b"], "valid": ["c"], "test": ["d"]}}}})["corpus"]["snips"]
    with pytest.raises(DeepwideError, match="corpus.snips.speakers.train"):
        plan_snips(bad, {"vocab_size": 300, "flite_share": 0.3}, 0)


def test_sf_fbank_on_embedded_snips(snips):
    from deepwide.plan import Study

    base, env, _ = snips
    root = base / "snips"
    study = Study.from_config({"superb": {"device": "cpu", "num_workers": 0, "cache_mb": 64, "sf": {"root": str(root), **SF_TASK}}})
    out = base / "superb" / "fbank" / "sf" / "lr0.004" / "result.json"
    cli(["superb", "run", "--task", "sf", "--upstream-name", "fbank", "--upstream", "fbank", "--lr", "0.004",
         "--root", str(root), "--cfg", json.dumps(study.superb_identity("fbank", "sf", "0.004", 0)),
         "--exec-json", study.execution_json("superb"), "--cache", str(base / "superb" / "cache"),
         "--threads", "1", "--out", str(out)], env, timeout=600)
    res = json.loads(out.read_text())
    assert res["task"] == "sf" and res["metric"] == "slot_type_f1" and res["higher_is_better"] is True and res["unit"] == "%"
    assert res["layer_weights"] == [1.0] and res["best_step"] in (10, 20)
    for split in ("dev", "test"):
        metrics = res[f"{split}_metrics"]
        assert math.isfinite(metrics["slot_type_f1"]) and 0.0 <= metrics["slot_type_f1"] <= 1.0
        assert math.isfinite(metrics["slot_value_cer"]) and metrics["slot_value_cer"] >= 0.0
    # top-level metrics are s3prl's raw logs (fractions), the score is in percent
    assert res["test_metrics"] == res["folds"][0]["test_metrics"] and res["dev_metrics"] == res["folds"][0]["dev_metrics"]
    assert res["test_score"] == pytest.approx(100 * res["test_metrics"]["slot_type_f1"])
    assert not (Path(env["HOME"]) / ".cache" / "s3prl").exists()
    print(f"SF FBANK slot_type_f1 {res['test_score']:.2f} %, slot_value_cer {100 * res['test_metrics']['slot_value_cer']:.2f} %, "
          f"job {res['runtime_s']:.1f} s")


# ------------------------------------------------------------------ QUESST 2014
def test_quesst14_layout_reads_back_with_no_rejects(quesst):
    import soundfile as sf

    from deepwide.corpus.real_extra import prepare_quesst14, quesst14_truth
    from deepwide.superb.tasks import check_root

    base, env, summary = quesst
    root = base / "quesst14"
    db = root / "quesst14Database"
    assert summary["utterances"] == 4 + 6
    check_root("qbe", root)
    check_root("qbe", db)
    assert sorted(p.name for p in (db / "dev_queries").iterdir()) == ["quesst14_dev_0001.wav", "quesst14_dev_0002.wav"]
    assert sorted(p.name for p in (db / "eval_queries").iterdir()) == ["quesst14_eval_0001.wav", "quesst14_eval_0002.wav"]
    assert len(list((db / "Audio").glob("quesst14_*.wav"))) == 6
    assert {sf.info(str(p)).samplerate for p in db.rglob("*.wav")} == {8000}
    for line in (db / "scoring" / "language_key_utterances.lst").read_text().splitlines():
        path, lang = line.split()
        assert path.startswith("quesst14Database/Audio/") and lang == "nnenglish"

    counts = prepare_extra("quesst14", root, base / "manifests", env)
    assert counts["docs"] == 6 and counts["dev"] == 2 and counts["eval"] == 2
    assert pd.read_csv(base / "manifests" / "rejects.tsv", sep="\t").empty
    prep = prepare_quesst14(root)
    assert not prep.rejects
    for split in ("dev", "eval"):
        terms, docs, hits = quesst14_truth(prep.tables, split)
        assert terms == [f"quesst14_{split}_{i:04d}" for i in (1, 2)] and len(docs) == 6
        assert len(hits) == 2 and {t for t, _ in hits} == set(terms)  # docs_per_term 1
        truth = prep.tables[f"{split}_truth"]
        dur = dict(zip(prep.tables[f"{split}_docs"]["doc"], prep.tables[f"{split}_docs"]["dur"]))
        for r in truth.itertuples():  # the estimated occurrence lies inside its document
            assert 0 <= r.tbeg and r.tbeg + r.dur <= dur[r.doc] + 1e-6
        gt = db / "scoring" / f"groundtruth_quesst14_{split}"
        assert sorted(p.name for p in gt.iterdir()) == sorted(["quesst14.ecf.xml", f"quesst14_{split}.tlist.xml", f"quesst14_{split}.rttm"])
        ET.parse(gt / "quesst14.ecf.xml")
    # queries are cut to the word: much shorter than any document
    q = max(sf.info(str(p)).duration for p in db.glob("*_queries/*.wav"))
    assert q < min(sf.info(str(p)).duration for p in (db / "Audio").glob("*.wav"))


def test_quesst14_same_seed_same_bytes(quesst, tmp_path):
    same_bytes_again(quesst, "quesst14", QUESST_TINY, tmp_path / "again")


def test_qbe_fbank_on_embedded_quesst14(quesst):
    base, env, _ = quesst
    out = base / "qbe" / "result.json"
    cli(["superb", "qbe", "--upstream", "fbank", "--upstream-name", "fbank", "--root", str(base / "quesst14"),
         "--select-on-dev", "--exec-json", '{"device": "cpu", "threads": 1}', "--out", str(out)], env)
    res = json.loads(out.read_text())
    assert res["task"] == "qbe" and res["metric"] == "mtwv" and res["counts"] == {"docs": 6, "dev_queries": 2, "eval_queries": 2}
    assert math.isfinite(res["dev_score"]) and math.isfinite(res["test_score"])
    assert -1000.0 <= res["test_score"] <= 1.0
    print(f"QbE FBANK dev MTWV {res['dev_score']:.3f}, eval MTWV {res['test_score']:.3f}, {res['runtime_s']:.1f} s")


def test_synth_extra_cli_needs_programs(tmp_path, monkeypatch):
    """No TTS program: one clear error (as for the other corpora), nothing written."""
    from deepwide.corpus.synth import synthesize
    from deepwide.errors import DeepwideError

    monkeypatch.setenv("PATH", str(tmp_path))
    assert shutil.which("espeak-ng") is None
    with pytest.raises(DeepwideError, match="espeak-ng"):
        synthesize("snips", {"synth": SNIPS_TINY["synth"] | {"train_sentences": 1}}, {"vocab_size": 300, "flite_share": 0.3},
                   0, tmp_path / "out", 1, progress=False)
    assert not (tmp_path / "out").exists()
