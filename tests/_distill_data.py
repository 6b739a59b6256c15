"""Real tiny inputs for the distill tests: espeak-ng speech in a LibriSpeech-like tree, a
manifest in the pipeline's format, and small random teachers in the checkpoint format."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pandas as pd
import soundfile as sf
import torch

from deepwide.models.arch import ArchConfig, build_model, conv_layers
from deepwide.models.checkpoint import save_checkpoint

SENTENCES = [
    "the quick brown fox jumps over the lazy dog",
    "speech models learn from unlabeled audio",
    "a small student can mimic a large teacher",
    "depth helps content and width helps speakers",
    "seven green apples fell from the tall tree",
    "please call stella and ask her to bring these things",
    "the rainbow is a division of white light into many beautiful colors",
    "when the sunlight strikes raindrops in the air they act as a prism",
]
VOICES = ["en-us", "en-gb", "en-us+f3", "en-us+m3"]

TEACHER_ARCH = dict(depth=3, width=64, ffn=128, heads=2, conv=conv_layers(32), pos_conv_kernel=16, pos_conv_groups=4)
STUDENT_DEFAULTS = {"conv_channels": 32, "pos_conv_kernel": 16, "pos_conv_groups": 4}


def make_corpus(root: Path, n: int = 16) -> Path:
    """n espeak-ng utterances (16 kHz FLAC) and their manifest; returns the manifest path."""
    rows = []
    audio = root / "audio"
    audio.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        text = SENTENCES[i % len(SENTENCES)]
        voice = VOICES[(i // len(SENTENCES)) % len(VOICES)]
        speed = 150 + 20 * (i % 3)
        raw = audio / f"{i:03d}.raw.wav"
        out = audio / f"{1000 + i % 4}-{i:04d}.flac"
        subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(raw), text], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        subprocess.run(["sox", str(raw), "-r", "16000", "-c", "1", str(out)], check=True)
        raw.unlink()
        info = sf.info(str(out))
        rows.append({"id": out.stem, "path": str(out.resolve()), "num_samples": int(info.frames), "sample_rate": 16000,
                     "split": "train-clean-100", "speaker": out.stem.split("-")[0], "text": text.upper(), "phones": ""})
    return write_manifest(root, "train-clean-100", rows)


def write_manifest(root: Path, split: str, rows: list[dict]) -> Path:
    """``rows`` as the LibriSpeech manifest of ``split`` under ``root``/manifests."""
    man = root / "manifests" / "librispeech" / f"{split}.parquet"
    man.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_parquet(man, index=False)
    return man


def make_teacher(path: Path, seed: int = 0, scale: float | None = None, nan: bool = False, **over) -> Path:
    torch.manual_seed(seed)
    arch = ArchConfig(**{**TEACHER_ARCH, **over})
    model = build_model(arch)
    with torch.no_grad():
        if scale is not None:
            for p in model.encoder.transformer.layers[-1].final_layer_norm.parameters():
                p.mul_(scale)  # post-LN output scaled: the last layer's values grow by `scale`
        if nan:
            model.encoder.transformer.layers[-1].final_layer_norm.weight[0] = float("nan")
    save_checkpoint(path, model, arch, {"source": "random test teacher"})
    return path


def corpus_and_teacher_fixtures(n: int):
    """Module-scoped ``corpus`` (``n`` utterances, one torch thread) and ``teacher`` fixtures;
    a test module binds them with ``corpus, teacher = corpus_and_teacher_fixtures(n)``."""
    import pytest

    @pytest.fixture(scope="module")
    def corpus(tmp_path_factory):
        torch.set_num_threads(1)
        return make_corpus(tmp_path_factory.mktemp("corpus"), n=n)

    @pytest.fixture(scope="module")
    def teacher(tmp_path_factory):
        return make_teacher(tmp_path_factory.mktemp("teacher") / "teacher.pt")

    return corpus, teacher
