"""Real-root readers for QUESST14, Libri2Mix and Audio SNIPS: small trees in each dataset's
layout (espeak-ng speech), bad files rejected with their reason, manifests written, and
the results checked against s3prl's own readers of the same trees."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from deepwide.corpus.prepare import write_manifests
from deepwide.corpus.real_extra import (
    extra_config,
    prepare_extra,
    prepare_librimix,
    prepare_quesst14,
    prepare_snips,
    quesst14_truth,
    speech_activity,
    write_sd_kaldi_dirs,
)
from deepwide.corpus.sources import manifest_splits_extra
from deepwide.errors import DeepwideError
from real_extra_trees import DEV_TERMS, libri2mix_tree, quesst14_tree, s3prl_module, say, snips_tree


def main(argv):
    """`python -m deepwide corpus ...` in-process."""
    from deepwide.cli import main as cli_main

    return cli_main(["corpus", *argv])


def reasons(prepared):
    return {Path(r["path"]).name: r["reason"] for r in prepared.rejects}


# ------------------------------------------------------------------ QUESST 2014
@pytest.fixture(scope="module")
def quesst_root(tmp_path_factory):
    return quesst14_tree(tmp_path_factory.mktemp("q"))


def test_quesst14_real_layout(quesst_root, tmp_path):
    p = prepare_quesst14(quesst_root, jobs=2)
    by_split = {s: sorted(r["id"] for r in p.records if r["split"] == s) for s in ("docs", "dev", "eval")}
    assert by_split["dev"] == sorted(DEV_TERMS) and len(by_split["eval"]) == 2
    assert by_split["docs"] == [f"quesst14_0000{i}" for i in range(1, 7)]  # English only; 00008 unreadable
    assert reasons(p) == {"quesst14_00008.wav": reasons(p)["quesst14_00008.wav"]}
    assert reasons(p)["quesst14_00008.wav"].startswith("unreadable")
    assert {r["sample_rate"] for r in p.records} == {8000}  # accepted at 8 kHz: the QbE loader resamples
    terms, docs, hits = quesst14_truth(p.tables, "dev")
    assert terms == [*DEV_TERMS, "quesst14_dev_0003"] and len(docs) == 8
    assert hits == {("quesst14_dev_0001", "quesst14_00001"), ("quesst14_dev_0002", "quesst14_00002"),
                    ("quesst14_dev_0003", "quesst14_00007")}
    every = prepare_quesst14(quesst_root, languages=None)
    assert {r["language"] for r in every.records} == {"nnenglish", "czech"} and len(every.records) == len(p.records) + 2

    # s3prl's own QUESST14 reader names the same English files
    Quesst14 = s3prl_module("dataio.corpus.quesst14").Quesst14
    ours = {Path(r["path"]) for r in p.records}
    s3 = Quesst14(str(quesst_root))
    theirs = {Path(x).resolve() for x in s3.doc_paths + s3.dev_query_paths + s3.eval_query_paths}
    assert theirs - ours == {(quesst_root / "Audio" / "quesst14_00008.wav").resolve()}
    assert ours <= theirs

    out = tmp_path / "m"
    counts = write_manifests("quesst14", p, out, manifest_splits_extra("quesst14"), max_reject_share=0.2)
    assert counts["docs"] == 6 and counts["dev_truth"] == 3 and counts["eval_terms"] == 2
    assert pd.read_parquet(out / "dev.parquet")["path"].map(lambda x: Path(x).is_absolute()).all()


def test_quesst14_bad_roots(quesst_root, tmp_path):
    with pytest.raises(DeepwideError, match="QUESST14 root .* not found"):
        prepare_quesst14(tmp_path / "missing")
    broken = tmp_path / "quesst14Database"
    (broken / "scoring").mkdir(parents=True)
    (broken / "scoring" / "language_key_utterances.lst").write_text("Audio/a.wav nnenglish extra\n")
    with pytest.raises(DeepwideError, match=r"language_key_utterances.lst:1: expected"):
        prepare_quesst14(tmp_path)  # the parent of quesst14Database works as root too
    with pytest.raises(DeepwideError, match="language_key_dev.lst"):
        (broken / "scoring" / "language_key_utterances.lst").write_text("x/Audio/a.wav nnenglish\n")
        prepare_quesst14(broken)


# ------------------------------------------------------------------ Libri2Mix
@pytest.fixture(scope="module")
def librimix_base(tmp_path_factory):
    base = tmp_path_factory.mktemp("lm")
    libri2mix_tree(base, with_rttm=True)
    return base


def test_librimix_with_rttm_and_s3prl_reads_kaldi_dirs(librimix_base, tmp_path):
    p = prepare_librimix(librimix_base / "Libri2Mix", rttm_dir=librimix_base / "metadata" / "LibriSpeech", jobs=2)
    assert sorted(r["split"] for r in p.records) == ["dev", "test", "train"]
    assert reasons(p) == {"19-198-0009_84-121123-0009.wav": reasons(p)["19-198-0009_84-121123-0009.wav"]}
    assert reasons(p)["19-198-0009_84-121123-0009.wav"].startswith("source s2: unreadable")
    train = next(r for r in p.records if r["split"] == "train")
    assert train["speaker"] == "19_84" and Path(train["s2_path"]).is_file()
    seg = p.tables["segments"]
    s2 = seg[(seg.record_id == train["id"]) & (seg.speaker == "84")]
    assert len(s2) == 1 and s2.start_sec.iloc[0] == pytest.approx(0.6)

    data_dir = tmp_path / "sd"
    assert write_sd_kaldi_dirs(seg, data_dir) == {"train": 2, "dev": 2, "test": 2}
    util = s3prl_module("problem.diarization.util")
    for split in ("train", "dev", "test"):
        util.kaldi_dir_to_csv(data_dir / split, tmp_path / f"{split}.csv")  # SuperbSD.prepare_data's reader
        df = pd.read_csv(tmp_path / f"{split}.csv")
        assert len(df) == 2 and set(df.columns) >= {"record_id", "wav_path", "utt_id", "speaker", "start_sec", "end_sec"}
    # s3prl's diarization dataset builds frame labels from our dir: speaker 84 silent for the first 0.6 s
    ds_mod = s3prl_module("dataio.dataset.diarization", extra={"Dataset": torch.utils.data.Dataset})
    ds = ds_mod.DiarizationDataset("train", str(data_dir / "train"), chunk_size=2000, frame_shift=160, num_speakers=2)
    item = ds[0]
    labels = np.asarray(item["label"])
    assert labels.shape[1] == 2 and item["record_id"] == train["id"]
    first = {spk: int(np.argmax(labels[:, k])) for k, spk in enumerate(["19", "84"])}
    assert first["19"] == 0 and abs(first["84"] - 60) <= 1  # 10 ms frames


def test_librimix_energy_activity_without_rttm(librimix_base, tmp_path):
    p = prepare_extra("librimix", librimix_base, {"mode": "max"})  # parent of Libri2Mix works as root
    seg = p.tables["segments"]
    dev = seg[seg.split == "dev"]
    starts = dev.groupby("speaker").start_sec.min()
    assert starts["1272"] < 0.15 and 0.5 <= starts["2428"] <= 0.75
    assert (seg.end_sec <= seg.duration + 1e-9).all() and (seg.end_sec > seg.start_sec).all()
    counts = write_manifests("librimix", p, tmp_path / "m", manifest_splits_extra("librimix"), max_reject_share=0.5)
    assert counts == {"train": 1, "dev": 1, "test": 1, "segments": len(seg)}
    with pytest.raises(DeepwideError, match="wav16k/min folder not found"):
        prepare_librimix(librimix_base, mode="min")
    with pytest.raises(DeepwideError, match="RTTM folder not found"):
        prepare_librimix(librimix_base, rttm_dir=tmp_path / "none")


def test_speech_activity_on_a_padded_word(tmp_path):
    import soundfile as sf

    wav, sr = sf.read(say("hello there", "en-us", tmp_path / "w.wav", pad_s=(1.0, 0.5), trim=True), dtype="float32")
    segs = speech_activity(wav, sr)
    assert segs and abs(segs[0][0] - 1.0) < 0.08 and abs(segs[-1][1] - (len(wav) / sr - 0.5)) < 0.08
    assert speech_activity(np.zeros(100, dtype=np.float32)) == []


# ------------------------------------------------------------------ Audio SNIPS
def test_snips_real_layout_matches_s3prl(tmp_path):
    root = snips_tree(tmp_path)
    p = prepare_snips(root)
    ids = {r["split"]: [] for r in p.records}
    for r in p.records:
        ids[r["split"]].append(r["id"])
    assert ids == {"train": ["Ivy-snips-train-0", "Ivy-snips-train-1"], "valid": ["Aditi-snips-valid-0"],
                   "test": ["Brian-snips-test-0", "Emma-snips-test-3"]}
    r = reasons(p)
    assert r["Joey-snips-train-7.wav"] == "no line in all.iob.snips.txt"
    assert r["Joey-snips-train-8.wav"].startswith("label: 2 words but 1 IOB tags")
    assert r["Emma-snips-test-4.wav"] == "2 channels, expected mono"
    assert next(x for x in p.records if x["id"] == "Emma-snips-test-3")["sample_rate"] == 8000
    assert "Zed-snips-train-5.wav" not in r  # speaker outside the split's list: skipped, as s3prl does
    rec = next(x for x in p.records if x["id"] == "Ivy-snips-train-1")
    assert (rec["text"], rec["iob"], rec["intent"]) == ("book a table in paris", "O O O O B-city", "BookRestaurant")

    SNIPS = s3prl_module("dataio.corpus.snips").SNIPS
    spk = {"train_speakers": ["Ivy", "Joey"], "valid_speakers": ["Aditi"], "test_speakers": ["Brian", "Emma"]}
    theirs = SNIPS(str(root), **spk).all_data
    for x in p.records:
        t = theirs[x["id"]]
        assert (t["transcription"], t["iob"], t["intent"], t["corpus_split"]) == (x["text"], x["iob"], x["intent"], x["split"])
        assert Path(t["wav_path"]).resolve() == Path(x["path"])

    counts = write_manifests("snips", p, tmp_path / "m", manifest_splits_extra("snips"), max_reject_share=0.5)
    assert counts == {"train": 2, "valid": 1, "test": 2}
    df = pd.read_parquet(tmp_path / "m" / "train.parquet")
    assert {"iob", "intent", "phones"} <= set(df.columns) and df.phones.str.len().min() > 0
    with pytest.raises(DeepwideError, match="corpus snips: 3 of 8 audio files rejected"):
        write_manifests("snips", p, tmp_path / "m2", manifest_splits_extra("snips"), max_reject_share=0.1)


def test_snips_bad_label_file(tmp_path):
    root = tmp_path / "SNIPS"
    for s in ("train", "valid", "test"):
        (root / s).mkdir(parents=True)
    (root / "all.iob.snips.txt").write_text("Ivy-snips-train-0 BOS hi EOS O O Greet\n")
    with pytest.raises(DeepwideError, match=r"all.iob.snips.txt:1: expected .* no tab"):
        prepare_snips(root)
    with pytest.raises(DeepwideError, match="unknown corpus 'timit'"):
        prepare_extra("timit", root, {})


# ------------------------------------------------------------------ CLI hook
def test_prepare_extra_cli_writes_manifests_and_sd_dirs(librimix_base, tmp_path, capsys):
    import json

    out, sd = tmp_path / "m", tmp_path / "sd"
    cfg = json.dumps({"rttm_dir": str(librimix_base / "metadata" / "LibriSpeech"), "max_reject_share": 0.5})
    rc = main(["prepare-extra", "--corpus", "librimix", "--root", str(librimix_base), "--config-json", cfg,
               "--out-dir", str(out), "--sd-data-dir", str(sd)])
    assert rc == 0
    counts = json.loads(capsys.readouterr().out)
    assert counts["train"] == 1 and counts["sd_segments"] == {"train": 2, "dev": 2, "test": 2}
    assert sorted(p.name for p in (sd / "dev").iterdir()) == ["reco2dur", "rttm", "segments", "spk2utt", "utt2spk", "wav.scp"]
    assert len(pd.read_csv(out / "rejects.tsv", sep="\t")) == 1
    # the default reject share (1 %) fails on 1 bad mixture of 4, keeping rejects.tsv
    assert main(["prepare-extra", "--corpus", "librimix", "--root", str(librimix_base), "--out-dir", str(tmp_path / "m2")]) == 2
    assert "1 of 4 audio files rejected" in capsys.readouterr().err and (tmp_path / "m2" / "rejects.tsv").is_file()
    assert main(["prepare-extra", "--corpus", "snips", "--root", str(tmp_path), "--config-json", '{"mode": "max"}',
                 "--out-dir", str(tmp_path / "m3")]) == 2
    assert "corpus.snips.mode: unknown key" in capsys.readouterr().err


def test_extra_config_defaults_and_types():
    assert extra_config("quesst14", {}) == {"enabled": True, "root": None, "languages": ["nnenglish"],
                                            "max_reject_share": 0.01, "synth": {}}
    assert extra_config("snips", {"enabled": True, "synth": {"train_sentences": 3}})["synth"] == {"train_sentences": 3}
    assert extra_config("quesst14", {"languages": None})["languages"] is None
    with pytest.raises(DeepwideError, match=r"corpus.librimix.mode: must be max or min"):
        extra_config("librimix", {"mode": "both"})
    with pytest.raises(DeepwideError, match=r"corpus.snips.speakers: must map train, valid and test"):
        extra_config("snips", {"speakers": {"train": ["Ivy"]}})
    with pytest.raises(DeepwideError, match=r"corpus.quesst14.max_reject_share: must be a number"):
        extra_config("quesst14", {"max_reject_share": 2})
