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
import verdict_sim  # noqa: F401  (the calibration tests import it by name)

DEPTH_TASKS = {"PR", "ASR", "KS", "QbE", "IC", "SF"}  # content and semantics: better with depth here


def _noise(*key, sd=0.01):
    return sd * np.random.default_rng(zlib.crc32("/".join(map(str, key)).encode())).standard_normal()


def clear_trends(task, up, depth, width, seed, lr):
    """Content/semantics improve with depth, speaker/paralinguistics with width; small jitter."""
    return float(fx.trend_quality(up, depth, width, task in DEPTH_TASKS) + _noise(task, up, seed))


def no_trend(task, up, depth, width, seed, lr):
    """Students: seed 0 says deeper is better, seed 1 wider, seed 2 nothing: the interval spans 0."""
    if up in ("fbank", "teacher"):
        return clear_trends(task, up, depth, width, seed, lr)
    return 0.5 + {0: 0.02, 1: -0.02, 2: 0.0}[seed] * depth


def _tables(tmp_path, quality, tasks=fx.TASKS, seeds=(0, 1, 2)):
    results = fx.write_results(tmp_path, fx.study_upstreams(), seeds=seeds, lrs=(1e-3,), tasks=tasks, quality=quality)
    df, _, _ = collect(results, fx.infos(results))
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
    g = analysis.guard(best).set_index("key")
    # QbE's MTWV has no test-item noise model here: its noise is not all known, so it carries no claim
    assert not g.loc["QbE", "informative"] and "test-item noise unknown" in g.loc["QbE", "reason"]
    assert g.drop(index="QbE")["informative"].all(), g
    tasks = [t for t in TASKS if t != "QbE"]
    assert analysis.informative_tasks(g.reset_index()) == tasks
    sc = analysis.scores(best, summary).set_index("model")
    # nine tasks at 100 each; SF is one task, the mean of its F1 and CER terms
    assert sc.loc["teacher", "normalised"] == pytest.approx(900.0)
    assert sc.loc["teacher", "normalised_tasks"] == ",".join(tasks)
    for f in FAMILIES:
        assert sc.loc["teacher", f"normalised_{f}"] == pytest.approx(100.0)
        assert sc.loc["fbank", f"normalised_{f}"] == pytest.approx(0.0, abs=1e-9)
    s = sc.loc["pred-4x32f64h2"]
    assert s["seeds"] == 3 and s["normalised_content_std"] > 0


def _rows(v):
    return v.set_index(["method", "role", "family", "tasks"])


def test_verdict_leads_with_the_interaction_and_names_directions(tmp_path):
    _, best, summary = _tables(tmp_path, clear_trends, tasks=fx.ALL_TASKS)
    v = verdict.verdict_table(best, summary)
    assert list(v.columns[:10]) == ["method", "family", "contrast", "estimate", "ci_low", "ci_high", "n_seeds", "tasks",
                                    "verdict", "replicate"]
    assert {"role", "unit", "se", "se_seeds", "se_items", "df", "p", "p_holm", "mdd"} <= set(v.columns)
    # per method: the primary interaction, families with two or more tasks, every task (QbE not informative)
    per_method = 1 + 3 + 9  # content (PR,ASR,KS), speaker (SID,ASV,SD), semantics (IC,SF); paralinguistics: ER alone
    assert len(v) == 2 * per_method and list(v["role"].iloc[:1]) == ["primary"]
    r = _rows(v)
    for method in ("pred", "l2l"):
        p = r.loc[(method, "primary", "content - speaker", "PR,ASR,KS,SID,ASV,SD")]
        assert p["verdict"] == "depth helps content more than speaker" and p["ci_low"] > 0 and p["n_seeds"] == 3
        assert p["replicate"] == "distill seed" and p["unit"] == "normalised points"
        c = r.loc[(method, "secondary", "content", "PR,ASR,KS")]
        assert c["verdict"] == "deeper better" and c["contrast"] == "L=4 - L=1"
        assert r.loc[(method, "secondary", "speaker", "SID,ASV,SD"), "verdict"] == "wider better"
        assert r.loc[(method, "secondary", "semantics", "IC,SF"), "verdict"] == "deeper better"
        assert r.loc[(method, "secondary", "paralinguistics", "ER"), "verdict"] == "wider better"
        # a task row is in its own metric: PER falls with depth, and that is "deeper better"
        pr = r.loc[(method, "secondary", "content", "PR")]
        assert pr["unit"] == "PER" and pr["estimate"] < 0 and pr["verdict"] == "deeper better"
        assert pr["estimate"] == pytest.approx(-30.0, abs=2.0)  # 0.1 per layer x 3 layers
    # content: PR, ASR, KS rise 0.1 per layer over teacher - FBANK = 0.8, i.e. 12.5 points per layer
    assert r.loc[("pred", "secondary", "content", "PR,ASR,KS"), "estimate"] == pytest.approx(3 * 12.5, abs=2.0)
    # Holm over every row: adjusted p never below the raw one, detection limits at alpha / rows
    assert (v["p_holm"] >= v["p"]).all() and np.allclose(v["alpha_row"], 0.05 / len(v))
    assert (v["mdd"] > 0).all()


