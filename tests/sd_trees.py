"""A small synthesized LibriSpeech and the embedded Libri2Mix mixed from it, built through
the project CLI (``corpus synth --corpus librispeech``, ``corpus synth-librimix``) the way
the pipeline builds them, with sizes the SD tests share."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# 4 train, 2 dev and 2 test speakers x 6 utterances; 12 / 4 / 4 mixtures of them
LIBRISPEECH_SECTION = {"synth": {"train_speakers": 4, "dev_speakers": 2, "test_speakers": 2, "chapters_per_speaker": 1,
                                 "utts_per_chapter": 6, "min_words": 4, "max_words": 8}}
LIBRIMIX_SECTION = {"synth": {"train_mixtures": 12, "dev_mixtures": 4, "test_mixtures": 4}}


def cli(args: list[str], env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    """``python -m deepwide ARGS`` in a subprocess; fails the test with its stderr."""
    env = dict(os.environ if env is None else env)
    env["PYTHONPATH"] = str(REPO / "src") + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run([sys.executable, "-m", "deepwide", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"deepwide {' '.join(args[:2])} failed:\n{proc.stderr[-4000:]}"
    return proc


def small_librispeech(out: Path, env: dict | None = None, seed: int = 0) -> Path:
    cli(["corpus", "synth", "--corpus", "librispeech", "--config-json", json.dumps(LIBRISPEECH_SECTION),
         "--tts-json", json.dumps({"vocab_size": 200}), "--seed", str(seed), "--out", str(out), "--jobs", "2", "--no-progress"], env)
    return out


def synth_librimix_cli(librispeech: Path, out: Path, env: dict | None = None, seed: int = 0, section: dict | None = None) -> dict:
    proc = cli(["corpus", "synth-librimix", "--librispeech", str(librispeech), "--out", str(out), "--seed", str(seed),
                "--config-json", json.dumps(section or LIBRIMIX_SECTION)], env)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def offline_env(tmp_path: Path) -> dict:
    """PATH with only a shell, ``which`` (Snakemake looks programs up with it) and the TTS
    and audio programs the corpus stage runs (no git, no python), HOME empty: s3prl's own SD
    scoring would clone dscore from GitHub here."""
    bin_dir, home = tmp_path / "bin", tmp_path / "home"
    bin_dir.mkdir()
    home.mkdir()
    for prog in ("bash", "sh", "which", "espeak-ng", "flite", "sox"):
        os.symlink(shutil.which(prog), bin_dir / prog)
    drop = ("HOME", "PATH", "XDG_CACHE_HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME", "NUMBA_CACHE_DIR", "HF_HOME", "TORCH_HOME")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(PATH=str(bin_dir), HOME=str(home))
    assert shutil.which("git", path=env["PATH"]) is None and shutil.which("python3", path=env["PATH"]) is None
    return env
