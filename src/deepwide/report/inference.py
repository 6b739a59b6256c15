"""Intervals for linear contrasts of SUPERB test scores, with every noise source the study samples.

Data. A *cell* is one (score key, model): its replicates ``r = 1..R`` and, where the superb
stage left per-utterance results (:mod:`deepwide.superb.items`), its test items ``i = 1..n``.
A replicate is the study's independent unit for that model: a distillation seed (its SUPERB
head seeds averaged), or a head seed for a model with one distillation seed or none (teacher,
FBANK). A replicate's score is ``scale * sum_i v[r, i] / sum_i w[i]`` (accuracies: v = 1 when
right, w = 1; error rates: v = edits, w = reference tokens). Every model of a task is tested
on the same items, so items are *paired* across models; replicates of different models share
nothing and are not paired.

Model (crossed random effects, per cell): ``g[r, i] = mu + a_i + u_r + e_ri`` with
``g = scale * v / mean(w)``: item effects ``a`` (shared by a task's models, but with a model x
item part), replicate effects ``u`` (distillation and head seed), and their interaction ``e``.

A contrast ``L = sum_cells c * mean_r score_r`` has the method-of-moments variance

- seeds: ``sum_cells c^2 * var_r(score_r) / R`` (includes ``e``'s share ``s2_e / n``);
- test items, per task (test sets of different tasks are independent): ``var_i(d_i) / n`` of
  the linearised item terms ``d_i = u_i - L_t * w_i / mean(w)`` with ``u_i = sum_cells c *
  mean_r g[r, i]`` (the ratio estimator's delta method: error rates divide by the test set's
  token count, which resampling items changes), minus ``sum_cells c^2 * s2_e / R / n``, the
  interaction already counted in the seed part (``s2_e``: the two-way ANOVA interaction mean
  square of each cell), floored at 0.

Where a cell has no per-item results its task's item part falls back to the unpaired sum of
each cell's sampling variance (``sampling_se``: the superb stage's measured SE for error
rates, else binomial over the test size) -- conservative, since pairing would cancel the
shared item difficulty. Where even that is unknown the item part is NaN and so is the SE.

Degrees of freedom: Welch-Satterthwaite over the components (seed part of each cell:
``R - 1``; item part of each task: ``n - 1``). The interval is Student's t on them; the
detection limit (minimum detectable difference at power 1 - beta, two-sided level alpha) is
``(t_{1 - alpha/2} + t_{1 - beta}) * SE``.

A cell with one replicate has no seed variance of its own: :func:`contrast` takes it from
``borrow_var`` (the caller's pooled replicate variance for that key) or leaves it NaN.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Cell:
    """One (score key, model). ``scores``: per-replicate test scores (R,). ``values``: per
    replicate and item numerators (R, n), or None; ``weights``: per-item denominators (n,);
    ``item_ids``: the items' ids, identical for every cell of a task that has them."""

    key: str
    model: str
    scores: np.ndarray
    values: np.ndarray | None = None
    weights: np.ndarray | None = None
    item_ids: tuple | None = None
    scale: float = 100.0
    sampling_se: float = math.nan  # one replicate's test-set SE where no items

    @property
    def n_rep(self) -> int:
        return int(len(self.scores))

    @property
    def mean(self) -> float:
        return float(np.mean(self.scores))

    def rep_var(self) -> float:
        return float(np.var(self.scores, ddof=1)) if self.n_rep >= 2 else math.nan

    def interaction_ms(self) -> float:
        """Replicate x item interaction mean square of ``g = scale * v / mean(w)``; 0 with one
        replicate (no estimate, and nothing counted twice then)."""
        if self.values is None or self.n_rep < 2 or self.values.shape[1] < 2:
            return 0.0
        g = self.scale * self.values / float(np.mean(self.weights))
        resid = g - g.mean(axis=0, keepdims=True) - g.mean(axis=1, keepdims=True) + g.mean()
        r, n = g.shape
        return float((resid ** 2).sum() / ((r - 1) * (n - 1)))


