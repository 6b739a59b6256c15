"""Report: SUPERB's task families, the teacher-vs-FBANK guard and the depth-vs-width verdict."""

from __future__ import annotations

import json
import math
import zlib

import numpy as np
import pandas as pd
import pytest

from deepwide.cli import main
from deepwide.report import analysis, verdict
from deepwide.report.collect import collect
from deepwide.report.score import FAMILIES, FAMILY_OF, TASKS

import report_fixtures as fx

DEPTH_TASKS = {"PR", "ASR", "KS", "QbE", "IC", "SF"}  # content and semantics: better with depth here


def _noise(*key, sd=0.01):
    return sd * np.random.default_rng(zlib.crc32("/".join(map(str, key)).encode())).standard_normal()


def clear_trends(task, up, depth, width, seed, lr):
    """Content/semantics improve with depth, speaker/paralinguistics with width; small jitter."""
    if up == "fbank":
        q = 0.1
    elif up == "teacher":
        q = 0.9
    else:
        q = 0.3 + (0.1 * depth if task in DEPTH_TASKS else 0.006 * width)
    return float(q + _noise(task, up, seed))


def no_trend(task, up, depth, width, seed, lr):
    """Students: seed 0 says deeper is better, seed 1 wider, seed 2 nothing: the interval spans 0."""
    if up in ("fbank", "teacher"):
        return clear_trends(task, up, depth, width, seed, lr)
    return 0.5 + {0: 0.02, 1: -0.02, 2: 0.0}[seed] * depth


def _tables(tmp_path, quality, tasks=fx.TASKS, seeds=(0, 1, 2)):
    df, _, _ = collect(fx.write_results(tmp_path, fx.study_upstreams(), seeds=seeds, lrs=(1e-3,), tasks=tasks,
                                        quality=quality))
    best = analysis.best_lr(df)
    summary = analysis.model_summary(best)
    return df, best, summary


def test_families_are_superbs():
    assert FAMILIES == {"content": ["PR", "ASR", "KS", "QbE"], "speaker": ["SID", "ASV", "SD"],
                        "semantics": ["IC", "SF"], "paralinguistics": ["ER"]}
    assert FAMILY_OF["ER"] == "paralinguistics" and FAMILY_OF["KS"] == "content"
    assert sorted(FAMILY_OF) == sorted(TASKS)


def test_ten_tasks_scored_with_families(tmp_path):
    df, best, summary = _tables(tmp_path, clear_trends, tasks=fx.ALL_TASKS)
    assert set(df.loc[~df["published"], "key"]) == {"PR", "ASR", "KS", "QbE", "SID", "ASV", "SD", "IC", "SF_F1", "SF_CER", "ER"}
    g = analysis.guard(best)
    assert g["informative"].all(), g
    assert analysis.informative_tasks(g) == TASKS
    sc = analysis.scores(best, summary).set_index("model")
    # ten tasks at 100 each; SF is one task, the mean of its F1 and CER terms
    assert sc.loc["teacher", "normalised"] == pytest.approx(1000.0)
    assert sc.loc["teacher", "normalised_tasks"] == ",".join(TASKS)
    for f in FAMILIES:
        assert sc.loc["teacher", f"normalised_{f}"] == pytest.approx(100.0)
        assert sc.loc["fbank", f"normalised_{f}"] == pytest.approx(0.0, abs=1e-9)
    s = sc.loc["pred-4x32f64h2"]
    assert s["seeds"] == 3 and s["normalised_content_std"] > 0


