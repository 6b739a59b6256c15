"""Figures of the report (matplotlib, Agg backend), each saved as PNG and PDF.

- ``depth``: normalised family score vs student depth at (roughly) constant parameters, one
  panel per SUPERB task family with verdict tasks (and all of them), one line per KD method:
  the verdict's tasks, estimator and noise model, 95 % intervals, each panel's verdict;
- ``heatmap``: per task and KD method, depth x width coloured by the per-task score
  (0 = FBANK, 100 = upper anchor) and annotated with the raw metric;
- ``layer_weights``: learned SUPERB layer-weight profiles, one panel per task, one line per
  upstream; profiles that never left their uniform start are drawn faint and said to be so;
- ``cka``: linear CKA between every student layer and every teacher layer, one panel per
  student;
- ``kd_loss``: held-out KD loss (L1, cosine similarity) per teacher layer for every student;
- ``pareto``: score vs parameters and vs MACs per second of audio, with the Pareto front (best
  score for at most that cost); normalised: the verdict's score with 95 % intervals.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import logging

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from deepwide.report import analysis  # noqa: E402
from deepwide.report.score import FAMILIES, METRIC, SCORE_KEYS, TASKS  # noqa: E402
from deepwide.utils.io import atomic_path  # noqa: E402

FIGURES = ("depth", "heatmap", "layer_weights", "cka", "pareto", "kd_loss")
log = logging.getLogger(__name__)

DEFAULTS = {"dpi": 150, "panel_width": 4.0, "panel_height": 3.2, "font_size": 9, "cmap": "viridis",
            "reference": "normalised", "show_published": False}


def short(model: str) -> str:
    if model.startswith("published:"):
        return model.split(":", 1)[1]
    method, _, shape = model.partition("-")
    if not shape:
        return model
    d, _, rest = shape.partition("x")
    return f"{method} {d}x{rest.split('f')[0]}"


def save(fig, out: Path, dpi: int) -> list[Path]:
    paths = []
    for ext in ("png", "pdf"):
        path = out.with_suffix(f".{ext}")
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=ext, dpi=dpi, bbox_inches="tight")
        paths.append(path)
    plt.close(fig)
    return paths


def _grid(n, opts, ncols=None):
    ncols = ncols or min(n, 3)
    nrows = max(1, math.ceil(n / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(opts["panel_width"] * ncols, opts["panel_height"] * nrows),
                             squeeze=False, layout="constrained")
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat)


def _empty(ax, text):
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, fontsize="small", wrap=True)
    ax.set_xticks([])
    ax.set_yticks([])


def _ref_label(opts):
    return ("study-normalised: FBANK = 0, teacher = 100" if opts["reference"] == "normalised"
            else "leaderboard constants: FBANK = 0, SOTA = 100")


def depth_figure(dep, v, sc, opts, out):
    """Score vs depth from the verdict's estimator, tasks and noise model
    (:func:`deepwide.report.verdict.depth_estimates`): 95 % intervals, labelled, and each
    panel's verdict as the verdict table states it."""
    from deepwide.report import verdict as vd

    panels = [f for f in (*FAMILIES, "all") if len(dep) and f in set(dep["family"])]
    fig, axes = _grid(max(1, len(panels)), opts)
    students = sc[~sc["published"] & ~sc["method"].isin(analysis.NOT_STUDENTS)]
    params = students["params"].dropna()
    budget = (f"students at {params.min() / 1e6:.2f}-{params.max() / 1e6:.2f} M params" if len(params)
              else "students")
    if not panels:
        _empty(axes[0], "no informative task that every student replicate ran:\nno score to compare depths on "
                        "(see the guard and verdict tables)")
    for ax, fam in zip(axes, panels):
        d = dep[dep["family"] == fam]
        ax.set_title(f"{fam} ({d['tasks'].iloc[0]})")
        notes = []
        for method, g in d.groupby("method"):
            g = g.sort_values("depth")
            y = g["estimate"].to_numpy(float)
            yerr = np.vstack([y - g["ci_low"].to_numpy(float), g["ci_high"].to_numpy(float) - y])
            ax.errorbar(g["depth"].astype(float), y, yerr=np.nan_to_num(yerr), marker="o", capsize=3,
                        label=f"{method} (95 % CI, {int(g['n_seeds'].min())} seeds)")
            rows = v[(v["method"] == method) & (v["family"] == fam) & (v["tasks"] == g["tasks"].iloc[0])] if len(v) else v
            if fam == "all":
                rows = v[(v["method"] == method) & (v["role"] == vd.PRIMARY)] if len(v) else v
            if len(rows):
                r = rows.iloc[0]
                notes.append(f"{method} primary test (content - speaker): {r['verdict']}" if fam == "all"
                             else f"{method}: {r['verdict']}")
        ax.axhline(100.0, color="grey", ls="--", lw=1, label="teacher (100)")
        ax.axhline(0.0, color="grey", ls=":", lw=1, label="FBANK (0)")
        if notes:
            ax.text(0.02, 0.02, "verdict: " + "; ".join(notes), transform=ax.transAxes, fontsize="x-small", va="bottom")
        ax.set_xscale("log", base=2)
        depths = sorted(d["depth"].astype(int).unique())
        ax.set_xticks(depths, [str(x) for x in depths])
        ax.set_xlabel("student depth (layers)")
        ax.set_ylabel("normalised score (FBANK 0, teacher 100)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="x-small")
    fig.suptitle(f"Score vs depth, {budget}: the verdict's tasks and estimator; error bars are 95 % intervals "
                 "(seeds and test items)", fontsize="medium")
    return save(fig, out, opts["dpi"])


def heatmap_figure(best, summary, opts, out, items=None):
    terms = analysis.task_terms_table(best, summary, opts["reference"], items)
    students = summary[~summary["published"] & ~summary["method"].isin(analysis.NOT_STUDENTS)]
    keys = [k for k in SCORE_KEYS if k in students and students[k].notna().any()]
    methods = sorted(students["method"].unique())
    if not keys or not methods:
        fig, axes = _grid(1, opts)
        _empty(axes[0], "no student results")
        return save(fig, out, opts["dpi"])
    fig, axes = plt.subplots(len(methods), len(keys), squeeze=False, layout="constrained",
                             figsize=(opts["panel_width"] * 0.8 * len(keys), opts["panel_height"] * len(methods)))
    mean_terms = terms.groupby(["model", "task"])["term"].mean() if len(terms) else pd.Series(dtype=float)
    depths = sorted(students["depth"].dropna().astype(int).unique())
    widths = sorted(students["width"].dropna().astype(int).unique())
    image = None
    for i, method in enumerate(methods):
        s = students[students["method"] == method]
        for j, key in enumerate(keys):
            ax = axes[i][j]
            grid = np.full((len(depths), len(widths)), np.nan)
            task = "SF" if key.startswith("SF") else key
            for _, r in s.iterrows():
                if pd.isna(r["depth"]) or pd.isna(r["width"]):
                    continue
                di, wi = depths.index(int(r["depth"])), widths.index(int(r["width"]))
                grid[di, wi] = mean_terms.get((r["model"], task), np.nan)
                if pd.notna(r[key]):
                    ax.text(wi, di, f"{r[key]:.{4 if key == 'QbE' else 1}f}", ha="center", va="center",
                            fontsize="small", color="white" if np.isnan(grid[di, wi]) or grid[di, wi] < 50 else "black")
            image = ax.imshow(grid, cmap=opts["cmap"], vmin=0, vmax=100, origin="lower", aspect="auto")
            ax.set_xticks(range(len(widths)), [str(w) for w in widths], rotation=45)
            ax.set_yticks(range(len(depths)), [str(d) for d in depths])
            ax.set_title(f"{key} {METRIC[key]} ({method})", fontsize="medium")
            if j == 0:
                ax.set_ylabel("depth")
            if i == len(methods) - 1:
                ax.set_xlabel("width")
    fig.suptitle(f"Depth x width per task: colour = per-task score ({_ref_label(opts)}), text = metric")
    if image is not None:
        fig.colorbar(image, ax=list(np.ravel(axes)), shrink=0.8, label="per-task score")
    return save(fig, out, opts["dpi"])


# a layer-weight profile within this of uniform (1/L: s3prl's softmax over zero logits) never moved
UNMOVED_TOL = 0.01


def unmoved(weights: pd.DataFrame) -> bool:
    """Whether every profile in ``weights`` (rows layer, weight of one or more heads) is still
    the uniform softmax over zero logits it starts from."""
    if weights.empty:
        return False
    out = []
    for _, g in weights.groupby(["upstream", "lr", "seed"]):
        w = g["weight"].to_numpy(float)
        out.append(float(np.max(np.abs(w - 1.0 / len(w)))) < UNMOVED_TOL)
    return all(out)


def layer_weight_figure(lw, best, opts, out):
    chosen = best[~best["published"]][["model", "task", "lr"]].drop_duplicates()
    lw = lw.merge(chosen, on=["model", "task", "lr"]) if len(lw) else lw
    lw = lw[lw["model"] != "fbank"]  # one input feature: its single weight says nothing
    tasks = [t for t in TASKS if len(lw) and t in set(lw["task"])]
    fig, axes = _grid(max(1, len(tasks)), opts)
    if not tasks:
        _empty(axes[0], "no layer weights in the results")
        return save(fig, out, opts["dpi"])
    # colour = student shape, line style = KD method, the teacher thick and black
    shapes = sorted({m.partition("-")[2] for m in lw["model"].unique() if "-" in m},
                    key=lambda sh: tuple(int(v) for v in re.findall(r"\d+", sh)))
    colors = {sh: plt.cm.tab10(i % 10) for i, sh in enumerate(shapes)}
    methods = sorted({m.partition("-")[0] for m in lw["model"].unique() if "-" in m})
    styles = dict(zip(methods, ["-", "--", ":", "-."] * 3))
    for ax, task in zip(axes, tasks):
        g = lw[lw["task"] == task]
        still = []
        for model, gm in g.groupby("model"):
            prof = gm.groupby("layer")["weight"].agg(["mean", "std"]).reset_index()
            method, _, shape = model.partition("-")
            style = (dict(color="black", lw=2.5, ls="-") if model == "teacher"
                     else dict(color=colors.get(shape, "grey"), lw=1.3, ls=styles.get(method, "-")))
            if unmoved(gm):
                still.append(short(model))
                style.update(alpha=0.3)
            ax.errorbar(prof["layer"], prof["mean"], yerr=prof["std"].fillna(0), marker=".", capsize=2,
                        label=short(model) + (" (never moved)" if unmoved(gm) else ""), **style)
        ax.set_title(task)
        if still:
            n_all = g["model"].nunique()
            ax.text(0.02, 0.98, (f"all {n_all} profiles" if len(still) == n_all else f"{len(still)} of {n_all} profiles")
                    + f" never left the uniform start (max |w - 1/L| < {UNMOVED_TOL:g}):\nthe head was too short to "
                    "learn them; not a finding", transform=ax.transAxes, fontsize="x-small", va="top", color="firebrick")
        ax.set_xlabel("layer (0 = transformer input)")
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.set_ylabel("softmax layer weight")
        ax.grid(alpha=0.3)
    seen = {}
    for ax in axes[: len(tasks)]:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(lab, h)
    fig.legend(list(seen.values()), list(seen.keys()), loc="outside right upper", fontsize="small")
    fig.suptitle("Learned SUPERB layer weights per task (best lr)")
    return save(fig, out, opts["dpi"])


def cka_figure(cka, opts, out):
    def order(m):
        method, _, shape = m.partition("-")
        return (method, [int(v) for v in re.findall(r"\d+", shape)])

    models = sorted(cka["model"].unique(), key=order) if len(cka) else []
    fig, axes = _grid(max(1, len(models)), opts, ncols=min(max(1, len(models)), 4))
    if not models:
        _empty(axes[0], "no CKA results")
        return save(fig, out, opts["dpi"])
    image = None
    for ax, model in zip(axes, models):
        g = cka[cka["model"] == model]
        # one matrix per model: the mean over its distillation seeds (one upstream each)
        seeds = g["upstream"].nunique() if "upstream" in g else 1
        m = g.pivot_table(index="student_layer", columns="teacher_layer", values="cka", aggfunc="mean").sort_index()
        image = ax.imshow(m.values, vmin=0, vmax=1, cmap=opts["cmap"], origin="lower", aspect="auto")
        if m.shape[0] * m.shape[1] <= 100:  # small matrices: print the values
            for (i, j), v in np.ndenumerate(m.values):
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize="x-small",
                        color="black" if v > 0.6 else "white")
        ax.set_xticks(range(m.shape[1]), [str(c) for c in m.columns])
        ax.set_yticks(range(m.shape[0]), [str(c) for c in m.index])
        ax.set_xlabel("teacher layer")
        ax.set_ylabel("student layer")
        ax.set_title(short(model) + (f" (mean of {seeds} seeds)" if seeds > 1 else ""))
    fig.suptitle("Linear CKA between student and teacher layers on held-out audio")
    fig.colorbar(image, ax=[a for a in axes if a.get_visible()], shrink=0.8, label="linear CKA")
    return save(fig, out, opts["dpi"])