def test_verdict_inconclusive_when_ci_spans_zero(tmp_path):
    _, best, summary = _tables(tmp_path, no_trend)
    v = verdict.verdict_table(best, summary)
    assert len(v) and (v["n_seeds"] == 3).all()
    assert ((v["ci_low"] < 0) & (v["ci_high"] > 0)).all()
    assert (v["verdict"] == "inconclusive").all()
    # the report text says so, from the verdicts, with the detection limit
    lines = verdict.answer_lines(v)
    stated = [line for line in lines if line.startswith("- ")]
    assert stated and all("**inconclusive: no effect larger than ±" in line for line in stated)
    assert lines[0].startswith("**Primary test")


def test_verdict_primitives():
    from deepwide.report import inference

    assert verdict.verdict_of(0.1, 2.0) == "deeper better"
    assert verdict.verdict_of(-2.0, -0.1) == "wider better"
    assert verdict.verdict_of(-0.1, 2.0) == "inconclusive"
    assert verdict.verdict_of(math.nan, math.nan) == "inconclusive"
    # Holm: sorted p times (m - rank), running maximum, NaN left out of the family
    assert inference.holm([0.01, 0.04, math.nan, 0.03]) == pytest.approx([0.03, 0.06, math.nan, 0.06], nan_ok=True)
    e = inference.Estimate(2.0, 1.0, 1.0, 0.0, 10.0)
    lo, hi = e.interval()
    assert hi - 2.0 == pytest.approx(2.228139, rel=1e-5) and e.p_value() == pytest.approx(0.0734, abs=1e-3)
    assert e.detection_limit(0.05, 0.8) == pytest.approx(2.228139 + 0.879058, rel=1e-4)


def test_interval_adds_seed_and_paired_item_variance():
    """Two models on the same 400 items: the seed part is the replicate variance over R, the
    item part the paired difference's (not the sum of both models' sampling variances)."""
    from deepwide.report import inference

    rng = np.random.default_rng(0)
    n, r = 400, 5
    difficulty = rng.random(n) < 0.5
    cells = {}
    for m, flip in (("a", 0.05), ("b", 0.10)):
        v = np.array([np.where(rng.random(n) < flip, ~difficulty, difficulty) for _ in range(r)], float)
        cells[("SID", m)] = inference.Cell("SID", m, 100 * v.mean(axis=1), v, np.ones(n), tuple(range(n)))
    e = inference.contrast(cells, {("SID", "a"): 1.0, ("SID", "b"): -1.0})
    seeds = cells[("SID", "a")].rep_var() / r + cells[("SID", "b")].rep_var() / r
    assert e.se_seeds ** 2 == pytest.approx(seeds)
    assert e.se ** 2 == pytest.approx(e.se_seeds ** 2 + e.se_items ** 2)
    unpaired = 2 * 100 ** 2 * 0.25 / n
    assert e.se_items ** 2 < 0.5 * unpaired  # shared difficulty cancels


