"""Synthesized corpora: real layouts, read back by our prepare code and by s3prl's own
corpus readers; deterministic audio per seed."""

import hashlib
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest
import soundfile as sf

from deepwide.config import load_config
from deepwide.corpus.prepare import prepare, write_manifests
from deepwide.corpus.sources import CORPORA, KS_COMMANDS, manifest_splits
from deepwide.corpus.synth import ks_bucket, synthesize
from deepwide.plan.corpus import roots

REPO = Path(__file__).resolve().parents[1]
BASE = ["id", "path", "num_samples", "sample_rate", "split", "speaker", "text", "phones"]


@pytest.fixture(scope="session")
def smoke_cfg():
    return load_config(REPO / "workflow" / "configs" / "smoke.yaml")


@pytest.fixture(scope="session")
def synth_results(tmp_path_factory, smoke_cfg):
    """Every corpus synthesized at smoke size, plus its manifests."""
    results = tmp_path_factory.mktemp("results")
    cc = smoke_cfg["corpus"]
    manifests = {}
    for name in CORPORA:
        synthesize(name, cc[name], cc["tts"], smoke_cfg["seed"], results / "corpora" / name, jobs=2, progress=False)
        root, test_root = roots(name, cc, results)
        prepared = prepare(name, root, cc[name], test_root, jobs=2)
        out = results / "manifests" / name
        write_manifests(name, prepared, out, manifest_splits(name, cc[name]), cc[name]["max_reject_share"])
        manifests[name] = {s: pd.read_parquet(out / f"{s}.parquet") for s in manifest_splits(name, cc[name])}
    return results, manifests


def _tree_hashes(root: Path) -> dict:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _check_manifest(df: pd.DataFrame):
    assert list(df.columns[: len(BASE)]) == BASE
    assert df["id"].is_unique
    assert (df["sample_rate"] == 16000).all()
    for row in df.itertuples():
        assert os.path.isabs(row.path) and os.path.isfile(row.path)
        info = sf.info(row.path)
        assert (info.samplerate, info.channels, info.frames) == (16000, 1, row.num_samples)


def _synthesized(synth_results, smoke_cfg, name):
    """One corpus of ``synth_results``: its manifests by split, its root and its synth settings."""
    results, manifests = synth_results
    return manifests[name], results / "corpora" / name, smoke_cfg["corpus"][name]["synth"]


def test_librispeech_layout(synth_results, smoke_cfg):
    m, root, s = _synthesized(synth_results, smoke_cfg, "librispeech")
    speakers = {}
    for split, n_spk in (("train-clean-100", s["train_speakers"]), ("dev-clean", s["dev_speakers"]), ("test-clean", s["test_speakers"])):
        df = m[split]
        _check_manifest(df)
        assert len(df) == n_spk * s["chapters_per_speaker"] * s["utts_per_chapter"]
        speakers[split] = set(df["speaker"])
        assert len(speakers[split]) == n_spk
        for row in df.itertuples():
            spk, chapter, _ = row.id.split("-")
            p = Path(row.path)
            assert p.relative_to(root.resolve()).parts == (split, spk, chapter, f"{row.id}.flac")
            trans = (p.parent / f"{spk}-{chapter}.trans.txt").read_text().splitlines()
            assert f"{row.id} {row.text}" in trans
            assert row.text == row.text.upper() and row.text.replace(" ", "").isalpha()
            assert len(row.phones.split()) >= len(row.text.split())
    # speaker-disjoint splits, genders from SPEAKERS.TXT
    assert not (speakers["train-clean-100"] & speakers["dev-clean"] or speakers["dev-clean"] & speakers["test-clean"])
    assert set(m["train-clean-100"]["gender"]) <= {"M", "F"}