def pareto_front(cost: np.ndarray, score: np.ndarray) -> np.ndarray:
    """Indices of points no other point beats (<= cost and >= score, one strictly), by cost."""
    order = np.lexsort((-score, cost))
    front, best = [], -np.inf
    for i in order:
        if score[i] > best:
            front.append(i)
            best = score[i]
    return np.array(front, dtype=int)


def pareto_figure(sc, opts, out, per_model=None):
    """Cost vs score. With the normalised reference the score is the verdict's (its tasks, its
    estimator, 95 % intervals: ``per_model`` from :func:`deepwide.report.verdict.depth_estimates`);
    with the leaderboard reference, the SUPERB score over every task run (mean ± sd)."""
    ref = opts["reference"]
    data = sc if opts["show_published"] else sc[~sc["published"]]
    if ref == "normalised" and per_model is not None:
        est = per_model[per_model["family"] == "all"].set_index("model")
        data = data[data["model"].isin(est.index)].copy()
        data[ref] = data["model"].map(est["estimate"])
        data[f"{ref}_lo"], data[f"{ref}_hi"] = data["model"].map(est["ci_low"]), data["model"].map(est["ci_high"])
        data[f"{ref}_tasks"] = data["model"].map(est["tasks"])
    data = data[data["method"] != "fbank"].dropna(subset=[ref])
    panels = [("params", 1e6, "parameters (M)"), ("macs_per_second", 1e9, "GMACs per second of audio")]
    fig, axes = _grid(2, opts)
    for ax, (col, scale, label) in zip(axes, panels):
        d = data.dropna(subset=[col])
        if d.empty:
            _empty(ax, f"no {label} measured")
            continue
        x, y = d[col].to_numpy(float) / scale, d[ref].to_numpy(float)
        for method, g in d.groupby("method"):
            if f"{ref}_lo" in g:
                yerr = np.nan_to_num(np.vstack([g[ref] - g[f"{ref}_lo"], g[f"{ref}_hi"] - g[ref]]).astype(float))
                label = f"{method} (95 % CI)"
            else:
                yerr, label = g[f"{ref}_std"].fillna(0), f"{method} (± sd over replicates)"
            ax.errorbar(g[col] / scale, g[ref], yerr=yerr, fmt="o", capsize=3, label=label)
        f = pareto_front(x, y)
        # name the models on the front; the others by depth only (they crowd at equal params)
        for k, (xi, yi, m, dep) in enumerate(zip(x, y, d["model"], d["depth"])):
            text = short(m) if k in set(f.tolist()) else (f"L{int(dep)}" if pd.notna(dep) else short(m))
            ax.annotate(text, (xi, yi), fontsize="x-small", xytext=(4, -3 if k % 2 else 3), textcoords="offset points")
        ax.step(x[f], y[f], where="post", color="black", lw=1, ls=":", label="Pareto front")
        if x.min() > 0 and x.max() / x.min() > 20:
            ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel(f"SUPERB score ({ref})")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize="small")
    tasks = data[f"{ref}_tasks"].dropna().iloc[0] if len(data) else ""
    fig.suptitle(f"Cost vs SUPERB score over {tasks or 'no tasks'} ({_ref_label(opts)})")
    return save(fig, out, opts["dpi"])


