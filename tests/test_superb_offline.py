"""Files s3prl would download, written from the corpus; dataset-root checks; planning."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from deepwide.config import validate_config
from deepwide.errors import DeepwideError
from deepwide.plan import superb as plan
from deepwide.superb import offline
from deepwide.superb.tasks import check_root

REPO = Path(__file__).resolve().parents[1]


def _touch(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")


def _wav(path: Path, samples: int = 1600):
    import numpy as np
    import soundfile as sf

    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.zeros(samples, np.float32), 16000, subtype="PCM_16")


def _librispeech_text(root: Path):
    lines = {"train-clean-100": "19-198-0000 HE SAID THE CHILDREN'S HOUSE\n19-198-0001 SHE WALKED HOME\n", "dev-clean": "84-121-0000 THE RIVER\n", "test-clean": "121-221-0000 A BOOK TONIGHT\n"}
    for split, text in lines.items():
        spk, chapter = text.split("-")[:2]
        d = root / split / spk / chapter
        d.mkdir(parents=True)
        (d / f"{spk}-{chapter}.trans.txt").write_text(text)
    (root / "SPEAKERS.TXT").write_text(";ID  |SEX| SUBSET |MINUTES| NAME\n19 | F | train-clean-100 | 1 | A\n")
    return root


def test_lexicon_covers_transcripts_and_feeds_s3prl_g2p(tmp_path):
    root = _librispeech_text(tmp_path / "libri")
    dl = tmp_path / "download"
    files = offline.write_lexicon(dl, root, ["train-clean-100", "dev-clean", "test-clean"])
    assert [f.name for f in files] == [offline.lexicon_cache_name(u) for u in offline.LEXICON_URLS]
    # s3prl's own G2P, pointed at our download dir, phonemizes every transcript offline
    import s3prl.util.download as dl_mod
    from s3prl.dataio.encoder.g2p import G2P

    old = dl_mod._download_dir
    dl_mod.set_dir(dl)
    try:
        g2p = G2P()
    finally:
        dl_mod.set_dir(old)
    out = g2p.encode("HE SAID THE CHILDREN'S HOUSE")
    assert len(out.split()) >= 10 and "<UNK>" not in out
    # user-supplied lexicons (real LibriSpeech) must cover every word
    partial = tmp_path / "lex.txt"
    partial.write_text("HE h i\n")
    with pytest.raises(DeepwideError, match="does not cover"):
        offline.write_lexicon(tmp_path / "dl2", root, ["train-clean-100"], [str(partial), str(partial)])


def test_iden_split_derived_by_video(tmp_path):
    root = tmp_path / "vox"
    for s in range(2):
        for v in range(3):
            for u in range(2):
                _touch(root / "dev" / "wav" / f"id1000{s + 1}" / f"vid{v}" / f"0000{u + 1}.wav")
    _touch(root / "dev" / "wav" / "id10003" / "only" / "00001.wav")
    lines = offline.derive_iden_split(root).split("\n")[:-1]
    codes = {line.split()[1]: int(line.split()[0]) for line in lines}
    assert codes["id10001/vid2/00001.wav"] == 3 and codes["id10001/vid1/00002.wav"] == 2 and codes["id10001/vid0/00001.wav"] == 1
    assert codes["id10003/only/00001.wav"] == 1 and len(codes) == 13
    dest = offline.write_iden_split(root, tmp_path / "cache", embedded=True)
    assert dest.read_text() == offline.derive_iden_split(root)
    with pytest.raises(DeepwideError, match="iden_split.txt not found"):
        offline.write_iden_split(root, tmp_path / "cache2", embedded=False)


def test_er_metadata_per_fold(tmp_path):
    root = tmp_path / "iemocap"
    emos = ["neu", "hap", "exc", "fru", "ang", "sad"]
    for s in range(1, 6):
        dialog = f"Ses0{s}F_impro01"
        lines = []
        for i, e in enumerate(emos):
            _wav(root / f"Session{s}" / "sentences" / "wav" / dialog / f"{dialog}_F00{i}.wav")
            lines.append(f"[0.0 - 1.0]\t{dialog}_F00{i}\t{e}\t[2.5, 2.5, 2.5]")
        label = root / f"Session{s}" / "dialog" / "EmoEvaluation" / f"{dialog}.txt"
        label.parent.mkdir(parents=True)
        label.write_text("\n".join(lines) + "\n")
    check_root("er", root)
    assert offline.write_er_metadata(root, tmp_path / "cache", fold=2) == 0
    train = json.loads((tmp_path / "cache" / "test_session3_train_metadata.json").read_text())["meta_data"]
    test = json.loads((tmp_path / "cache" / "test_session3_test_metadata.json").read_text())["meta_data"]
    assert {Path(m["path"]).parts[0] for m in test} == {"Session3"}
    assert "Session3" not in {Path(m["path"]).parts[0] for m in train} and len(train) == 4 * 5
    assert {m["label"] for m in train} == {"neu", "hap", "ang", "sad"}  # exc merged, fru dropped
    # audio the corpus stage rejects is left out of what s3prl's ER reader gets, and counted
    bad = root / "Session1" / "sentences" / "wav" / "Ses01F_impro01" / "Ses01F_impro01_F000.wav"
    bad.write_bytes(b"not a wav")
    assert offline.write_er_metadata(root, tmp_path / "cache", fold=2) == 1
    train = json.loads((tmp_path / "cache" / "test_session3_train_metadata.json").read_text())["meta_data"]
    assert len(train) == 4 * 5 - 1 and bad.relative_to(root).as_posix() not in {m["path"] for m in train}


def test_root_checks_name_task_and_path(tmp_path):
    with pytest.raises(DeepwideError, match=r"superb\.asr: dataset root .*nowhere does not exist"):
        check_root("asr", tmp_path / "nowhere")
    (tmp_path / "libri").mkdir()
    with pytest.raises(DeepwideError, match=r"superb\.pr: .*malformed: missing .*SPEAKERS.TXT"):
        check_root("pr", tmp_path / "libri")
    root = _librispeech_text(tmp_path / "libri2")
    check_root("pr", root, {}, embedded=False)  # no lexicon files: generated from the transcripts
    check_root("pr", root, {}, embedded=True)
    with pytest.raises(DeepwideError, match=r"superb\.pr\.lexicon: give both s3prl lexicon files .* got 1"):
        check_root("pr", root, {"lexicon": [str(root / "SPEAKERS.TXT")]}, embedded=False)
    with pytest.raises(DeepwideError, match=r"superb\.pr\.lexicon: file .*nope.txt does not exist"):
        check_root("pr", root, {"lexicon": [str(root / "SPEAKERS.TXT"), str(root / "nope.txt")]}, embedded=False)
    with pytest.raises(DeepwideError, match=r"superb\.ic: .*data/train_data.csv"):
        check_root("ic", tmp_path / "libri")


def test_config_plan_lrs_and_missing_root(tmp_path):
    cfg = validate_config({"superb": {"ks": {"lr": [0.001, 0.01]}, "extra_upstreams": {"hf": "/x/hf"}}})
    assert plan.lrs(cfg, "ks") == [0.001, 0.01] and [plan.format_lr(x) for x in plan.lrs(cfg, "ks")] == ["0.001", "0.01"]
    from deepwide.plan import Study

    cfg["distill"]["students"]["shapes"] = [{"depth": 2, "width": 64, "ffn": 256, "heads": 2}]
    cfg["distill"]["methods"] = ["pred"]
    study = Study(cfg)
    assert list(study.upstreams) == ["teacher", "fbank", "pred-2x64f256h2-seed0", "hf"]
    assert study.upstreams["pred-2x64f256h2-seed0"] == "results/students/pred/2x64f256h2/seed0/student.pt"
    assert len(study.superb_jobs) == 4 * (6 + 1)  # ks has two lrs
    root, embedded = plan.task_root(cfg, "sid")
    assert embedded and root == Path("results/corpora/voxceleb1")
    bad = validate_config({"superb": {"tasks": ["ks", "er"], "er": {"root": str(tmp_path / "no_iemocap")}}})
    with pytest.raises(DeepwideError, match=r"superb\.er: dataset root .*no_iemocap does not exist"):
        plan.check_config(bad)


def test_snakemake_rejects_missing_root_before_any_job(tmp_path):
    smoke = yaml.safe_load((REPO / "workflow" / "configs" / "smoke.yaml").read_text())
    smoke["results"] = str(tmp_path / "results")
    smoke["superb"]["ks"]["root"] = str(tmp_path / "missing_speech_commands")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(smoke))
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    proc = subprocess.run(
        [str(Path(sys.executable).with_name("snakemake")), "-n", "--cores", "1", "--configfile", str(cfg)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode != 0
    assert "superb.ks" in proc.stderr + proc.stdout and "missing_speech_commands" in proc.stderr + proc.stdout
    assert not (tmp_path / "results").exists()


def _vox_root(root: Path, speakers: int, samples: int) -> Path:
    """A VoxCeleb1-layout root of noise: 3 videos x 2 utterances per speaker, its iden_split.txt."""
    import numpy as np
    import soundfile as sf

    for s in range(speakers):
        for v in range(3):
            for u in range(2):
                p = root / "dev" / "wav" / f"id1000{s + 1}" / f"vid{v}" / f"0000{u + 1}.wav"
                p.parent.mkdir(parents=True, exist_ok=True)
                x = 0.1 * np.random.default_rng(10 * s + u).standard_normal(samples).astype(np.float32)
                sf.write(p, x, 16000, subtype="PCM_16")
    (root / "iden_split.txt").write_text(offline.derive_iden_split(root))
    return root


def test_voxceleb_lists_leave_out_the_audio_the_corpus_stage_rejects(tmp_path):
    """SID/ASV: iden_split.txt and the trial list s3prl reads name no file the corpus stage
    rejects; s3prl's own VoxCeleb1SID reader then decodes every file it lists."""
    import numpy as np
    import soundfile as sf
    from s3prl.dataio.corpus.voxceleb1sid import VoxCeleb1SID

    from deepwide.corpus.prepare import prepare_voxceleb1

    root = _vox_root(tmp_path / "vox", speakers=2, samples=8000)
    bad = {"id10001/vid0/00001.wav", "id10002/vid2/00002.wav"}
    (root / "dev" / "wav" / "id10001" / "vid0" / "00001.wav").write_bytes(b"not a wav file at all")
    sf.write(root / "dev" / "wav" / "id10002" / "vid2" / "00002.wav", np.zeros(800, np.float32), 8000, subtype="PCM_16")
    assert {Path(r["path"]).relative_to(root / "dev" / "wav").as_posix() for r in prepare_voxceleb1(root).rejects} == bad
    cache = tmp_path / "cache"
    split = offline.write_iden_split(root, cache)
    trials = cache / "voxceleb1_test_v2.txt"
    trials.write_text("1 id10001/vid0/00001.wav id10001/vid1/00001.wav\n0 id10001/vid1/00002.wav id10002/vid0/00001.wav\n")
    assert offline.leave_out_bad_voxceleb_audio(root, [split, trials]) == 2
    assert not any(b in split.read_text() for b in bad) and len(split.read_text().splitlines()) == 10
    assert trials.read_text() == "0 id10001/vid1/00002.wav id10002/vid0/00001.wav\n"
    ds = VoxCeleb1SID(str(root), n_jobs=1, cache_root=str(cache))
    for v in ds.all_data.values():
        sf.read(v["wav_path"])
    assert offline.leave_out_bad_voxceleb_audio(root, [split, trials]) == 0  # idempotent