def test_voxceleb1_layout(synth_results, smoke_cfg):
    m, root, s = _synthesized(synth_results, smoke_cfg, "voxceleb1")
    n_spk = s["dev_speakers"] + s["test_speakers"]
    iden = [line.split() for line in (root / "iden_split.txt").read_text().splitlines()]
    assert len(iden) == n_spk * s["videos_per_speaker"] * s["utts_per_video"]
    for split in ("train", "valid", "test"):
        _check_manifest(m[split])
        assert m[split]["speaker"].nunique() == n_spk  # SID: every speaker in every split
    all_rows = pd.concat([m[s] for s in ("train", "valid", "test")])
    assert len(all_rows) == len(iden)
    for row in all_rows.itertuples():
        rel = Path(row.path).relative_to(root.resolve())
        assert rel.parts[1] == "wav" and rel.parts[2] == row.speaker and rel.parts[3] == row.video
        assert rel.parts[0] == ("test" if int(row.speaker[2:]) >= 10270 else "dev")
    trials = m["trials"]
    assert len(trials) == s["trials"] and set(trials["label"]) == {0, 1}
    spk = lambda i: i.split("-")[0]  # noqa: E731
    assert all((spk(a) == spk(b)) == bool(lab) for a, b, lab in zip(trials.id1, trials.id2, trials.label))
    assert all(int(spk(i)[2:]) >= 10270 for i in trials.id1)


def test_speech_commands_layout(synth_results, smoke_cfg):
    results, m = synth_results
    train_root, test_root = roots("speech_commands", smoke_cfg["corpus"], results)
    s = smoke_cfg["corpus"]["speech_commands"]["synth"]
    words = list(KS_COMMANDS) + s["unknown_words"]
    df = pd.concat(m["speech_commands"].values())
    _check_manifest(df)
    speech = df[df["label"] != "_silence_"]
    assert (speech["num_samples"] == 16000).all()  # one-second clips, as in the real set
    # the hash rule s3prl uses agrees with the list files for every synthetic speaker
    for split, bucket in (("train", "train"), ("valid", "valid")):
        part = m["speech_commands"][split]
        part = part[part["label"] != "_silence_"]
        assert part["speaker"].nunique() == s[f"{bucket}_speakers"]
        assert {ks_bucket(x) for x in part["speaker"]} == {bucket}
        assert set(part["word"]) == set(words)
    testing = (train_root / "testing_list.txt").read_text().split()
    assert {ks_bucket(p.split("/")[1].split("_nohash_")[0]) for p in testing} == {"test"}
    assert len(testing) == s["test_speakers"] * len(words)
    test = m["speech_commands"]["test"]
    assert set(test["label"]) == set(KS_COMMANDS) | {"_unknown_", "_silence_"}
    assert sorted(p.name for p in test_root.iterdir()) == sorted(list(KS_COMMANDS) + ["_silence_", "_unknown_"])
    noise = m["speech_commands"]["train"].query("label == '_silence_'")
    assert len(noise) == 5 and (noise["num_samples"] == int(16000 * s["noise_seconds"])).all()


def test_fluent_speech_commands_layout(synth_results, smoke_cfg):
    m, root, s = _synthesized(synth_results, smoke_cfg, "fluent_speech_commands")
    spk = {}
    for split in ("train", "valid", "test"):
        csv = pd.read_csv(root / "data" / f"{split}_data.csv", dtype=str, keep_default_na=False)
        assert list(csv.columns) == ["Unnamed: 0", "path", "speakerId", "transcription", "action", "object", "location"]
        df = m[split]
        _check_manifest(df)
        assert len(df) == len(csv) == s[f"{split}_speakers"] * s["utts_per_speaker"]
        assert all(p.startswith("wavs/speakers/") for p in csv["path"])
        assert (df["intent"] == df["action"] + " ; " + df["object"] + " ; " + df["location"]).all()
        spk[split] = set(df["speaker"])
    assert not (spk["train"] & spk["valid"] or spk["train"] & spk["test"])


def test_iemocap_layout(synth_results, smoke_cfg):
    m, root, s = _synthesized(synth_results, smoke_cfg, "iemocap")
    for i in range(1, 6):
        df = m[f"Session{i}"]
        _check_manifest(df)
        assert len(df) == s["dialogs_per_session"] * s["utts_per_dialog"]
        assert set(df["label"]) == {"neu", "hap", "ang", "sad"}
        assert set(df["speaker"]) == {f"Ses0{i}F", f"Ses0{i}M"}
        assert (df["text"].str.len() > 0).all()
        for dialog in df["dialog"].unique():
            assert (root / f"Session{i}" / "dialog" / "EmoEvaluation" / f"{dialog}.txt").is_file()


