"""Small trees in the real layouts of QUESST 2014, Libri2Mix and Audio SNIPS, spoken by
espeak-ng voices (sox for rate and format), plus a loader for single s3prl modules.

s3prl's package ``__init__`` needs the torchaudio compatibility layer of the superb
stage; ``s3prl_module`` loads one of its files (and its relative imports) under a stub
package instead, so the tests can check our trees against s3prl's own readers.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
import tempfile
import types
from pathlib import Path

import numpy as np
import soundfile as sf

S3PRL_DIR = None


def say(text: str, voice: str, path: Path, rate: int = 16000, pad_s: tuple[float, float] = (0.0, 0.0),
        trim: bool = False) -> Path:
    """espeak-ng ``text`` with ``voice`` -> mono 16-bit ``path`` at ``rate`` Hz (sox);
    ``trim`` cuts leading and trailing silence (spoken queries cut to the term)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-s", "150", "-w", str(raw), text], check=True, capture_output=True)
        cmd = ["sox", "-R", "-D", "-V1", str(raw), "-r", str(rate), "-c", "1", "-b", "16", str(path)]
        if trim:
            cmd += ["silence", "1", "0.01", "1%", "reverse", "silence", "1", "0.01", "1%", "reverse"]
        if any(pad_s):
            cmd += ["pad", str(pad_s[0]), str(pad_s[1])]
        subprocess.run(cmd, check=True, capture_output=True)
    return path


def garbage(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"not audio at all" * 20)
    return path


# ------------------------------------------------------------------ QUESST 2014
QUERY_VOICE = "en-us"
DOC_VOICE = "en-us+f2"
DEV_TERMS = {"quesst14_dev_0001": "orange", "quesst14_dev_0002": "window"}
EVAL_TERMS = {"quesst14_eval_0001": "garden", "quesst14_eval_0002": "yellow"}
DOCS = {
    "quesst14_00001": ("nnenglish", "I bought an orange at the market"),
    "quesst14_00002": ("nnenglish", "please open the window now"),
    "quesst14_00003": ("nnenglish", "we sat in the garden all day"),
    "quesst14_00004": ("nnenglish", "she drives a yellow bicycle"),
    "quesst14_00005": ("nnenglish", "nothing special happened today"),
    "quesst14_00006": ("nnenglish", "the train left the station early"),
    "quesst14_00007": ("czech", "dobry den jak se mas"),
}


def quesst14_tree(base: Path, rate: int = 8000, bad_doc: bool = True) -> Path:
    """``base/quesst14Database`` with two dev and two eval English queries, six English
    documents and a Czech one (query and doc), at ``rate`` Hz like the real 8 kHz data.

    The Czech dev query occurs in the Czech doc: a term no English search can find, so the
    best reachable dev MTWV is 2/3. With ``bad_doc`` an English doc that is listed but
    unreadable is added (rejected; its occurrence then counts as a miss).
    """
    root = base / "quesst14Database"
    for qid, word in {**DEV_TERMS, **EVAL_TERMS}.items():
        folder = "dev_queries" if "_dev_" in qid else "eval_queries"
        say(word, QUERY_VOICE, root / folder / f"{qid}.wav", rate, trim=True)
    say("dobry den", "cs", root / "dev_queries" / "quesst14_dev_0003.wav", rate)
    for did, (_, text) in DOCS.items():
        say(text, DOC_VOICE, root / "Audio" / f"{did}.wav", rate)
    docs = dict(DOCS)
    if bad_doc:
        garbage(root / "Audio" / "quesst14_00008.wav")
        docs["quesst14_00008"] = ("nnenglish", "a yellow garden")
    scoring = root / "scoring"
    scoring.mkdir(parents=True)
    (scoring / "language_key_utterances.lst").write_text(
        "".join(f"quesst14Database/Audio/{d}.wav {lang}\n" for d, (lang, _) in docs.items()))
    (scoring / "language_key_dev.lst").write_text(
        "".join(f"quesst14Database/dev_queries/{q}.wav nnenglish\n" for q in DEV_TERMS)
        + "quesst14Database/dev_queries/quesst14_dev_0003.wav czech\n")
    (scoring / "language_key_eval.lst").write_text(
        "".join(f"quesst14Database/eval_queries/{q}.wav nnenglish\n" for q in EVAL_TERMS))
    occurrences = {
        "dev": [("quesst14_dev_0001", "quesst14_00001"), ("quesst14_dev_0002", "quesst14_00002"),
                ("quesst14_dev_0003", "quesst14_00007")],
        "eval": [("quesst14_eval_0001", "quesst14_00003"), ("quesst14_eval_0002", "quesst14_00004")]
        + ([("quesst14_eval_0002", "quesst14_00008")] if bad_doc else []),
    }
    for split, terms in (("dev", [*DEV_TERMS, "quesst14_dev_0003"]), ("eval", list(EVAL_TERMS))):
        gt = scoring / f"groundtruth_quesst14_{split}"
        gt.mkdir()
        (gt / "quesst14.ecf.xml").write_text(
            '<?xml version="1.0" encoding="UTF-8"?>\n<ecf source_signal_duration="60.0" language="multiple" version="">\n'
            + "".join(f'  <excerpt audio_filename="Audio/{d}.wav" channel="1" tbeg="0.000" dur="3.000" source_type="splitcts"/>\n'
                      for d in docs) + "</ecf>\n")
        (gt / f"quesst14_{split}.tlist.xml").write_text(
            '<?xml version="1.0" encoding="UTF-8"?>\n<termlist ecf_filename="quesst14.ecf.xml" version="1" language="multiple">\n'
            + "".join(f'  <term termid="{t}"><termtext>{t}</termtext></term>\n' for t in terms) + "</termlist>\n")
        (gt / f"quesst14_{split}.rttm").write_text(
            "".join(f"LEXEME {d} 1 0.50 0.60 {t} lex <NA> 1.0\n" for t, d in occurrences[split]))
    return root


