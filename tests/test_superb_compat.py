"""deepwide.superb.compat against reference computations: soundfile, torchaudio.functional
and the sox program itself."""

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch
import torchaudio
import torchaudio.functional as AF

from deepwide.superb import compat

needs_sox = pytest.mark.skipif(shutil.which("sox") is None, reason="sox program not installed")


@pytest.fixture(scope="module", autouse=True)
def installed():
    compat.install()


def _speechlike(sr=16000, secs=1.0, channels=1, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(int(sr * secs)) / sr
    sig = 0.3 * np.sin(2 * np.pi * 220 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t))
    chans = [sig + 0.02 * rng.standard_normal(len(t)) * (c + 1) for c in range(channels)]
    return np.stack(chans, axis=1).astype("float32")  # (frames, channels)


@pytest.fixture
def stereo_wav(tmp_path):
    data = _speechlike(channels=2)
    path = tmp_path / "stereo.wav"
    sf.write(path, data, 16000, subtype="PCM_16")
    ref, _ = sf.read(path, dtype="float32", always_2d=True)
    return path, ref


def _sox(tmp_path, src, *effects, out_name="out.wav"):
    out = tmp_path / out_name
    subprocess.run(["sox", str(src), "-b", "32", "-e", "floating-point", str(out), *effects], check=True, capture_output=True)
    data, sr = sf.read(out, dtype="float32", always_2d=True)
    return torch.from_numpy(data.T.copy()), sr


def test_install_provides_removed_apis():
    assert torchaudio.set_audio_backend("sox_io") is None
    assert "torchaudio.sox_effects" in sys.modules
    from torchaudio.sox_effects import apply_effects_file, apply_effects_tensor  # noqa: F401

    s = pd.Series({"a": 1, "b": 2})
    assert list(s.iteritems()) == [("a", 1), ("b", 2)]
    compat.install()  # idempotent
    assert torchaudio.load is compat.load


def test_info_matches_soundfile(stereo_wav):
    path, ref = stereo_wav
    meta = torchaudio.info(str(path))
    assert (meta.sample_rate, meta.num_frames, meta.num_channels) == (16000, ref.shape[0], 2)
    assert (meta.bits_per_sample, meta.encoding) == (16, "PCM_S")


def test_load_channels_first_offsets_and_int(stereo_wav):
    path, ref = stereo_wav
    wav, sr = torchaudio.load(path)
    assert sr == 16000 and wav.dtype == torch.float32 and wav.shape == (2, ref.shape[0])
    np.testing.assert_array_equal(wav.numpy(), ref.T)
    part, _ = torchaudio.load(path, frame_offset=100, num_frames=50)
    np.testing.assert_array_equal(part.numpy(), ref[100:150].T)
    last, _ = torchaudio.load(path, frame_offset=ref.shape[0] - 10)
    assert last.shape == (2, 10)
    tf, _ = torchaudio.load(path, channels_first=False)
    assert tf.shape == (ref.shape[0], 2)
    raw, _ = torchaudio.load(path, normalize=False)
    assert raw.dtype == torch.int16
    np.testing.assert_array_equal(raw.numpy().astype("float32") / 32768.0, ref.T)


def test_save_roundtrip(tmp_path):
    wav = torch.from_numpy(_speechlike(channels=1).T.copy())
    torchaudio.save(tmp_path / "x.wav", wav, 16000)
    back, sr = torchaudio.load(tmp_path / "x.wav")
    assert sr == 16000 and back.shape == wav.shape
    assert torch.allclose(back, wav, atol=1 / 32768 + 1e-6)


@needs_sox
def test_channels_mixdown_matches_sox(stereo_wav, tmp_path):
    path, ref = stereo_wav
    ours, sr = compat.apply_effects_file(path, [["channels", "1"]])
    assert ours.shape == (1, ref.shape[0]) and sr == 16000
    assert torch.allclose(ours, torch.from_numpy(ref.T.mean(0, keepdims=True)), atol=1e-7)
    theirs, _ = _sox(tmp_path, path, "channels", "1")
    assert torch.allclose(ours, theirs, atol=2e-5)
    up, _ = compat.apply_effects_tensor(ours, sr, [["channels", "2"]])
    assert up.shape == (2, ref.shape[0]) and torch.equal(up[0], up[1])


@needs_sox
def test_rate_matches_torchaudio_and_sox(stereo_wav, tmp_path):
    path, _ = stereo_wav
    wav, sr = torchaudio.load(path)
    ours, new_sr = compat.apply_effects_tensor(wav, sr, [["rate", "8000"]])
    assert new_sr == 8000
    assert torch.equal(ours, AF.resample(wav, 16000, 8000))
    theirs, sox_sr = _sox(tmp_path, path, "rate", "8000")
    assert sox_sr == 8000 and theirs.shape == ours.shape
    # different filters, same band-limited signal: > 30 dB agreement away from the edges
    a, b = ours[:, 200:-200], theirs[:, 200:-200]
    snr = 10 * torch.log10(b.pow(2).sum() / (a - b).pow(2).sum())
    assert snr > 30, snr
    same, same_sr = compat.apply_effects_tensor(wav, sr, [["rate", "16000"]])
    assert same_sr == 16000 and torch.equal(same, wav)


