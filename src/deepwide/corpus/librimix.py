"""An embedded Libri2Mix (two-speaker mixtures for SUPERB SD) from a LibriSpeech root.

:func:`synth_librimix` mixes pairs of utterances of different speakers of a LibriSpeech
root (the corpus stage's synthesized one, or a real one) into the real Libri2Mix layout,
so that ``corpus prepare-extra --corpus librimix`` (:mod:`deepwide.corpus.real_extra`)
and, through its ``--sd-data-dir``, s3prl's SuperbSD read it unchanged::

    OUT/Libri2Mix/wav16k/max/{train-100,dev,test}/{mix_both,mix_clean,s1,s2[,noise]}/{ID}.wav
    OUT/Libri2Mix/wav16k/max/metadata/mixture_{split}_{mix_both,mix_clean}.csv
    OUT/metadata/LibriSpeech/{train_clean_100,dev_clean,test_clean}.rttm
    OUT/deepwide_synth.json

``ID`` is ``{utt1}_{utt2}`` (LibriSpeech utterance ids, speaker 1 first) as in Libri2Mix.
train-100 mixes train-clean-100, dev mixes dev-clean, test mixes test-clean; each source
utterance is used at most once. "max" mode: a mixture lasts until its longer source ends.
Unlike Libri2Mix, whose sources both start at 0, source 2 starts ``U(0, max_offset_s)``
seconds late, so mixtures have single-speaker stretches and overlap. Source 1 is set to
-25 dBFS RMS, source 2 ``U(-gain_db, gain_db)`` dB from it; ``mix_both`` adds white noise
``noise_snr_db`` below the speech (null: none, ``mix_both`` equals ``mix_clean``); all are
scaled together when a peak would exceed 0.9. The csv path columns are relative to the
Libri2Mix folder (so the tree is byte-identical for a seed wherever it is written).

The RTTMs are SUPERB LibriMix's per-utterance speech activity (``SPEAKER
{chapter}-{utt} 1 onset dur <NA> <NA> {speaker} <NA> <NA>``), in mixture time:
:func:`deepwide.corpus.real_extra.speech_activity` on each source as placed in the
mixture (what ``prepare-extra`` itself computes without ``rttm_dir``).
"""

from __future__ import annotations

import json
import logging
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deepwide.audio import SAMPLE_RATE
from deepwide.errors import DeepwideError
from deepwide.utils.io import atomic_path

log = logging.getLogger(__name__)

# (Libri2Mix split, LibriSpeech source split, SUPERB RTTM name, size key)
SPLITS = (
    ("train-100", "train-clean-100", "train_clean_100", "train_mixtures"),
    ("dev", "dev-clean", "dev_clean", "dev_mixtures"),
    ("test", "test-clean", "test_clean", "test_mixtures"),
)
SYNTH_DEFAULTS = {"train_mixtures": 24, "dev_mixtures": 8, "test_mixtures": 8, "max_offset_s": 1.5, "gain_db": 5.0, "noise_snr_db": 30.0}
SOURCE_RMS_DB = -25.0
PEAK = 0.9


@dataclass(frozen=True)
class Source:
    uid: str  # spk-chapter-utt
    path: Path

    @property
    def speaker(self) -> str:
        return self.uid.split("-")[0]

    @property
    def rttm_key(self) -> str:  # SUPERB's per-utterance RTTM names a source without its speaker
        return self.uid.split("-", 1)[1]


@dataclass(frozen=True)
class MixPlan:
    split: str
    s1: Source
    s2: Source
    offset_samples: int
    gain2_db: float
    noise_seed: int

    @property
    def mix_id(self) -> str:
        return f"{self.s1.uid}_{self.s2.uid}"


def _sizes(cfg: dict | None) -> dict:
    out = dict(SYNTH_DEFAULTS)
    for key, value in (cfg or {}).items():
        where = f"corpus.librimix.synth.{key}"
        if key not in out:
            raise DeepwideError(f"{where}: unknown key (allowed: {', '.join(sorted(out))})")
        if key.endswith("_mixtures"):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise DeepwideError(f"{where}: must be an integer >= 1, got {value!r}")
        elif key == "noise_snr_db":
            if value is not None and not isinstance(value, (int, float)):
                raise DeepwideError(f"{where}: must be a number (dB) or null, got {value!r}")
        elif not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
            raise DeepwideError(f"{where}: must be a number >= 0, got {value!r}")
        out[key] = value
    return out


