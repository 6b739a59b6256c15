"""A LibriSpeech-layout root the corpus stage did not synthesize, as a user has it (lower
case, punctuation, a line with no text, a tab-separated line): ``corpus prepare`` rejects
the bad lines naming file and line and counts the normalised ones; PR then runs end to end
with no lexicon in the config: ``superb lexicon`` generates one (espeak-ng IPA) and
``superb run --task pr --lexicon-dir`` uses it and names the phone set in result.json."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from superb_tiny import REPO, deepwide_env
SPLITS = ["train-clean-100", "dev-clean", "test-clean"]

# (split, speaker, chapter, espeak voice, [(n, line text as written in trans.txt or None: no line)])
CHAPTERS = [
    ("train-clean-100", "19", "198", "en-us", ["activated.", 'Added, "really"!', "the river is wide", "", "\tTAB LINE", "HELLO WORLD"]),
    ("train-clean-100", "27", "124", "en-gb", ["she walked home", "It's a BOOK tonight.", "green apples"]),
    ("dev-clean", "84", "121", "en-us+f3", ["The river.", "a small student"]),
    ("test-clean", "121", "726", "en-us+m3", ["depth helps content", "width helps speakers!"]),
]


def _cli(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "deepwide", *map(str, args)], cwd=REPO, env=deepwide_env(),
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def user_root(tmp_path_factory) -> Path:
    """espeak-ng speech (sox: 16 kHz mono FLAC) in LibriSpeech's layout, hand-written trans.txt."""
    if not (shutil.which("espeak-ng") and shutil.which("sox")):
        pytest.skip("espeak-ng and sox are needed (Makefile APT_PACKAGES)")
    root = tmp_path_factory.mktemp("user") / "LibriSpeech"
    for split, spk, chap, voice, texts in CHAPTERS:
        d = root / split / spk / chap
        d.mkdir(parents=True)
        lines = []
        for n, text in enumerate(texts):
            uid = f"{spk}-{chap}-{n:04d}"
            raw = d / f"{uid}.raw.wav"
            subprocess.run(["espeak-ng", "-v", voice, "-w", str(raw), text.strip() or "silence"], check=True, capture_output=True)
            subprocess.run(["sox", str(raw), "-r", "16000", "-c", "1", "-b", "16", str(d / f"{uid}.flac")], check=True)
            raw.unlink()
            lines.append(f"{uid}{text}" if text.startswith("\t") or not text else f"{uid} {text}")
        (d / f"{spk}-{chap}.trans.txt").write_text("\n".join(lines) + "\n")
    (root / "SPEAKERS.TXT").write_text(
        "; hand-written\n;ID  |SEX| SUBSET           |MINUTES| NAME\n"
        "19   | F | train-clean-100  | 1 | A\n27   | M | train-clean-100  | 1 | B\n"
        "84   | F | dev-clean        | 1 | C\n121  | M | test-clean       | 1 | D\n"
    )
    return root


def test_corpus_prepare_rejects_bad_lines_and_counts_the_policy(user_root, tmp_path):
    out = tmp_path / "manifests"
    res = _cli("corpus", "prepare", "--corpus", "librispeech", "--root", user_root,
               "--config-json", json.dumps({"max_reject_share": 0.5}), "--out-dir", out, "--jobs", "1")
    assert res.returncode == 0, res.stderr[-3000:]
    assert "Traceback" not in res.stderr
    trans = user_root / "train-clean-100" / "19" / "198" / "19-198.trans.txt"
    rej = pd.read_csv(out / "rejects.tsv", sep="\t").set_index("id")
    assert len(rej) == 2
    assert rej.loc["19-198-0003", "reason"] == f"malformed transcript line: {trans}:4: no text after the utterance id '19-198-0003'"
    assert rej.loc["19-198-0004", "reason"].startswith(f"malformed transcript line: {trans}:5: tab separator")
    info = json.loads((out / "info.json").read_text())
    assert info["text_policy"] == "normalise" and info["phone_set"] == "espeak-ng-ipa"
    assert info["transcripts"] == {"lines_accepted": 11, "lines_normalised": 10, "lines_malformed": 2, "lines_duplicate": 0,
                                   "lines_rejected_by_text_policy": 0, "audio_without_line": 0}
    assert "WARNING" in res.stderr and "10 transcript line(s) normalised" in res.stderr
    assert f"{trans}:4: no text" in res.stderr  # the log names them too
    train = pd.read_parquet(out / "train-clean-100.parquet").set_index("id")
    assert train.loc["19-198-0001", "text"] == "ADDED REALLY" and train.loc["27-124-0001", "text"] == "IT'S A BOOK TONIGHT"
    assert info["shared_speakers"] == {}