@dataclass
class Estimate:
    estimate: float
    se: float
    se_seeds: float
    se_items: float
    df: float
    notes: list[str] = field(default_factory=list)

    def interval(self, level: float = 0.95) -> tuple[float, float]:
        if not (math.isfinite(self.se) and math.isfinite(self.df)) or self.df <= 0:
            return math.nan, math.nan
        q = t_quantile(0.5 + level / 2, self.df)
        return self.estimate - q * self.se, self.estimate + q * self.se

    def p_value(self) -> float:
        """Two-sided p of estimate = 0 (Student's t on df)."""
        if not (math.isfinite(self.se) and math.isfinite(self.df)) or self.df <= 0:
            return math.nan
        if self.se == 0:
            return 0.0 if self.estimate != 0 else 1.0
        from scipy.stats import t

        return float(2 * t.sf(abs(self.estimate) / self.se, self.df))

    def detection_limit(self, alpha: float = 0.05, power: float = 0.8) -> float:
        """Smallest |effect| a two-sided level-``alpha`` test finds with probability ``power``."""
        if not (math.isfinite(self.se) and math.isfinite(self.df)) or self.df <= 0:
            return math.nan
        return (t_quantile(1 - alpha / 2, self.df) + t_quantile(power, self.df)) * self.se


def t_quantile(p: float, df: float) -> float:
    from scipy.stats import t

    return float(t.ppf(p, df))


def _satterthwaite(parts: list[tuple[float, float]]) -> float:
    total = sum(v for v, _ in parts)
    denom = sum(v * v / d for v, d in parts if v > 0 and d > 0)
    if total <= 0 or denom <= 0:
        return math.inf if total >= 0 and parts else math.nan
    return total * total / denom


def contrast(cells: dict, coef: dict, borrow_var: dict | None = None) -> Estimate:
    """The estimate, SE (seed and item parts) and df of ``sum_k coef[k] * cells[k].mean``.

    ``cells``/``coef`` are keyed by (score key, model). ``borrow_var``: score key -> replicate
    variance for cells with one replicate (see the module docstring)."""
    notes: list[str] = []
    coef = {k: float(c) for k, c in coef.items() if c != 0}
    missing = [k for k in coef if k not in cells]
    if missing:
        raise KeyError(f"contrast: no results for {missing}")
    est = float(sum(c * cells[k].mean for k, c in coef.items()))
    parts: list[tuple[float, float]] = []  # (variance, df)
    v_seeds = 0.0
    for k, c in coef.items():
        cell = cells[k]
        var, df = cell.rep_var(), cell.n_rep - 1
        if math.isnan(var):
            var = (borrow_var or {}).get(cell.key, math.nan)
            df = math.inf if not math.isnan(var) else 0
            if math.isnan(var):
                notes.append(f"{cell.model} has one replicate of {cell.key}: seed noise unknown")
        v = c * c * var / cell.n_rep
        v_seeds += v
        parts.append((v, df))
    v_items = 0.0
    unpaired, unknown = [], []
    for key in dict.fromkeys(k[0] for k in coef):
        ks = [k for k in coef if k[0] == key]
        v, df, how = _item_variance([cells[k] for k in ks], [coef[k] for k in ks])
        {"unpaired": unpaired, "unknown": unknown}.get(how, []).append(key)
        v_items += v
        parts.append((v, df))
    if unpaired:
        notes.append(f"test-item noise unpaired (no per-item results for every model; conservative): {', '.join(unpaired)}")
    if unknown:
        notes.append(f"test-item noise unknown (no per-item results, no test-set size): {', '.join(unknown)}")
    se = math.sqrt(v_seeds + v_items) if math.isfinite(v_seeds + v_items) else math.nan
    df = _satterthwaite(parts) if math.isfinite(se) else math.nan
    return Estimate(est, se, math.sqrt(v_seeds) if math.isfinite(v_seeds) else math.nan,
                    math.sqrt(v_items) if math.isfinite(v_items) else math.nan, df, notes)


def _item_variance(cells: list[Cell], coefs: list[float]) -> tuple[float, float, str]:
    """(variance, df, how) of one task's test-item part of a contrast; how: paired, unpaired
    or unknown."""
    paired = all(c.values is not None for c in cells) and len({c.item_ids for c in cells}) == 1
    if paired:
        w = cells[0].weights
        n = len(w)
        wbar = float(np.mean(w))
        u = np.zeros(n)
        inter = 0.0
        for cell, c in zip(cells, coefs):
            u += c * cell.scale * cell.values.mean(axis=0) / wbar
            inter += c * c * cell.interaction_ms() / cell.n_rep
        lt = float(u.mean())
        d = u - lt * w / wbar
        var = (float(np.var(d, ddof=1)) - inter) / n if n >= 2 else math.nan
        return max(var, 0.0), max(n - 1, 1), "paired"
    # unpaired fallback: each cell's own sampling variance (of a mean over its replicates it
    # does not shrink: they share the test set)
    ses = [c.sampling_se for c in cells]
    if any(math.isnan(s) for s in ses):
        return math.nan, 0, "unknown"
    n = min((len(c.weights) if c.weights is not None else 30) for c in cells)
    return float(sum(c * c * s * s for c, s in zip(coefs, ses))), max(n - 1, 1), "unpaired"


