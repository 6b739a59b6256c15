"""The study's answer to depth versus width: one primary test, secondary rows under family-wise
error control, every interval carrying all the noise the study samples, and a detection limit.

**Primary hypothesis** (fixed here, before any result is read), per KD method: the depth x
family interaction of "Deep versus Wide" -- depth helps content tasks more than speaker tasks:

    I = (deepest - shallowest on content) - (deepest - shallowest on speaker)

on the study-normalised scale: each task's score in units of its own teacher - FBANK gap
(``100 * (s - s_FBANK) / (s_teacher - s_FBANK)``: 0 = FBANK, 100 = teacher; lower-is-better
metrics come out right by themselves), a family being the mean over its informative tasks
that every student replicate ran. The anchors are fixed constants of the study: they rescale
each task, and their own noise does not enter the intervals.

**Secondary rows**, per method: deepest - shallowest of every family with two or more such
tasks (normalised points) and of every such task (in its own metric: PER, accuracy, ...).

**Intervals** (:mod:`deepwide.report.inference`): the seed part (distillation seed, with the
SUPERB head seeds within it; students of different depths share nothing, so nothing is
paired across them) plus the test-item part (paired across models: all are tested on the same
utterances), Welch-Satterthwaite degrees of freedom, Student's t.

**Error control**: Holm's step-down over every row printed (all methods, primary and
secondary). A row names a direction only when its Holm-adjusted p is below ``ALPHA``;
otherwise it is inconclusive. Its **detection limit** is the smallest true difference it would
find with 80 % power at the Bonferroni level ``ALPHA / rows`` (what Holm demands of a row in
the worst case): an inconclusive row rules out effects larger than that at that power, no more.

Every row is conditional on the study's one teacher (its pretraining noise is not sampled).
"""

from __future__ import annotations

import math

import pandas as pd

from deepwide.report import analysis, inference
from deepwide.report.score import FAMILIES, FAMILY_OF, METRIC, TASK_KEYS, TASKS

ALPHA = 0.05
POWER = 0.8
COLUMNS = ["method", "family", "contrast", "estimate", "ci_low", "ci_high", "n_seeds", "tasks", "verdict", "replicate",
           "role", "unit", "se", "se_seeds", "se_items", "df", "p", "p_holm", "alpha_row", "mdd", "notes"]
DEEPER, WIDER, INCONCLUSIVE = "deeper better", "wider better", "inconclusive"
CONTENT_MORE, SPEAKER_MORE = "depth helps content more than speaker", "depth helps speaker more than content"
PRIMARY, SECONDARY = "primary", "secondary"
NORM_UNIT = "normalised points"
PRIMARY_FAMILY = "content - speaker"


def verdict_of(ci_low: float, ci_high: float) -> str:
    """The direction an interval of (deeper - wider) supports, or inconclusive."""
    if ci_low is None or ci_high is None or math.isnan(ci_low) or math.isnan(ci_high):
        return INCONCLUSIVE
    if ci_low > 0:
        return DEEPER
    if ci_high < 0:
        return WIDER
    return INCONCLUSIVE


# ---- coefficient algebra: a contrast is {(score key, model): weight} over cell means ----

def _add(*coefs: dict, scale: float = 1.0) -> dict:
    out: dict = {}
    for c in coefs:
        for k, v in c.items():
            out[k] = out.get(k, 0.0) + scale * v
    return out


def _scaled(coef: dict, a: float) -> dict:
    return {k: a * v for k, v in coef.items()}


def _level(key: str, models: list[str]) -> dict:
    """The mean of ``key`` over ``models`` (models at one depth are averaged)."""
    return {(key, m): 1.0 / len(models) for m in models}


def _task_norm(task: str, models: list[str], anchors: tuple[dict, dict]) -> tuple[dict, float]:
    """(coefficients, constant) of a task's normalised score averaged over ``models``."""
    fb, te = anchors
    keys = TASK_KEYS[task]
    coef, const = {}, 0.0
    for k in keys:
        a = 100.0 / (te[k] - fb[k]) / len(keys)
        coef = _add(coef, _scaled(_level(k, models), a))
        const -= a * fb[k]
    return coef, const