def kd_loss_figure(kd, opts, out):
    """Held-out KD loss per teacher layer: per KD method, L1 and cosine similarity of every
    student's predictions, one line per student shape (mean over distillation seeds)."""
    methods = sorted(kd["method"].unique()) if len(kd) else []
    fig, axes = _grid(max(1, 2 * len(methods)), opts, ncols=2)
    if not methods:
        _empty(axes[0], "no held-out KD loss (no students)")
        return save(fig, out, opts["dpi"])
    for i, method in enumerate(methods):
        g = kd[kd["method"] == method]
        for j, (col, label) in enumerate((("l1", "held-out L1"), ("cos", "held-out cosine similarity"))):
            ax = axes[2 * i + j]
            for shape, s in sorted(g.groupby("shape"), key=lambda kv: [int(v) for v in re.findall(r"\d+", kv[0])]):
                m = s.groupby("teacher_layer")[col].agg(["mean", "std"]).reset_index()
                ax.errorbar(m["teacher_layer"], m["mean"], yerr=m["std"].fillna(0), marker="o", capsize=3, label=shape)
            ax.set_title(f"{method}: {label}")
            ax.set_xlabel("teacher layer (KD target)")
            ax.set_ylabel(label)
            ax.grid(alpha=0.3)
            ax.legend(fontsize="small")
    fig.suptitle("KD fidelity on held-out audio (no downstream training)")
    return save(fig, out, opts["dpi"])


