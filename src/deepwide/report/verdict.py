"""The study's answer to depth versus width, with its uncertainty.

Per KD method and SUPERB task family (content, speaker, semantics, paralinguistics, and
all informative tasks), two seed-paired contrasts of the study-normalised family score
(mean per-task term, 0 = FBANK, 100 = teacher, over the family's informative tasks; see
:func:`deepwide.report.analysis.guard`):

``deepest - shallowest``
    score of the deepest student minus the shallowest, at the budget (several shapes at
    one depth are averaged);
``slope per depth doubling``
    least-squares slope of the score over log2(depth), all depths.

Each is computed within one replicate (both students trained and evaluated with the same
seed) and then averaged over replicates; the 95 % interval is Student's t over them. The
replicate is the distillation seed (head seeds averaged within it) when a method has two or
more distillation seeds, else the SUPERB head seed. The verdict names a direction only
when the interval excludes 0: "deeper better" (positive), "wider better" (negative),
otherwise, or with fewer than two replicates, "inconclusive".
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from deepwide.report import analysis
from deepwide.report.score import FAMILIES, TASKS

CONTRASTS = ("deepest - shallowest", "slope per depth doubling")
COLUMNS = ["method", "family", "contrast", "estimate", "ci_low", "ci_high", "n_seeds", "tasks", "verdict", "replicate"]
DEEPER, WIDER, INCONCLUSIVE = "deeper better", "wider better", "inconclusive"


def verdict_of(ci_low: float, ci_high: float) -> str:
    """The direction an interval of (deeper - wider) supports, or inconclusive."""
    if ci_low is None or ci_high is None or math.isnan(ci_low) or math.isnan(ci_high):
        return INCONCLUSIVE
    if ci_low > 0:
        return DEEPER
    if ci_high < 0:
        return WIDER
    return INCONCLUSIVE


def t_interval(values, level: float = 0.95) -> tuple[float, float, float, int]:
    """(mean, low, high, n) of a sample: Student's t interval; NaN bounds below two values."""
    from scipy.stats import t

    v = np.asarray([x for x in values if x is not None and not math.isnan(x)], dtype=float)
    n = len(v)
    if n == 0:
        return math.nan, math.nan, math.nan, 0
    mean = float(v.mean())
    if n < 2:
        return mean, math.nan, math.nan, n
    half = float(t.ppf(0.5 + level / 2, n - 1)) * float(v.std(ddof=1)) / math.sqrt(n)
    return mean, mean - half, mean + half, n


def slope(depths, scores) -> float:
    """Least-squares slope of score over log2(depth)."""
    x = np.log2(np.asarray(depths, dtype=float))
    y = np.asarray(scores, dtype=float)
    if len(x) < 2 or np.ptp(x) == 0:
        return math.nan
    x = x - x.mean()
    return float((x * (y - y.mean())).sum() / (x * x).sum())