def test_guard_adds_variances(tmp_path):
    """The guard's SE is sqrt(seed variance + test-item variance), not the larger of the two."""
    paths = fx.write_results(tmp_path, fx.study_upstreams(), seeds=(0, 1, 2), lrs=(1e-3,), quality=clear_trends,
                             n_test=100)
    best = analysis.best_lr(collect(paths, fx.infos(paths))[0])
    g = analysis.guard(best).set_index("key")
    sid = best[(best["key"] == "SID") & best["model"].isin(["teacher", "fbank"])]
    seeds = sum(sid[sid["model"] == m]["test"].var(ddof=1) / 3 for m in ("teacher", "fbank"))
    p_t, p_f = (sid[sid["model"] == m]["test"].mean() / 100 for m in ("teacher", "fbank"))
    items = 100 ** 2 * (p_t * (1 - p_t) + p_f * (1 - p_f)) / 100
    assert g.loc["SID", "se_seeds"] ** 2 == pytest.approx(seeds)
    assert g.loc["SID", "se_items"] ** 2 == pytest.approx(items)
    assert g.loc["SID", "se"] ** 2 == pytest.approx(seeds + items)
    assert g.loc["SID", "se"] > max(g.loc["SID", "se_seeds"], g.loc["SID", "se_items"])


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
    v = verdict.verdict_table(best, summary)
    assert "SID" not in ",".join(v["tasks"]) and not (v["role"] == "primary").any()  # no speaker task: no primary test
    assert "no primary test" in "\n".join(verdict.answer_lines(v))


def test_guard_needs_noise(tmp_path):
    # one seed everywhere: the seed noise is unknown, so nothing is informative, however large
    # the test set
    paths = fx.write_results(tmp_path / "a", fx.study_upstreams(), seeds=(0,), lrs=(1e-3,), quality=clear_trends)
    g = analysis.guard(analysis.best_lr(collect(paths, fx.infos(paths))[0]))
    assert not g["informative"].any() and g["reason"].str.contains("seed noise unknown").all()
    # two seeds and no test-set size: the test-item noise is unknown
    paths = fx.write_results(tmp_path / "b", fx.study_upstreams(), seeds=(0, 1), lrs=(1e-3,), quality=clear_trends,
                             n_test=None)
    g = analysis.guard(analysis.best_lr(collect(paths, fx.infos(paths))[0]))
    assert not g["informative"].any() and g["reason"].str.contains("test-item noise unknown").all()
    # with the test-set size: large sets pass, tiny ones do not
    for n, expected in ((2000, True), (1, False)):  # gap 80 points; 2 SE > 85 points at n = 1
        for p in paths:
            obj = json.loads(p.read_text())
            p.write_text(json.dumps({**obj, "n_test": n}))
        g = analysis.guard(analysis.best_lr(collect(paths, fx.infos(paths))[0])).set_index("key")
        assert bool(g.loc["SID", "informative"]) is expected
        assert g.loc["SID", "se_items"] == pytest.approx(100 * math.sqrt((0.9 * 0.1 + 0.1 * 0.9) / n), rel=0.1)


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
    paths = fx.write_results(tmp_path, fx.study_upstreams(), seeds=(0, 1), lrs=(1e-3,), quality=clear_trends, n_test=1)
    pr = [p for p in paths if "pr" in p.parts and ("teacher" in p.parts or "fbank" in p.parts)]
    assert len(pr) == 4
    g = analysis.guard(analysis.best_lr(collect(paths, fx.infos(paths))[0])).set_index("key")
    assert not g.loc["PR", "informative"]  # binomial over one utterance: the 80-point gaps are within noise
    for p in pr:
        p.write_text(json.dumps({**json.loads(p.read_text()), "test_se": 1.5}))
    g = analysis.guard(analysis.best_lr(collect(paths, fx.infos(paths))[0])).set_index("key")
    assert g.loc["PR", "informative"] and g.loc["PR", "se_items"] == pytest.approx(1.5 * math.sqrt(2))
    assert not g.loc["SID", "informative"]  # no test_se there: still binomial