# ----------------------------------------------------------------------------- rejected audio, through the rules
SNAKE = str(Path(sys.executable).with_name("snakemake"))
CORPORA = ("librispeech", "voxceleb1", "speech_commands", "fluent_speech_commands", "iemocap")


def _snakemake(tmp_path: Path, smoke: dict, target: Path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(smoke))
    proc = subprocess.run([SNAKE, str(target), "--cores", "1", "--snakefile", str(REPO / "Snakefile"), "--directory",
                           str(tmp_path), "--configfile", str(cfg)], env=dict(os.environ, PYTHONPATH=str(REPO / "src")),
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]


def _smoke(tmp_path: Path, tasks: list[str]) -> dict:
    smoke = yaml.safe_load((REPO / "workflow" / "configs" / "smoke.yaml").read_text())
    smoke["results"] = str(tmp_path / "results")
    smoke["superb"]["tasks"] = tasks
    return smoke


def _users_copy(tmp_path: Path, task: str, built: str) -> Path:
    """The smoke study's ``built`` (a corpus or data dir under results/), copied as a user's root."""
    import shutil

    src = tmp_path / "results" / built
    _snakemake(tmp_path, _smoke(tmp_path, [task]), src)
    root = tmp_path / "user"
    shutil.copytree(src, root)
    return root