def _family_norm(tasks: list[str], models: list[str], anchors) -> tuple[dict, float]:
    parts = [_task_norm(t, models, anchors) for t in tasks]
    return _add(*[p[0] for p in parts], scale=1.0 / len(parts)), sum(p[1] for p in parts) / len(parts)


class Design:
    """What the verdict compares: per KD method its depths (-> student models), the tasks that
    are informative and replicated, the anchors, and each score key's direction."""

    def __init__(self, methods: dict[str, dict[int, list[str]]], tasks: list[str], anchors: tuple[dict, dict],
                 higher: dict[str, bool]):
        self.methods, self.tasks, self.anchors, self.higher = methods, tasks, anchors, higher

    def family_tasks(self, family: str) -> list[str]:
        return [t for t in FAMILIES[family] if t in self.tasks]


def plan_rows(design: Design) -> list[dict]:
    """Every row the verdict prints, with its coefficients: per method the primary interaction,
    then families with two or more tasks, then every task."""
    rows = []
    for method, by_depth in design.methods.items():
        depths = sorted(by_depth)
        if len(depths) < 2:
            continue
        deep, shallow = by_depth[depths[-1]], by_depth[depths[0]]
        label = f"L={depths[-1]} - L={depths[0]}"

        def fam_contrast(tasks):
            return _add(_family_norm(tasks, deep, design.anchors)[0],
                        _scaled(_family_norm(tasks, shallow, design.anchors)[0], -1.0))

        content, speaker = design.family_tasks("content"), design.family_tasks("speaker")
        if content and speaker:
            rows.append({"method": method, "role": PRIMARY, "family": PRIMARY_FAMILY,
                         "contrast": f"({label}) content - speaker", "tasks": ",".join(content + speaker),
                         "unit": NORM_UNIT, "orient": 1.0, "coef": _add(fam_contrast(content), _scaled(fam_contrast(speaker), -1.0)),
                         "kind": "interaction"})
        for fam in FAMILIES:
            ft = design.family_tasks(fam)
            if len(ft) >= 2:
                rows.append({"method": method, "role": SECONDARY, "family": fam, "contrast": label, "tasks": ",".join(ft),
                             "unit": NORM_UNIT, "orient": 1.0, "coef": fam_contrast(ft), "kind": "depth"})
        for task in design.tasks:
            keys = TASK_KEYS[task]
            if len(keys) == 1:
                k = keys[0]
                coef = _add(_level(k, deep), _scaled(_level(k, shallow), -1.0))
                unit, orient = METRIC[k], (1.0 if design.higher[k] else -1.0)
            else:  # SF: F1 and CER together, on the normalised scale
                coef, unit, orient = fam_contrast([task]), NORM_UNIT, 1.0
            rows.append({"method": method, "role": SECONDARY, "family": FAMILY_OF[task], "contrast": label, "tasks": task,
                         "unit": unit, "orient": orient, "coef": coef, "kind": "depth"})
    return rows


def _direction(row: dict, estimate: float) -> str:
    better = estimate * row["orient"] > 0
    if row["kind"] == "interaction":
        return CONTENT_MORE if better else SPEAKER_MORE
    return DEEPER if better else WIDER