def test_verdict_files_and_teacher_warning(tmp_path):
    results = fx.write_results(tmp_path, fx.study_upstreams(), seeds=(0, 1, 2), lrs=(1e-3,), tasks=fx.ALL_TASKS,
                               quality=clear_trends)
    out = tmp_path / "report"
    assert main(["report", "collect", "--results", *map(str, results), "--infos", *map(str, fx.infos(results)),
                 "--out", str(out / "results.parquet"),
                 "--layer-weights", str(out / "lw.parquet"), "--items", str(out / "items.parquet")]) == 0
    assert len(pd.read_parquet(out / "items.parquet")) == 0  # the fixture keeps no per-utterance dumps
    info = tmp_path / "teacher_info.json"
    info.write_text(json.dumps({"cka_first_last": 0.93}))
    assert main(["report", "tables", "--results", str(out / "results.parquet"), "--teacher-info", str(info),
                 "--items", str(out / "items.parquet"), "--out-dir", str(out / "t")]) == 0
    v = pd.read_csv(out / "t" / "verdict.csv")
    assert {"method", "family", "contrast", "estimate", "ci_low", "ci_high", "n_seeds", "tasks", "verdict"} <= set(v.columns)
    md = (out / "t" / "verdict.md").read_text()
    answer = md[md.index("## Answer"):]
    assert answer.index("**Primary test") < answer.index("Secondary rows")
    assert "- pred (PR,ASR,KS,SID,ASV,SD): **depth helps content more than speaker**" in md
    assert "- pred, content (PR,ASR,KS): **deeper better**" in md
    assert "- pred, speaker (SID,ASV,SD): **wider better**" in md
    assert "detection limit ±" in md and "Holm p = " in md and "conditional on this study's one teacher" in md
    assert "linear CKA 0.93 > 0.8" in md
    assert "\\toprule" in (out / "t" / "verdict.tex").read_text()
    guard = pd.read_csv(out / "t" / "guard.csv")
    assert len(guard) == 11 and (guard.loc[~guard["task"].str.startswith("QbE"), "informative"] == "yes").all()
    assert {"SE (seeds)", "SE (test items)"} <= set(guard.columns)
    # a teacher with hierarchy: no warning
    info.write_text(json.dumps({"cka_first_last": 0.5}))
    assert main(["report", "tables", "--results", str(out / "results.parquet"), "--teacher-info", str(info),
                 "--out-dir", str(out / "u")]) == 0
    assert "Warning" not in (out / "u" / "verdict.md").read_text()


