"""Readers for the real roots of the corpora SUPERB's QbE, SD and SF tasks use.

One pure ``prepare_<corpus>(root, ...) -> Prepared`` per corpus, in the style of
:mod:`deepwide.corpus.prepare` (whose ``Prepared``, audio checks, reject handling and
``write_manifests`` they reuse):

- ``prepare_quesst14``: QUESST 2014 (``quesst14Database/``): ``Audio/`` documents,
  ``dev_queries/`` and ``eval_queries/``, selected by the language keys in
  ``scoring/language_key_{utterances,dev,eval}.lst`` (SUPERB: ``nnenglish``, as s3prl's
  ``quesst14_dtw``), plus the ground truth of ``scoring/groundtruth_quesst14_{dev,eval}/``
  (ecf documents, tlist terms, rttm occurrences) as tables. QUESST audio is 8 kHz: it is
  accepted at any rate (the QbE loader resamples to 16 kHz, as s3prl's sox effects do).
- ``prepare_librimix``: Libri2Mix (``wav16k/{max,min}/{train-100,dev,test}/mix_both|s1|s2``
  + ``metadata/mixture_*_mix_both.csv``) with speaker segments for diarization, either
  from per-utterance speech-activity RTTMs (the ones SUPERB's LibriMix recipe ships in
  ``metadata/LibriSpeech/{train_clean_100,dev_clean,test_clean}.rttm``) or, without them,
  from an energy detector on each source; ``write_sd_kaldi_dirs`` writes the Kaldi data
  dirs (``train/dev/test`` with wav.scp, segments, utt2spk, spk2utt, reco2dur, rttm) that
  s3prl's ``SuperbSD`` reads as ``prepare_data.data_dir``.
- ``prepare_snips``: SUPERB's Audio SNIPS (``all.iob.snips.txt`` + ``train/valid/test``
  wav folders, files ``{speaker}-snips-{split}-{n}.wav``), speakers per split as in s3prl's
  ``SuperbSF``; text, IOB slot tags and intent per utterance; any sample rate (s3prl's
  loader resamples), mono.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from deepwide.audio import SAMPLE_RATE
from deepwide.corpus.audiofiles import check_audio
from deepwide.corpus.prepare import Prepared, _check_all, _read_csv
from deepwide.corpus.sources import EXTRA_CORPORA, SNIPS_SPEAKERS
from deepwide.errors import DeepwideError
from deepwide.utils.io import atomic_path, existing

log = logging.getLogger(__name__)


def _check_any_rate(path) -> tuple[dict | None, str | None]:
    """``check_audio`` that accepts any sample rate (the reader resamples)."""
    info, reason = check_audio(path)
    if info is None and reason and reason.startswith("sample rate"):
        import soundfile as sf

        i = sf.info(str(path))
        if i.channels != 1:
            return None, f"{i.channels} channels, expected mono"
        return dict(num_samples=int(i.frames), sample_rate=int(i.samplerate)), None
    return info, reason


def _check_all_any_rate(cands: list[dict], jobs: int = 1) -> Prepared:
    return _check_all(cands, jobs, check=_check_any_rate)


# ------------------------------------------------------------------ QUESST 2014
QUESST_LISTS = {"docs": "language_key_utterances.lst", "dev": "language_key_dev.lst", "eval": "language_key_eval.lst"}


def _inner_root(root: Path, inner: str, marker: str) -> Path:
    """``root``, or its folder ``inner`` when that one holds the folder ``marker`` and ``root`` does not
    (a root given as the folder that holds the dataset's own folder)."""
    if not (root / marker).is_dir() and (root / inner / marker).is_dir():
        return root / inner
    return root


def _quesst_root(root: Path) -> Path:
    return _inner_root(root, "quesst14Database", "scoring")


def _quesst_path(root: Path, listed: str) -> Path:
    """The file a language-key line names: s3prl drops the path's first component."""
    stripped = root / re.sub(r"^.*?/", "", listed)
    if not stripped.exists() and (root / listed).exists():
        return root / listed
    return stripped


def _read_quesst_truth(gt_dir: Path) -> dict[str, pd.DataFrame]:
    def one(pattern: str) -> Path:
        found = sorted(gt_dir.glob(pattern))
        if len(found) != 1:
            raise DeepwideError(f"QUESST14 ground truth {gt_dir}: expected one {pattern} file, found {len(found)}")
        return found[0]

    import xml.etree.ElementTree as ET

    ecf, tlist, rttm = one("*.ecf.xml"), one("*.tlist.xml"), one("*.rttm")
    try:
        docs = [(Path(e.attrib["audio_filename"]).stem, float(e.attrib.get("dur", "nan")))
                for e in ET.parse(ecf).getroot().iter("excerpt")]
        terms = [t.attrib["termid"] for t in ET.parse(tlist).getroot().iter("term")]
    except (ET.ParseError, KeyError) as err:
        raise DeepwideError(f"QUESST14 ground truth {gt_dir}: cannot read ecf/tlist XML: {err}") from err
    term_set = set(terms)
    rows = []
    for n, line in enumerate(rttm.read_text(errors="replace").splitlines(), 1):
        parts = line.split()
        if not parts or parts[0] != "LEXEME":
            continue
        if len(parts) < 6:
            raise DeepwideError(f"{rttm}:{n}: LEXEME line with {len(parts)} fields, expected 'LEXEME file chnl tbeg tdur term ...'")
        term = next((p for p in parts[2:] if p in term_set), parts[5])
        rows.append(dict(term=term, doc=parts[1], tbeg=float(parts[3]), dur=float(parts[4])))
    return {
        "docs": pd.DataFrame(docs, columns=["doc", "dur"]),
        "terms": pd.DataFrame({"term": terms}),
        "truth": pd.DataFrame(rows, columns=["term", "doc", "tbeg", "dur"]),
    }


def prepare_quesst14(root: str | Path, languages: Sequence[str] | None = ("nnenglish",), jobs: int = 1) -> Prepared:
    """QUESST 2014: documents and dev/eval queries of ``languages`` (None: all) + ground truth.

    Records: splits ``docs``, ``dev``, ``eval``; columns id (file stem), path, language.
    Tables: ``{dev,eval}_docs`` (ecf: doc, dur), ``{dev,eval}_terms`` (tlist: term),
    ``{dev,eval}_truth`` (rttm: term, doc, tbeg, dur) -- the whole ground truth, every
    language, as the official scorer uses it.
    """
    root = _quesst_root(existing(root, "QUESST14 root (quesst14Database)", folder=True))
    scoring = existing(root / "scoring", "QUESST14 scoring folder", folder=True)
    wanted = set(languages) if languages is not None else None
    cands = []
    for split, name in QUESST_LISTS.items():
        lst = existing(scoring / name, f"QUESST14 language key {name}")
        for n, line in enumerate(lst.read_text(errors="replace").splitlines(), 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 2:
                raise DeepwideError(f"{lst}:{n}: expected '<audio path> <language>', got {line!r}")
            listed, lang = parts
            if wanted is not None and lang not in wanted:
                continue
            path = _quesst_path(root, listed)
            cands.append(dict(id=Path(listed).stem, path=path, split=split, speaker="", text="", language=lang))
    if not cands:
        raise DeepwideError(f"QUESST14 root {root}: no file of languages {sorted(wanted or [])} in the language keys")
    out = _check_all_any_rate(cands, jobs)
    for split in ("dev", "eval"):
        gt = _read_quesst_truth(existing(scoring / f"groundtruth_quesst14_{split}", f"QUESST14 {split} ground truth folder", folder=True))
        for k, df in gt.items():
            out.tables[f"{split}_{k}"] = df
    return out


def quesst14_truth(tables: dict[str, pd.DataFrame], split: str) -> tuple[list[str], list[str], set[tuple[str, str]]]:
    """(terms, documents, {(term, doc)}) of a split from ``prepare_quesst14``'s tables."""
    terms = tables[f"{split}_terms"]["term"].tolist()
    docs = tables[f"{split}_docs"]["doc"].tolist()
    t = tables[f"{split}_truth"]
    return terms, docs, set(zip(t["term"], t["doc"]))


# ------------------------------------------------------------------ LibriMix (SD)
LIBRIMIX_SPLITS = {"train": ("train-100", "train"), "dev": ("dev",), "test": ("test",)}
LIBRIMIX_RTTMS = {"train": "train_clean_100.rttm", "dev": "dev_clean.rttm", "test": "test_clean.rttm"}
SEGMENT_COLUMNS = ["record_id", "wav_path", "duration", "utt_id", "speaker", "start_sec", "end_sec"]


def _librimix_root(root: Path) -> Path:
    return _inner_root(root, "Libri2Mix", "wav16k")


def _read_source_rttm(path: Path) -> dict[str, list[tuple[str, float, float]]]:
    """``SPEAKER <spk>-<chapter>-<utt minus spk> 1 start dur <NA> <NA> spk ...`` -> utt key -> segments."""
    segs: dict[str, list[tuple[str, float, float]]] = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if parts[0] != "SPEAKER" or len(parts) < 8:
            raise DeepwideError(f"{path}:{n}: expected an RTTM 'SPEAKER file 1 start dur <NA> <NA> speaker ...' line")
        start, dur = float(parts[3]), float(parts[4])
        segs.setdefault(parts[1], []).append((parts[7], start, start + dur))
    return segs


def speech_activity(wav: np.ndarray, sr: int = SAMPLE_RATE, frame_s: float = 0.02, floor_db: float = -40.0,
                    min_gap_s: float = 0.3, min_len_s: float = 0.05) -> list[tuple[float, float]]:
    """Speech segments (seconds) of one source: frames within ``floor_db`` of its loudest
    frame, gaps shorter than ``min_gap_s`` bridged, segments shorter than ``min_len_s`` dropped."""
    hop = max(1, int(frame_s * sr))
    n = len(wav) // hop
    if n == 0:
        return []
    frames = wav[: n * hop].reshape(n, hop).astype(np.float64)
    energy = 10 * np.log10((frames**2).mean(axis=1) + 1e-12)
    active = energy > energy.max() + floor_db
    segs = []
    start = None
    for i, a in enumerate(np.r_[active, False]):
        if a and start is None:
            start = i
        elif not a and start is not None:
            segs.append([start, i])
            start = None
    merged: list[list[int]] = []
    for s, e in segs:
        if merged and (s - merged[-1][1]) * frame_s < min_gap_s:
            merged[-1][1] = e
        else:
            merged.append([s, e])
    return [(round(s * hop / sr, 3), round(e * hop / sr, 3)) for s, e in merged if (e - s) * frame_s >= min_len_s]


def _librimix_candidates(root: Path, mode: str, split: str) -> tuple[list[dict], list[dict]]:
    base = root / "wav16k" / mode
    folder = next((base / name for name in LIBRIMIX_SPLITS[split] if (base / name).is_dir()), None)
    if folder is None:
        raise DeepwideError(f"LibriMix {split} folder not found: {base}/{'|'.join(LIBRIMIX_SPLITS[split])}")
    meta = base / "metadata" / f"mixture_{folder.name}_mix_both.csv"
    meta = meta if meta.is_file() else None
    cands, rejects = [], []
    if meta is not None:
        need = {"mixture_ID", "mixture_path", "source_1_path", "source_2_path", "length"}
        for r in _read_csv(meta, need).itertuples(index=False):
            cands.append(dict(id=r.mixture_ID, path=folder / "mix_both" / f"{r.mixture_ID}.wav",
                              s1=folder / "s1" / f"{r.mixture_ID}.wav", s2=folder / "s2" / f"{r.mixture_ID}.wav"))
        listed = {c["id"] for c in cands}
        for wav in sorted((folder / "mix_both").glob("*.wav")):
            if wav.stem not in listed:
                rejects.append(dict(id=wav.stem, path=str(wav), split=split, reason=f"not in {meta.name}"))
    else:
        for wav in sorted(existing(folder / "mix_both", f"LibriMix {split} mix_both folder", folder=True).glob("*.wav")):
            cands.append(dict(id=wav.stem, path=wav, s1=folder / "s1" / wav.name, s2=folder / "s2" / wav.name))
    for c in cands:
        ids = c["id"].split("_")
        if len(ids) != 2 or not all(re.fullmatch(r"\d+-\d+-\d+", i) for i in ids):
            raise DeepwideError(f"LibriMix {split}: mixture id {c['id']!r} is not '<spk>-<chapter>-<utt>_<spk>-<chapter>-<utt>'")
        c.update(split=split, speaker="_".join(i.split("-")[0] for i in ids), text="", source_ids=ids)
    return cands, rejects


def prepare_librimix(root: str | Path, mode: str = "max", rttm_dir: str | Path | None = None, jobs: int = 1) -> Prepared:
    """Libri2Mix (16 kHz, ``mode`` max or min) for diarization.

    Records: one per mixture (splits train, dev, test; ``speaker`` = both speakers joined
    by ``_``; s1_path/s2_path). Table ``segments``: s3prl's diarization csv columns
    (record_id, wav_path, duration, utt_id, speaker, start_sec, end_sec) with a ``split``
    column. Segments come from ``rttm_dir``'s per-utterance RTTMs when given, else from
    :func:`speech_activity` on each source. A mixture whose mixture or source audio is
    unusable is rejected as a whole.
    """
    if mode not in ("max", "min"):
        raise DeepwideError(f"LibriMix mode must be max or min, got {mode!r}")
    root = _librimix_root(existing(root, "LibriMix root (Libri2Mix)", folder=True))
    existing(root / "wav16k" / mode, f"LibriMix wav16k/{mode} folder", folder=True)
    rttms = None
    if rttm_dir is not None:
        rttm_dir = existing(rttm_dir, "LibriMix speech-activity RTTM folder", folder=True)
        rttms = {s: _read_source_rttm(existing(rttm_dir / f, f"LibriMix RTTM {f}")) for s, f in LIBRIMIX_RTTMS.items()}
    cands, pre_rejects = [], []
    for split in LIBRIMIX_SPLITS:
        c, r = _librimix_candidates(root, mode, split)
        cands += c
        pre_rejects += r
    mixes = _check_all(cands, jobs, "LibriMix")
    out = Prepared(rejects=mixes.rejects + pre_rejects)
    import soundfile as sf

    rows = []
    for rec in mixes.records:
        bad = None
        srcs = []
        for k in ("s1", "s2"):
            info, reason = check_audio(rec[k])
            if info is None:
                bad = f"source {k}: {reason}"
                break
            srcs.append(rec[k])
        if bad is None and rttms is not None:
            missing = [i for i in rec["source_ids"] if i.split("-", 1)[1] not in rttms[rec["split"]]]
            if missing:
                bad = f"source utterance {missing[0]} not in {LIBRIMIX_RTTMS[rec['split']]}"
        if bad is not None:
            out.rejects.append(dict(id=rec["id"], path=rec["path"], split=rec["split"], reason=bad))
            continue
        duration = rec["num_samples"] / SAMPLE_RATE
        for src_id, src in zip(rec["source_ids"], srcs):
            spk = src_id.split("-")[0]
            if rttms is not None:
                segs = [(s, e) for _, s, e in rttms[rec["split"]][src_id.split("-", 1)[1]]]
            else:
                segs = speech_activity(sf.read(str(src), dtype="float32")[0])
            for s, e in segs:
                e = min(e, duration)
                if e <= s:
                    continue
                rows.append(dict(split=rec["split"], record_id=rec["id"], wav_path=rec["path"], duration=duration,
                                 utt_id=f"{rec['id']}_{spk}_{int(round(s * 1000)):07d}_{int(round(e * 1000)):07d}",
                                 speaker=spk, start_sec=s, end_sec=e))
        out.records.append({k: v for k, v in rec.items() if k not in ("s1", "s2", "source_ids")}
                           | {"s1_path": str(Path(rec["s1"]).resolve()), "s2_path": str(Path(rec["s2"]).resolve())})
    out.tables["segments"] = pd.DataFrame(rows, columns=["split"] + SEGMENT_COLUMNS)
    return out


def write_sd_kaldi_dirs(segments: pd.DataFrame, out_dir: str | Path) -> dict[str, int]:
    """Kaldi data dirs ``out_dir/{train,dev,test}`` for s3prl's SuperbSD (``prepare_data.data_dir``).

    Each holds wav.scp, segments, utt2spk, spk2utt, reco2dur and rttm, sorted, written
    atomically. Returns the number of segments per split.
    """
    out_dir = Path(out_dir)
    counts = {}
    for split in LIBRIMIX_SPLITS:
        df = segments[segments["split"] == split].sort_values(["record_id", "start_sec", "utt_id"])
        if df.empty:
            raise DeepwideError(f"LibriMix: no diarization segments in split {split}")
        for p in df["wav_path"].unique():
            if re.search(r"\s", p):
                raise DeepwideError(f"LibriMix: audio path {p!r} contains whitespace, which Kaldi's wav.scp cannot hold")
        d = out_dir / split
        d.mkdir(parents=True, exist_ok=True)
        recs = df.drop_duplicates("record_id")
        files = {
            "wav.scp": [f"{r.record_id} {r.wav_path}" for r in recs.itertuples()],
            "reco2dur": [f"{r.record_id} {r.duration:.4f}" for r in recs.itertuples()],
            "segments": [f"{r.utt_id} {r.record_id} {r.start_sec:.3f} {r.end_sec:.3f}" for r in df.itertuples()],
            "utt2spk": [f"{r.utt_id} {r.speaker}" for r in df.itertuples()],
            "spk2utt": [f"{spk} {' '.join(g['utt_id'])}" for spk, g in df.groupby("speaker", sort=True)],
            "rttm": [f"SPEAKER {r.record_id} 1 {r.start_sec:.3f} {r.end_sec - r.start_sec:.3f} <NA> <NA> {r.speaker} <NA> <NA>"
                     for r in df.itertuples()],
        }
        for name, lines in files.items():
            with atomic_path(d / name) as tmp:
                Path(tmp).write_text("\n".join(lines) + "\n")
        counts[split] = len(df)
    return counts


# ------------------------------------------------------------------ Audio SNIPS (SF)
def _snips_labels(path: Path) -> tuple[dict[str, dict], dict[str, str]]:
    """``id BOS w.. EOS<TAB>O tag.. intent`` per line -> (labels by id, bad-line reasons by id)."""
    labels, bad = {}, {}
    for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        uid, _, rest = line.strip().partition(" ")
        if "\t" not in rest:
            raise DeepwideError(f"{path}:{n}: expected '<id> BOS words EOS<TAB>O tags intent', no tab in {line[:80]!r}")
        words_part, tags_part = rest.split("\t", 1)
        words = words_part.strip().split(" ")[1:-1]
        tags = tags_part.strip().split(" ")
        iob, intent = tags[1:-1], tags[-1]
        if len(words) != len(iob):
            bad[uid] = f"label: {len(words)} words but {len(iob)} IOB tags in all.iob.snips.txt"
            continue
        labels[uid] = dict(text=" ".join(words), iob=" ".join(iob), intent=intent)
    return labels, bad


def prepare_snips(root: str | Path, speakers: dict[str, list[str]] | None = None, jobs: int = 1) -> Prepared:
    """Audio SNIPS as SUPERB SF reads it: ``{train,valid,test}/**/{spk}-snips-{split}-{n}.wav``.

    Like s3prl's corpus reader, a split keeps the files of its speakers (``speakers``,
    default s3prl's SuperbSF lists); files of other speakers are skipped. Columns beyond
    the base ones: iob (slot tags, one per word), intent. Audio at any sample rate is
    kept (s3prl's SF loader resamples to 16 kHz with librosa); it must be mono.
    """
    root = existing(root, "SNIPS root", folder=True)
    labels, bad = _snips_labels(existing(root / "all.iob.snips.txt", "SNIPS all.iob.snips.txt"))
    speakers = speakers or SNIPS_SPEAKERS
    cands, rejects = [], []
    for split in ("train", "valid", "test"):
        folder = existing(root / split, f"SNIPS {split} folder", folder=True)
        keep = set(speakers[split])
        for wav in sorted(folder.rglob("*.wav")):
            uid = wav.stem
            spk = uid.split("-")[0]
            if spk not in keep:
                continue
            if uid in bad:
                rejects.append(dict(id=uid, path=str(wav), split=split, reason=bad[uid]))
            elif uid not in labels:
                rejects.append(dict(id=uid, path=str(wav), split=split, reason="no line in all.iob.snips.txt"))
            else:
                cands.append(dict(id=uid, path=wav, split=split, speaker=spk, **labels[uid]))
    out = _check_all_any_rate(cands, jobs)  # any rate: s3prl's LoadAudio resamples to 16 kHz
    out.rejects += rejects
    return out


# ------------------------------------------------------------------ dispatch
def prepare_extra(corpus: str, root: str | Path, cfg: dict, jobs: int = 1) -> Prepared:
    """Dispatch to ``prepare_<corpus>`` with options from its config section.

    quesst14: ``languages`` (list, or null for all; default [nnenglish]); librimix:
    ``mode`` (max), ``rttm_dir`` (null: energy-based activity); snips: ``speakers``
    ({train,valid,test}: [names]; default s3prl's).
    """
    if corpus == "quesst14":
        return prepare_quesst14(root, cfg.get("languages", ["nnenglish"]), jobs)
    if corpus == "librimix":
        return prepare_librimix(root, cfg.get("mode", "max"), cfg.get("rttm_dir"), jobs)
    if corpus == "snips":
        return prepare_snips(root, cfg.get("speakers"), jobs)
    raise DeepwideError(f"unknown corpus {corpus!r} (expected one of {', '.join(EXTRA_CORPORA)})")


# ------------------------------------------------------------------ config and CLI hook
EXTRA_DEFAULTS = {
    # enabled and synth (corpus.schema.yaml) are the pipeline's and the synthesizers' (synth-librimix,
    # corpus synth --corpus quesst14|snips); prepare ignores them
    "quesst14": {"enabled": True, "root": None, "languages": ["nnenglish"], "max_reject_share": 0.01, "synth": {}},
    "librimix": {"enabled": True, "root": None, "mode": "max", "rttm_dir": None, "max_reject_share": 0.01, "synth": {}},
    "snips": {"enabled": True, "root": None, "speakers": None, "max_reject_share": 0.01, "synth": {}},
}


def extra_config(corpus: str, cfg: dict) -> dict:
    """The ``corpus.<name>`` section of an extra corpus with defaults filled; unknown keys
    and wrong types fail naming the dotted key (until the corpus schema carries them)."""
    if corpus not in EXTRA_DEFAULTS:
        raise DeepwideError(f"unknown corpus {corpus!r} (expected one of {', '.join(EXTRA_CORPORA)})")
    out = dict(EXTRA_DEFAULTS[corpus])
    for key, value in cfg.items():
        where = f"corpus.{corpus}.{key}"
        if key not in out:
            raise DeepwideError(f"{where}: unknown key (allowed: {', '.join(sorted(out))})")
        if key == "max_reject_share" and not (isinstance(value, (int, float)) and 0 <= value <= 1):
            raise DeepwideError(f"{where}: must be a number in [0, 1], got {value!r}")
        if key == "mode" and value not in ("max", "min"):
            raise DeepwideError(f"{where}: must be max or min, got {value!r}")
        if key == "languages" and value is not None and not (isinstance(value, list) and value and all(isinstance(v, str) for v in value)):
            raise DeepwideError(f"{where}: must be a non-empty list of language keys (e.g. [nnenglish]) or null, got {value!r}")
        if key == "speakers" and value is not None and not (
                isinstance(value, dict) and set(value) == {"train", "valid", "test"} and all(isinstance(v, list) for v in value.values())):
            raise DeepwideError(f"{where}: must map train, valid and test to lists of speaker names, got {value!r}")
        if key == "enabled" and not isinstance(value, bool):
            raise DeepwideError(f"{where}: must be true or false, got {value!r}")
        if key == "synth" and not isinstance(value, dict):
            raise DeepwideError(f"{where}: must be a mapping of synthesis sizes, got {value!r}")
        if key in ("root", "rttm_dir") and value is not None and not isinstance(value, str):
            raise DeepwideError(f"{where}: must be a path or null, got {value!r}")
        out[key] = value
    return out
