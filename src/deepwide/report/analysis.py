"""From the tidy results table to per-model numbers: best lr, seed statistics, scores.

- Best lr per (upstream model, task) by the mean dev value over seeds (SF by its F1).
- Test values at that lr: mean and standard deviation over replicates (a replicate is a
  (distillation seed, SUPERB head seed) pair; the teacher and FBANK have head seeds only).
- The guard (:func:`guard`): a task is *informative* only when the study's teacher beats
  its FBANK row by more than ``Z_GUARD`` standard errors of that difference; its variance is
  the sum of the seed and the test-item parts (:mod:`deepwide.report.inference`).
  Otherwise ``(s - fbank) / (teacher - fbank)`` flips sign or explodes, and the task is
  "not informative at this scale".
- Scores per model, each per replicate and then mean +- std over replicates:
  ``leaderboard``: SUPERB score with the leaderboard FBANK and SOTA constants (all tasks);
  ``normalised``: the study's own FBANK row = 0 and teacher row = 100 per task, over the
  informative tasks only.
  Both sum over the tasks a model was evaluated on (100 per task at the upper anchor), and
  ``content`` / ``speaker`` / ``semantics`` / ``paralinguistics`` (SUPERB's families) are the
  mean per-task term over the tasks of that family.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from deepwide.report import inference
from deepwide.report.score import FAMILIES, FBANK, METRIC, SCORE_KEYS, SOTA, TASK_KEYS, TASKS, task_terms

# methods that are not distilled students (extra: an upstream superb was given by name)
NOT_STUDENTS = ("teacher", "fbank", "extra")
META = ["model", "method", "shape", "depth", "width", "ffn", "heads", "params", "published"]
COST = ["macs_per_second", "rtf", "machine"]


def primary_key(task: str) -> str:
    return "SF_F1" if task == "SF" else task


def best_lr(df: pd.DataFrame) -> pd.DataFrame:
    """Rows (every seed and score key) at the best lr of each measured (model, task)."""
    measured = df[~df["published"]]
    keep = []
    for (model, task), g in measured.groupby(["model", "task"], sort=False):
        prim = g[g["key"] == primary_key(task)]
        if prim.empty:
            prim = g
        dev = prim.groupby("lr")["dev"].mean()
        if dev.notna().any():
            higher = bool(prim["higher_is_better"].iloc[0])
            lr = dev.idxmax() if higher else dev.idxmin()
        else:  # no dev values at all: the only sensible choice is a single lr
            lr = dev.index.min()
        keep.append(g[g["lr"] == lr])
    best = pd.concat(keep + [df[df["published"]]], ignore_index=True)
    return best


def _order(models: pd.DataFrame) -> pd.DataFrame:
    rank = {"fbank": 0, "teacher": 1}
    models = models.assign(_r=models["method"].map(lambda m: rank.get(m, 2)), _p=models["published"].astype(int))
    return models.sort_values(["_p", "_r", "method", "depth", "width"], na_position="first").drop(columns=["_r", "_p"])


# a task enters the normalised score and the verdict only when teacher - FBANK > Z_GUARD standard errors
Z_GUARD = 2.0


def per_seed_metrics(best: pd.DataFrame) -> pd.DataFrame:
    """(model, distill_seed, seed) x score key -> test value: one row per replicate.

    ``distill_seed`` is -1 where a model has none (teacher, FBANK, published rows)."""
    d = best.assign(distill_seed=best["distill_seed"].astype("Int64").fillna(-1).astype(int) if "distill_seed" in best
                    else -1)
    return d.pivot_table(index=["model", "distill_seed", "seed"], columns="key", values="test", aggfunc="mean")


def guard(best: pd.DataFrame, z: float = Z_GUARD, items: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per score key: teacher and FBANK (mean, sd, n), the gap in the better direction, its
    standard error, and whether the key is informative (gap > z * se).

    The gap's variance is the *sum* of its sources (:func:`deepwide.report.inference.contrast`):
    the seed part (each row's replicate variance over its replicates; a row with one replicate
    borrows this study's pooled replicate variance of that task, from every model with two or
    more) plus the test-item part (paired over the shared test items where per-item results
    exist, ``items``; else each row's sampling error: measured for PR and ASR, binomial over
    the test size otherwise). Without any noise estimate the key is not informative.
    """
    measured = best[~best["published"]]
    cells = inference.build_cells(measured, items)
    borrow = inference.pooled_rep_var(cells)
    rows = []
    for key in SCORE_KEYS:
        if key not in set(measured["key"]):
            continue
        t, f = cells.get((key, "teacher")), cells.get((key, "fbank"))
        higher = bool(measured.loc[measured["key"] == key, "higher_is_better"].iloc[0])

        def stats(c):
            return (c.mean, (c.rep_var() ** 0.5 if c.n_rep > 1 else math.nan), c.n_rep) if c else (math.nan, math.nan, 0)

        (t_mean, t_sd, t_n), (f_mean, f_sd, f_n) = stats(t), stats(f)
        rec = {"task": "SF" if key.startswith("SF") else key, "key": key, "metric": METRIC[key],
               "teacher": t_mean, "teacher_sd": t_sd, "teacher_n": t_n,
               "fbank": f_mean, "fbank_sd": f_sd, "fbank_n": f_n}
        if t is None or f is None:
            rec.update(gap=math.nan, se=math.nan, se_seeds=math.nan, se_items=math.nan, informative=False,
                       reason="no " + ("teacher" if t is None else "FBANK") + " result")
            rows.append(rec)
            continue
        sign = 1.0 if higher else -1.0
        est = inference.contrast(cells, {(key, "teacher"): sign, (key, "fbank"): -sign}, borrow_var=borrow)
        gap, se = est.estimate, est.se
        if math.isnan(se):
            informative, reason = False, "noise unknown (" + "; ".join(est.notes) + ")"
        elif gap > z * se:
            informative, reason = True, f"teacher beats FBANK by {gap / se:.1f} SE"
        else:
            informative, reason = False, (f"teacher beats FBANK by only {gap / se:.1f} SE" if gap > 0
                                          else "teacher does not beat FBANK")
        rec.update(gap=gap, se=se, se_seeds=est.se_seeds, se_items=est.se_items, informative=informative, reason=reason)
        rows.append(rec)
    return pd.DataFrame(rows, columns=["task", "key", "metric", "teacher", "teacher_sd", "teacher_n", "fbank", "fbank_sd",
                                       "fbank_n", "gap", "se", "se_seeds", "se_items", "informative", "reason"])


