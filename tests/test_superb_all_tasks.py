"""All ten SUPERB tasks through the pipeline's own rules, offline, at smoke size.

The smoke study (workflow/configs/smoke.yaml, whose superb section sizes every task) with
``superb.tasks`` set to all ten and FBANK as the upstream: Snakemake synthesizes every
corpus the tasks read (LibriMix mixed from the smoke LibriSpeech, SNIPS and QUESST14 by
TTS), prepares them (``corpus prepare-extra`` writes SD's Kaldi dirs), runs ``superb_run``
for the nine trained tasks and ``superb_qbe`` for QbE, with no git on PATH and an empty
HOME (s3prl's own SD scoring clones dscore from GitHub; ours scores offline). Every
result.json carries its metric, and SD's DER agrees with pyannote.metrics on its RTTMs.
"""

import json
import math
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import yaml

from sd_trees import offline_env

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
SMOKE = REPO / "workflow" / "configs" / "smoke.yaml"
TEN = ["asr", "pr", "sid", "ks", "ic", "er", "asv", "sd", "sf", "qbe"]
METRIC = {"asr": "wer", "pr": "per", "sid": "accuracy", "ks": "accuracy", "ic": "accuracy", "er": "accuracy",
          "asv": "EER", "sd": "der", "sf": "slot_type_f1", "qbe": "mtwv"}


def ten_task_config(tmp_path: Path) -> Path:
    cfg = yaml.safe_load(SMOKE.read_text())
    cfg["results"] = str(tmp_path / "results")
    cfg["superb"].update(tasks=TEN, teacher=False, students=False, fbank=True)
    path = tmp_path / "ten.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_ten_task_plan_builds_each_corpus_once(tmp_path):
    """Dry run: one synth and one prepare job per corpus, SD's data dir from LibriMix's
    prepare job, and a job per task for FBANK; no job for what no task reads."""
    from deepwide.plan import Study

    path = ten_task_config(tmp_path)
    study = Study.from_file(path)
    assert study.extra_corpora == ["librimix", "snips", "quesst14"]
    assert study.superb_task_root("sd") == (Path(study.sd_data_dir), True)
    targets = [study.superb_selected("fbank", t) for t in study.superb_tasks] + [study.qbe_result("fbank")]
    r = subprocess.run([SNAKEMAKE, *targets, "-n", "--cores", "1", "--snakefile", str(REPO / "Snakefile"),
                        "--directory", str(tmp_path), "--configfile", str(path)],
                       capture_output=True, text=True, timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert r.returncode == 0, r.stderr[-3000:] + r.stdout[-3000:]
    for corpus in ("librispeech", "voxceleb1", "speech_commands", "fluent_speech_commands", "iemocap",
                   "librimix", "snips", "quesst14"):
        assert r.stdout.count(f"rule synth_{corpus}:") == 1, corpus
    for corpus in ("librimix", "snips", "quesst14"):
        assert r.stdout.count(f"rule prepare_{corpus}:") == 1, corpus
    assert r.stdout.count("rule superb_run:") == 9 and r.stdout.count("rule superb_qbe:") == 1
    assert "rule teacher_pretrain:" not in r.stdout and "rule distill:" not in r.stdout


@pytest.mark.slow
def test_all_ten_tasks_run_offline_through_the_rules(tmp_path):
    from deepwide.plan import Study

    path = ten_task_config(tmp_path)
    study = Study.from_file(path)
    assert sorted(study.superb_tasks + ["qbe"]) == sorted(TEN) and study.qbe_enabled
    targets = [study.superb_selected("fbank", t) for t in study.superb_tasks] + [study.qbe_result("fbank")]
    env = offline_env(tmp_path)
    env["OMP_NUM_THREADS"] = "1"
    r = subprocess.run([SNAKEMAKE, *targets, "--cores", "2", "--snakefile", str(REPO / "Snakefile"),
                        "--directory", str(tmp_path), "--configfile", str(path)],
                       capture_output=True, text=True, timeout=1200, env=env)
    logs = sorted((tmp_path / "results" / "logs").rglob("*.log"))
    failed = [p for p in logs if "Traceback" in p.read_text(errors="replace")]
    assert r.returncode == 0, (r.stderr[-3000:], [(str(p), p.read_text(errors="replace")[-1500:]) for p in failed])

    runtimes = {}
    for task in TEN:
        res_path = (study.qbe_result("fbank") if task == "qbe"
                    else study.superb_result("fbank", task, study.superb_lrs(task)[0], 0))
        res = json.loads(Path(res_path).read_text())
        assert res["task"] == task and res["metric"] == METRIC[task], (task, res)
        assert math.isfinite(res["test_score"]) and math.isfinite(res["dev_score"]), (task, res)
        runtimes[task] = res.get("runtime_s")
        if task != "qbe":
            sel = json.loads(Path(study.superb_selected("fbank", task)).read_text())
            assert sel["test_score"] == res["test_score"], task
            # a tested head keeps only the checkpoint its result comes from, without optimizer state
            trains = [*Path(res["work_dir"]).glob("train"), *Path(res["work_dir"]).glob("fold*/train")]
            assert trains, task
            for train in trains:
                kept = sorted(p.name for p in train.iterdir() if p.name.startswith("step_") or p.name == "valid_best")
                assert kept == ([f"step_{res['best_step']}"] if task == "asv" else ["valid_best"]), (task, kept)
                assert not list(train.rglob("optimizer.pt")), task
    # SD: the best DER over s3prl's grid, and pyannote.metrics agrees on its RTTMs
    sd = json.loads(Path(study.superb_result("fbank", "sd", study.superb_lrs("sd")[0], 0)).read_text())
    tm = sd["folds"][0]["test_metrics"]
    assert 0.0 <= sd["test_score"] <= 100.0 and tm["missed"] + tm["false_alarm"] + tm["confusion"] == pytest.approx(sd["test_score"])
    pred = Path(study.superb_result("fbank", "sd", study.superb_lrs("sd")[0], 0)).parent / "predictions"
    scored = yaml.safe_load((pred / "der.yaml").read_text())
    assert sd["test_score"] == min(g["der"] for g in scored["grid"])
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
    assert 100 * abs(metric) == pytest.approx(sd["test_score"], abs=1e-6)
    # SF reports slot-value CER beside its slot-type F1
    sf = json.loads(Path(study.superb_result("fbank", "sf", study.superb_lrs("sf")[0], 0)).read_text())
    assert math.isfinite(sf["test_metrics"]["slot_value_cer"])

    # nothing fetched: no dscore clone; HOME holds only Snakemake's own cache and PulseAudio's
    # runtime folder (no s3prl, torch hub or Hugging Face downloads)
    assert not list(tmp_path.rglob("dscore"))
    home = Path(env["HOME"])
    kept = {p.relative_to(home).parts[:2] for p in home.rglob("*") if len(p.relative_to(home).parts) >= 2}
    assert kept <= {(".cache", "snakemake"), (".config", "pulse")}, sorted(home.rglob("*"))
    print("FBANK smoke runtimes (s):", runtimes)