def holm(pvalues: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values (NaN stays NaN and does not count in the family)."""
    idx = [i for i, p in enumerate(pvalues) if p is not None and not math.isnan(p)]
    m = len(idx)
    out = [math.nan] * len(pvalues)
    running = 0.0
    for rank, i in enumerate(sorted(idx, key=lambda j: pvalues[j])):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        out[i] = running
    return out


def sampling_se(mean: float, n_test: float, key: str, measured: float = math.nan) -> float:
    """One replicate's test-set standard error (in %) of a percent metric: ``measured`` where
    the superb stage computed it from per-utterance errors (PR, ASR), else binomial over
    ``n_test`` scored units (accuracies: utterances; EER, DER: an approximation). NaN for MTWV
    or without a test-set size."""
    from deepwide.report.score import METRIC

    if measured is not None and not math.isnan(measured):
        return float(measured)
    if n_test is None or math.isnan(n_test) or n_test <= 0 or METRIC.get(key) == "MTWV" or math.isnan(mean):
        return math.nan
    p = min(max(mean / 100.0, 0.0), 1.0)
    return 100.0 * math.sqrt(p * (1 - p) / n_test)


def build_cells(best, items=None, tol: float = 0.01) -> dict:
    """(score key, model) -> :class:`Cell` from the report's rows at the chosen lr (``best``)
    and, optionally, the per-item table of ``report collect`` (columns upstream, key, lr, seed,
    item, value, weight). A model's replicate is its distillation seed when it has two or more
    (head seeds averaged within), else its head seed. Items whose score differs from the
    result's by more than ``tol`` points are not used (logged)."""
    import logging

    import pandas as pd

    log = logging.getLogger(__name__)
    measured = best[~best["published"]]
    index = {}
    if items is not None and len(items):
        for ident, g in items.groupby(["upstream", "key", "lr", "seed"], sort=False):
            g = g.sort_values("item")
            index[(ident[0], ident[1], float(ident[2]), int(ident[3]))] = g
    cells = {}
    for (model, key), g in measured.groupby(["model", "key"], sort=False):
        ds = g["distill_seed"].astype("Int64").fillna(-1).astype(int) if "distill_seed" in g else pd.Series(-1, index=g.index)
        unit = ds if ds.nunique() >= 2 else g["seed"].astype(int)
        units = sorted(unit.unique())
        scores = np.array([float(g.loc[unit == u, "test"].mean()) for u in units])
        values, weights, ids = [], None, None
        for u in units:
            heads = []
            for _, r in g[unit == u].iterrows():
                it = index.get((r["upstream"], key, float(r["lr"]), int(r["seed"])))
                if it is None:
                    heads = None
                    break
                got_ids = tuple(it["item"])
                if ids is None:
                    ids, weights = got_ids, it["weight"].to_numpy(float)
                if got_ids != ids or not np.allclose(it["weight"].to_numpy(float), weights):
                    log.warning("%s %s: test items differ between heads; per-item noise not used", model, key)
                    heads = None
                    break
                v = it["value"].to_numpy(float)
                if abs(100.0 * v.sum() / weights.sum() - float(r["test"])) > tol:
                    log.warning("%s %s seed %s: per-item results give %.3f, the result %.3f; per-item noise not used",
                                model, key, r["seed"], 100.0 * v.sum() / weights.sum(), float(r["test"]))
                    heads = None
                    break
                heads.append(v)
            if heads is None:
                values = None
                break
            values.append(np.mean(heads, axis=0))
        n_test = float(g["test_n"].mean()) if "test_n" in g and g["test_n"].notna().any() else math.nan
        se_meas = float(g["test_se"].mean()) if "test_se" in g and g["test_se"].notna().all() else math.nan
        cell = Cell(key=key, model=model, scores=scores,
                    values=np.vstack(values) if values else None,
                    weights=weights if values else None, item_ids=ids if values else None)
        cell.sampling_se = sampling_se(cell.mean, n_test, key, se_meas)
        cells[(key, model)] = cell
    return cells


def pooled_rep_var(cells: dict) -> dict:
    """Score key -> mean replicate variance over the cells with two or more replicates (what a
    one-replicate cell borrows: seed noise of that task in this study)."""
    out: dict = {}
    for (key, _), cell in cells.items():
        if cell.n_rep >= 2:
            out.setdefault(key, []).append(cell.rep_var())
    return {k: float(np.mean(v)) for k, v in out.items()}
