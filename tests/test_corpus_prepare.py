"""Real-dataset roots: small trees written in each dataset's own layout (numpy audio), bad
files rejected with their reason, reject-share failure, missing roots and programs."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from deepwide.config import validate_config
from deepwide.corpus.prepare import (
    prepare_fluent_speech_commands,
    prepare_iemocap,
    prepare_librispeech,
    prepare_speech_commands,
    prepare_voxceleb1,
    write_manifests,
)
from deepwide.corpus.sources import check_sources, manifest_splits
from deepwide.errors import DeepwideError

REPO = Path(__file__).resolve().parents[1]
NUMBERS = ["ZERO", "ONE", "TWO", "THREE", "FOUR", "FIVE", "SIX", "SEVEN", "EIGHT", "NINE"]


def audio(path: Path, seconds=0.5, sr=16000, channels=1, seed=0):
    """A short tone plus noise; ``seconds=0`` writes a valid header with no samples."""
    path.parent.mkdir(parents=True, exist_ok=True)
    n = int(seconds * sr)
    t = np.arange(n) / sr
    x = 0.2 * np.sin(2 * np.pi * (200 + 50 * seed) * t) + 0.01 * np.random.default_rng(seed).standard_normal(n)
    if channels > 1:
        x = np.stack([x] * channels, axis=1)
    sf.write(path, x.astype(np.float32), sr, subtype="PCM_16")
    return path


def garbage(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"this is not audio" * 10)
    return path


def reasons(prepared):
    return {Path(r["path"]).name: r["reason"] for r in prepared.rejects}


# ------------------------------------------------------------------ LibriSpeech
@pytest.fixture
def libri_root(tmp_path):
    root = tmp_path / "LibriSpeech"
    (root).mkdir()
    (root / "SPEAKERS.TXT").write_text(
        "; comment\n;ID  |SEX| SUBSET           |MINUTES| NAME\n"
        "19   | F | train-clean-100  | 25.19 | Kara Shallenberg\n"
        "84   | F | dev-clean        |  8.02 | Christie Nowak\n"
        "121  | M | test-clean       |  6.84 | Nikolle Doolin\n"
    )
    ch = root / "train-clean-100" / "19" / "198"
    lines = []
    for i in range(10):
        audio(ch / f"19-198-{i:04d}.flac", seed=i)
        lines.append(f"19-198-{i:04d} NORTHANGER ABBEY CHAPTER {NUMBERS[i]} DON'T")
    audio(ch / "19-198-0010.flac", sr=8000)  # bad rate
    audio(ch / "19-198-0011.flac", channels=2)  # stereo
    (ch / "19-198-0012.flac").write_bytes(b"")  # empty file
    garbage(ch / "19-198-0013.flac")  # unreadable
    lines += [f"19-198-{i:04d} BAD FILE" for i in (10, 11, 12, 13, 14)]  # 14: listed, missing
    (ch / "19-198.trans.txt").write_text("\n".join(lines) + "\n")
    audio(ch / "19-198-0099.flac")  # on disk, not in trans.txt
    for split, spk, chap in (("dev-clean", "84", "121123"), ("test-clean", "121", "121726")):
        d = root / split / spk / chap
        audio(d / f"{spk}-{chap}-0000.flac")
        (d / f"{spk}-{chap}.trans.txt").write_text(f"{spk}-{chap}-0000 HELLO WORLD\n")
    return root


def test_librispeech_real_layout_with_rejects(libri_root, tmp_path):
    p = prepare_librispeech(libri_root, jobs=2)
    r = reasons(p)
    assert r["19-198-0010.flac"] == "sample rate 8000 Hz, expected 16000"
    assert r["19-198-0011.flac"] == "2 channels, expected mono"
    assert r["19-198-0012.flac"].startswith("empty")
    assert r["19-198-0013.flac"].startswith("unreadable")
    assert r["19-198-0014.flac"].startswith("missing")
    assert r["19-198-0099.flac"].startswith("no line")
    assert len(p.records) == 12
    out = tmp_path / "manifests"
    counts = write_manifests("librispeech", p, out, manifest_splits("librispeech", {}), max_reject_share=0.5)
    assert counts == {"train-clean-100": 10, "dev-clean": 1, "test-clean": 1}
    df = pd.read_parquet(out / "train-clean-100.parquet")
    assert df.loc[0, "text"] == "NORTHANGER ABBEY CHAPTER ZERO DON'T"
    assert df.loc[0, "phones"].startswith("n") and "d oʊ n t" in df.loc[0, "phones"]  # espeak-ng-ipa
    assert set(df["gender"]) == {"F"} and set(df["speaker"]) == {"19"}
    assert (df["num_samples"] == 8000).all()
    lexicon = dict(line.split(" ", 1) for line in (out / "lexicon.txt").read_text().splitlines())
    assert lexicon["DON'T"] == "d oʊ n t" and set(lexicon) >= {"NORTHANGER", "HELLO", "WORLD", "NINE"}
    rej = pd.read_csv(out / "rejects.tsv", sep="\t")
    assert len(rej) == 6 and set(rej["split"]) == {"train-clean-100"}


def test_reject_share_fails_and_keeps_rejects(libri_root, tmp_path):
    p = prepare_librispeech(libri_root)
    out = tmp_path / "manifests"
    with pytest.raises(DeepwideError, match=r"6 of 18 audio files rejected .* max_reject_share 10.0%"):
        write_manifests("librispeech", p, out, manifest_splits("librispeech", {}), max_reject_share=0.1)
    assert len(pd.read_csv(out / "rejects.tsv", sep="\t")) == 6  # the list survives the failure
    assert not list(out.glob("*.parquet"))


def test_prepare_cli_reject_share_exit_code(libri_root, tmp_path):
    out = tmp_path / "m"
    res = subprocess.run(
        [sys.executable, "-m", "deepwide", "corpus", "prepare", "--corpus", "librispeech", "--root", str(libri_root),
         "--config-json", '{"max_reject_share": 0.05}', "--out-dir", str(out), "--jobs", "1"],
        capture_output=True, text=True, cwd=REPO,
    )
    assert res.returncode == 2
    assert "error: corpus librispeech: 6 of 18 audio files rejected" in res.stderr
    assert "Traceback" not in res.stderr


def test_missing_root_and_split(tmp_path, libri_root):
    with pytest.raises(DeepwideError, match="LibriSpeech root not found: .*nope"):
        prepare_librispeech(tmp_path / "nope")
    with pytest.raises(DeepwideError, match="LibriSpeech split folder 'train-other-500' not found"):
        prepare_librispeech(libri_root, ["train-other-500"])
    res = subprocess.run(
        [sys.executable, "-m", "deepwide", "corpus", "prepare", "--corpus", "iemocap", "--root", str(tmp_path / "nope"),
         "--out-dir", str(tmp_path / "m")],
        capture_output=True, text=True, cwd=REPO,
    )
    assert res.returncode == 2 and "error: IEMOCAP root not found" in res.stderr


# ------------------------------------------------------------------ VoxCeleb1
def test_voxceleb1_real_layout(tmp_path):
    root = tmp_path / "VoxCeleb1"
    iden = []
    for spk, subset in (("id10001", "dev"), ("id10002", "dev"), ("id10270", "test"), ("id10271", "test")):
        for j, code in enumerate((1, 1, 2, 3)):
            uid = f"{spk}/1zcIwhmdeo4/{j + 1:05d}.wav"
            audio(root / subset / "wav" / uid, seed=j)
            iden.append(f"{code} {uid}")
    audio(root / "dev" / "wav" / "id10002/1zcIwhmdeo4/00004.wav", sr=44100)  # bad rate overwrites a test file
    (root / "iden_split.txt").write_text("\n".join(iden) + "\n")
    (root / "voxceleb1_test_v2.txt").write_text(
        "1 id10270/1zcIwhmdeo4/00001.wav id10270/1zcIwhmdeo4/00002.wav\n"
        "0 id10270/1zcIwhmdeo4/00001.wav id10271/1zcIwhmdeo4/00004.wav\n"
        "0 id10270/1zcIwhmdeo4/00001.wav id10271/nothere0000/00009.wav\n"
    )
    p = prepare_voxceleb1(root)
    assert reasons(p) == {"00004.wav": "sample rate 44100 Hz, expected 16000"}
    out = tmp_path / "m"
    counts = write_manifests("voxceleb1", p, out, manifest_splits("voxceleb1", {}), max_reject_share=0.1)
    assert counts == {"train": 8, "valid": 4, "test": 3, "trials": 2}
    test = pd.read_parquet(out / "test.parquet")
    assert set(test["id"]) == {"id10001-1zcIwhmdeo4-00004", "id10270-1zcIwhmdeo4-00004", "id10271-1zcIwhmdeo4-00004"}
    assert set(test["subset"]) == {"dev", "test"} and (test["text"] == "").all()
    trials = pd.read_parquet(out / "trials.parquet")
    assert list(trials["label"]) == [1, 0]
    (root / "iden_split.txt").unlink()
    with pytest.raises(DeepwideError, match="iden_split.txt"):
        prepare_voxceleb1(root)


# ------------------------------------------------------------------ Speech Commands
def test_speech_commands_real_layout(tmp_path):
    root, test_root = tmp_path / "speech_commands_v0.01", tmp_path / "speech_commands_test_set_v0.01"
    for word in ("yes", "no", "bird"):
        for spk in ("0a7c2a8d", "0b09edd3", "0c40e715"):
            audio(root / word / f"{spk}_nohash_0.wav", seconds=1)
    audio(root / "_background_noise_" / "white_noise.wav", seconds=3)
    audio(root / "yes" / "0d2bcf9d_nohash_0.wav", channels=2)  # stereo: rejected
    (root / "validation_list.txt").write_text("yes/0b09edd3_nohash_0.wav\nno/0b09edd3_nohash_0.wav\nbird/0b09edd3_nohash_0.wav\n")
    (root / "testing_list.txt").write_text("yes/0c40e715_nohash_0.wav\nno/0c40e715_nohash_0.wav\nbird/0c40e715_nohash_0.wav\n")
    (root / "LICENSE").write_text("CC-BY-4.0\n")
    for label in ("yes", "no", "_unknown_", "_silence_"):
        audio(test_root / label / f"ffd2ba2f_nohash_{len(label)}.wav", seconds=1)
    p = prepare_speech_commands(root, test_root)
    assert reasons(p) == {"0d2bcf9d_nohash_0.wav": "2 channels, expected mono"}
    df = pd.DataFrame(p.records)
    train, valid, test = (df[df.split == s] for s in ("train", "valid", "test"))
    assert sorted(train["label"]) == ["_silence_", "_unknown_", "no", "yes"]
    assert set(train.query("label == '_unknown_'")["word"]) == {"bird"}
    assert sorted(valid["label"]) == ["_unknown_", "no", "yes"] and set(valid["speaker"]) == {"0b09edd3"}
    assert "0c40e715" not in set(df["speaker"])  # on the testing list: SUPERB tests on the separate set
    assert sorted(test["label"]) == ["_silence_", "_unknown_", "no", "yes"]
    out = tmp_path / "m"
    write_manifests("speech_commands", p, out, manifest_splits("speech_commands", {}), max_reject_share=0.2)
    assert pd.read_parquet(out / "train.parquet").query("label == 'yes'")["phones"].iloc[0] == "j ɛ s"


# ------------------------------------------------------------------ Fluent Speech Commands
def test_fluent_speech_commands_real_layout(tmp_path):
    root = tmp_path / "fluent_speech_commands_dataset"
    (root / "data").mkdir(parents=True)
    for split in ("train", "valid", "test"):
        rows = [",path,speakerId,transcription,action,object,location"]
        for i in range(3):
            rel = f"wavs/speakers/2BqVo8kVB2Skwgyb/{split}-{i}.wav"
            audio(root / rel, seed=i, channels=2 if (split, i) == ("test", 2) else 1,
                  seconds=0 if (split, i) == ("valid", 1) else 0.5)  # valid-1: header, no samples
            rows.append(f'{i},{rel},2BqVo8kVB2Skwgyb,"Turn on the lights, please",activate,lights,none')
        (root / "data" / f"{split}_data.csv").write_text("\n".join(rows) + "\n")
    p = prepare_fluent_speech_commands(root)
    assert reasons(p) == {"test-2.wav": "2 channels, expected mono", "valid-1.wav": "empty: 0 samples"}
    df = pd.DataFrame(p.records)
    assert len(df) == 7 and set(df["intent"]) == {"activate ; lights ; none"}
    assert set(df["object"]) == {"lights"} and set(df["location"]) == {"none"}
    assert df["text"].iloc[0] == "Turn on the lights, please"
    (root / "data" / "valid_data.csv").unlink()
    with pytest.raises(DeepwideError, match="valid_data.csv not found"):
        prepare_fluent_speech_commands(root)


# ------------------------------------------------------------------ IEMOCAP
def test_iemocap_real_layout(tmp_path):
    root = tmp_path / "IEMOCAP_full_release"
    emos = ["neu", "exc", "fru", "sad"]
    for s in range(1, 6):
        dialog = f"Ses0{s}F_impro01"
        sdir = root / f"Session{s}"
        evals = ["% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]", ""]
        trans = []
        for i, emo in enumerate(emos):
            uid = f"{dialog}_{'FM'[i % 2]}{i // 2:03d}"
            audio(sdir / "sentences" / "wav" / dialog / f"{uid}.wav", seed=i)
            evals += [f"[{i}.0000 - {i}.9000]\t{uid}\t{emo}\t[2.5000, 3.0000, 3.0000]", "C-E2:\tNeutral;\t()", ""]
            trans.append(f"{uid} [{i:03d}.0000-{i:03d}.9000]: Excuse me, number {i}.")
        (sdir / "dialog" / "EmoEvaluation").mkdir(parents=True)
        (sdir / "dialog" / "EmoEvaluation" / f"{dialog}.txt").write_text("\n".join(evals) + "\n")
        (sdir / "dialog" / "transcriptions").mkdir(parents=True)
        (sdir / "dialog" / "transcriptions" / f"{dialog}.txt").write_text("\n".join(trans) + "\n")
    audio(root / "Session1" / "sentences" / "wav" / "Ses01F_impro01" / "Ses01F_impro01_F099.wav")  # unlabelled
    p = prepare_iemocap(root)
    assert reasons(p) == {"Ses01F_impro01_F099.wav": "no label in dialog/EmoEvaluation"}
    df = pd.DataFrame(p.records)
    assert len(df) == 20
    s1 = df[df.split == "Session1"].set_index("id")
    ids = [f"Ses01F_impro01_{g}{n:03d}" for g, n in (("F", 0), ("M", 0), ("F", 1), ("M", 1))]
    assert list(s1.loc[ids, "emotion"]) == emos and list(s1.loc[ids, "label"]) == ["neu", "hap", "", "sad"]
    assert s1.loc["Ses01F_impro01_M000", "speaker"] == "Ses01M"
    assert s1.loc["Ses01F_impro01_F000", "text"] == "Excuse me, number 0."
    assert set(s1["act"]) == {"improvised"}


# ------------------------------------------------------------------ sources and config
def _corpus_cfg(**sections):
    return validate_config({"corpus": sections})["corpus"]


def test_check_sources_missing_roots(tmp_path):
    cfg = _corpus_cfg(
        voxceleb1={"root": str(tmp_path / "vox")},
        speech_commands={"root": str(tmp_path)},  # test_root missing
    )
    with pytest.raises(DeepwideError) as err:
        check_sources(cfg)
    msg = str(err.value)
    assert f"corpus.voxceleb1.root: folder {tmp_path / 'vox'} does not exist" in msg
    assert "corpus.speech_commands.test_root must be set" in msg


def test_check_sources_missing_tts_programs(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no espeak-ng, flite or sox here
    with pytest.raises(DeepwideError, match="missing programs .*espeak-ng, flite, sox.*apt-get|missing programs .*espeak-ng, flite, sox"):
        check_sources(_corpus_cfg())
    # every corpus real or disabled: no TTS program needed
    off = {name: {"enabled": False} for name in ("librispeech", "voxceleb1", "speech_commands", "fluent_speech_commands")}
    for i in range(1, 6):  # a root with IEMOCAP's layout
        (tmp_path / f"Session{i}" / "sentences" / "wav").mkdir(parents=True)
    check_sources(_corpus_cfg(iemocap={"root": str(tmp_path)}, **off))


def test_config_typo_names_key_path():
    with pytest.raises(DeepwideError, match=r"corpus\.librispeech\.synth\.speakerz: unknown key"):
        validate_config({"corpus": {"librispeech": {"synth": {"speakerz": 3}}}})
    with pytest.raises(DeepwideError, match=r"corpus\.iemocap\.max_reject_share"):
        validate_config({"corpus": {"iemocap": {"max_reject_share": 2}}})


def test_check_cli_names_missing_programs(tmp_path):
    env = {"PATH": str(tmp_path), "PYTHONPATH": str(REPO / "src")}
    res = subprocess.run([sys.executable, "-m", "deepwide", "corpus", "check", "--config-json", "{}"],
                         capture_output=True, text=True, env=env, cwd=REPO)
    assert res.returncode == 2
    assert "missing programs needed to synthesize the embedded corpora: espeak-ng, flite, sox" in res.stderr
    ok = subprocess.run([sys.executable, "-m", "deepwide", "corpus", "check", "--config-json", "{}"],
                        capture_output=True, text=True, cwd=REPO)
    assert ok.returncode == 0, ok.stderr