def test_verdict_uses_only_tasks_every_seed_ran(tmp_path):
    """superb.replicate_tasks: later distillation seeds ran PR, KS and SID only. The verdict
    uses those over three seeds; ASV, SD and the rest stay in the tables with one replicate
    and are named in the answer as left out."""
    results = fx.write_results(tmp_path, fx.study_upstreams(), seeds=(0, 1, 2), lrs=(1e-3,), tasks=fx.ALL_TASKS,
                               quality=clear_trends)
    kept = [p for p in results if "-seed0" in str(p) or p.parent.parent.name in ("pr", "ks", "sid")
            or not any(f"-seed{s}" in str(p) for s in (1, 2))]
    assert len(kept) < len(results)
    df, _, _ = collect(kept, fx.infos(kept))
    best = analysis.best_lr(df)
    summary = analysis.model_summary(best)
    v = verdict.verdict_table(best, summary)
    r = _rows(v)
    for method in ("pred", "l2l"):
        assert r.loc[(method, "primary", "content - speaker", "PR,KS,SID"), "n_seeds"] == 3
        c = r.loc[(method, "secondary", "content", "PR,KS")]
        assert c["n_seeds"] == 3 and c["verdict"] == "deeper better"
        s = r.loc[(method, "secondary", "speaker", "SID")]
        assert s["n_seeds"] == 3 and s["verdict"] == "wider better"
    assert set(v["tasks"]) == {"PR,KS,SID", "PR,KS", "PR", "KS", "SID"}
    tables, _, notes = __import__("deepwide.report.tables", fromlist=["build_tables"]).build_tables(df)
    assert "left out of the verdict: ASR, ASV, SD, IC, SF, ER." in notes["verdict"]
    # the normalised score and family means pool only complete replicates (seed 0 here), never
    # a nine-task total with three-task ones
    sc = analysis.scores(best, summary).set_index("model")
    assert math.isnan(sc.loc["pred-4x32f64h2", "normalised_std"])
    assert math.isnan(sc.loc["pred-4x32f64h2", "normalised_semantics_std"])
    assert sc.loc["pred-4x32f64h2", "normalised"] > 400  # nine tasks' terms, not a mix with three-task totals
    # the one-replicate tasks are still in the results table, for seed 0's students
    assert {"ASV", "SD", "ER"} <= set(best.loc[best["model"].str.startswith("pred"), "key"])
    # the trend table and the depth figure's data use the verdict's tasks only
    trend = tables["trend"].set_index(["method", "family"])
    assert trend.loc[("pred", "all"), "tasks"] == "PR,KS,SID"


# ---------------------------------------------------------------- calibration on simulated studies

def test_null_calibration_family_wise():
    """Simulated studies with no depth effect and the embedded study's noise at every level
    (items, model x item, seeds, seed x item): the share of studies whose verdict names any
    direction, over all its rows, stays at 5 % (within this test's Monte-Carlo error: the
    bound is 5 % + 1.96 MC SE over 600 studies), for six seeds and for three."""
    import verdict_sim as vs

    for seeds, n in ((6, 600), (3, 600)):
        runs = vs.run(n, seed=seeds, seeds=seeds)
        named = np.mean([(r["verdict"] != "inconclusive").any() for r in runs])
        assert named <= 0.05 + 1.96 * math.sqrt(0.05 * 0.95 / n), (seeds, named)
        # and every interval covers the true difference (0) about 95 % of the time
        cover = np.mean([((r["ci_low"] < 0) & (r["ci_high"] > 0)).mean() for r in runs])
        assert 0.93 <= cover <= 0.975, (seeds, cover)


def test_power_at_twice_the_detection_limit():
    """Plant a depth effect of twice the detection limit the null studies report, on PR (fewer
    phone errors with depth) and on the primary interaction (content only): the verdict finds
    it in at least 80 % of studies."""
    import verdict_sim as vs

    null = pd.concat(vs.run(200, seed=7))
    mdd = null.groupby("tasks")["mdd"].median()
    # PR: a logit shift whose true PER difference (deepest - shallowest) is -2 x mdd
    target = -2 * mdd["PR"]
    lo, hi = -3.0, 0.0
    base = vs.PR.expected(0.0)
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if vs.PR.expected(mid) - base < target else (lo, mid)
    runs = vs.run(200, seed=8, effects={"PR": (lo + hi) / 2})
    found = np.mean([r.set_index("tasks").loc["PR", "verdict"] == "deeper better" for r in runs])
    assert found >= 0.8, found
    # primary: content tasks gain with depth (the same normalised gain on PR and KS), speaker not
    fb, te = vs.ANCHORS
    target = 2 * mdd["PR,KS,SID"]  # interaction = content gain (normalised points), SID flat

    def shift_for(sim, gain_points):
        lo, hi = -4.0, 4.0
        b = sim.expected(0.0)
        for _ in range(40):
            mid = (lo + hi) / 2
            d = sim.expected(mid) - b
            lo, hi = (mid, hi) if d < gain_points else (lo, mid)
        return (lo + hi) / 2

    effects = {k: shift_for(vs.TASKS[k], target * (te[k] - fb[k]) / 100) for k in ("PR", "KS")}
    runs = vs.run(200, seed=9, effects=effects)
    found = np.mean([(r[r["role"] == "primary"]["verdict"] == verdict.CONTENT_MORE).all() for r in runs])
    assert found >= 0.8, found


