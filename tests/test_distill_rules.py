"""The targets and distill rules through real Snakemake runs: SIGKILL mid-training and a
rerun give the uninterrupted run's weights; only a job's own config slice reruns it; the
paper config lists every job on a tree of empty placeholder files."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from _distill_data import STUDENT_DEFAULTS, make_corpus, make_teacher

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
SMOKE = REPO / "workflow" / "configs" / "smoke.yaml"
PAPER = REPO / "workflow" / "configs" / "paper.yaml"
SHAPE = "2x32f64h2"


def snakemake(workdir: Path, configfile: Path, *args, targets=(), wait=True, timeout=600):
    env = dict(os.environ, PYTHONPATH=str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""),
               OMP_NUM_THREADS="1")
    cmd = [SNAKEMAKE, *targets, "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir), "--configfile",
           str(configfile), "--config", f"results={workdir / 'results'}", *args]
    if not wait:
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                                start_new_session=True)
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)


def study_config(tmp: Path, steps=120) -> Path:
    cfg = yaml.safe_load(SMOKE.read_text())
    cfg["distill"] = {
        "methods": ["pred", "l2l"],
        "students": {**STUDENT_DEFAULTS, "shapes": [{"depth": 2, "width": 32, "ffn": 64, "heads": 2}]},
        "init": "teacher_frontend", "frontend": "frozen",
        "targets": {"mode": "cached", "shard_seconds": 20},
        "train": {"steps": steps, "lr": 0.002, "batch_seconds": 8, "max_seconds": 2, "min_seconds": 0.5,
                  "checkpoint_every": 4, "log_every": 20, "num_workers": 0, "cpu_threads": 1},
    }
    path = tmp / "study.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """Manifest + audio and a teacher, made once and copied into each working directory."""
    root = tmp_path_factory.mktemp("shared")
    manifest = make_corpus(root, n=12)
    teacher = make_teacher(root / "teacher.pt")
    return manifest, teacher


def workdir(tmp: Path, inputs) -> Path:
    manifest, teacher = inputs
    res = tmp / "results"
    (res / "manifests" / "librispeech").mkdir(parents=True)
    (res / "teacher").mkdir(parents=True)
    shutil.copy(manifest, res / "manifests" / "librispeech" / "train-clean-100.parquet")
    shutil.copy(teacher, res / "teacher" / "teacher.pt")
    return tmp


def student_targets(wd, method):
    return [str(wd / "results" / "students" / method / SHAPE / "info.json")]


ONLY_OURS = ["--allowed-rules", "targets", "distill"]  # manifests and teacher are given


def _pid_of(pattern: str, timeout=120) -> int:
    t0 = time.time()
    while time.time() - t0 < timeout:
        for p in Path("/proc").iterdir():
            if p.name.isdigit():
                try:
                    cmd = (p / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                except OSError:
                    continue
                # the python trainer itself, not the shell Snakemake wraps it in
                if pattern in cmd and " -m deepwide distill train" in cmd and "python" in cmd.split(" ")[0]:
                    return int(p.name)
        time.sleep(0.1)
    raise AssertionError(f"no trainer process for {pattern}")


@pytest.mark.slow
def test_sigkill_then_rerun_gives_identical_weights_and_reruns_follow_config(tmp_path, inputs):
    a = workdir(tmp_path / "a", inputs)
    b = workdir(tmp_path / "b", inputs)
    cfg = study_config(tmp_path)

    # uninterrupted
    r = snakemake(a, cfg, "--cores", "1", *ONLY_OURS, targets=student_targets(a, "l2l") + student_targets(a, "pred"))
    assert r.returncode == 0, r.stderr[-3000:]
    info = json.loads((a / f"results/students/l2l/{SHAPE}/info.json").read_text())
    assert info["mode"] == "cached-targets+cached-frontend" and info["steps"] == 120
    assert (a / f"results/students/l2l/{SHAPE}/hf/config.json").is_file()
    assert (a / f"results/logs/distill/l2l/{SHAPE}.log").read_text().count("step 120/120") == 1

    # killed with SIGKILL after a checkpoint, then the same command again
    resume = b / f"results/resume/distill/l2l/{SHAPE}/state.pt"
    p = snakemake(b, cfg, "--cores", "1", *ONLY_OURS, targets=student_targets(b, "l2l"), wait=False)
    pid = _pid_of(str(b / "results" / "resume"))
    t0 = time.time()
    while not resume.exists():
        assert time.time() - t0 < 300 and p.poll() is None, p.communicate()
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    out, err = p.communicate(timeout=120)
    assert p.returncode != 0
    killed_at = torch.load(resume, weights_only=False)["step"]
    assert 4 <= killed_at < 120
    assert not (b / f"results/students/l2l/{SHAPE}/student.pt").exists()
    r = snakemake(b, cfg, "--cores", "1", *ONLY_OURS, targets=student_targets(b, "l2l"))
    assert r.returncode == 0, r.stderr[-3000:]
    log = (b / f"results/logs/distill/l2l/{SHAPE}.log").read_text()
    assert f"resumed from {resume} at step {killed_at} " in log  # not a restart from step 0

    wa = torch.load(a / f"results/students/l2l/{SHAPE}/student.pt", weights_only=False)["state_dict"]
    wb = torch.load(b / f"results/students/l2l/{SHAPE}/student.pt", weights_only=False)["state_dict"]
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k

    # nothing to do; then a change of l2l's settings reruns l2l only, of the trainer both
    targets_all = [*student_targets(a, "l2l"), *student_targets(a, "pred")]
    r = snakemake(a, cfg, "-n", "--cores", "1", *ONLY_OURS, targets=targets_all)
    assert "Nothing to be done" in r.stdout + r.stderr, r.stdout
    c = yaml.safe_load(cfg.read_text())
    c["distill"]["l2l"] = {"student_layers": [2]}
    changed = tmp_path / "l2l.yaml"
    changed.write_text(yaml.safe_dump(c))
    r = snakemake(a, changed, "-n", "--cores", "1", *ONLY_OURS, targets=targets_all)
    assert r.returncode == 0, r.stderr
    assert "method=l2l" in r.stdout and "method=pred" not in r.stdout
    c["distill"]["train"]["lr"] = 0.001
    changed.write_text(yaml.safe_dump(c))
    r = snakemake(a, changed, "-n", "--cores", "1", *ONLY_OURS, targets=targets_all)
    assert "method=l2l" in r.stdout and "method=pred" in r.stdout
    assert "rule targets" in r.stdout  # l2l's layer set changed: its cache is re-extracted


PLACEHOLDER_FILES = [
    # every file and folder the stages check before any job runs, in the real layouts
    *[f"LibriSpeech/{s}/19/198/19-198-0000.flac" for s in
      ("train-clean-100", "train-clean-360", "train-other-500", "dev-clean", "test-clean")],
    *[f"LibriSpeech/{s}/19/198/19-198.trans.txt" for s in
      ("train-clean-100", "train-clean-360", "train-other-500", "dev-clean", "test-clean")],
    "LibriSpeech/SPEAKERS.TXT",
    "superb/lexicon/librispeech-lexicon-200k-g2p.txt", "superb/lexicon/librispeech-lexicon-allothers-g2p.txt",
    "VoxCeleb1/dev/wav/id10001/1zcIwhmdeo4/00001.wav", "VoxCeleb1/test/wav/id10270/5r0dWxy17C8/00001.wav", "VoxCeleb1/iden_split.txt", "VoxCeleb1/voxceleb1_test_v2.txt",
    "speech_commands_v0.01/_background_noise_/white_noise.wav", "speech_commands_v0.01/yes/0a7c2a8d_nohash_0.wav",
    "speech_commands_test_set_v0.01/yes/0a7c2a8d_nohash_0.wav",
    *[f"fluent_speech_commands_dataset/data/{s}_data.csv" for s in ("train", "valid", "test")],
    "fluent_speech_commands_dataset/wavs/speakers/2BqVo8kVB2Skwgyb/0a3129c0-4474-11e9-a9a5-5dbec3b8816a.wav",
    *[f"IEMOCAP_full_release/Session{i}/dialog/EmoEvaluation/Ses0{i}F_impro01.txt" for i in range(1, 6)],
    *[f"IEMOCAP_full_release/Session{i}/sentences/wav/Ses0{i}F_impro01/Ses0{i}F_impro01_F000.wav" for i in range(1, 6)],
    *[f"superb/librimix/data/{s}/{f}" for s in ("train", "dev", "test") for f in ("wav.scp", "reco2dur", "segments", "utt2spk")],
    "superb/SNIPS/all.iob.snips.txt",
    *[f"quesst14Database/scoring/{f}" for f in ("language_key_utterances.lst", "language_key_dev.lst", "language_key_eval.lst")],
    *[f"quesst14Database/scoring/groundtruth_quesst14_{s}/quesst14.ecf.xml" for s in ("dev", "eval")],
    "models/hubert_base_ls960.pt",
]


def _placeholders(node, data: Path):
    """The config with every /data/... path moved under ``data`` (a tmp folder)."""
    if isinstance(node, dict):
        return {k: _placeholders(v, data) for k, v in node.items()}
    if isinstance(node, list):
        return [_placeholders(v, data) for v in node]
    if isinstance(node, str) and node.startswith("/data/"):
        return str(data / node[len("/data/"):])
    return node


@pytest.mark.slow
def test_paper_config_dry_run_lists_every_job(tmp_path):
    from deepwide.config import load_config
    from deepwide.distill.plan import study_plan

    data = tmp_path / "data"
    for rel in PLACEHOLDER_FILES:  # empty files: a dry run reads none of them
        (data / rel).parent.mkdir(parents=True, exist_ok=True)
        (data / rel).touch()
    cfg = _placeholders(yaml.safe_load(PAPER.read_text()), data)
    path = tmp_path / "paper.yaml"
    path.write_text(yaml.safe_dump(cfg))

    plan = study_plan(load_config(path))
    depths = sorted(a.depth for a in plan.students.values())
    assert depths == [2, 2, 3, 3, 4, 6, 8, 12, 16, 24]  # grid (12x384 is also 12-L Half) + 2x768, 3x768
    for name in ("2x768f3072h12", "3x768f3072h12", "12x384f1536h6"):
        assert name in plan.students
    from deepwide.models.solver import count_params

    assert count_params(plan.students["12x384f1536h6"]) == 26_872_960
    for a in plan.students.values():
        assert abs(count_params(a) - 26.87e6) / 26.87e6 < 0.25 or a.width == 768

    r = snakemake(tmp_path, path, "-n", "--cores", "1", "--quiet", "rules")
    assert r.returncode == 0, r.stderr[-3000:] + r.stdout[-3000:]
    r = snakemake(tmp_path, path, "-n", "--cores", "1")
    assert r.returncode == 0, r.stderr[-3000:] + r.stdout[-3000:]
    out = r.stdout
    for m, s in plan.jobs():
        assert f"results/students/{m}/{s}/info.json" in out, (m, s)
    assert out.count("rule distill:") == len(plan.jobs()) == 20
    assert out.count("rule targets:") == 1  # pred cached; l2l online (12 dense layers)
    # the stages before and after are in the same DAG: real-root manifests, the imported
    # teacher, and every student's SUPERB jobs
    for rule in ("prepare_librispeech", "teacher_import"):
        assert f"rule {rule}:" in out, rule
    for m, s in plan.jobs():
        assert f"results/superb/{m}-{s}/" in out, (m, s)
        assert f"results/superb/{m}-{s}/qbe/lr1/result.json" in out, (m, s)
    # QbE by DTW: one job per upstream (students, teacher, FBANK), on the QUESST14 root
    assert out.count("rule superb_qbe:") == len(plan.jobs()) + 2