def test_verdict_names_direction_when_ci_excludes_zero(tmp_path):
    _, best, summary = _tables(tmp_path, clear_trends, tasks=fx.ALL_TASKS)
    v = verdict.verdict_table(best, summary)
    assert list(v.columns[:9]) == ["method", "family", "contrast", "estimate", "ci_low", "ci_high", "n_seeds", "tasks",
                                   "verdict"]
    # two methods x (4 families + all) x two contrasts
    assert len(v) == 2 * 5 * 2
    v = v.set_index(["method", "family", "contrast"])
    for method in ("pred", "l2l"):
        for contrast in ("L=4 - L=1", "slope per depth doubling"):
            r = v.loc[(method, "content", contrast)]
            assert r["verdict"] == "deeper better" and r["ci_low"] > 0 and r["n_seeds"] == 3
            assert r["tasks"] == "PR,ASR,KS,QbE" and r["replicate"] == "distill seed"
            assert v.loc[(method, "semantics", contrast), "verdict"] == "deeper better"
            assert v.loc[(method, "speaker", contrast), "verdict"] == "wider better"
            assert v.loc[(method, "paralinguistics", contrast), "verdict"] == "wider better"
            assert v.loc[(method, "speaker", contrast), "ci_high"] < 0
    # content: PR, ASR, KS and QbE rise 0.1 per layer over teacher - FBANK = 0.8, i.e. 12.5 points per layer
    assert v.loc[("pred", "content", "L=4 - L=1"), "estimate"] == pytest.approx(3 * 12.5, abs=2.0)


def test_verdict_inconclusive_when_ci_spans_zero(tmp_path):
    _, best, summary = _tables(tmp_path, no_trend)
    v = verdict.verdict_table(best, summary)
    assert len(v) and (v.loc[v["tasks"] != "", "n_seeds"] == 3).all()
    spans = v[v["tasks"] != ""]
    assert ((spans["ci_low"] < 0) & (spans["ci_high"] > 0)).all()
    assert (v["verdict"] == "inconclusive").all()
    # the report text says so, from the verdicts
    lines = verdict.answer_lines(v)
    assert lines and all("**inconclusive**" in line or "no informative task" in line for line in lines)


def test_verdict_primitives():
    mean, lo, hi, n = verdict.t_interval([1.0, 2.0, 3.0])
    assert (mean, n) == (2.0, 3) and hi - mean == pytest.approx(4.302653 / math.sqrt(3), rel=1e-5)
    assert math.isnan(verdict.t_interval([1.0])[1])
    assert verdict.verdict_of(0.1, 2.0) == "deeper better"
    assert verdict.verdict_of(-2.0, -0.1) == "wider better"
    assert verdict.verdict_of(-0.1, 2.0) == "inconclusive"
    assert verdict.verdict_of(math.nan, math.nan) == "inconclusive"
    assert verdict.slope([1, 2, 4, 8], [0, 1, 2, 3]) == pytest.approx(1.0)


def test_guard_excludes_task_where_teacher_is_below_fbank(tmp_path):
    def sid_broken(task, up, depth, width, seed, lr):
        if task == "SID" and up == "teacher":
            return 0.05 + _noise(up, seed)  # below FBANK's 0.1
        return clear_trends(task, up, depth, width, seed, lr)

    _, best, summary = _tables(tmp_path, sid_broken)
    g = analysis.guard(best).set_index("key")
    assert not g.loc["SID", "informative"] and g.loc["SID", "reason"] == "teacher does not beat FBANK"
    assert g.loc["PR", "informative"] and g.loc["ER", "informative"]
    assert "SID" not in analysis.informative_tasks(g.reset_index())
    sc = analysis.scores(best, summary).set_index("model")
    assert sc.loc["teacher", "normalised_tasks"] == "PR,ASR,KS,IC,ER"
    assert sc.loc["teacher", "normalised"] == pytest.approx(500.0)
    assert math.isnan(sc.loc["teacher", "normalised_speaker"])
    v = verdict.verdict_table(best, summary).set_index(["method", "family", "contrast"])
    speaker = v.xs("speaker", level="family")
    assert (speaker["tasks"] == "").all() and (speaker["verdict"] == "inconclusive").all()
    assert "SID" not in v.loc[("pred", "all", "slope per depth doubling"), "tasks"]