def test_emotions_differ_in_prosody(synth_results):
    """Sad speech is quieter and slower per word than angry speech (prosody rendering)."""
    import numpy as np

    _, m = synth_results
    df = pd.concat(m["iemocap"].values())
    stats = {}
    for emo in ("ang", "sad"):
        rows = df[df["label"] == emo]
        rms = [float(np.sqrt(np.mean(sf.read(p)[0] ** 2))) for p in rows["path"]]
        per_word = [n / len(t.split()) for n, t in zip(rows["num_samples"], rows["text"])]
        stats[emo] = (np.mean(rms), np.mean(per_word))
    assert stats["sad"][0] < 0.6 * stats["ang"][0]
    assert stats["sad"][1] > stats["ang"][1]


def test_s3prl_reads_synthesized_layouts(synth_results, smoke_cfg, tmp_path, monkeypatch):
    """s3prl 0.4.18's own corpus readers parse every synthesized root unchanged."""
    # pandas 3 dropped Series.iteritems, which s3prl's FSC reader calls (the SUPERB
    # stage's compatibility module supplies it; here the same one-line shim)
    monkeypatch.setattr(pd.Series, "iteritems", pd.Series.items, raising=False)
    from s3prl.dataio.corpus.fluent_speech_commands import FluentSpeechCommands
    from s3prl.dataio.corpus.iemocap import IEMOCAP
    from s3prl.dataio.corpus.librispeech import LibriSpeech
    from s3prl.dataio.corpus.speech_commands import SpeechCommandsV1
    from s3prl.dataio.corpus.voxceleb1sid import VoxCeleb1SID
    from s3prl.dataio.corpus.voxceleb1sv import VoxCeleb1SV

    results, m = synth_results
    corpora = results / "corpora"

    # PR: s3prl's G2P with our lexicon (instead of the downloaded one) covers every transcript
    from s3prl.dataio.encoder.g2p import G2P

    g2p = G2P(file_list=[str(results / "manifests" / "librispeech" / "lexicon.txt")])
    for split in m["librispeech"].values():
        for text, phones in zip(split["text"], split["phones"]):
            assert g2p.encode(text).split() == phones.split()

    ls = LibriSpeech(str(corpora / "librispeech"), n_jobs=1)
    train, valid, test = ls.data_split_ids
    assert sorted(train) == sorted(m["librispeech"]["train-clean-100"]["id"])
    assert sorted(test) == sorted(m["librispeech"]["test-clean"]["id"])
    row = m["librispeech"]["dev-clean"].iloc[0]
    assert ls.all_data[row["id"]]["transcription"] == row["text"]

    train_root, test_root = roots("speech_commands", smoke_cfg["corpus"], results)
    ks = SpeechCommandsV1(str(train_root), str(test_root))
    k_train, k_valid, k_test = ks.data_split_ids
    ours = m["speech_commands"]
    n_noise = (ours["train"]["label"] == "_silence_").sum()
    # s3prl splits by the speaker hash; our manifests by the list files: they agree
    assert len(k_train) == len(ours["train"]) and len(k_valid) == len(ours["valid"]) + n_noise
    assert len(k_test) == len(ours["test"])
    assert {ks.all_data[k]["class_name"] for k in k_test} == set(ours["test"]["label"])

    fsc = FluentSpeechCommands(str(corpora / "fluent_speech_commands"))
    f_train, f_valid, f_test = fsc.data_split_ids
    assert sorted(f_test) == sorted(m["fluent_speech_commands"]["test"]["id"])
    assert all(Path(d["path"]).is_file() for d in fsc.all_data.values())

    iem = IEMOCAP(str(corpora / "iemocap"))
    df = pd.concat(m["iemocap"].values()).set_index("id")
    assert set(iem.all_data) == set(df.index)
    assert all(df.loc[k, "emotion"] == v["emotion"] for k, v in iem.all_data.items())

    vox = corpora / "voxceleb1"
    sid = VoxCeleb1SID(str(vox), n_jobs=1, cache_root=str(vox))  # iden_split.txt read from the root
    s_train, s_valid, s_test = sid.data_split_ids
    assert sorted(s_test) == sorted(m["voxceleb1"]["test"]["id"])
    meta = tmp_path / "vox_meta"
    meta.mkdir()
    for f in ("iden_split.txt", "voxceleb1_test_v2.txt"):
        shutil.copy(vox / f, meta / f)
    sv = VoxCeleb1SV(str(vox), str(meta), force_download=False)
    train_data, valid_data, test_data, trials = sv.all_data
    assert len(trials) == len(m["voxceleb1"]["trials"])
    assert all(uid in test_data for _, a, b in trials for uid in (a, b))


