"""`plan cost`: GPU-hours per stage for paper.yaml, ours vs one SUPERB job per lr."""

import json
from pathlib import Path

from deepwide.cli import main
from paper_placeholders import paper_config


def test_plan_cost_paper(tmp_path, capsys):
    cfg = paper_config(tmp_path)
    assert main(["plan", "cost", "--config", str(cfg), "--json", str(tmp_path / "cost.json")]) == 0
    out = capsys.readouterr().out
    assert "targets" in out and "distill" in out and "superb sid" in out and "H100" in out
    c = json.loads((tmp_path / "cost.json").read_text())
    st = {s["stage"]: s for s in c["stages"]}
    assert {"targets", "distill", *[f"superb {t}" for t in ("asr", "pr", "sid", "ks", "ic", "er", "asv", "sd", "sf")]} <= set(st)
    # SID tunes 4 lrs: one job per upstream instead of one per lr, and fewer GPU-hours
    assert st["superb sid"]["jobs_per_lr"] == 4 * st["superb sid"]["jobs"]
    assert st["superb sid"]["ours"] < st["superb sid"]["per_lr"] / 2
    # a single-lr task costs the same either way; targets/distill do not change
    assert st["superb ks"]["ours"] == st["superb ks"]["per_lr"]
    assert st["distill"]["ours"] == st["distill"]["per_lr"] > 0
    # paper.yaml runs both KD methods from an online teacher: no targets cache to build
    assert st["targets"]["jobs"] == 0 and st["targets"]["ours"] == 0
    # measured figures (the benchmark's JSON) replace the shipped ones
    fig = {"machine": "test box", "rows": [{"task": t, "upstream": "12x384", "reference": 100.0, "ours": 300.0} for t in ("pr", "sid", "ks")]}
    (tmp_path / "fig.json").write_text(json.dumps(fig))
    assert main(["plan", "cost", "--config", str(cfg), "--figures", str(tmp_path / "fig.json")]) == 0
    assert "test box" in capsys.readouterr().out


def test_plan_cost_unedited_paper_before_the_data_exists(repo_root, capsys):
    """The unedited paper.yaml (its /data roots and teacher checkpoint absent): the plan
    prints the bill and warns about each missing path; a run still refuses at parse time."""
    import pytest

    from deepwide.errors import DeepwideError
    from deepwide.plan import Study

    paper = repo_root / "workflow" / "configs" / "paper.yaml"
    if Path("/data/models/hubert_base_ls960.pt").exists():
        pytest.skip("this machine has paper.yaml's teacher checkpoint")
    assert main(["plan", "cost", "--config", str(paper)]) == 0
    cap = capsys.readouterr()
    assert "superb sid" in cap.out and "total" in cap.out
    assert "warning: config key teacher.import.path: /data/models/hubert_base_ls960.pt does not exist" in cap.err
    assert "assumes a 12-layer teacher" in cap.err
    assert "corpus.librispeech.root: folder /data/LibriSpeech does not exist" in cap.err
    assert "warning: superb.sid: dataset root /data/VoxCeleb1 does not exist" in cap.err
    study = Study.from_file(paper, plan=True)
    assert len(study.warnings) >= 3
    # what Snakemake builds its rules from (Study.from_config, not a plan) still stops
    full = Study.from_file(paper)
    with pytest.raises(DeepwideError, match="teacher.import.path"):
        full.teacher_depth
    with pytest.raises(DeepwideError, match="corpus.librispeech.root"):
        full.check_corpora()