def test_guard_needs_noise(tmp_path):
    # one seed, no test-set size: the noise is unknown, nothing is informative
    paths = fx.write_results(tmp_path / "a", fx.study_upstreams(), seeds=(0,), lrs=(1e-3,), quality=clear_trends)
    best = analysis.best_lr(collect(paths)[0])
    g = analysis.guard(best)
    assert not g["informative"].any() and (g["reason"] == "noise unknown (one seed and no test-set size)").all()
    # the test-set size gives a sampling error instead: large sets pass, tiny ones do not
    for n, expected in ((2000, True), (1, False)):  # gap 80 points; 2 SE = 85 points at n = 1
        for p in paths:
            obj = json.loads(p.read_text())
            p.write_text(json.dumps({**obj, "n_test": n}))
        g = analysis.guard(analysis.best_lr(collect(paths)[0])).set_index("key")
        assert bool(g.loc["SID", "informative"]) is expected
        assert g.loc["SID", "se"] == pytest.approx(100 * math.sqrt((0.9 * 0.1 + 0.1 * 0.9) / n), rel=0.1)


def test_error_rate_standard_error_over_utterances(tmp_path):
    """PER/WER's sampling error from per-utterance dumps: the ratio estimator's delta-method SE,
    checked against a bootstrap over utterances; the guard uses it instead of a binomial."""
    from deepwide.superb.runner import error_rate_se

    rng = np.random.default_rng(0)
    d = tmp_path / "evaluate" / "valid_best" / "test-clean"
    d.mkdir(parents=True)
    refs, hyps, e, m = [], [], [], []
    for i in range(80):
        ref = [f"p{k}" for k in rng.integers(0, 30, rng.integers(5, 40))]
        hyp = [t if rng.random() > 0.3 + 0.4 * (i % 3 == 0) else "x" for t in ref]  # substitutions only
        refs.append(f"u{i} {' '.join(ref)}")
        hyps.append(f"u{i} {' '.join(hyp)}")
        e.append(sum(a != b for a, b in zip(hyp, ref)))
        m.append(len(ref))
    (d / "ref").write_text("\n".join(refs) + "\n")
    (d / "hyp").write_text("\n".join(hyps) + "\n")
    er = error_rate_se(tmp_path)
    e, m = np.array(e), np.array(m)
    assert er["rate"] == pytest.approx(100 * e.sum() / m.sum()) and er["utterances"] == 80 and er["tokens"] == m.sum()
    boot = [100 * e[i].sum() / m[i].sum() for i in (rng.integers(0, 80, 80) for _ in range(4000))]
    assert er["se"] == pytest.approx(np.std(boot), rel=0.1)
    # far below the binomial over utterances, which treats each utterance as one Bernoulli trial
    assert er["se"] < 0.5 * 100 * math.sqrt(er["rate"] / 100 * (1 - er["rate"] / 100) / 80)
    (d / "hyp").unlink()
    with pytest.raises(Exception, match="no hyp file"):
        error_rate_se(tmp_path)
    assert error_rate_se(tmp_path / "nothing") is None


def test_guard_uses_the_measured_error_rate_se(tmp_path):
    paths = fx.write_results(tmp_path, fx.study_upstreams(), seeds=(0,), lrs=(1e-3,), quality=clear_trends)
    pr = [p for p in paths if p.parent.parent.name == "pr" and p.parent.parent.parent.name in ("teacher", "fbank")]
    for p in paths:  # one seed; binomial over one utterance: the 80-point gaps are within noise
        p.write_text(json.dumps({**json.loads(p.read_text()), "n_test": 1}))
    g = analysis.guard(analysis.best_lr(collect(paths)[0])).set_index("key")
    assert not g.loc["PR", "informative"]
    for p in pr:
        p.write_text(json.dumps({**json.loads(p.read_text()), "test_se": 1.5}))
    g = analysis.guard(analysis.best_lr(collect(paths)[0])).set_index("key")
    assert g.loc["PR", "informative"] and g.loc["PR", "se"] == pytest.approx(1.5 * math.sqrt(2))
    assert not g.loc["SID", "informative"]  # no test_se there: still binomial