def _spoil(path: Path, data: bytes = b"not a wav file") -> Path:
    path.unlink()  # a file of its own, not through a link into the study
    path.write_bytes(data)
    return path


def _fbank_result(tmp_path: Path, task: str, root: Path) -> dict:
    """FBANK's result.json of ``task`` run through the rules on ``root`` (the corpus stage off)."""
    smoke = _smoke(tmp_path, [task])
    smoke["corpus"] = {c: {"enabled": False} for c in CORPORA}
    smoke["superb"].update(teacher=False, students=False)
    smoke["superb"][task]["root"] = str(root)
    _snakemake(tmp_path, smoke, tmp_path / "results" / "superb" / "fbank" / task / "selected.json")
    return json.loads(next((tmp_path / "results" / "superb" / "fbank" / task).glob("lr*/seed0/result.json")).read_text())


@pytest.mark.slow
def test_sid_runs_on_a_voxceleb_root_with_rejected_audio(tmp_path):
    """SID on a VoxCeleb1 root holding two bad files finishes; result.json counts them."""
    import numpy as np
    import soundfile as sf

    root = _vox_root(tmp_path / "vox", speakers=3, samples=16000)
    _spoil(root / "dev" / "wav" / "id10001" / "vid0" / "00001.wav")
    sf.write(root / "dev" / "wav" / "id10003" / "vid2" / "00002.wav", np.zeros(800, np.float32), 8000, subtype="PCM_16")
    assert _fbank_result(tmp_path, "sid", root)["audio_rejected"] == 2


