"""From the tidy results table to per-model numbers: best lr, seed statistics, scores.

- Best lr per (upstream model, task) by the mean dev value over seeds (SF by its F1).
- Test values at that lr: mean and standard deviation over seeds.
- Scores per model, each per seed and then mean +- std over seeds:
  ``leaderboard``: SUPERB score with the leaderboard FBANK and SOTA constants;
  ``normalised``: the study's own FBANK row = 0 and teacher row = 100 per task.
  Both sum over the tasks a model was evaluated on (100 per task at the upper anchor), and
  ``content`` / ``speaker`` are the mean per-task term over the tasks of that family.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from deepwide.report.score import FAMILIES, FBANK, SCORE_KEYS, SOTA, TASKS, task_terms

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


def per_seed_metrics(best: pd.DataFrame) -> pd.DataFrame:
    """(model, seed) x score key -> test value."""
    return best.pivot_table(index=["model", "seed"], columns="key", values="test", aggfunc="mean")


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


def scores(best: pd.DataFrame, summary: pd.DataFrame) -> pd.DataFrame:
    """Per model: leaderboard / normalised SUPERB scores and family means, mean and std over seeds."""
    fb, te = anchors(summary)
    per_seed = per_seed_metrics(best)
    published = set(summary.loc[summary["published"], "model"])
    rows = []
    for model, g in per_seed.groupby(level="model", sort=False):
        rec = {"model": model}
        # published numbers come from other models, corpora and heads: no study-normalised score
        refs = {"leaderboard": (FBANK, SOTA), "normalised": (None, None) if model in published else (fb, te)}
        for ref, (low, high) in refs.items():
            if low is None or high is None:
                for col in ("", "_content", "_speaker"):
                    rec[f"{ref}{col}"], rec[f"{ref}{col}_std"] = math.nan, math.nan
                rec[f"{ref}_tasks"] = ""
                continue
            totals, fam = [], {f: [] for f in FAMILIES}
            tasks = set()
            for _, metrics in g.iterrows():
                m = {k: float(v) for k, v in metrics.items() if pd.notna(v)}
                terms = _terms(m, low, high)
                tasks |= set(terms)
                totals.append(sum(terms.values()) if terms else math.nan)
                for f, members in FAMILIES.items():
                    t = [terms[x] for x in members if x in terms]
                    fam[f].append(float(np.mean(t)) if t else math.nan)
            rec[ref], rec[f"{ref}_std"] = _stat(totals)
            for f in FAMILIES:
                rec[f"{ref}_{f}"], rec[f"{ref}_{f}_std"] = _stat(fam[f])
            rec[f"{ref}_tasks"] = ",".join(t for t in TASKS if t in tasks)
        rec["seeds"] = len(g)
        rows.append(rec)
    return summary[META + COST].merge(pd.DataFrame(rows), on="model", how="left")


def task_terms_table(best: pd.DataFrame, summary: pd.DataFrame, reference: str) -> pd.DataFrame:
    """Per (model, task, seed) normalised term (0 = FBANK, 100 = SOTA/teacher): for colours."""
    fb, te = anchors(summary)
    low, high = (FBANK, SOTA) if reference == "leaderboard" else (fb, te)
    rows = []
    if low is None or high is None:
        return pd.DataFrame(columns=["model", "seed", "task", "term"])
    for (model, seed), metrics in per_seed_metrics(best).iterrows():
        m = {k: float(v) for k, v in metrics.items() if pd.notna(v)}
        for task, t in _terms(m, low, high).items():
            rows.append({"model": model, "seed": seed, "task": task, "term": t})
    return pd.DataFrame(rows, columns=["model", "seed", "task", "term"])