def _sources(librispeech: Path, split: str) -> list[Source]:
    folder = librispeech / split
    if not folder.is_dir():
        raise DeepwideError(f"synth-librimix: LibriSpeech split folder {folder} not found (run `corpus synth --corpus librispeech` first)")
    found = [Source(p.stem, p) for p in sorted(folder.glob("*/*/*.flac"))]
    bad = [s.path for s in found if len(s.uid.split("-")) != 3 or not all(x.isdigit() for x in s.uid.split("-"))]
    if bad:
        raise DeepwideError(f"synth-librimix: {bad[0]} is not named <speaker>-<chapter>-<utt>.flac (LibriSpeech layout)")
    # the per-utterance RTTM is keyed by chapter-utt: drop keys two speakers share
    owners: dict[str, set[str]] = {}
    for s in found:
        owners.setdefault(s.rttm_key, set()).add(s.speaker)
    return [s for s in found if len(owners[s.rttm_key]) == 1]


def plan_librimix(librispeech: str | Path, cfg: dict | None, seed: int) -> list[MixPlan]:
    """The mixtures to build (pure: file names only, no audio read), deterministic in seed."""
    sizes = _sizes(cfg)
    librispeech = Path(librispeech)
    plans = []
    for split, src_split, _, key in SPLITS:
        rng = random.Random(f"{seed}:librimix:{split}")
        pool = _sources(librispeech, src_split)
        rng.shuffle(pool)
        wanted = sizes[key]
        made = 0
        while made < wanted and pool:
            a = pool.pop(0)
            j = next((i for i, b in enumerate(pool) if b.speaker != a.speaker), None)
            if j is None:
                break
            b = pool.pop(j)
            offset = int(round(rng.uniform(0.0, float(sizes["max_offset_s"])) * SAMPLE_RATE))
            gain = rng.uniform(-float(sizes["gain_db"]), float(sizes["gain_db"]))
            plans.append(MixPlan(split, a, b, offset, gain, rng.getrandbits(32)))
            made += 1
        if made < wanted:
            speakers = len({s.speaker for s in _sources(librispeech, src_split)})
            raise DeepwideError(
                f"corpus.librimix.synth.{key}: {wanted} mixtures need {2 * wanted} utterances of at least two speakers in "
                f"{librispeech / src_split}; it has {len(_sources(librispeech, src_split))} utterances of {speakers} speaker(s), "
                f"enough for {made} (lower {key} or synthesize a larger LibriSpeech)"
            )
    return plans


def _read(path: Path) -> np.ndarray:
    import soundfile as sf

    try:
        x, sr = sf.read(str(path), dtype="float64", always_2d=True)
    except Exception as err:  # libsndfile's errors
        raise DeepwideError(f"synth-librimix: cannot read {path}: {str(err).splitlines()[0] if str(err) else type(err).__name__}") from None
    if sr != SAMPLE_RATE or x.shape[1] != 1:
        raise DeepwideError(f"synth-librimix: {path} is {sr} Hz with {x.shape[1]} channel(s); Libri2Mix wav16k needs 16 kHz mono")
    x = x[:, 0]
    if not np.any(x):
        raise DeepwideError(f"synth-librimix: {path} is silent")
    return x


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x**2)))


def render_mixture(plan: MixPlan, noise_snr_db: float | None) -> dict[str, np.ndarray]:
    """s1, s2 (as placed in the mixture), noise (or None), mix_clean, mix_both."""
    a, b = _read(plan.s1.path), _read(plan.s2.path)
    n = max(len(a), plan.offset_samples + len(b))
    target = 10 ** (SOURCE_RMS_DB / 20)
    s1 = np.zeros(n)
    s1[: len(a)] = a * (target / _rms(a))
    s2 = np.zeros(n)
    s2[plan.offset_samples : plan.offset_samples + len(b)] = b * (target * 10 ** (plan.gain2_db / 20) / _rms(b))
    clean = s1 + s2
    noise = None
    if noise_snr_db is not None:
        g = np.random.default_rng(plan.noise_seed).standard_normal(n)
        noise = g * (_rms(clean) / 10 ** (float(noise_snr_db) / 20) / _rms(g))
    both = clean if noise is None else clean + noise
    peak = max(np.abs(v).max() for v in (s1, s2, clean, both))
    scale = PEAK / peak if peak > PEAK else 1.0
    out = {"s1": s1, "s2": s2, "mix_clean": clean, "mix_both": both}
    if noise is not None:
        out["noise"] = noise
    return {k: v * scale for k, v in out.items()}


