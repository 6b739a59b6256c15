"""Synthetic speakers and one-utterance rendering with espeak-ng / flite and sox.

A speaker is a plain dict drawn deterministically from a seeded ``random.Random``:
engine (espeak-ng or flite), voice (espeak-ng language + variant, or a flite voice),
base pitch, pitch range, speaking rate, and a sox timbre (pitch shift in cents, one
parametric EQ band, treble shelf). ``render`` turns (text, speaker, prosody) into a
16 kHz mono 16-bit file; sox runs with ``-R -D`` (repeatable, no dither), so the same
inputs always give byte-identical audio.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import escape

from deepwide.audio import SAMPLE_RATE
from deepwide.errors import DeepwideError


ESPEAK_LANGS = (
    "en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-us-nyc",
    "en-gb-x-gbclan", "en-gb-x-gbcwmd",
)
# espeak-ng variants with a human-like voice, by gender
ESPEAK_VARIANTS = {
    "M": ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "klatt", "klatt3", "croak"),
    "F": ("f1", "f2", "f3", "f4", "f5", "klatt2", "klatt4"),
}
# flite's built-in voices (awb_time is a limited-domain clock voice: left out)
FLITE_VOICES = {"M": ("kal", "kal16", "awb", "rms"), "F": ("slt",)}
FLITE_F0 = {"M": (95, 140), "F": (165, 230)}

# emotion -> prosody multipliers (pitch, pitch range, rate) and volume in dB
EMOTION_PROSODY = {
    "neu": dict(pitch=1.0, range=1.0, rate=1.0, volume_db=-4.0),
    "hap": dict(pitch=1.18, range=1.7, rate=1.12, volume_db=-1.5),
    "ang": dict(pitch=1.08, range=1.35, rate=1.22, volume_db=0.0),
    "sad": dict(pitch=0.84, range=0.35, rate=0.78, volume_db=-11.0),
}
NEUTRAL = dict(pitch=1.0, range=1.0, rate=1.0, volume_db=-3.0)


def sample_speaker(rng: random.Random, flite_share: float = 0.3, gender: str | None = None) -> dict:
    """Draw one speaker. ``gender`` ('M'/'F') constrains the voice; None draws it too."""
    gender = gender or rng.choice("MF")
    timbre = dict(
        shift_cents=rng.randint(-150, 150),
        eq_hz=rng.choice((300, 500, 800, 1200, 2000, 3000)),
        eq_db=round(rng.uniform(-6, 6), 1),
        treble_db=round(rng.uniform(-4, 4), 1),
    )
    if rng.random() < flite_share:
        lo, hi = FLITE_F0[gender]
        return dict(
            engine="flite", voice=rng.choice(FLITE_VOICES[gender]), gender=gender,
            pitch=rng.randint(lo, hi), range=rng.randint(12, 35),
            rate=round(rng.uniform(0.85, 1.2), 2), timbre=timbre,
        )
    return dict(
        engine="espeak", voice=f"{rng.choice(ESPEAK_LANGS)}+{rng.choice(ESPEAK_VARIANTS[gender])}",
        gender=gender, pitch=rng.randint(25, 75), range=rng.randint(-30, 40),
        rate=rng.randint(140, 195), timbre=timbre,
    )


@dataclass
class Utterance:
    """One file to render: ``text`` spoken by ``speaker`` into ``path``."""

    path: str
    text: str
    speaker: dict
    prosody: dict = field(default_factory=lambda: dict(NEUTRAL))
    pad_to_s: float | None = None  # pad/trim to this duration (Speech Commands: 1 s)
    sample_rate: int = SAMPLE_RATE  # output rate (QUESST 2014's audio is 8 kHz)
    trim: bool = False  # cut leading and trailing silence (spoken queries cut to the term)


def tts_env() -> dict:
    """The environment TTS programs run in: no PulseAudio server to reach.

    espeak-ng opens a PulseAudio client even when it writes a file; with no client cookie
    under $HOME (a fresh HOME: CI, containers, cluster nodes) that client draws random
    numbers from the C library's generator that espeak-ng's voice variants also use, so the
    same text gave different samples from run to run. With no server address the client
    gives up at once and the output is the one a set-up HOME gives, every time.
    """
    return {**os.environ, "PULSE_SERVER": "unix:/nonexistent"}


def _tts_wav(utt: Utterance, tmpdir: str) -> str:
    spk, pro = utt.speaker, utt.prosody
    wav = os.path.join(tmpdir, "tts.wav")
    if spk["engine"] == "espeak":
        pitch = max(0, min(99, round(spk["pitch"] * pro["pitch"])))
        rate = max(80, min(450, round(spk["rate"] * pro["rate"])))
        rng_pct = round((1 + spk["range"] / 100) * pro["range"] * 100 - 100)
        ssml = (
            f'<speak><prosody range="{rng_pct:+d}%">{escape(utt.text)}</prosody></speak>'
        )
        cmd = ["espeak-ng", "-m", "-v", spk["voice"], "-p", str(pitch), "-s", str(rate), "-w", wav, ssml]
    elif spk["engine"] == "flite":
        cmd = [
            "flite", "-voice", spk["voice"],
            "--setf", f"duration_stretch={spk['rate'] / pro['rate']:.3f}",
            "--setf", f"int_f0_target_mean={spk['pitch'] * pro['pitch']:.1f}",
            "--setf", f"int_f0_target_stddev={spk['range'] * pro['range']:.1f}",
            "-t", utt.text, "-o", wav,
        ]
    else:
        raise DeepwideError(f"unknown TTS engine {spk['engine']!r}")
    res = subprocess.run(cmd, capture_output=True, env=tts_env())
    if res.returncode != 0 or not os.path.exists(wav) or os.path.getsize(wav) <= 44:
        raise RuntimeError(f"{cmd[0]} failed for {utt.path}: {res.stderr.decode(errors='replace')[-500:]}")
    return wav


def render(utt: Utterance) -> str:
    """Write ``utt.path`` (format from its suffix: .wav or .flac), mono 16-bit at
    ``utt.sample_rate`` (16 kHz unless set)."""
    t = utt.speaker["timbre"]
    out = Path(utt.path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="deepwide-tts-") as tmp:
        wav = _tts_wav(utt, tmp)
        effects = [
            "pitch", str(t["shift_cents"]),
            "equalizer", str(t["eq_hz"]), "1q", str(t["eq_db"]),
            "treble", str(t["treble_db"]),
            "rate", "-h", str(utt.sample_rate),
            "gain", "-n", str(utt.prosody["volume_db"]),
        ]
        if utt.trim:  # below 1 % of full scale for 10 ms at either end
            effects += ["silence", "1", "0.01", "1%", "reverse", "silence", "1", "0.01", "1%", "reverse"]
        if utt.pad_to_s:
            effects += ["pad", "0.08", str(utt.pad_to_s), "trim", "0", str(utt.pad_to_s)]
        tmp_out = os.path.join(tmp, "out" + out.suffix)
        cmd = ["sox", "-R", "-D", "-V1", wav, "-r", str(utt.sample_rate), "-c", "1", "-b", "16", tmp_out, *effects]
        res = subprocess.run(cmd, capture_output=True)
        if res.returncode != 0:
            raise RuntimeError(f"sox failed for {utt.path}: {res.stderr.decode(errors='replace')[-500:]}")
        shutil.move(tmp_out, out)
    return str(out)