def test_verdict_files_and_teacher_warning(tmp_path):
    results = fx.write_results(tmp_path, fx.study_upstreams(), seeds=(0, 1, 2), lrs=(1e-3,), tasks=fx.ALL_TASKS,
                               quality=clear_trends)
    out = tmp_path / "report"
    assert main(["report", "collect", "--results", *map(str, results), "--out", str(out / "results.parquet"),
                 "--layer-weights", str(out / "lw.parquet")]) == 0
    info = tmp_path / "teacher_info.json"
    info.write_text(json.dumps({"cka_first_last": 0.93}))
    assert main(["report", "tables", "--results", str(out / "results.parquet"), "--teacher-info", str(info),
                 "--out-dir", str(out / "t")]) == 0
    v = pd.read_csv(out / "t" / "verdict.csv")
    assert {"method", "family", "contrast", "estimate", "ci_low", "ci_high", "n_seeds", "tasks", "verdict"} <= set(v.columns)
    md = (out / "t" / "verdict.md").read_text()
    assert "## Answer" in md and "pred, content (PR,ASR,KS,QbE): **deeper better**" in md
    assert "pred, speaker (SID,ASV,SD): **wider better**" in md
    assert "linear CKA 0.93 > 0.8" in md
    assert "\\toprule" in (out / "t" / "verdict.tex").read_text()
    guard = pd.read_csv(out / "t" / "guard.csv")
    assert (guard["informative"] == "yes").all() and len(guard) == 11
    trend = (out / "t" / "trend.md").read_text()
    assert " ± " in trend and "verdict table" in trend
    # a teacher with hierarchy: no warning
    info.write_text(json.dumps({"cka_first_last": 0.5}))
    assert main(["report", "tables", "--results", str(out / "results.parquet"), "--teacher-info", str(info),
                 "--out-dir", str(out / "u")]) == 0
    assert "Warning" not in (out / "u" / "verdict.md").read_text()


def test_verdict_uses_only_tasks_every_seed_ran(tmp_path):
    """superb.replicate_tasks: later distillation seeds ran PR, KS and SID only. The verdict
    pairs those over three seeds; ASV, SD and the rest stay in the tables with one replicate
    and are named in the answer as left out."""
    results = fx.write_results(tmp_path, fx.study_upstreams(), seeds=(0, 1, 2), lrs=(1e-3,), tasks=fx.ALL_TASKS,
                               quality=clear_trends)
    kept = [p for p in results if "-seed0" in str(p) or p.parent.parent.name in ("pr", "ks", "sid")
            or not any(f"-seed{s}" in str(p) for s in (1, 2))]
    assert len(kept) < len(results)
    df, _, _ = collect(kept)
    best = analysis.best_lr(df)
    summary = analysis.model_summary(best)
    v = verdict.verdict_table(best, summary).set_index(["method", "family", "contrast"])
    for method in ("pred", "l2l"):
        r = v.loc[(method, "content", "slope per depth doubling")]
        assert r["tasks"] == "PR,KS" and r["n_seeds"] == 3 and r["verdict"] == "deeper better"
        r = v.loc[(method, "speaker", "slope per depth doubling")]
        assert r["tasks"] == "SID" and r["n_seeds"] == 3 and r["verdict"] == "wider better"
        assert (v.xs("semantics", level="family")["tasks"] == "").all()
    tables, _, notes = __import__("deepwide.report.tables", fromlist=["build_tables"]).build_tables(df)
    assert "left out of the verdict: ASR, QbE, ASV, SD, IC, SF, ER." in notes["verdict"]
    # the normalised score and family means pool only complete replicates (seed 0 here), never
    # a ten-task total with three-task ones
    sc = analysis.scores(best, summary).set_index("model")
    assert math.isnan(sc.loc["pred-4x32f64h2", "normalised_std"])
    assert math.isnan(sc.loc["pred-4x32f64h2", "normalised_semantics_std"])
    assert sc.loc["pred-4x32f64h2", "normalised"] > 400  # ten tasks' terms, not a mix with three-task totals
    # the one-replicate tasks are still in the results table, for seed 0's students
    assert {"ASV", "SD", "ER"} <= set(best.loc[best["model"].str.startswith("pred"), "key"])