def informative_tasks(g: pd.DataFrame) -> list[str]:
    """Tasks (SF as one) all of whose present score keys pass the guard, in SUPERB's order."""
    ok = dict(zip(g["key"], g["informative"]))
    out = []
    for task in TASKS:
        keys = [k for k in TASK_KEYS[task] if k in ok]
        if keys and all(ok[k] for k in keys):
            out.append(task)
    return out


def _restrict(anchor: dict | None, tasks) -> dict | None:
    if anchor is None:
        return None
    keys = {k for t in tasks for k in TASK_KEYS[t]}
    return {k: v for k, v in anchor.items() if k in keys}


def model_summary(best: pd.DataFrame) -> pd.DataFrame:
    """One row per model: meta, cost, and per score key ``KEY`` (mean), ``KEY_std``, ``KEY_n``, ``KEY_lr``."""
    meta = best.groupby("model", sort=False)[META[1:] + COST].first().reset_index()
    stats = best.groupby(["model", "key"])["test"].agg(["mean", "std", "count"]).reset_index()
    lrs = best.groupby(["model", "key"])["lr"].first().reset_index()
    out = meta.set_index("model")
    for key in SCORE_KEYS:
        s = stats[stats["key"] == key].set_index("model")
        out[key] = s["mean"]
        out[f"{key}_std"] = s["std"]
        out[f"{key}_n"] = s["count"]
        out[f"{key}_lr"] = lrs[lrs["key"] == key].set_index("model")["lr"]
    return _order(out.reset_index()).reset_index(drop=True)


def anchors(summary: pd.DataFrame) -> tuple[dict | None, dict | None]:
    """The study's own (FBANK, teacher) mean test values, or None where a row is missing."""
    def row(name):
        r = summary[(summary["model"] == name) & ~summary["published"]]
        if r.empty:
            return None
        return {k: float(r.iloc[0][k]) for k in SCORE_KEYS if pd.notna(r.iloc[0][k])}
    return row("fbank"), row("teacher")