def test_items_of_real_dumps_pair_models(tmp_path):
    """`report collect --items` reads per-utterance results from the superb stage's dumps (PR:
    hyp/ref; SID: predictions.tsv) and they reproduce each head's test score."""
    from deepwide.report.collect import collect_items
    from deepwide.superb.items import score_of, test_items

    rng = np.random.default_rng(1)
    paths = []
    for up in ("teacher", "fbank"):
        for task, metric in (("pr", "per"), ("sid", "accuracy")):
            d = tmp_path / up / task
            pred = d / "predictions"
            pred.mkdir(parents=True)
            if task == "pr":
                refs = [[f"p{k}" for k in rng.integers(0, 9, rng.integers(3, 9))] for _ in range(20)]
                hyps = [[t if rng.random() < (0.8 if up == "teacher" else 0.5) else "x" for t in r] for r in refs]
                (pred / "ref").write_text("".join(f"u{i} {' '.join(r)}\n" for i, r in enumerate(refs)))
                (pred / "hyp").write_text("".join(f"u{i} {' '.join(h)}\n" for i, h in enumerate(hyps)))
            else:
                rows = ["id\tprediction\tlabel"] + [f"u{i}\tid{rng.integers(0, 3)}\tid{i % 3}" for i in range(30)]
                (pred / "predictions.tsv").write_text("\n".join(rows) + "\n")
            got = test_items(task.upper(), pred)
            score = score_of(got)
            (d / "result.json").write_text(json.dumps({
                "upstream": up, "task": task, "lr": 0.001, "seed": 0, "metric": metric, "unit": "%",
                "higher_is_better": task == "sid", "dev_score": score, "test_score": score, "layer_weights": [1.0],
                "n_test": len(got["item"])}))
            paths.append(d / "result.json")
    items = collect_items(paths)
    assert set(items["key"]) == {"PR", "SID"} and len(items) == 2 * (20 + 30)
    from deepwide.report import inference

    best = analysis.best_lr(collect(paths, include_published=False)[0])
    cells = inference.build_cells(best, items)
    assert cells[("PR", "teacher")].values.shape == (1, 20) and cells[("SID", "fbank")].item_ids == tuple(
        sorted(f"u{i}" for i in range(30)))
    g = analysis.guard(best, items=items).set_index("key")
    g0 = analysis.guard(best).set_index("key")  # without items: unpaired binomial, never smaller here
    assert g.loc["PR", "se_items"] > 0 and g0.loc["SID", "se_items"] > 0
    bad = tmp_path / "teacher" / "sid" / "predictions" / "predictions.tsv"
    bad.write_text("wrong header\n")
    with pytest.raises(Exception, match="expected the header"):
        collect_items(paths)


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
    assert main(["report", "collect", "--results", *map(str, results), "--infos", *map(str, fx.infos(results)),
                 "--out", str(tmp_path / "r.parquet"),
                 "--layer-weights", str(tmp_path / "lw.parquet")]) == 0
    kd = [str(p) for p in sorted(out.glob("*.parquet"))]
    assert main(["report", "tables", "--results", str(tmp_path / "r.parquet"), "--kd-loss", *kd,
                 "--out-dir", str(tmp_path / "t")]) == 0
    table = pd.read_csv(tmp_path / "t" / "kd_loss.csv")
    assert len(table) == 4 + 2 and set(table.columns) >= {"model", "teacher layer", "L1", "cos", "loss"}
    assert main(["report", "figures", "--results", str(tmp_path / "r.parquet"), "--kd-loss", *kd,
                 "--options", json.dumps({"dpi": 50}), "--out-dir", str(tmp_path / "f")]) == 0
    assert (tmp_path / "f" / "kd_loss.png").stat().st_size > 1000
