"""A killed study completes with the same `make` command, and one results folder serves one
study at a time (real Snakemake runs on the smoke study's corpus stage)."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from deepwide.errors import DeepwideError
from deepwide.runlock import LOCK_NAME, _alive, _proc_start, acquire_results_lock, release_results_lock

REPO = Path(__file__).resolve().parents[1]
VENV = Path(sys.executable).parent.parent
SMOKE = REPO / "workflow" / "configs" / "smoke.yaml"
MANIFEST = Path("manifests") / "librispeech" / "train-clean-100.parquet"


def _env():
    return dict(os.environ, PYTHONPATH=str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""),
                OMP_NUM_THREADS="1")


def _study(tmp_path: Path, results: Path) -> Path:
    cfg = yaml.safe_load(SMOKE.read_text())
    cfg["results"] = str(results)
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def make_study(workdir: Path, cfg: Path, target: Path, **kw):
    """The README's command (`make run` less the venv set-up: `make study`)."""
    cmd = ["make", "-C", str(REPO), "--no-print-directory", "study", f"VENV={VENV}", f"CONFIG={cfg}", f"WORKDIR={workdir}",
           "CORES=1", f"SNAKEMAKE_ARGS={target}"]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env(),
                            start_new_session=True, **kw)


@pytest.mark.slow
def test_killed_run_completes_with_the_same_command(tmp_path):
    wd = tmp_path / "wd"
    wd.mkdir()
    results = tmp_path / "results"
    cfg = _study(tmp_path, results)
    target = results / MANIFEST
    p = make_study(wd, cfg, target)
    t0 = time.time()
    incomplete = wd / ".snakemake" / "incomplete"
    while not (incomplete.is_dir() and any(incomplete.iterdir())):  # a job is running
        assert p.poll() is None, p.communicate()[0][-3000:]
        assert time.time() - t0 < 300
        time.sleep(0.2)
    os.killpg(p.pid, signal.SIGKILL)  # kill -9 of make, snakemake and the job
    p.wait()
    assert any((wd / ".snakemake" / "locks").glob("*.lock"))  # what made the plain rerun fail
    assert (results / LOCK_NAME).is_file()  # the study lock of a run that is gone
    p = make_study(wd, cfg, target)
    out = p.communicate(timeout=900)[0]
    assert p.returncode == 0, out[-4000:]
    assert "removed Snakemake's lock" in out and "removing the stale study lock" in out
    assert target.is_file()
    assert not (results / LOCK_NAME).exists()  # released at the end


def test_results_lock_refuses_a_live_holder_and_takes_over_a_dead_one(tmp_path):
    results = tmp_path / "results"
    # held by a live process (this host): refused, naming it
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        results.mkdir()
        stat = Path(f"/proc/{other.pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
        (results / LOCK_NAME).write_text(json.dumps({"pid": other.pid, "host": socket.gethostname(), "proc_start": stat,
                                                     "started": "t", "cwd": "/elsewhere"}))
        with pytest.raises(DeepwideError, match=rf"{results} is in use by another study: pid {other.pid}.*/elsewhere"):
            acquire_results_lock(results)
    finally:
        other.kill()
        other.wait()
    # the holder is gone: stale, taken over; released only by its holder
    acquire_results_lock(results)
    assert json.loads((results / LOCK_NAME).read_text())["pid"] == os.getpid()
    release_results_lock(results)
    assert not (results / LOCK_NAME).exists()
    # another host: cannot be checked, refused with the way out
    (results / LOCK_NAME).write_text(json.dumps({"pid": 1, "host": "elsewhere.example", "started": "t", "cwd": "/x"}))
    with pytest.raises(DeepwideError, match="another host.*remove"):
        acquire_results_lock(results)


@pytest.mark.slow
def test_second_clone_on_the_same_results_folder_is_refused(tmp_path):
    """Two working directories (two clones) whose configs name one absolute results folder:
    while the first runs, the second stops before any job, naming the first."""
    results = tmp_path / "results"
    cfg = _study(tmp_path, results)
    first, second = tmp_path / "clone1", tmp_path / "clone2"
    first.mkdir()
    second.mkdir()
    p = make_study(first, cfg, results / "teacher" / "teacher.pt")  # corpus and teacher: a minute
    t0 = time.time()
    while not (results / LOCK_NAME).is_file():
        assert p.poll() is None, p.communicate()[0][-3000:]
        assert time.time() - t0 < 300
        time.sleep(0.2)
    snake = subprocess.run([str(VENV / "bin" / "snakemake"), "--snakefile", str(REPO / "Snakefile"), "--directory",
                            str(second), "--configfile", str(cfg), "--cores", "1", str(results / "teacher" / "teacher.pt")],
                           capture_output=True, text=True, env=_env(), timeout=600)
    out = p.communicate(timeout=900)[0]
    assert p.returncode == 0, out[-4000:]
    assert snake.returncode != 0
    assert f"{results} is in use by another study" in snake.stdout + snake.stderr
    assert not list((second / ".snakemake").glob("locks/*.lock"))
    assert not (results / LOCK_NAME).exists()


def test_a_killed_holder_not_yet_reaped_is_not_alive():
    """A `kill -9`'d run is a zombie until its parent reaps it: its results lock is stale then
    already (the rerun right after a kill must not be refused)."""
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        time.sleep(0.2)
        start = _proc_start(p.pid)
        assert _alive(p.pid, start)
        os.kill(p.pid, signal.SIGKILL)
        deadline = time.time() + 10
        while Path(f"/proc/{p.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
            assert time.time() < deadline
            time.sleep(0.05)
        assert not _alive(p.pid, start)  # a zombie, not reaped yet
    finally:
        p.kill()
        p.wait()
    assert not _alive(p.pid, start)