def synth_librimix(librispeech: str | Path, out: str | Path, seed: int = 0, cfg: dict | None = None) -> dict:
    """Write the embedded Libri2Mix (see the module doc) to ``out`` atomically; a summary.

    ``cfg``: the sizes (``corpus.librimix.synth``: train/dev/test_mixtures, max_offset_s,
    gain_db, noise_snr_db).
    """
    import soundfile as sf

    from deepwide.corpus.real_extra import speech_activity

    t0 = time.time()
    sizes = _sizes(cfg)
    plans = plan_librimix(librispeech, sizes, seed)
    out = Path(out)
    counts, seconds, speech, overlap = {}, 0.0, 0.0, 0.0
    with atomic_path(out, is_dir=True) as tmp:
        base = tmp / "Libri2Mix" / "wav16k" / "max"
        rttm_dir = tmp / "metadata" / "LibriSpeech"
        (base / "metadata").mkdir(parents=True)
        rttm_dir.mkdir(parents=True)
        for split, _, rttm_name, _ in SPLITS:
            rows_both = ["mixture_ID,mixture_path,source_1_path,source_2_path,noise_path,length"]
            rows_clean = ["mixture_ID,mixture_path,source_1_path,source_2_path,length"]
            rttm = []
            mine = [p for p in plans if p.split == split]
            for p in mine:
                audio = render_mixture(p, sizes["noise_snr_db"])
                rel = {k: f"wav16k/max/{split}/{k}/{p.mix_id}.wav" for k in audio}
                for k, x in audio.items():
                    f = tmp / "Libri2Mix" / rel[k]
                    f.parent.mkdir(parents=True, exist_ok=True)
                    sf.write(str(f), x.astype(np.float32), SAMPLE_RATE, subtype="PCM_16")
                n = len(audio["mix_both"])
                rows_both.append(f"{p.mix_id},{rel['mix_both']},{rel['s1']},{rel['s2']},{rel.get('noise', '')},{n}")
                rows_clean.append(f"{p.mix_id},{rel['mix_clean']},{rel['s1']},{rel['s2']},{n}")
                active = np.zeros((2, n // 160 + 1), bool)
                for k, (src, key) in enumerate(((p.s1, "s1"), (p.s2, "s2"))):
                    segs = speech_activity(audio[key].astype(np.float32))
                    if not segs:
                        raise DeepwideError(f"synth-librimix: no speech detected in {src.path}")
                    for s, e in segs:
                        rttm.append(f"SPEAKER {src.rttm_key} 1 {s:.3f} {e - s:.3f} <NA> <NA> {src.speaker} <NA> <NA>")
                        active[k, int(round(s * 100)) : int(round(e * 100))] = True
                seconds += n / SAMPLE_RATE
                speech += active.any(0).sum() / 100
                overlap += active.all(0).sum() / 100
            (base / "metadata" / f"mixture_{split}_mix_both.csv").write_text("\n".join(rows_both) + "\n")
            (base / "metadata" / f"mixture_{split}_mix_clean.csv").write_text("\n".join(rows_clean) + "\n")
            (rttm_dir / f"{rttm_name}.rttm").write_text("\n".join(rttm) + "\n")
            counts[split] = len(mine)
        info = {
            "corpus": "librimix", "seed": seed, "synth": sizes, "mixtures": counts,
            "audio_seconds": round(seconds, 3), "speech_seconds": round(float(speech), 2), "overlap_seconds": round(float(overlap), 2),
            "sources": {p.mix_id: [p.s1.uid, p.s2.uid] for p in plans},
        }
        (tmp / "deepwide_synth.json").write_text(json.dumps(info, indent=1, sort_keys=True) + "\n")
    summary = {
        "corpus": "librimix", "seed": seed, "mixtures": counts, "audio_seconds": round(seconds, 3),
        "overlap_share": round(float(overlap / speech), 4) if speech else 0.0,
        "root": str(out / "Libri2Mix"), "rttm_dir": str(out / "metadata" / "LibriSpeech"), "wall_s": round(time.time() - t0, 2),
    }
    log.info("synthesized librimix: %s", summary)
    return summary
