"""The embedded Libri2Mix (corpus synth-librimix): two-speaker mixtures of a synthesized
LibriSpeech in the real Libri2Mix layout, read unchanged by prepare-extra's LibriMix reader
(with SUPERB's per-utterance RTTMs and without), and by s3prl's SD readers; deterministic
for a seed."""

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch

from deepwide.corpus.librimix import SYNTH_DEFAULTS, plan_librimix, synth_librimix
from deepwide.corpus.real_extra import extra_config, prepare_librimix, write_sd_kaldi_dirs
from deepwide.errors import DeepwideError
from real_extra_trees import s3prl_module
from sd_trees import LIBRIMIX_SECTION, small_librispeech, synth_librimix_cli

SPLITS = {"train-100": 12, "dev": 4, "test": 4}


@pytest.fixture(scope="module")
def trees(tmp_path_factory):
    base = tmp_path_factory.mktemp("sdtrees")
    libri = small_librispeech(base / "LibriSpeech")
    summary = synth_librimix_cli(libri, base / "librimix", seed=3)
    return libri, base / "librimix", summary


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_layout_sources_and_mixing(trees):
    libri, out, summary = trees
    assert summary["mixtures"] == SPLITS and summary["root"] == str(out / "Libri2Mix")
    assert 0.1 < summary["overlap_share"] < 0.9  # overlapping and single-speaker speech both
    base = out / "Libri2Mix" / "wav16k" / "max"
    used = set()
    for split, n in SPLITS.items():
        df = pd.read_csv(base / "metadata" / f"mixture_{split}_mix_both.csv", dtype=str, keep_default_na=False)
        assert list(df.columns) == ["mixture_ID", "mixture_path", "source_1_path", "source_2_path", "noise_path", "length"]
        clean = pd.read_csv(base / "metadata" / f"mixture_{split}_mix_clean.csv", dtype=str)
        assert len(df) == len(clean) == n
        for r in df.itertuples():
            id1, id2 = r.mixture_ID.split("_")
            assert re.fullmatch(r"\d+-\d+-\d+", id1) and re.fullmatch(r"\d+-\d+-\d+", id2)
            assert id1.split("-")[0] != id2.split("-")[0]  # two speakers
            assert not ({id1, id2} & used)  # each source utterance once
            used |= {id1, id2}
            src = {"train-100": "train-clean-100", "dev": "dev-clean", "test": "test-clean"}[split]
            assert (libri / src / id1.split("-")[0] / id1.split("-")[1] / f"{id1}.flac").is_file()
            audio = {k: sf.read(out / "Libri2Mix" / getattr(r, f"{k}_path" if k != "mixture" else "mixture_path"))[0]
                     for k in ("mixture", "source_1", "source_2", "noise")}
            assert all(len(x) == int(r.length) for x in audio.values())
            # mix_both = s1 + s2 + noise, up to 16-bit rounding; the noise is ~30 dB down
            assert np.abs(audio["mixture"] - audio["source_1"] - audio["source_2"] - audio["noise"]).max() < 4 / 32768
            snr = 10 * np.log10(np.mean((audio["source_1"] + audio["source_2"]) ** 2) / np.mean(audio["noise"] ** 2))
            assert snr == pytest.approx(30, abs=0.5)
    info = json.loads((out / "deepwide_synth.json").read_text())
    assert info["seed"] == 3 and info["synth"] == {**SYNTH_DEFAULTS, **LIBRIMIX_SECTION["synth"]}