def test_same_seed_same_audio_other_seed_differs(tmp_path, smoke_cfg):
    cc = smoke_cfg["corpus"]
    for name in ("librispeech", "iemocap"):
        trees = []
        for tag, seed in (("a", 0), ("b", 0), ("c", 1)):
            out = tmp_path / f"{name}_{tag}"
            synthesize(name, cc[name], cc["tts"], seed, out, jobs=2, progress=False)
            trees.append(_tree_hashes(out))
        assert trees[0] == trees[1]
        audio = [{k: v for k, v in t.items() if k.endswith((".flac", ".wav"))} for t in trees]
        assert audio[0] and audio[0] != audio[2]
        assert not set(audio[0].values()) & set(audio[2].values())


def test_every_voice_renders(tmp_path, smoke_cfg, monkeypatch):
    """Each espeak-ng language+variant and flite voice the speaker sampler can draw is
    installed here and gives 16 kHz mono audio; a TTS failure is a DeepwideError naming it."""
    import subprocess

    from deepwide.corpus import tts
    from deepwide.errors import DeepwideError

    flite = subprocess.run(["flite", "-lv"], capture_output=True, text=True).stdout.split(":", 1)[1].split()
    assert {v for vs in tts.FLITE_VOICES.values() for v in vs} <= set(flite)  # flite falls back silently
    variants = subprocess.run(["espeak-ng", "--voices=variant"], capture_output=True, text=True).stdout
    variant_files = {line.split()[-1].split("/")[-1] for line in variants.splitlines()[1:] if line.strip()}
    assert {v for vs in tts.ESPEAK_VARIANTS.values() for v in vs} <= variant_files  # so does espeak-ng

    timbre = dict(shift_cents=0, eq_hz=1000, eq_db=0.0, treble_db=0.0)
    voices = [("espeak", f"{lang}+m1", 50, 0, 170) for lang in tts.ESPEAK_LANGS]
    voices += [("espeak", f"en-us+{v}", 50, 0, 170) for vs in tts.ESPEAK_VARIANTS.values() for v in vs]
    voices += [("flite", v, 120, 20, 1.0) for vs in tts.FLITE_VOICES.values() for v in vs]
    for i, (engine, voice, pitch, rng, rate) in enumerate(voices):
        spk = dict(engine=engine, voice=voice, gender="M", pitch=pitch, range=rng, rate=rate, timbre=timbre)
        info = sf.info(tts.render(tts.Utterance(str(tmp_path / f"{i}.wav"), "seven", spk)))
        assert (info.samplerate, info.channels) == (16000, 1) and info.frames > 1600, voice

    monkeypatch.setattr(tts, "ESPEAK_LANGS", ("xx-nosuch",))
    cc = smoke_cfg["corpus"]
    with pytest.raises(DeepwideError, match="synthesizing librispeech failed: espeak-ng failed"):
        synthesize("librispeech", cc["librispeech"], dict(cc["tts"], flite_share=0.0), 0, tmp_path / "ls", jobs=2, progress=False)
    assert not (tmp_path / "ls").exists() and not list(tmp_path.glob(".ls.*"))  # nothing half-written


def test_same_audio_with_a_fresh_home(tmp_path, monkeypatch):
    """A fresh, empty HOME (CI, containers, cluster nodes) gives the same bytes every time:
    espeak-ng's PulseAudio client, finding no cookie there, used to disturb the random
    numbers its voice variants draw (different samples per run)."""
    from deepwide.corpus import tts

    spk = dict(engine="espeak", voice="en-gb-x-gbcwmd+f2", gender="F", pitch=74, range=-10, rate=162,
               timbre=dict(shift_cents=-47, eq_hz=300, eq_db=3.8, treble_db=-0.2))
    digests = set()
    for i in range(3):
        home = tmp_path / f"home{i}"
        home.mkdir()
        monkeypatch.setenv("HOME", str(home))
        path = tts.render(tts.Utterance(str(tmp_path / f"{i}.flac"), "enfold papered conclave modulus sits", spk))
        digests.add(hashlib.sha256(Path(path).read_bytes()).hexdigest())
        assert not any(home.iterdir())  # nothing written to HOME either
    assert len(digests) == 1