# ------------------------------------------------------------------ Libri2Mix
LIBRIMIX = {
    "train-100": [("19-198-0001", "the cat sat on the mat", "84-121123-0002", "good morning to you")],
    "dev": [("1272-128104-0000", "a quiet evening", "2428-83705-0001", "she reads books")],
    "test": [("121-121726-0000", "bring me the red box", "237-126133-0003", "nine apples")],
}


def libri2mix_tree(base: Path, with_rttm: bool = False, bad_mix: bool = True) -> Path:
    """``base/Libri2Mix/wav16k/max/{train-100,dev,test}/{mix_both,s1,s2}`` + metadata csvs.

    Source 2 starts 0.6 s late (leading silence), so its speech activity starts there. With
    ``with_rttm`` a ``base/metadata/LibriSpeech/*.rttm`` set (SUPERB's LibriMix fork layout)
    is written too. With ``bad_mix`` the train split gets a mixture listed in the csv whose
    s2 file is garbage (rejected).
    """
    root = base / "Libri2Mix"
    meta = root / "wav16k" / "max" / "metadata"
    meta.mkdir(parents=True)
    rttm_lines = {"train-100": [], "dev": [], "test": []}
    for split, mixes in LIBRIMIX.items():
        rows = ["mixture_ID,mixture_path,source_1_path,source_2_path,noise_path,length"]
        folder = root / "wav16k" / "max" / split
        for id1, t1, id2, t2 in mixes:
            mid = f"{id1}_{id2}"
            s1 = say(t1, "en-us", folder / "s1" / f"{mid}.wav")
            s2 = say(t2, "en-gb+f2", folder / "s2" / f"{mid}.wav", pad_s=(0.6, 0.0))
            a, _ = sf.read(s1, dtype="float32")
            b, _ = sf.read(s2, dtype="float32")
            n = max(len(a), len(b))
            a, b = np.pad(a, (0, n - len(a))), np.pad(b, (0, n - len(b)))
            sf.write(s1, a, 16000, subtype="PCM_16")
            sf.write(s2, b, 16000, subtype="PCM_16")
            mix = folder / "mix_both" / f"{mid}.wav"
            mix.parent.mkdir(parents=True, exist_ok=True)
            sf.write(mix, 0.5 * (a + b), 16000, subtype="PCM_16")
            rows.append(f"{mid},/elsewhere/Libri2Mix/wav16k/max/{split}/mix_both/{mid}.wav,/x/s1.wav,/x/s2.wav,,{n}")
            for uid, start, end in ((id1, 0.0, len(a) / 16000), (id2, 0.6, n / 16000)):
                spk, rest = uid.split("-", 1)
                rttm_lines[split].append(f"SPEAKER {rest} 1 {start:.2f} {end - start:.2f} <NA> <NA> {spk} <NA> <NA>")
        if bad_mix and split == "train-100":
            mid = "19-198-0009_84-121123-0009"
            say("broken", "en-us", folder / "mix_both" / f"{mid}.wav")
            say("broken", "en-us", folder / "s1" / f"{mid}.wav")
            garbage(folder / "s2" / f"{mid}.wav")
            rows.append(f"{mid},/elsewhere/{mid}.wav,/x,/x,,16000")
            rttm_lines[split].append("SPEAKER 198-0009 1 0.00 0.50 <NA> <NA> 19 <NA> <NA>")
            rttm_lines[split].append("SPEAKER 121123-0009 1 0.00 0.50 <NA> <NA> 84 <NA> <NA>")
        (meta / f"mixture_{split}_mix_both.csv").write_text("\n".join(rows) + "\n")
    if with_rttm:
        rd = base / "metadata" / "LibriSpeech"
        rd.mkdir(parents=True)
        for split, name in (("train-100", "train_clean_100"), ("dev", "dev_clean"), ("test", "test_clean")):
            (rd / f"{name}.rttm").write_text("\n".join(rttm_lines[split]) + "\n")
    return root