def test_prepare_extra_reads_it_unchanged_and_s3prl_reads_the_kaldi_dirs(trees, tmp_path):
    _, out, _ = trees
    rttm_dir = out / "metadata" / "LibriSpeech"
    p = prepare_librimix(out, rttm_dir=rttm_dir)
    assert p.rejects == [] and sorted(r["split"] for r in p.records) == ["dev"] * 4 + ["test"] * 4 + ["train"] * 12
    seg = p.tables["segments"]
    assert set(seg.groupby("record_id").speaker.nunique()) == {2}
    # source 2 starts late: its reference speech begins where its file's samples do
    for rec in p.records[:6]:
        s2 = sf.read(rec["s2_path"])[0]
        first = np.flatnonzero(np.abs(s2) > 0)[0] / 16000
        spk2 = Path(rec["s2_path"]).stem.split("_")[1].split("-")[0]
        onset = seg[(seg.record_id == rec["id"]) & (seg.speaker == spk2)].start_sec.min()
        assert first - 0.03 <= onset <= first + 0.3
    # the energy route (no RTTMs) finds the same activity: the RTTMs are that detector on the placed sources
    energy = prepare_librimix(out).tables["segments"]
    merged = seg.merge(energy, on=["record_id", "speaker"], suffixes=("", "_e"))
    assert len(merged) == len(seg) == len(energy)
    assert (merged.start_sec - merged.start_sec_e).abs().max() <= 0.021 and (merged.end_sec - merged.end_sec_e).abs().max() <= 0.021

    data = tmp_path / "sd"
    counts = write_sd_kaldi_dirs(seg, data)
    assert counts == {s: int((seg.split == s).sum()) for s in ("train", "dev", "test")}
    util = s3prl_module("problem.diarization.util")
    ds_mod = s3prl_module("dataio.dataset.diarization", extra={"Dataset": torch.utils.data.Dataset})
    for split in ("train", "dev", "test"):
        util.kaldi_dir_to_csv(data / split, tmp_path / f"{split}.csv")  # SuperbSD.prepare_data
        assert len(pd.read_csv(tmp_path / f"{split}.csv")) == counts[split]
    ds = ds_mod.DiarizationDataset("train", str(data / "train"), chunk_size=2000, frame_shift=160, num_speakers=2)
    labels = np.asarray(ds[0]["label"])
    assert labels.shape[1] == 2 and labels.any(axis=0).all() and labels.all(axis=1).any()  # both speak, and overlap


def test_same_seed_same_bytes_other_seed_differs(trees, tmp_path):
    libri, out, _ = trees
    again = synth_librimix(libri, tmp_path / "again", seed=3, cfg=LIBRIMIX_SECTION["synth"])
    assert again["mixtures"] == SPLITS
    assert _files(tmp_path / "again") == _files(out)
    other = plan_librimix(libri, LIBRIMIX_SECTION["synth"], seed=4)
    assert [p.mix_id for p in other] != [p.mix_id for p in plan_librimix(libri, LIBRIMIX_SECTION["synth"], seed=3)]


def test_sizes_and_inputs_fail_naming_the_key_or_file(trees, tmp_path, capsys):
    from deepwide.cli import main

    libri, _, _ = trees
    with pytest.raises(DeepwideError, match=r"corpus.librimix.synth.dev_mixtures: 7 mixtures need 14 utterances .* enough for 6"):
        plan_librimix(libri, {**LIBRIMIX_SECTION["synth"], "dev_mixtures": 7}, 0)
    with pytest.raises(DeepwideError, match=r"LibriSpeech split folder .*nowhere/train-clean-100 not found"):
        plan_librimix(tmp_path / "nowhere", {}, 0)
    with pytest.raises(DeepwideError, match=r"corpus.librimix.synth.gain: unknown key"):
        plan_librimix(libri, {"gain": 1}, 0)
    # the CLI validates the corpus.librimix section against the schema
    rc = main(["corpus", "synth-librimix", "--librispeech", str(libri), "--out", str(tmp_path / "x"),
               "--config-json", json.dumps({"synth": {"train_mixtures": 0}})])
    assert rc == 2 and "corpus.librimix.synth.train_mixtures" in capsys.readouterr().err and not (tmp_path / "x").exists()
    # prepare-extra accepts the whole validated section (enabled, synth) and ignores what is not its own
    assert extra_config("librimix", {"enabled": True, "synth": {"train_mixtures": 3}})["mode"] == "max"
    with pytest.raises(DeepwideError, match=r"corpus.librimix.synth: must be a mapping"):
        extra_config("librimix", {"synth": 3})
    # every train utterance is used (24 for 12 mixtures): a bad one fails naming its file
    import shutil

    shutil.copytree(libri, tmp_path / "badlibri")
    victim = sorted((tmp_path / "badlibri" / "train-clean-100").rglob("*.flac"))[0]
    sf.write(victim, np.zeros((800, 2)) + 0.1, 8000)
    with pytest.raises(DeepwideError, match=rf"{victim.name} is 8000 Hz with 2 channel"):
        synth_librimix(tmp_path / "badlibri", tmp_path / "y", 3, LIBRIMIX_SECTION["synth"])
    assert not (tmp_path / "y").exists()
