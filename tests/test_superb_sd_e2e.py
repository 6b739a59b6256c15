"""SD end to end and offline: the corpus stage's LibriSpeech -> embedded Libri2Mix ->
prepare-extra's Kaldi dirs -> ``superb run --task sd`` with the FBANK upstream, every step
through the project CLI, with no git on PATH and an empty HOME (s3prl's own SD scoring
clones dscore from GitHub; ours scores offline). result.json carries the DER."""

import json
import math
import os
import shutil
import warnings
from pathlib import Path

import pytest
import yaml

from sd_trees import cli, small_librispeech, synth_librimix_cli

# tiny SD: a 32-unit LSTM head, 40 steps (s3prl SuperbSD otherwise: 512 units, 30k steps)
SD_TASK = {"lr": 0.01, "total_steps": 40, "eval_step": 20, "batch_size": 4, "gradient_accumulate": 1,
           "downstream": {"hidden_size": 32}}


def offline_env(tmp_path: Path) -> dict:
    """PATH with only the TTS and audio programs the corpus stage runs (no git), HOME empty."""
    bin_dir, home = tmp_path / "bin", tmp_path / "home"
    bin_dir.mkdir()
    home.mkdir()
    for prog in ("espeak-ng", "flite", "sox"):
        os.symlink(shutil.which(prog), bin_dir / prog)
    drop = ("HOME", "PATH", "XDG_CACHE_HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME", "NUMBA_CACHE_DIR", "HF_HOME", "TORCH_HOME")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(PATH=str(bin_dir), HOME=str(home))
    assert shutil.which("git", path=env["PATH"]) is None and shutil.which("python3", path=env["PATH"]) is None
    return env


@pytest.mark.slow
def test_sd_fbank_on_embedded_librimix_offline(tmp_path):
    from deepwide.study import Study

    env = offline_env(tmp_path)
    libri = small_librispeech(tmp_path / "corpora" / "LibriSpeech", env)
    mix = tmp_path / "corpora" / "librimix"
    summary = synth_librimix_cli(libri, mix, env)
    sd_dir = tmp_path / "superb" / "librimix" / "data"
    proc = cli(["corpus", "prepare-extra", "--corpus", "librimix", "--root", summary["root"],
                "--config-json", json.dumps({"rttm_dir": summary["rttm_dir"]}),
                "--out-dir", str(tmp_path / "manifests" / "librimix"), "--sd-data-dir", str(sd_dir)], env)
    counts = json.loads(proc.stdout.strip().splitlines()[-1])
    assert counts["train"] == 12 and counts["dev"] == 4 and counts["test"] == 4

    study = Study.from_config({"superb": {"device": "cpu", "num_workers": 0, "cache_mb": 256, "sd": {"root": str(sd_dir), **SD_TASK}}})
    out = tmp_path / "superb" / "fbank" / "sd" / "lr0.01" / "result.json"
    cli(["superb", "run", "--task", "sd", "--upstream-name", "fbank", "--upstream", "fbank", "--lr", "0.01",
         "--root", str(sd_dir), "--cfg", json.dumps(study.superb_identity("fbank", "sd", "0.01", 0)),
         "--exec-json", study.execution_json("superb"), "--cache", str(tmp_path / "superb" / "cache"),
         "--threads", "1", "--out", str(out)], env, timeout=600)

    res = json.loads(out.read_text())
    assert res["task"] == "sd" and res["metric"] == "der" and res["higher_is_better"] is False and res["unit"] == "%"
    assert res["layer_weights"] == [1.0] and res["best_step"] in (20, 40) and res["device"] == "cpu"
    der = res["test_score"]
    assert math.isfinite(der) and 0.0 <= der < 100.0 and math.isfinite(res["dev_score"])
    tm = res["folds"][0]["test_metrics"]
    assert tm["der"] == der and tm["collar"] == 0.0 and tm["skip_overlap"] is False
    assert tm["missed"] + tm["false_alarm"] + tm["confusion"] == pytest.approx(der)
    assert tm["threshold"] in (0.3, 0.4, 0.5, 0.6, 0.7) and tm["median_filter"] in (1, 11)

    # the reported DER is the best of s3prl's grid, and pyannote.metrics agrees on its RTTMs
    pred = out.parent / "predictions"
    scored = yaml.safe_load((pred / "der.yaml").read_text())
    assert len(scored["grid"]) == 10 and der == min(g["der"] for g in scored["grid"]) == scored["der"]
    pytest.importorskip("pyannote.metrics")
    from pyannote.database.util import load_rttm
    from pyannote.metrics.diarization import DiarizationErrorRate

    ref = load_rttm(scored["reference_rttm"])
    hyp = load_rttm(pred / "score" / "rttm" / f"threshold-{tm['threshold']:g}_median-{tm['median_filter']}.rttm")
    metric = DiarizationErrorRate(collar=0.0, skip_overlap=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for uri in ref:
            metric(ref[uri], hyp[uri])
    assert len(ref) == 4 and 100 * abs(metric) == pytest.approx(der, abs=1e-6)

    # nothing fetched: no dscore clone, nothing in HOME's caches
    assert not list(tmp_path.rglob("dscore"))
    assert not (Path(env["HOME"]) / ".cache" / "s3prl").exists()
    print(f"SD FBANK DER {der:.2f} % (threshold {tm['threshold']}, median {tm['median_filter']}), "
          f"frame DER {tm['frame_der']:.2f} %, job {res['runtime_s']:.1f} s; HOME: {sorted(p.name for p in Path(env['HOME']).rglob('*'))}")