# ------------------------------------------------------------------ Audio SNIPS
SNIPS_LINES = {
    "Ivy-snips-train-0": ("play some jazz music", "O B-genre O O", "PlayMusic"),
    "Ivy-snips-train-1": ("book a table in paris", "O O O O B-city", "BookRestaurant"),
    "Aditi-snips-valid-0": ("what is the weather tomorrow", "O O O O B-timeRange", "GetWeather"),
    "Brian-snips-test-0": ("add this song to my playlist", "O O B-music_item O B-playlist_owner B-playlist", "AddToPlaylist"),
}


def snips_tree(base: Path) -> Path:
    """``base/SNIPS`` with all.iob.snips.txt and {train,valid,test} wav folders.

    Extra files: a train speaker outside s3prl's lists (skipped, as s3prl does), a wav with
    no label line, a label line whose IOB count mismatches, a stereo file (all rejected)
    and an 8 kHz file (kept).
    """
    root = base / "SNIPS"
    lines = []
    for uid, (text, iob, intent) in SNIPS_LINES.items():
        split = uid.split("-")[2]
        say(text, "en-us" if "Ivy" in uid else "en-gb", root / split / f"{uid}.wav")
        lines.append(f"{uid} BOS {text} EOS\tO {iob} {intent}")
    say("stop it", "en-us", root / "train" / "Zed-snips-train-5.wav")  # speaker not in the train list
    lines.append("Zed-snips-train-5 BOS stop it EOS\tO O O Stop")
    say("no label here", "en-us", root / "train" / "Joey-snips-train-7.wav")  # no label line
    say("two words", "en-us", root / "train" / "Joey-snips-train-8.wav")
    lines.append("Joey-snips-train-8 BOS two words EOS\tO O PlayMusic")  # 2 words, 1 tag
    say("slow rate", "en-us", root / "test" / "Emma-snips-test-3.wav", rate=8000)  # kept: s3prl resamples
    lines.append("Emma-snips-test-3 BOS slow rate EOS\tO O B-timeRange GetWeather")
    stereo = root / "test" / "Emma-snips-test-4.wav"
    say("two channels", "en-us", stereo)
    mono, sr = sf.read(stereo, dtype="float32")
    sf.write(stereo, np.stack([mono, mono], axis=1), sr, subtype="PCM_16")
    lines.append("Emma-snips-test-4 BOS two channels EOS\tO O O GetWeather")
    (root / "all.iob.snips.txt").write_text("\n".join(lines) + "\n")
    return root


# ------------------------------------------------------------------ s3prl modules without s3prl/__init__
def s3prl_module(dotted: str, extra: dict | None = None):
    """Import ``s3prl.<dotted>`` from the installed s3prl under the stub package ``_s3prl``.

    Parent packages are empty stubs pointing at the real folders, so only the named file
    and what it imports relatively run. ``extra`` sets attributes on the direct parent
    stub (e.g. ``Dataset`` for ``from . import Dataset``).
    """
    import importlib.util

    spec = importlib.util.find_spec("s3prl")
    base = Path(spec.origin).parent
    parents = dotted.split(".")[:-1]
    for i in range(len(parents) + 1):  # _s3prl, then each parent package below it
        name = ".".join(["_s3prl", *parents[:i]])
        if name not in sys.modules:
            mod = types.ModuleType(name)
            mod.__path__ = [str(base.joinpath(*parents[:i]))]
            sys.modules[name] = mod
    for k, v in (extra or {}).items():
        setattr(sys.modules[name], k, v)
    return importlib.import_module(f"_s3prl.{dotted}")
