"""`plan cost`: GPU-hours per stage for paper.yaml, ours vs one SUPERB job per lr."""

import json

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