# ---------------------------------------------------------------- held-out KD loss readout

def test_kd_loss_readout_per_teacher_layer(tmp_path):
    """A student that is the teacher, with identity l2l heads: L1 0 and cosine 1 on every layer;
    a random student does worse. Table and figure from the CLI."""
    import torch

    from deepwide.models.checkpoint import load_checkpoint, save_checkpoint

    manifest = fx.write_manifest(tmp_path, n=3)
    ckpts = fx.write_checkpoints(tmp_path)
    t = fx.TEACHER
    torch.manual_seed(0)
    teacher_model, _, _ = load_checkpoint(ckpts["teacher"])
    clone = tmp_path / "students" / "l2l" / t.name / "seed0" / "student.pt"
    save_checkpoint(clone, teacher_model, t, {"method": "l2l"})
    pairs = [(k, k) for k in range(1, t.depth + 1)]
    fx.write_kd_heads(clone, "l2l", pairs, t.width, t.width, identity=True)
    rand = ckpts["pred-2x48f96h2"]
    fx.write_kd_heads(rand, "pred", [(2, 2), (2, 4)], 48, t.width)
    out = tmp_path / "kd"
    opts = json.dumps({"utterances": 3})
    for up, ck in ((f"l2l-{t.name}-seed0", clone), ("pred-2x48f96h2-seed0", rand)):
        assert main(["report", "kdloss", "--teacher", str(ckpts["teacher"]), "--student", str(ck), "--upstream", up,
                     "--manifest", str(manifest), "--options", opts, "--out", str(out / f"{up}.parquet")]) == 0
    same = pd.read_parquet(out / f"l2l-{t.name}-seed0.parquet")
    assert list(same["teacher_layer"]) == [1, 2, 3, 4] and (same["utterances"] == 3).all()
    assert same["l1"].to_numpy() == pytest.approx(0.0, abs=1e-5)
    assert same["cos"].to_numpy() == pytest.approx(1.0, abs=1e-5)
    assert same["loss"].to_numpy() == pytest.approx(-math.log(1 / (1 + math.exp(-1.0))), abs=1e-4)
    other = pd.read_parquet(out / "pred-2x48f96h2-seed0.parquet")
    assert list(other["teacher_layer"]) == [2, 4] and (other["loss"] > same["loss"].max()).all()
    # table and figure
    results = fx.write_results(tmp_path, fx.study_upstreams(), seeds=(0, 1), lrs=(1e-3,))
    assert main(["report", "collect", "--results", *map(str, results), "--out", str(tmp_path / "r.parquet"),
                 "--layer-weights", str(tmp_path / "lw.parquet")]) == 0
    kd = [str(p) for p in sorted(out.glob("*.parquet"))]
    assert main(["report", "tables", "--results", str(tmp_path / "r.parquet"), "--kd-loss", *kd,
                 "--out-dir", str(tmp_path / "t")]) == 0
    table = pd.read_csv(tmp_path / "t" / "kd_loss.csv")
    assert len(table) == 4 + 2 and set(table.columns) >= {"model", "teacher layer", "L1", "cos", "loss"}
    assert main(["report", "figures", "--results", str(tmp_path / "r.parquet"), "--kd-loss", *kd,
                 "--options", json.dumps({"dpi": 50}), "--out-dir", str(tmp_path / "f")]) == 0
    assert (tmp_path / "f" / "kd_loss.png").stat().st_size > 1000