def _terms(metrics: dict, low, high) -> dict:
    # anchors missing a task, or equal anchors, leave that task out rather than fail
    ok = {k: v for k, v in metrics.items() if k in low and k in high and low[k] != high[k]}
    return task_terms(ok, low, high)


def _stat(values):
    v = [x for x in values if x is not None and not math.isnan(x)]
    if not v:
        return math.nan, math.nan
    return float(np.mean(v)), (float(np.std(v, ddof=1)) if len(v) > 1 else math.nan)


def normalised_anchors(best: pd.DataFrame, summary: pd.DataFrame,
                       items: pd.DataFrame | None = None) -> tuple[dict | None, dict | None]:
    """The study's (FBANK, teacher) anchors restricted to the informative tasks."""
    fb, te = anchors(summary)
    if fb is None or te is None:
        return fb, te
    tasks = informative_tasks(guard(best, items=items))
    return _restrict(fb, tasks), _restrict(te, tasks)


def scores(best: pd.DataFrame, summary: pd.DataFrame, items: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per model: leaderboard / normalised SUPERB scores and family means, mean and std over
    replicates. The normalised score counts the informative tasks only (:func:`guard`)."""
    fb, te = normalised_anchors(best, summary, items)
    per_seed = per_seed_metrics(best)
    published = set(summary.loc[summary["published"], "model"])
    rows = []
    for model, g in per_seed.groupby(level="model", sort=False):
        rec = {"model": model}
        # published numbers come from other models, corpora and heads: no study-normalised score
        refs = {"leaderboard": (FBANK, SOTA), "normalised": (None, None) if model in published else (fb, te)}
        for ref, (low, high) in refs.items():
            if low is None or high is None:
                for col in ("", *(f"_{f}" for f in FAMILIES)):
                    rec[f"{ref}{col}"], rec[f"{ref}{col}_std"] = math.nan, math.nan
                rec[f"{ref}_tasks"] = ""
                continue
            totals, fam = [], {f: [] for f in FAMILIES}
            per_rep = [_terms({k: float(v) for k, v in metrics.items() if pd.notna(v)}, low, high)
                       for _, metrics in g.iterrows()]
            tasks = set().union(*per_rep) if per_rep else set()
            # a replicate missing some of the model's tasks (a later distillation seed run on
            # superb.replicate_tasks only) enters a total or family mean only where it is complete
            for terms in per_rep:
                totals.append(sum(terms.values()) if terms and tasks <= set(terms) else math.nan)
                for f, members in FAMILIES.items():
                    want = [x for x in members if x in tasks]
                    fam[f].append(float(np.mean([terms[x] for x in want]))
                                  if want and all(x in terms for x in want) else math.nan)
            rec[ref], rec[f"{ref}_std"] = _stat(totals)
            for f in FAMILIES:
                rec[f"{ref}_{f}"], rec[f"{ref}_{f}_std"] = _stat(fam[f])
            rec[f"{ref}_tasks"] = ",".join(t for t in TASKS if t in tasks)
        rec["seeds"] = len(g)
        rows.append(rec)
    return summary[META + COST].merge(pd.DataFrame(rows), on="model", how="left")


def task_terms_table(best: pd.DataFrame, summary: pd.DataFrame, reference: str,
                     items: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per (model, task, seed) normalised term (0 = FBANK, 100 = SOTA/teacher): for colours."""
    fb, te = normalised_anchors(best, summary, items)
    low, high = (FBANK, SOTA) if reference == "leaderboard" else (fb, te)
    rows = []
    if low is None or high is None:
        return pd.DataFrame(columns=["model", "seed", "task", "term"])
    for (model, _dseed, seed), metrics in per_seed_metrics(best).iterrows():
        m = {k: float(v) for k, v in metrics.items() if pd.notna(v)}
        for task, t in _terms(m, low, high).items():
            rows.append({"model": model, "seed": seed, "task": task, "term": t})
    return pd.DataFrame(rows, columns=["model", "seed", "task", "term"])