def verdict_rows(cells: dict, design: Design, alpha: float = ALPHA, power: float = POWER,
                 replicate: str = "distill seed") -> pd.DataFrame:
    """The verdict table from cells (:func:`deepwide.report.inference.build_cells`) and a
    design: estimates, intervals, Holm over all rows, detection limits."""
    planned = plan_rows(design)
    ests = [inference.contrast(cells, r["coef"]) for r in planned]
    p = [e.p_value() for e in ests]
    adj = inference.holm(p)
    m = max(1, sum(1 for x in p if not math.isnan(x)))
    rows = []
    for r, e, pv, pa in zip(planned, ests, p, adj):
        lo, hi = e.interval(0.95)
        named = not math.isnan(pa) and pa < alpha
        n_seeds = min(cells[k].n_rep for k in r["coef"]) if r["coef"] else 0
        rows.append({"method": r["method"], "family": r["family"], "contrast": r["contrast"], "estimate": e.estimate,
                     "ci_low": lo, "ci_high": hi, "n_seeds": n_seeds, "tasks": r["tasks"],
                     "verdict": _direction(r, e.estimate) if named else INCONCLUSIVE, "replicate": replicate,
                     "role": r["role"], "unit": r["unit"], "se": e.se, "se_seeds": e.se_seeds, "se_items": e.se_items,
                     "df": e.df, "p": pv, "p_holm": pa, "alpha_row": alpha / m,
                     "mdd": e.detection_limit(alpha / m, power), "notes": "; ".join(e.notes)})
    return pd.DataFrame(rows, columns=COLUMNS)


def replicated_tasks(per: pd.DataFrame, tasks: list[str]) -> list[str]:
    """Of ``tasks``, those every student replicate (row of :func:`analysis.per_seed_metrics`)
    has a score for: a task run on the first distillation seed only (superb.replicate_tasks)
    would otherwise compare different task sets across seeds."""
    if per.empty:
        return list(tasks)
    # a replicate is (model, distillation seed): tasks may train different head seeds
    # (superb.<task>.seeds), so a head seed one task lacks does not make it unreplicated
    per = per.groupby(level=["model", "distill_seed"]).mean()
    out = []
    for task in tasks:
        keys = [k for k in analysis.TASK_KEYS[task] if k in per.columns]
        if keys and per[keys].notna().all().all():
            out.append(task)
    return out


def design_of(best: pd.DataFrame, summary: pd.DataFrame, items: pd.DataFrame | None = None,
              guard: pd.DataFrame | None = None) -> tuple[Design, str]:
    """(design, replicate unit) of the study's results at the chosen lr."""
    g = analysis.guard(best, items=items) if guard is None else guard
    fb, te = analysis.normalised_anchors(best, summary, items)
    tasks = analysis.informative_tasks(g)
    students = summary[~summary["published"] & ~summary["method"].isin(analysis.NOT_STUDENTS)].dropna(subset=["depth"])
    per = analysis.per_seed_metrics(best)
    per = per[per.index.get_level_values("model").isin(students["model"])]
    tasks = replicated_tasks(per, tasks) if fb and te else []
    tasks = [t for t in tasks if all(k in fb and k in te and fb[k] != te[k] for k in TASK_KEYS[t])]
    methods = {}
    for method, gm in students.groupby("method", sort=True):
        methods[method] = {int(d): list(gd["model"]) for d, gd in gm.groupby("depth")}
    higher = dict(zip(best["key"], best["higher_is_better"].astype(bool)))
    dseeds = best.loc[best["model"].isin(students["model"]), "distill_seed"].dropna().nunique() if "distill_seed" in best else 0
    return Design(methods, tasks, (fb or {}, te or {}), higher), ("distill seed" if dseeds >= 2 else "head seed")