@pytest.mark.slow
def test_ic_runs_on_a_fluent_speech_commands_root_with_rejected_audio(tmp_path):
    """IC on a Fluent Speech Commands root with two bad files: s3prl reads a view without them."""
    root = _users_copy(tmp_path, "ic", "corpora/fluent_speech_commands")
    rows = (root / "data" / "train_data.csv").read_text().splitlines()[1:3]
    bad = [_spoil(root / rows[0].split(",")[1]), _spoil(root / rows[1].split(",")[1], b"")]
    r = _fbank_result(tmp_path, "ic", root)
    assert r["audio_rejected"] == 2 and Path(r["s3prl_root"]) != root
    kept = (Path(r["s3prl_root"]) / "data" / "train_data.csv").read_text()
    assert not any(str(b.relative_to(root)) in kept for b in bad)


@pytest.mark.slow
def test_ks_runs_on_a_speech_commands_root_with_rejected_audio(tmp_path):
    """KS on a Speech Commands root with a bad train file and a bad test file."""
    root = _users_copy(tmp_path, "ks", "corpora/speech_commands")
    train = _spoil(sorted((root / "speech_commands_v0.01" / "yes").glob("*.wav"))[0])
    test = _spoil(sorted((root / "speech_commands_test_set_v0.01").glob("*/*.wav"))[0], b"")
    r = _fbank_result(tmp_path, "ks", root)
    assert r["audio_rejected"] == 2 and Path(r["s3prl_root"]) != root
    view = Path(r["s3prl_root"])
    assert not (view / train.relative_to(root)).exists() and not (view / test.relative_to(root)).exists()


@pytest.mark.slow
def test_sd_runs_on_a_kaldi_dir_with_rejected_audio(tmp_path):
    """SD on a Kaldi-style data dir whose wav.scp names one bad recording: s3prl reads a
    view without it in any list."""
    root = _users_copy(tmp_path, "sd", "manifests/librimix/sd")
    scp = root / "train" / "wav.scp"
    lines = scp.read_text().splitlines()
    reco = lines[0].split(None, 1)[0]
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF not really a wav")
    scp.write_text("\n".join([f"{reco} {bad}", *lines[1:]]) + "\n")
    r = _fbank_result(tmp_path, "sd", root)
    assert r["audio_rejected"] == 1
    view = Path(r["s3prl_root"]) / "train"
    for name in ("wav.scp", "segments", "reco2dur"):
        assert reco not in (view / name).read_text().split(), name


@pytest.mark.slow
def test_sf_runs_on_a_snips_root_with_rejected_audio(tmp_path):
    """SF on an Audio SNIPS root with one bad train file."""
    root = _users_copy(tmp_path, "sf", "corpora/snips")
    bad = _spoil(sorted((root / "train").rglob("*.wav"))[0])
    r = _fbank_result(tmp_path, "sf", root)
    assert r["audio_rejected"] == 1
    assert bad.stem not in (Path(r["s3prl_root"]) / "all.iob.snips.txt").read_text()
