"""The corpus rules through real Snakemake runs in a temporary working directory."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
SMOKE = REPO / "workflow" / "configs" / "smoke.yaml"
CORPORA = ("librispeech", "voxceleb1", "speech_commands", "fluent_speech_commands", "iemocap")
# the corpus stage only: later stages (teacher, distillation, SUPERB) have tests of their own
CORPUS_RULES = [f"prepare_{name}" for name in CORPORA]


def snakemake(workdir: Path, *args, configfile=SMOKE, timeout=300):
    env = dict(os.environ, PYTHONPATH=str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run(
        [SNAKEMAKE, "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir), "--configfile", str(configfile),
         "--config", f"results={workdir / 'results'}", *args],
        capture_output=True, text=True, env=env, timeout=timeout,
    )


def refused_at_parse(workdir: Path, cfg: dict) -> str:
    """Dry-run ``cfg``: it must fail before any job is planned; returns what Snakemake printed."""
    bad = workdir / "bad.yaml"
    bad.write_text(yaml.safe_dump(cfg))
    res = snakemake(workdir, "-n", "--cores", "1", configfile=bad)
    assert res.returncode != 0 and "Job stats" not in res.stdout
    return res.stderr + res.stdout


@pytest.mark.slow
def test_smoke_run_then_nothing_to_do(tmp_path):
    dry = snakemake(tmp_path, "-n", "--cores", "2", *CORPUS_RULES)
    assert dry.returncode == 0, dry.stderr + dry.stdout
    for name in CORPORA:
        assert f"synth_{name}" in dry.stdout and f"prepare_{name}" in dry.stdout

    run = snakemake(tmp_path, "--cores", "2", *CORPUS_RULES)
    assert run.returncode == 0, run.stderr[-3000:]
    results = tmp_path / "results"
    for split in ("train-clean-100", "dev-clean", "test-clean"):
        df = pd.read_parquet(results / "manifests" / "librispeech" / f"{split}.parquet")
        assert len(df) > 0 and Path(df["path"][0]).is_file()
    assert len(pd.read_parquet(results / "manifests" / "iemocap" / "Session5.parquet")) > 0
    assert (results / "logs" / "corpus" / "synth_librispeech.log").stat().st_size > 0
    assert not list((results / "corpora").glob(".*.tmp"))  # atomic: no temporary trees left

    again = snakemake(tmp_path, "-n", "--cores", "2", *CORPUS_RULES)
    assert again.returncode == 0
    assert "Nothing to be done" in again.stdout + again.stderr

    # a changed corpus config reruns that corpus only
    cfg = yaml.safe_load(SMOKE.read_text())
    cfg["corpus"]["iemocap"]["synth"]["utts_per_dialog"] = 8
    changed = tmp_path / "changed.yaml"
    changed.write_text(yaml.safe_dump(cfg))
    dry = snakemake(tmp_path, "-n", "--cores", "2", *CORPUS_RULES, configfile=changed)
    planned = set(re.findall(r"^rule (\w+):", dry.stdout, re.M))
    assert planned == {"synth_iemocap", "prepare_iemocap"}, planned


def test_real_root_replaces_synthesis_and_missing_root_fails_at_parse(tmp_path):
    real = tmp_path / "IEMOCAP_full_release"
    for i in range(1, 6):  # the layout prepare_iemocap reads (an empty root is refused at parse)
        (real / f"Session{i}" / "sentences" / "wav").mkdir(parents=True)
    cfg = yaml.safe_load(SMOKE.read_text())
    cfg["corpus"]["iemocap"]["root"] = str(real)
    cfg["corpus"]["speech_commands"]["enabled"] = False
    cfg["superb"]["tasks"] = []  # SUPERB KS would need the disabled corpus (and says so)
    good = tmp_path / "real.yaml"
    good.write_text(yaml.safe_dump(cfg))
    dry = snakemake(tmp_path, "-n", "--cores", "1", configfile=good)
    assert dry.returncode == 0, dry.stderr
    assert "prepare_iemocap" in dry.stdout and "synth_iemocap" not in dry.stdout
    assert not re.search(r"(?<![a-z_])(synth|prepare)_speech_commands", dry.stdout)
    assert "synth_librispeech" in dry.stdout

    cfg["corpus"]["voxceleb1"]["root"] = str(tmp_path / "no_such_voxceleb")
    out = refused_at_parse(tmp_path, cfg)
    assert f"corpus.voxceleb1.root: folder {tmp_path / 'no_such_voxceleb'} does not exist" in out

    cfg["corpus"]["voxceleb1"]["root"] = None
    cfg["corpus"]["voxceleb1"]["synth"]["speakerz"] = 3
    assert "corpus.voxceleb1.synth.speakerz: unknown key" in refused_at_parse(tmp_path, cfg)


def test_bad_teacher_shape_and_roots_without_their_layout_fail_at_parse(tmp_path):
    """Rejected before any job is planned (they failed inside teacher_pretrain after the
    corpus synthesis, and inside prepare_librispeech)."""
    cfg = yaml.safe_load(SMOKE.read_text())
    cfg["teacher"].setdefault("pretrain", {})["arch"] = {"depth": 1, "width": 32, "ffn": 32, "heads": 3}
    assert "teacher.pretrain.arch: architecture: heads (3) must divide width (32)" in refused_at_parse(tmp_path, cfg)

    cfg = yaml.safe_load(SMOKE.read_text())
    empty = tmp_path / "LibriSpeech"
    empty.mkdir()
    (empty / "dev-clean").mkdir()
    cfg["corpus"]["librispeech"]["root"] = str(empty)
    iemocap = tmp_path / "IEMOCAP"
    (iemocap / "Session1").mkdir(parents=True)
    cfg["corpus"]["iemocap"]["root"] = str(iemocap)
    out = refused_at_parse(tmp_path, cfg)
    assert f"corpus.librispeech.root: {empty} lacks the librispeech layout: no train-clean-100/, test-clean/" in out
    assert f"corpus.iemocap.root: {iemocap} lacks the iemocap layout: no Session1/sentences/wav/, Session2/sentences/wav/" in out