def test_superb_lexicon_command_is_deterministic_and_idempotent(user_root, tmp_path):
    d = tmp_path / "lex"
    res = _cli("superb", "lexicon", "--root", user_root, "--splits", *SPLITS, "--out-dir", d)
    assert res.returncode == 0, res.stderr[-3000:]
    names = ["librispeech-lexicon-200k-g2p.txt", "librispeech-lexicon-allothers-g2p.txt"]
    assert sorted(p.name for p in d.iterdir()) == sorted([*names, "lexicon.json"])
    info = json.loads((d / "lexicon.json").read_text())
    words = {"ACTIVATED", "ADDED", "REALLY", "THE", "RIVER", "IS", "WIDE", "HELLO", "WORLD", "SHE", "WALKED", "HOME",
             "IT'S", "A", "BOOK", "TONIGHT", "GREEN", "APPLES", "SMALL", "STUDENT", "DEPTH", "HELPS", "CONTENT",
             "WIDTH", "SPEAKERS"}
    assert info["phone_set"] == "espeak-ng-ipa" and info["source"] == "generated" and info["words"] == len(words)
    assert info["g2p"].startswith("espeak-ng ") and info["text_policy"] == "normalise" and info["splits"] == SPLITS
    lex = dict(line.split(" ", 1) for line in (d / names[0]).read_text().splitlines())
    assert set(lex) == words and lex["RIVER"] == "ɹ ɪ v ɚ" and (d / names[1]).read_text() == ""
    assert json.loads(res.stdout) == {"phone_set": "espeak-ng-ipa", "source": "generated", "words": 25, "transcript_words": 25}
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in d.iterdir()}
    again = _cli("superb", "lexicon", "--root", user_root, "--splits", *SPLITS, "--out-dir", d)
    assert again.returncode == 0 and again.stdout == res.stdout
    assert {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in d.iterdir()} == before  # nothing rewritten
    other = tmp_path / "lex2"
    assert _cli("superb", "lexicon", "--root", user_root, "--splits", *SPLITS, "--out-dir", other).returncode == 0
    assert {p.name: p.read_bytes() for p in other.iterdir()} == {k: v[0] for k, v in before.items()}


def test_superb_lexicon_with_the_users_s3prl_files(user_root, tmp_path):
    assert _cli("superb", "lexicon", "--root", user_root, "--splits", *SPLITS, "--out-dir", tmp_path / "gen").returncode == 0
    gen = (tmp_path / "gen" / "librispeech-lexicon-200k-g2p.txt").read_text().splitlines()
    f1, f2 = tmp_path / "mine-200k.txt", tmp_path / "mine-others.txt"
    f1.write_text("".join(f"{line.split()[0]}  AH0 B\n" for line in gen[:10]))  # ARPAbet-like, s3prl's own style
    f2.write_text("".join(f"{line.split()[0]}\tK\n" for line in gen[10:]))
    d = tmp_path / "lex"
    res = _cli("superb", "lexicon", "--root", user_root, "--splits", *SPLITS, "--lexicon", f1, f2, "--out-dir", d)
    assert res.returncode == 0, res.stderr[-3000:]
    assert (d / "librispeech-lexicon-200k-g2p.txt").read_bytes() == f1.read_bytes()  # unchanged
    assert (d / "librispeech-lexicon-allothers-g2p.txt").read_bytes() == f2.read_bytes()
    info = json.loads((d / "lexicon.json").read_text())
    assert info["phone_set"] == "s3prl-g2p" and info["source"] == "user files" and info["user_files"] == [str(f1), str(f2)]
    assert info["words"] == len(gen)
    f2.write_text("")
    bad = _cli("superb", "lexicon", "--root", user_root, "--splits", *SPLITS, "--lexicon", f1, f2, "--out-dir", tmp_path / "l3")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert f"does not cover {len(gen) - 10} transcript word(s)" in bad.stderr


