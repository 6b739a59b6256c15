"""LibriSpeech roots as users have them: every faulty transcript line is a reject naming
file and line, the text policy counts what it normalised or rejected, a speaker shared by
splits draws a WARNING, and s3prl's own reader parses the cleaned view of such a root."""

import json
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from deepwide.corpus.librispeech import read_transcripts, write_s3prl_view
from deepwide.corpus.prepare import prepare_librispeech, write_manifests
from deepwide.corpus.sources import manifest_outputs
from deepwide.corpus.text import apply_text_policy, normalise_text
from deepwide.errors import DeepwideError

REPO = Path(__file__).resolve().parents[1]
SPLITS = ["train-clean-100", "dev-clean", "test-clean"]


def audio(path: Path, seconds=0.5, seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    x = 0.1 * np.random.default_rng(seed).standard_normal(int(seconds * 16000))
    sf.write(path, x.astype(np.float32), 16000, subtype="PCM_16")


def chapter(root: Path, split: str, spk: str, chap: str, lines: list[str], n_audio: int | None = None, newline=True) -> Path:
    """A chapter folder: ``n_audio`` flac files {spk}-{chap}-000i and the trans.txt ``lines``."""
    d = root / split / spk / chap
    for i in range(len(lines) if n_audio is None else n_audio):
        audio(d / f"{spk}-{chap}-{i:04d}.flac", seed=i)
    trans = d / f"{spk}-{chap}.trans.txt"
    trans.write_text("\n".join(lines) + ("\n" if newline else ""))
    return trans


def clean_root(root: Path) -> Path:
    root.mkdir(parents=True)
    (root / "SPEAKERS.TXT").write_text(";ID |SEX| SUBSET |MINUTES| NAME\n19 | F | train-clean-100 | 1 | A\n"
                                       "84 | F | dev-clean | 1 | B\n121 | M | test-clean | 1 | C\n")
    chapter(root, "train-clean-100", "19", "198", [f"19-198-{i:04d} HELLO WORLD NUMBER {w}" for i, w in enumerate(["ONE", "TWO", "THREE"])])
    chapter(root, "dev-clean", "84", "121", ["84-121-0000 THE RIVER"])
    chapter(root, "test-clean", "121", "726", ["121-726-0000 A BOOK TONIGHT"])
    return root


def reasons_by_line(tr_or_rejects) -> dict:
    rejects = tr_or_rejects.rejects if hasattr(tr_or_rejects, "rejects") else tr_or_rejects
    return {r["reason"].split(": ")[1]: r["reason"] for r in rejects if ".trans.txt:" in r["reason"]}


# ------------------------------------------------------------------ one test per line fault
def test_line_with_id_and_no_text_is_rejected_with_file_and_line(tmp_path):
    root = clean_root(tmp_path / "LS")
    trans = chapter(root, "train-clean-100", "19", "198", ["19-198-0000 HELLO", "19-198-0001", "19-198-0002 WORLD"])
    p = prepare_librispeech(root)
    r = reasons_by_line(p.rejects)
    assert list(r) == [f"{trans}:2"]
    assert r[f"{trans}:2"] == f"malformed transcript line: {trans}:2: no text after the utterance id '19-198-0001'"
    assert sorted(x["id"] for x in p.records if x["split"] == "train-clean-100") == ["19-198-0000", "19-198-0002"]
    # its audio is not listed a second time as "no line in trans.txt"
    assert [x for x in p.rejects if x["id"] == "19-198-0001"] == [x for x in p.rejects if ".trans.txt:" in x["reason"]]


def test_tab_separated_line_is_rejected_with_file_and_line(tmp_path):
    root = clean_root(tmp_path / "LS")
    trans = chapter(root, "dev-clean", "84", "121", ["84-121-0000 THE RIVER", "84-121-0001\tTAB SEPARATED"])
    out = tmp_path / "m"
    write_manifests("librispeech", prepare_librispeech(root), out, SPLITS, max_reject_share=0.5)
    rej = pd.read_csv(out / "rejects.tsv", sep="\t")
    assert len(rej) == 1
    assert rej.loc[0, "id"] == "84-121-0001" and rej.loc[0, "path"] == str(trans)
    assert rej.loc[0, "reason"].startswith(f"malformed transcript line: {trans}:2: tab separator")


@pytest.mark.parametrize("bad_id,detail", [
    ("20-121-0001", "utterance id '20-121-0001' does not match its folder 84/121 (expected 84-121-N)"),  # speaker
    ("84-999-0001", "utterance id '84-999-0001' does not match its folder 84/121 (expected 84-121-N)"),  # chapter
    ("84_121_0001", "utterance id '84_121_0001' is not SPEAKER-CHAPTER-N"),
])
def test_id_that_does_not_match_its_folder_is_rejected_with_file_and_line(tmp_path, bad_id, detail):
    root = clean_root(tmp_path / "LS")
    trans = chapter(root, "dev-clean", "84", "121", ["84-121-0000 THE RIVER", f"{bad_id} WRONG PLACE"], n_audio=1)
    tr = read_transcripts(root, SPLITS)
    assert reasons_by_line(tr) == {f"{trans}:2": f"malformed transcript line: {trans}:2: {detail}"}
    assert [x.id for x in tr.lines if x.split == "dev-clean"] == ["84-121-0000"]


def test_duplicate_id_names_both_lines(tmp_path):
    root = clean_root(tmp_path / "LS")
    trans = chapter(root, "dev-clean", "84", "121", ["84-121-0000 THE RIVER", "84-121-0000 AGAIN"], n_audio=1)
    r = reasons_by_line(read_transcripts(root, SPLITS))
    assert r == {f"{trans}:2": f"duplicate utterance id: {trans}:2: '84-121-0000' already on line 1"}


def test_too_many_bad_lines_stop_the_job_naming_them_without_traceback(tmp_path):
    root = clean_root(tmp_path / "LS")
    trans = chapter(root, "train-clean-100", "19", "198", ["19-198-0000", "19-198-0001\tX", "19-198-0002 OK"])
    out = tmp_path / "m"
    res = subprocess.run(
        [sys.executable, "-m", "deepwide", "corpus", "prepare", "--corpus", "librispeech", "--root", str(root),
         "--out-dir", str(out), "--jobs", "1"], capture_output=True, text=True, cwd=REPO)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "error: corpus librispeech: 2 of 5 audio files rejected" in res.stderr
    assert "'malformed transcript line': 2" in res.stderr
    assert f"{trans}:1: no text after the utterance id" in res.stderr and f"{trans}:2: tab separator" in res.stderr
    assert len(pd.read_csv(out / "rejects.tsv", sep="\t")) == 2
    assert json.loads((out / "info.json").read_text())["transcripts"]["lines_malformed"] == 2


# ------------------------------------------------------------------ text policy
def test_normalise_rule():
    assert normalise_text("activated.") == ("ACTIVATED", None)
    assert normalise_text('Added, "really"!') == ("ADDED REALLY", None)
    assert normalise_text("Well-known café’s  (old) name") == ("WELL KNOWN CAFE'S OLD NAME", None)
    assert normalise_text("don't ' stop") == ("DON'T STOP", None)
    for bad, what in (("chapter 9", "digits '9'"), ("salt & pepper", "characters '&'"), ("Ωmega", "characters 'Ω'")):
        text, reason = normalise_text(bad)
        assert text is None and reason.startswith(what) and "not spelled out" in reason
    assert apply_text_policy("HELLO  WORLD", "reject") == ("HELLO WORLD", None, False)  # in the set already
    text, reason, _ = apply_text_policy("hello.", "reject")
    assert text is None and reason == "characters '.' 'e' 'h' 'l' 'o' outside upper-case A-Z, apostrophe, space (text_policy reject)"
    with pytest.raises(DeepwideError, match="text_policy"):
        apply_text_policy("X", "lowercase")


def _punctuated_root(root: Path) -> tuple[Path, Path]:
    clean_root(root)
    trans = chapter(root, "train-clean-100", "27", "124", [
        "27-124-0000 activated.", '27-124-0001 Added, "really"!', "27-124-0002 PLAIN TEXT", "27-124-0003 CHAPTER 9"])
    return root, trans


@pytest.mark.parametrize("policy", ["normalise", "reject"])
def test_text_policy_counts_in_rejects_info_and_log(tmp_path, policy, caplog):
    root, trans = _punctuated_root(tmp_path / "LS")
    out = tmp_path / "m"
    with caplog.at_level(logging.WARNING):
        p = prepare_librispeech(root, text_policy=policy)
        write_manifests("librispeech", p, out, SPLITS, max_reject_share=0.5)
    info = json.loads((out / "info.json").read_text())
    assert info["text_policy"] == policy and info["phone_set"] == "espeak-ng-ipa"
    t = info["transcripts"]
    df = pd.read_parquet(out / "train-clean-100.parquet").set_index("id")
    rej = pd.read_csv(out / "rejects.tsv", sep="\t").set_index("id")
    assert rej.loc["27-124-0003", "reason"].startswith(f"text outside the LibriSpeech character set: {trans}:4: ")
    assert "'9'" in rej.loc["27-124-0003", "reason"]
    if policy == "normalise":
        assert (t["lines_normalised"], t["lines_rejected_by_text_policy"]) == (2, 1)
        assert df.loc["27-124-0000", "text"] == "ACTIVATED" and df.loc["27-124-0001", "text"] == "ADDED REALLY"
        assert "2 transcript line(s) normalised" in caplog.text
    else:
        assert (t["lines_normalised"], t["lines_rejected_by_text_policy"]) == (0, 3)
        assert "27-124-0000" not in df.index and rej.loc["27-124-0001", "reason"].startswith(
            f"text outside the LibriSpeech character set: {trans}:2: characters")
        assert "text_policy reject rejected 3" in caplog.text
    assert df.loc["27-124-0002", "text"] == "PLAIN TEXT"
    # the lexicon gains no punctuated entries; every entry is in LibriSpeech's character set
    lexicon = dict(line.split(" ", 1) for line in (out / "lexicon.txt").read_text().splitlines())
    assert all(set(w) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZ'") for w in lexicon)
    assert ('"REALLY"!' not in lexicon) and (("REALLY" in lexicon) == (policy == "normalise"))
    assert info["counts"]["train-clean-100"] == len(df)
    # info.json is an extra file: the declared outputs are unchanged
    assert manifest_outputs("librispeech", {}) == [f"{s}.parquet" for s in SPLITS] + ["lexicon.txt"]


def test_text_policy_is_a_config_key():
    from deepwide.config import validate_config

    assert validate_config({})["corpus"]["librispeech"]["text_policy"] == "normalise"
    with pytest.raises(DeepwideError, match=r"corpus\.librispeech\.text_policy"):
        validate_config({"corpus": {"librispeech": {"text_policy": "lower"}}})


def test_manifest_phones_and_lexicon_use_the_pr_phone_set(tmp_path):
    """One phone set: the manifests' phones column, lexicon.txt and SUPERB PR's lexicon."""
    from deepwide.superb.offline import espeak_lexicon

    root = clean_root(tmp_path / "LS")
    out = tmp_path / "m"
    write_manifests("librispeech", prepare_librispeech(root), out, SPLITS, max_reject_share=0.0)
    lexicon = dict(line.split(" ", 1) for line in (out / "lexicon.txt").read_text().splitlines())
    pr = espeak_lexicon(sorted(lexicon))
    assert {w: " ".join(p) for w, p in pr.items()} == lexicon
    row = pd.read_parquet(out / "dev-clean.parquet").iloc[0]
    assert row["phones"] == " ".join(" ".join(pr[w]) for w in row["text"].split())


# ------------------------------------------------------------------ speakers across splits
def test_speaker_in_train_dev_and_test_draws_a_warning(tmp_path, caplog):
    root = clean_root(tmp_path / "LS")
    chapter(root, "dev-clean", "19", "200", ["19-200-0000 THE SAME SPEAKER"])
    chapter(root, "test-clean", "19", "201", ["19-201-0000 AGAIN THE SAME"])
    out = tmp_path / "m"
    with caplog.at_level(logging.WARNING):
        write_manifests("librispeech", prepare_librispeech(root), out, SPLITS, max_reject_share=0.0)
    warn = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "speaker 19" in r.getMessage()]
    assert len(warn) == 1 and "speaker 19 is in splits train-clean-100, dev-clean, test-clean" in warn[0]
    assert not [r for r in caplog.records if "speaker 84" in r.getMessage()]
    assert json.loads((out / "info.json").read_text())["shared_speakers"] == {"19": SPLITS}


# ------------------------------------------------------------------ s3prl's view of the root
def test_s3prl_reads_the_cleaned_view(tmp_path):
    from s3prl.dataio.corpus.librispeech import LibriSpeech

    root = clean_root(tmp_path / "LS")
    same, tr = write_s3prl_view(root, SPLITS, tmp_path / "views")
    assert same == root.resolve() and tr.canonical and not (tmp_path / "views").exists()  # clean: the root itself
    chapter(root, "train-clean-100", "27", "124", ["27-124-0000 activated.", "27-124-0001", "27-124-0002\tX", "27-124-0003 LAST LINE"],
            newline=False)  # s3prl's reader drops the last character of a file with no final newline
    view, tr = write_s3prl_view(root, SPLITS, tmp_path / "views")
    assert view.parent == tmp_path / "views" and not tr.canonical
    again, _ = write_s3prl_view(root, SPLITS, tmp_path / "views")
    assert again == view  # deterministic, reused
    ls = LibriSpeech(str(view), n_jobs=1)
    texts = {Path(v["wav_path"]).stem: v["transcription"] for v in ls.all_data.values()}
    assert texts["27-124-0000"] == "ACTIVATED" and texts["27-124-0003"] == "LAST LINE"
    assert "27-124-0001" not in texts and "27-124-0002" not in texts
    assert texts["19-198-0000"] == "HELLO WORLD NUMBER ONE" and len(texts) == 7
    assert ls.all_data["27-124-0000"]["gender"] == "?"  # not in the root's SPEAKERS.TXT: listed by the view


def test_what_no_view_can_fix_stops_naming_file_and_line(tmp_path):
    root = clean_root(tmp_path / "LS")
    trans = chapter(root, "dev-clean", "spkA", "121", ["spkA-121-0000 HELLO"])
    with pytest.raises(DeepwideError, match=rf"{trans}:1: speaker id 'spkA' .* is not a number"):
        write_s3prl_view(root, SPLITS, tmp_path / "views")
    root2 = clean_root(tmp_path / "LS2")
    chapter(root2, "test-clean", "121", "726", ["121-726-0000"])
    with pytest.raises(DeepwideError, match=r"test-clean: no utterance with audio and a usable transcript line"):
        write_s3prl_view(root2, SPLITS, tmp_path / "views")


def _spoil_audio(root: Path) -> dict:
    """Four kinds of audio the corpus stage rejects, behind valid transcript lines."""
    d = root / "train-clean-100" / "19" / "198"
    bad = {"19-198-0000": b"not a flac at all", "19-198-0001": b""}
    for uid, data in bad.items():
        (d / f"{uid}.flac").write_bytes(data)
    sf.write(d / "19-198-0002.flac", np.zeros(8000, np.float32), 8000, subtype="PCM_16")  # 8 kHz
    chapter(root, "train-clean-100", "27", "124", ["27-124-0000 STEREO FILE", "27-124-0001 GOOD FILE"])
    sf.write(root / "train-clean-100" / "27" / "124" / "27-124-0000.flac", np.zeros((8000, 2), np.float32), 16000,
             subtype="PCM_16")
    return {"19-198-0000", "19-198-0001", "19-198-0002", "27-124-0000"}


def test_s3prl_view_leaves_out_the_audio_the_corpus_stage_rejects(tmp_path):
    """The same files rejects.tsv lists are left out of what s3prl's LibriSpeech reader
    (PR, ASR) sees, and counted; every file it lists then decodes."""
    from s3prl.dataio.corpus.librispeech import LibriSpeech

    root = clean_root(tmp_path / "LS")
    chapter(root, "train-clean-100", "19", "199", ["19-199-0000 ONE MORE GOOD ONE"])
    bad = _spoil_audio(root)
    prepared = prepare_librispeech(root, SPLITS)
    assert {r["id"] for r in prepared.rejects} == bad  # the corpus stage's rejects.tsv
    view, tr = write_s3prl_view(root, SPLITS, tmp_path / "views")
    assert view != root.resolve()
    assert {r["id"] for r in tr.audio_rejects} == bad and tr.counts()["audio_rejected"] == 4
    ls = LibriSpeech(str(view), n_jobs=1)
    ids = {Path(v["wav_path"]).stem for v in ls.all_data.values()}
    assert not ids & bad and {"27-124-0001", "19-199-0000", "84-121-0000", "121-726-0000"} <= ids
    for v in ls.all_data.values():
        sf.read(v["wav_path"])  # s3prl's loader decodes every file it was given