def write_figures(results: pd.DataFrame, layer_weights: pd.DataFrame, cka: pd.DataFrame, out_dir, options=None,
                  kd_loss: pd.DataFrame | None = None, items: pd.DataFrame | None = None):
    from deepwide.errors import DeepwideError

    unknown = sorted(set(options or {}) - set(DEFAULTS))
    if unknown:
        raise DeepwideError(f"report figures: unknown option(s) {', '.join(unknown)} (known: {', '.join(DEFAULTS)})")
    opts = {**DEFAULTS, **(options or {})}
    if opts["cmap"] not in matplotlib.colormaps:
        raise DeepwideError(f"report figures: cmap {opts['cmap']!r} is not a matplotlib colour map")
    if opts["reference"] not in ("normalised", "leaderboard"):
        raise DeepwideError(f"report figures: reference must be normalised or leaderboard, got {opts['reference']!r}")
    plt.rcParams.update({"font.size": opts["font_size"]})
    if not opts["show_published"]:
        results = results[~results["published"]]
    best = analysis.best_lr(results)
    summary = analysis.model_summary(best)
    sc = analysis.scores(best, summary, items)
    if opts["reference"] == "normalised" and sc["normalised"].isna().all():
        # e.g. a smoke run where teacher and FBANK tie on every task: the score figures stay
        # empty (and say why) but the per-task figures are still worth drawing
        log.warning("report figures: no task passes the teacher-vs-FBANK guard (see the guard table: one seed "
                    "gives no noise estimate), so the normalised score is undefined; score-vs-depth and Pareto "
                    "figures stay empty "
                    "(report.figures.reference: leaderboard uses SUPERB's constants instead)")
    out_dir = Path(out_dir)
    written = []
    from deepwide.report import verdict

    v = verdict.verdict_table(best, summary, items)
    written += depth_figure(verdict.depth_estimates(best, summary, items), v, sc, opts, out_dir / "depth")
    written += heatmap_figure(best, summary, opts, out_dir / "heatmap", items)
    written += layer_weight_figure(layer_weights, best, opts, out_dir / "layer_weights")
    written += cka_figure(cka, opts, out_dir / "cka")
    written += pareto_figure(sc, opts, out_dir / "pareto", verdict.depth_estimates(best, summary, items, per_model=True))
    written += kd_loss_figure(_kd_frame(kd_loss), opts, out_dir / "kd_loss")
    return written


def _kd_frame(kd: pd.DataFrame | None) -> pd.DataFrame:
    from deepwide.report.collect import parse_upstream

    if kd is None or kd.empty:
        return pd.DataFrame(columns=["upstream", "method", "shape", "teacher_layer", "l1", "cos"])
    info = kd["upstream"].map(parse_upstream)
    return kd.assign(method=[i["method"] for i in info], shape=[i["shape"] or i["model"] for i in info])