def verdict_table(best: pd.DataFrame, summary: pd.DataFrame, items: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per tested contrast; see the module docstring."""
    design, unit = design_of(best, summary, items)
    cells = inference.build_cells(best, items)
    return verdict_rows(cells, design, replicate=unit)


def depth_estimates(best: pd.DataFrame, summary: pd.DataFrame, items: pd.DataFrame | None = None,
                    per_model: bool = False) -> pd.DataFrame:
    """Per (method, family, depth): the normalised score of the students at that depth over the
    verdict's tasks, with its 95 % interval from the same estimator and noise model as the
    verdict (a level, so the test items' full variance counts). ``family`` ``all`` is the mean
    over every verdict task. ``per_model``: one row per student model instead of per depth."""
    design, _ = design_of(best, summary, items)
    cells = inference.build_cells(best, items)
    rows = []
    groups = {f: design.family_tasks(f) for f in FAMILIES}
    groups["all"] = list(design.tasks)
    for method, by_depth in design.methods.items():
        for fam, tasks in groups.items():
            if not tasks:
                continue
            for depth, models in sorted(by_depth.items()):
                for label, ms in ([(m, [m]) for m in models] if per_model else [("", models)]):
                    coef, const = _family_norm(tasks, ms, design.anchors)
                    if any(k not in cells for k in coef):
                        continue
                    e = inference.contrast(cells, coef)
                    lo, hi = e.interval(0.95)
                    rows.append({"method": method, "model": label, "family": fam, "tasks": ",".join(tasks),
                                 "depth": depth, "estimate": e.estimate + const, "ci_low": lo + const,
                                 "ci_high": hi + const, "n_seeds": min(cells[k].n_rep for k in coef)})
    return pd.DataFrame(rows, columns=["method", "model", "family", "tasks", "depth", "estimate", "ci_low", "ci_high",
                                       "n_seeds"])


def _num(x, digits=1) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:+.{digits}f}"


def _row_text(r) -> str:
    ci = (f"95 % CI [{_num(r['ci_low'])}, {_num(r['ci_high'])}]" if not math.isnan(r["ci_low"]) else "no interval")
    unit = "" if r["unit"] == NORM_UNIT else f" {r['unit']}"
    mdd = (f"detection limit ±{abs(r['mdd']):.1f}{unit}" if not math.isnan(r["mdd"]) else "no detection limit")
    p = f"Holm p = {r['p_holm']:.3f}" if not math.isnan(r["p_holm"]) else "no test"
    return (f"{r['contrast']} = {_num(r['estimate'])}{unit}, {ci}, {p}, {mdd} "
            f"(n = {int(r['n_seeds'])} {r['replicate']}s per depth)")


def answer_lines(table: pd.DataFrame) -> list[str]:
    """The report's statement of the answer: the primary test first, then the secondary rows,
    each from its Holm-adjusted test (never from a point estimate alone)."""
    if table.empty:
        return ["- no student results at two or more depths on informative tasks: no answer."]
    m = int(table["p_holm"].notna().sum())
    lines = [f"**Primary test, per KD method** (fixed before any result was read): does depth help content tasks "
             f"more than speaker tasks? Normalised points (each task in units of its teacher - FBANK gap); "
             f"family-wise error {ALPHA:.0%} over all {m} rows below (Holm); detection limits at 80 % power.", ""]
    prim = table[table["role"] == PRIMARY]
    if prim.empty:
        lines.append("- no primary test: it needs an informative, replicated task in both the content and the speaker "
                     "family (see the guard table).")
    for _, r in prim.iterrows():
        lines.append(f"- {r['method']} ({r['tasks']}): **{_verdict_text(r)}** ({_row_text(r)}).")
    lines += ["", "Secondary rows:", ""]
    for _, r in table[table["role"] == SECONDARY].iterrows():
        what = r["tasks"] if r["tasks"] and "," not in r["tasks"] else f"{r['family']} ({r['tasks']})"
        lines.append(f"- {r['method']}, {what}: **{_verdict_text(r)}** ({_row_text(r)}).")
    lines += ["", "All rows are conditional on this study's one teacher: its pretraining noise is not sampled."]
    return lines


def _verdict_text(r) -> str:
    if r["verdict"] != INCONCLUSIVE:
        return r["verdict"]
    if math.isnan(r["mdd"]):
        return "inconclusive (noise unknown: " + (r["notes"] or "too few replicates") + ")"
    unit = "" if r["unit"] == NORM_UNIT else f" {r['unit']}"
    return f"inconclusive: no effect larger than ±{abs(r['mdd']):.1f}{unit} (80 % power)"


__all__ = ["verdict_table", "verdict_rows", "depth_estimates", "design_of", "plan_rows", "Design", "answer_lines",
           "ALPHA", "COLUMNS", "DEEPER", "WIDER", "INCONCLUSIVE", "CONTENT_MORE", "SPEAKER_MORE", "TASKS"]