@pytest.mark.slow
def test_pr_end_to_end_on_the_user_root_without_a_lexicon_in_config(user_root, tmp_path):
    """The pipeline's own rules: superb_lexicon, then superb_run and superb_select for PR."""
    smoke = yaml.safe_load((REPO / "workflow" / "configs" / "smoke.yaml").read_text())
    smoke["results"] = str(tmp_path)
    smoke["corpus"] = {"librispeech": {"root": str(user_root)},
                       **{c: {"enabled": False} for c in ("voxceleb1", "speech_commands", "fluent_speech_commands", "iemocap")}}
    smoke["superb"].update(tasks=["pr"], teacher=False, students=False,
                           pr={"lr": 0.01, "total_steps": 6, "eval_step": 3, "batch_size": 4})
    assert "lexicon" not in smoke["superb"]["pr"]  # nothing in the config: the lexicon is generated
    cfg = tmp_path / "study.yaml"
    cfg.write_text(yaml.safe_dump(smoke))
    selected = tmp_path / "superb" / "fbank" / "pr" / "selected.json"
    res = subprocess.run([str(Path(sys.executable).with_name("snakemake")), str(selected), "--cores", "2",
                          "--snakefile", str(REPO / "Snakefile"), "--directory", str(tmp_path), "--configfile", str(cfg)],
                         cwd=REPO, env=deepwide_env(), capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-4000:]
    lex = tmp_path / "superb" / "lexicon"
    assert json.loads((lex / "lexicon.json").read_text())["phone_set"] == "espeak-ng-ipa"
    assert (tmp_path / "logs" / "superb_lexicon" / "pr.log").is_file()
    out = tmp_path / "superb" / "fbank" / "pr" / "lr0.01" / "seed0" / "result.json"
    cache = tmp_path / "superb" / "cache"
    r = json.loads(out.read_text())
    assert r["metric"] == "per" and r["test_score"] > 0 and r["best_step"] in (3, 6)
    assert r["phone_set"] == "espeak-ng-ipa" and r["lexicon_source"] == "generated" and r["lexicon_words"] == 25
    assert r["lexicon_dir"] == str(lex.resolve())
    t = r["transcripts"]
    assert (t["lines_malformed"], t["lines_normalised"], t["text_policy"]) == (2, 10, "normalise")
    assert Path(t["s3prl_root"]).parent == (cache / "librispeech").resolve()  # s3prl read the cleaned view
    ref = (out.parent / "predictions" / "ref").read_text().splitlines()
    assert ref == ["121-726-0000 d ɛ p θ h ɛ l p s k ɑː n t ɛ n t", "121-726-0001 w ɪ t θ h ɛ l p s s p iː k ɚ z"]  # IPA
    # the lexicon s3prl read is the dir's, byte for byte
    from deepwide.superb.offline import LEXICON_URLS, lexicon_cache_name

    installed = cache / "download" / lexicon_cache_name(LEXICON_URLS[0])
    assert installed.read_bytes() == (lex / "librispeech-lexicon-200k-g2p.txt").read_bytes()


@pytest.mark.slow
def test_pr_and_asr_leave_out_the_audio_the_corpus_stage_rejects(user_root, tmp_path):
    """Four bad audio files behind valid transcript lines pass the corpus stage under
    max_reject_share 0.5 (rejects.tsv names them); PR and ASR, through s3prl's own
    LibriSpeech reader, then run on a view without them (they crashed in s3prl's loader on
    'Format not recognised') and result.json counts what was left out."""
    import numpy as np
    import soundfile as sf

    root = tmp_path / "LibriSpeech"
    shutil.copytree(user_root, root)
    d = root / "train-clean-100" / "27" / "124"
    (d / "27-124-0000.flac").write_bytes(b"not audio " * 100)
    (d / "27-124-0001.flac").write_bytes(b"")
    sf.write(d / "27-124-0002.flac", np.zeros(8000, np.float32), 8000, subtype="PCM_16")
    sf.write(root / "dev-clean" / "84" / "121" / "84-121-0001.flac", np.zeros((8000, 2), np.float32), 16000, subtype="PCM_16")
    res_dir = tmp_path / "results"
    smoke = yaml.safe_load((REPO / "workflow" / "configs" / "smoke.yaml").read_text())
    smoke["results"] = str(res_dir)
    smoke["corpus"] = {"librispeech": {"root": str(root), "max_reject_share": 0.5},
                       **{c: {"enabled": False} for c in ("voxceleb1", "speech_commands", "fluent_speech_commands", "iemocap")}}
    smoke["superb"].update(tasks=["pr", "asr"], teacher=False, students=False)
    cfg = tmp_path / "study.yaml"
    cfg.write_text(yaml.safe_dump(smoke))
    targets = [res_dir / "superb" / "fbank" / t / "selected.json" for t in ("pr", "asr")]
    targets.append(res_dir / "manifests" / "librispeech" / "train-clean-100.parquet")  # the corpus stage
    res = subprocess.run([str(Path(sys.executable).with_name("snakemake")), *map(str, targets), "--cores", "2",
                          "--snakefile", str(REPO / "Snakefile"), "--directory", str(res_dir), "--configfile", str(cfg)],
                         cwd=REPO, env=deepwide_env(), capture_output=True, text=True, timeout=1200)
    assert res.returncode == 0, res.stderr[-4000:]
    rejects = pd.read_csv(res_dir / "manifests" / "librispeech" / "rejects.tsv", sep="\t")
    bad = {"27-124-0000", "27-124-0001", "27-124-0002", "84-121-0001"}
    assert bad <= set(rejects["id"])
    for task in ("pr", "asr"):
        out = next((res_dir / "superb" / "fbank" / task).glob("lr*/seed0/result.json"))
        t = json.loads(out.read_text())["transcripts"]
        assert t["audio_rejected"] == 4, (task, t)
        view = Path(t["s3prl_root"])
        assert view != root and not [p for p in view.rglob("*.flac") if p.stem in bad]