def _tiny_librispeech(**synth) -> dict:
    sizes = {"train_speakers": 1, "dev_speakers": 1, "test_speakers": 1, "chapters_per_speaker": 1,
             "utts_per_chapter": 2, "min_words": 3, "max_words": 5}
    return {"synth": {**sizes, **synth}}


def test_librispeech_train_360_leaves_the_other_splits_byte_identical(tmp_path):
    """train-clean-360 comes from its own stream: the three splits are the same files with
    or without it, its speaker ids are new, its words come from the same vocabulary."""
    from deepwide.corpus.synth import _rng, plan
    from deepwide.corpus.text import make_vocab

    tts = {"flite_share": 0.3, "vocab_size": 200}
    plain, extra = tmp_path / "plain", tmp_path / "extra"
    synthesize("librispeech", _tiny_librispeech(), tts, 0, plain, jobs=2, progress=False)
    synthesize("librispeech", _tiny_librispeech(train_360_speakers=2), tts, 0, extra, jobs=2, progress=False)
    before, after = _tree_hashes(plain), _tree_hashes(extra)
    same = {k for k in before if k not in ("SPEAKERS.TXT", "deepwide_synth.json")}
    assert {k: before[k] for k in same} == {k: after[k] for k in same}
    assert not [k for k in set(after) - set(before) if not k.startswith("train-clean-360/")]
    assert len([k for k in after if k.startswith("train-clean-360/") and k.endswith(".flac")]) == 2 * 2

    def rows(root: Path) -> list[str]:
        return [r for r in (root / "SPEAKERS.TXT").read_text().splitlines() if not r.startswith(";")]

    new_rows = [r for r in rows(extra) if r not in rows(plain)]
    assert set(rows(plain)) <= set(rows(extra)) and len(new_rows) == 2
    assert all("| train-clean-360  |" in r for r in new_rows)
    def ids(split: str) -> set[str]:
        return {p.name for p in (extra / split).iterdir()}

    old_ids = ids("train-clean-100") | ids("dev-clean") | ids("test-clean")
    assert len(ids("train-clean-360")) == 2 and not ids("train-clean-360") & old_ids
    vocab = set(make_vocab(_rng(0, "librispeech"), tts["vocab_size"]))
    words = {w.lower() for f in (extra / "train-clean-360").rglob("*.trans.txt")
             for line in f.read_text().splitlines() for w in line.split()[1:]}
    assert words and words <= vocab
    # listed in corpus.librispeech.splits, it gets a manifest of its own
    cfg = load_config(REPO / "workflow" / "configs" / "smoke.yaml")["corpus"]["librispeech"]
    cfg["splits"] = ["train-clean-100", "train-clean-360"]
    splits = manifest_splits("librispeech", cfg)
    write_manifests("librispeech", prepare("librispeech", extra, cfg, None, jobs=2), tmp_path / "m", splits, 0.0)
    m360 = pd.read_parquet(tmp_path / "m" / "train-clean-360.parquet")
    assert len(m360) == 4 and set(m360["split"]) == {"train-clean-360"} and m360["speaker"].nunique() == 2

    # 0 plans what no key plans (the tree of a study made before the key existed)
    assert plan("librispeech", _tiny_librispeech(train_360_speakers=0), tts, 0)[1] == \
        plan("librispeech", _tiny_librispeech(), tts, 0)[1]


def test_librispeech_split_the_synthesized_corpus_lacks_is_a_config_error():
    from deepwide.corpus.sources import check_sources
    from deepwide.errors import DeepwideError

    cfg = load_config(REPO / "workflow" / "configs" / "smoke.yaml")["corpus"]
    cfg["librispeech"]["splits"] = ["train-clean-100", "train-clean-360", "dev-clean", "test-clean"]
    with pytest.raises(DeepwideError, match=r"corpus\.librispeech\.splits: train-clean-360 .*"
                                            r"corpus\.librispeech\.synth\.train_360_speakers"):
        check_sources(cfg)
    cfg["librispeech"]["synth"]["train_360_speakers"] = 1
    check_sources(cfg)
    assert manifest_splits("librispeech", cfg["librispeech"])[1] == "train-clean-360"
