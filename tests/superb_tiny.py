"""A tiny Speech Commands v0.01 tree (no TTS): tones per word, in s3prl's KS layout."""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import soundfile as sf

from deepwide.corpus.sources import KS_COMMANDS, KS_TEST_DIR, KS_TRAIN_DIR
from deepwide.corpus.synth import _ks_speaker_ids

REPO = Path(__file__).resolve().parents[1]


def deepwide_env() -> dict:
    """The environment of a subprocess (Snakemake, ``python -m deepwide``) that runs this
    checkout's deepwide, with a numba cache inside the repository."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO / "src") + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("NUMBA_CACHE_DIR", str(REPO / ".cache" / "numba"))
    return env

SR = 16000


def _tone(rng: np.random.Generator, freq: float, secs: float = 1.0) -> np.ndarray:
    t = np.arange(int(secs * SR)) / SR
    x = 0.3 * np.sin(2 * np.pi * freq * t * (1 + 0.05 * rng.standard_normal())) + 0.05 * rng.standard_normal(t.size)
    return x.astype(np.float32)


def tiny_ks(root: Path, train_speakers: int = 2, seed: int = 0) -> Path:
    """``root`` with the train folder (+ ``_background_noise_``) and the test folder."""
    rng = np.random.default_rng(seed)
    ids = _ks_speaker_ids(random.Random(seed), {"train": train_speakers, "valid": 1, "test": 1})
    words = [*KS_COMMANDS, "bed"]
    for bucket, sids in ids.items():
        for sid in sids:
            for i, word in enumerate(words):
                x = _tone(rng, 200.0 + 90.0 * i)
                p = root / KS_TRAIN_DIR / word / f"{sid}_nohash_0.wav"
                p.parent.mkdir(parents=True, exist_ok=True)
                sf.write(p, x, SR)
                if bucket == "test":
                    q = root / KS_TEST_DIR / (word if word in KS_COMMANDS else "_unknown_") / f"{sid}_nohash_0.wav"
                    q.parent.mkdir(parents=True, exist_ok=True)
                    sf.write(q, x, SR)
    noise = root / KS_TRAIN_DIR / "_background_noise_" / "white_noise.wav"
    noise.parent.mkdir(parents=True, exist_ok=True)
    sf.write(noise, (0.1 * rng.standard_normal(2 * SR)).astype(np.float32), SR)
    sil = root / KS_TEST_DIR / "_silence_" / "0000_nohash_0.wav"
    sil.parent.mkdir(parents=True, exist_ok=True)
    sf.write(sil, (0.05 * rng.standard_normal(SR)).astype(np.float32), SR)
    return root


KS_TCFG = {"total_steps": 6, "eval_step": 3, "batch_size": 4, "gradient_accumulate": 1, "downstream": {"hidden_size": 8}}