def family_scores(best: pd.DataFrame, summary: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Per (student model, distill_seed, seed) replicate: its normalised score of each family
    (and ``all``), over the informative tasks. Returns (long table, informative tasks)."""
    fb, te = analysis.normalised_anchors(best, summary)
    tasks = analysis.informative_tasks(analysis.guard(best))
    cols = ["model", "method", "depth", "distill_seed", "seed", "family", "score"]
    if fb is None or te is None or not tasks:
        return pd.DataFrame(columns=cols), tasks
    students = summary[~summary["published"] & ~summary["method"].isin(analysis.NOT_STUDENTS)].set_index("model")
    per = analysis.per_seed_metrics(best)
    tasks = replicated_tasks(per[per.index.get_level_values("model").isin(students.index)], tasks)
    fams = {**FAMILIES, "all": TASKS}
    rows = []
    for (model, dseed, seed), metrics in per.iterrows():
        if model not in students.index or pd.isna(students.loc[model, "depth"]):
            continue
        m = {k: float(v) for k, v in metrics.items() if pd.notna(v)}
        terms = analysis._terms(m, fb, te)
        for fam, members in fams.items():
            want = [t for t in members if t in tasks]
            if not want:
                continue
            # the same task set for every student, or the pairing compares different things
            score = float(np.mean([terms[t] for t in want])) if all(t in terms for t in want) else math.nan
            rows.append({"model": model, "method": students.loc[model, "method"], "depth": int(students.loc[model, "depth"]),
                         "distill_seed": int(dseed), "seed": int(seed), "family": fam, "score": score})
    return pd.DataFrame(rows, columns=cols), tasks


def replicated_tasks(per: pd.DataFrame, tasks: list[str]) -> list[str]:
    """Of ``tasks``, those every student replicate (row of :func:`analysis.per_seed_metrics`)
    has a score for: a task run on the first distillation seed only (superb.replicate_tasks)
    would otherwise pair different task sets across seeds."""
    if per.empty:
        return list(tasks)
    out = []
    for task in tasks:
        keys = [k for k in analysis.TASK_KEYS[task] if k in per.columns]
        if keys and per[keys].notna().all().all():
            out.append(task)
    return out


def verdict_table(best: pd.DataFrame, summary: pd.DataFrame) -> pd.DataFrame:
    """One row per (KD method, family, contrast); see the module docstring."""
    fs, tasks = family_scores(best, summary)
    students = summary[~summary["published"] & ~summary["method"].isin(analysis.NOT_STUDENTS)]
    rows = []
    for method in sorted(students["method"].unique()):
        for fam, members in {**FAMILIES, "all": TASKS}.items():
            want = [t for t in members if t in tasks]
            g = fs[(fs["method"] == method) & (fs["family"] == fam)].dropna(subset=["score"])
            by_distill = g["distill_seed"].nunique() >= 2
            unit = "distill seed" if by_distill else "head seed"
            # one score per (replicate, depth): shapes at one depth and head seeds within a distill seed averaged
            key = "distill_seed" if by_distill else "seed"
            table = g.groupby([key, "depth"])["score"].mean().unstack("depth") if len(g) else pd.DataFrame()
            depths = sorted(table.columns) if len(table) else []
            table = table.dropna() if len(table) else table  # replicates with every depth
            for contrast in CONTRASTS:
                values = []
                if len(depths) >= 2:
                    for _, r in table.iterrows():
                        if contrast == CONTRASTS[0]:
                            values.append(float(r[depths[-1]] - r[depths[0]]))
                        else:
                            values.append(slope(depths, [r[d] for d in depths]))
                est, lo, hi, n = t_interval(values)
                rows.append({"method": method, "family": fam,
                             "contrast": (f"L={depths[-1]} - L={depths[0]}" if contrast == CONTRASTS[0] and len(depths) >= 2
                                          else contrast),
                             "estimate": est, "ci_low": lo, "ci_high": hi, "n_seeds": n, "tasks": ",".join(want),
                             "verdict": verdict_of(lo, hi), "replicate": unit})
    return pd.DataFrame(rows, columns=COLUMNS)


def _num(x, digits=1) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:+.{digits}f}"


def answer_lines(table: pd.DataFrame) -> list[str]:
    """The report's statement of the answer, one line per (method, family), from the verdict
    of the deepest-vs-shallowest contrast and the slope, never from a point estimate alone."""
    lines = []
    for (method, fam), g in table.groupby(["method", "family"], sort=False):
        if not g["tasks"].iloc[0]:
            lines.append(f"- {method}, {fam}: no informative task at this scale; no answer.")
            continue
        parts = []
        for _, r in g.iterrows():
            ci = (f"95 % CI [{_num(r['ci_low'])}, {_num(r['ci_high'])}]" if not math.isnan(r["ci_low"])
                  else "no interval")
            parts.append(f"{r['contrast']} {_num(r['estimate'])}, {ci}, n = {int(r['n_seeds'])} {r['replicate']}s")
        verdicts = set(g["verdict"])
        if verdicts == {DEEPER} or verdicts == {WIDER}:
            answer = verdicts.pop()
        elif verdicts - {INCONCLUSIVE} and len(verdicts - {INCONCLUSIVE}) == 1:
            answer = f"{(verdicts - {INCONCLUSIVE}).pop()} by one contrast, inconclusive by the other"
        elif len(verdicts - {INCONCLUSIVE}) > 1:
            answer = "the two contrasts disagree: inconclusive"
        else:
            answer = INCONCLUSIVE
        lines.append(f"- {method}, {fam} ({g['tasks'].iloc[0]}): **{answer}** ({'; '.join(parts)}).")
    return lines