@needs_sox
def test_gain_in_db_matches_sox(stereo_wav, tmp_path):
    path, _ = stereo_wav
    wav, sr = torchaudio.load(path)
    ours, _ = compat.apply_effects_tensor(wav, sr, [["gain", "-3.0"]])
    assert torch.allclose(ours, wav * 10 ** (-3 / 20), atol=1e-7)
    theirs, _ = _sox(tmp_path, path, "gain", "-3.0")
    assert torch.allclose(ours, theirs, atol=2e-5)
    peak, _ = compat.apply_effects_tensor(wav, sr, [["gain", "-n", "-1"]])
    assert abs(float(peak.abs().max()) - 10 ** (-1 / 20)) < 1e-6
    normed, _ = compat.apply_effects_tensor(wav, sr, [["norm"]])
    theirs, _ = _sox(tmp_path, path, "norm", out_name="norm.wav")
    assert abs(float(normed.abs().max()) - 1.0) < 1e-6
    assert torch.allclose(normed, theirs, atol=1e-4)


@needs_sox
def test_superb_chain_matches_sox(tmp_path):
    """KS/QbE's chain channels 1, rate 16000, gain -3 on a 22.05 kHz stereo file."""
    src = tmp_path / "in.wav"
    sf.write(src, _speechlike(sr=22050, channels=2), 22050, subtype="PCM_16")
    chain = [["channels", "1"], ["rate", "16000"], ["gain", "-3.0"]]
    ours, sr = compat.apply_effects_file(src, chain)
    theirs, sox_sr = _sox(tmp_path, src, "channels", "1", "rate", "16000", "gain", "-3.0")
    assert sr == sox_sr == 16000 and ours.shape == theirs.shape
    a, b = ours[:, 200:-200], theirs[:, 200:-200]
    assert 10 * torch.log10(b.pow(2).sum() / (a - b).pow(2).sum()) > 30


@needs_sox
def test_pad_trim_reverse_and_sox_fallback(tmp_path):
    wav = torch.from_numpy(_speechlike(secs=0.5).T.copy())
    padded, sr = compat.apply_effects_tensor(wav, 16000, [["pad", "0.1", "0.05"]])
    assert padded.shape[1] == wav.shape[1] + 1600 + 800 and torch.equal(padded[:, 1600:-800], wav)
    trimmed, _ = compat.apply_effects_tensor(wav, 16000, [["trim", "0.1", "0.2"]])
    assert torch.equal(trimmed, wav[:, 1600:4800])
    rev, _ = compat.apply_effects_tensor(wav, 16000, [["reverse"]])
    assert torch.equal(rev, wav.flip(-1))
    # ASV's silence removal is not reimplemented: it runs through sox itself
    quiet = torch.cat([torch.zeros(1, 8000), wav, torch.zeros(1, 8000)], dim=1)
    src = tmp_path / "quiet.wav"
    sf.write(src, quiet.t().numpy(), 16000, subtype="FLOAT")
    effect = ["silence", "1", "0.1", "0.1%", "-1", "0.1", "0.1%"]
    ours, _ = compat.apply_effects_tensor(quiet, 16000, [effect])
    theirs, _ = _sox(tmp_path, src, *effect)
    assert ours.shape == theirs.shape and ours.shape[1] < quiet.shape[1]
    assert torch.allclose(ours, theirs, atol=1e-6)


def test_bad_effect_is_reported():
    with pytest.raises(RuntimeError, match="nosuch"):
        compat.apply_effects_tensor(torch.zeros(1, 100), 16000, [["nosuch", "1"]])


@pytest.mark.slow
def test_librosa_load_shim_matches_librosa(tmp_path, monkeypatch):
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(Path(__file__).resolve().parents[1] / ".cache" / "numba"))
    import librosa

    path = tmp_path / "x.wav"
    sf.write(path, _speechlike(channels=2, secs=0.6), 16000, subtype="PCM_16")
    for kw in ({}, {"offset": 0.1, "duration": 0.25}, {"offset": 0.5}):
        ours, sr = compat.librosa_load(path, sr=16000, **kw)
        ref, ref_sr = librosa.load(path, sr=16000, **kw)
        assert sr == ref_sr == 16000 and ours.dtype == ref.dtype == np.float32
        np.testing.assert_allclose(ours, ref, atol=1e-7)
    ours, sr = compat.librosa_load(path, sr=8000)
    ref, _ = librosa.load(path, sr=8000)
    assert sr == 8000 and abs(len(ours) - len(ref)) <= 1
    n = min(len(ours), len(ref)) - 100
    assert 10 * np.log10((ref[100:n] ** 2).sum() / ((ours[100:n] - ref[100:n]) ** 2).sum()) > 30
