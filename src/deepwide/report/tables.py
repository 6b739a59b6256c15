"""Tables of the report, each written as Markdown, CSV and LaTeX (booktabs).

- ``results``: every model x task (test metric at the best lr by dev) with cost columns;
- ``grid``: each task over depth x width (rows) and KD method (columns);
- ``families``: content (PR, ASR, QbE, IC, SF) vs speaker (SID, ASV, SD, ER) tasks;
- ``score``: SUPERB score with the leaderboard constants and the study-normalised score;
- ``trend``: the study's answer per KD method and task family: score at each student depth,
  the best depth and the Spearman correlation of score with depth (positive: depth helps).

Values are ``mean ± std`` over seeds when a model has several seeds.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from deepwide.report import analysis
from deepwide.report.score import CONTENT, METRIC, SCORE_KEYS, SPEAKER
from deepwide.utils.io import atomic_write_text

TABLES = ("results", "grid", "families", "score", "trend")
FORMATS = ("md", "csv", "tex")


def fmt(mean, std=math.nan, digits=2) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "–"
    if round(mean, digits) == 0:
        mean = 0.0  # no "-0.0"
    s = f"{mean:.{digits}f}"
    if std is not None and not (isinstance(std, float) and math.isnan(std)):
        s += f" ± {std:.{digits}f}"
    return s


def digits_for(key: str) -> int:
    return 4 if key == "QbE" else 2


def model_label(row) -> str:
    if row["published"]:
        return row["model"].split(":", 1)[1] + " †"
    return row["model"]


def _params(p) -> str:
    return "–" if p is None or pd.isna(p) else f"{p / 1e6:.4g}"


def _shape(s) -> str:
    return "–" if s is None or pd.isna(s) else str(s)


def _label(key: str) -> str:
    return f"SF {METRIC[key]}" if key.startswith("SF_") else f"{key} {METRIC[key]}"


def _keys_present(summary) -> list[str]:
    return [k for k in SCORE_KEYS if k in summary and summary[k].notna().any()]


def machines(summary) -> str:
    names = sorted({m for m in summary["machine"].dropna().unique()})
    return "; ".join(names) if names else "not measured"


def results_table(summary: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for _, r in summary.iterrows():
        rec = {"model": model_label(r), "method": r["method"], "shape": _shape(r["shape"]),
               "params (M)": _params(r["params"]),
               "GMACs/s": "–" if pd.isna(r["macs_per_second"]) else f"{r['macs_per_second'] / 1e9:.4g}",
               "RTF": "–" if pd.isna(r["rtf"]) else f"{r['rtf']:.3g}"}
        for key in _keys_present(summary):
            rec[_label(key)] = fmt(r[key], r[f"{key}_std"], digits_for(key))
        rows.append(rec)
    return pd.DataFrame(rows)


def grid_table(summary: pd.DataFrame) -> pd.DataFrame:
    """Rows (task, depth, width), columns KD method: the students only."""
    students = summary[~summary["published"] & ~summary["method"].isin(analysis.NOT_STUDENTS)]
    methods = sorted(students["method"].unique())
    rows = []
    for key in _keys_present(students):
        for (depth, width), g in students.groupby(["depth", "width"], sort=True):
            rec = {"task": _label(key), "depth": int(depth), "width": int(width),
                   "params (M)": _params(g["params"].mean())}
            for m in methods:
                s = g[g["method"] == m]
                rec[m] = fmt(s.iloc[0][key], s.iloc[0][f"{key}_std"], digits_for(key)) if len(s) else "–"
            rows.append(rec)
    return pd.DataFrame(rows, columns=["task", "depth", "width", "params (M)", *methods])


def families_table(sc: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for _, r in sc.iterrows():
        rows.append({
            "model": model_label(r), "params (M)": _params(r["params"]),
            "content (normalised)": fmt(r["normalised_content"], r["normalised_content_std"], 1),
            "speaker (normalised)": fmt(r["normalised_speaker"], r["normalised_speaker_std"], 1),
            "content (leaderboard)": fmt(r["leaderboard_content"], r["leaderboard_content_std"], 1),
            "speaker (leaderboard)": fmt(r["leaderboard_speaker"], r["leaderboard_speaker_std"], 1),
        })
    return pd.DataFrame(rows)


def score_table(sc: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for _, r in sc.iterrows():
        rows.append({
            "model": model_label(r), "method": r["method"], "shape": _shape(r["shape"]),
            "params (M)": _params(r["params"]),
            "SUPERB (leaderboard)": fmt(r["leaderboard"], r["leaderboard_std"], 1),
            "tasks (leaderboard)": r["leaderboard_tasks"] or "–",
            "SUPERB (normalised)": fmt(r["normalised"], r["normalised_std"], 1),
            "tasks (normalised)": r["normalised_tasks"] or "–",
            "seeds": int(r["seeds"]),
        })
    return pd.DataFrame(rows)


def trend_table(sc: pd.DataFrame, reference: str) -> pd.DataFrame:
    """Per KD method and task family: score by depth, best depth, Spearman rho(depth, score)."""
    from scipy.stats import spearmanr

    students = sc[~sc["published"] & ~sc["method"].isin(analysis.NOT_STUDENTS)]
    depths = sorted(students["depth"].dropna().astype(int).unique())
    cols = {"content": f"{reference}_content", "speaker": f"{reference}_speaker", "all tasks": reference}
    rows = []
    for method, g in students.groupby("method"):
        for family, col in cols.items():
            d = g.dropna(subset=[col, "depth"])
            if d.empty:
                continue
            rec = {"method": method, "family": family}
            by_depth = d.groupby("depth")[col].mean()
            for dep in depths:
                rec[f"L={dep}"] = fmt(by_depth.get(dep, math.nan), digits=1)
            rec["best depth"] = int(by_depth.idxmax())
            if len(by_depth) >= 3 and by_depth.nunique() > 1:
                rec["rho(depth, score)"] = f"{spearmanr(by_depth.index, by_depth.values).statistic:+.2f}"
            else:
                rec["rho(depth, score)"] = "–"
            rows.append(rec)
    return pd.DataFrame(rows)


def captions(summary: pd.DataFrame, sc: pd.DataFrame) -> dict[str, str]:
    seeds = int(sc.loc[~sc["published"], "seeds"].max()) if (~sc["published"]).any() else 1
    seed_note = f" Values are mean ± standard deviation over {seeds} seeds." if seeds > 1 else " One seed."
    pub = " Rows marked † are published numbers (sources in src/deepwide/data/published.yaml), not runs of this pipeline." if summary["published"].any() else ""
    return {
        "results": (
            "SUPERB test results per model, each at the learning rate with the best dev value (PER, WER, "
            "EER, DER, CER in %, lower is better; accuracies and F1 in %; QbE as MTWV). Cost: parameters, "
            f"multiply-accumulates per second of audio, real-time factor measured on {machines(summary)}."
            + seed_note + pub
        ),
        "grid": "Each task's test metric over student depth x width (rows) and KD method (columns), "
                "best lr by dev." + seed_note,
        "families": (
            "Content tasks (PR, ASR, QbE, IC, SF) vs speaker tasks (SID, ASV, SD, ER): mean per-task score "
            "over the family's tasks present, 0 = FBANK, 100 = upper anchor. Normalised: this study's own FBANK "
            "and teacher rows as anchors; leaderboard: SUPERB's FBANK and SOTA constants (meaningful at full scale)."
            + seed_note + pub
        ),
        "trend": (
            "Depth vs width at a roughly constant parameter count: per KD method and task family, the score of "
            "the students at each depth (mean per-task score for a family, SUPERB score for all tasks; reference "
            "as set in report.figures.reference), the best depth, and the Spearman correlation between depth and "
            "score over the depths (positive: deeper, narrower students do better; negative: wider, shallower "
            "ones do)." + seed_note
        ),
        "score": (
            "SUPERB score = 1000/10 x sum over tasks of (s - s_FBANK)/(s_ref - s_FBANK), SF as the mean of its F1 "
            "and CER terms, summed over the tasks listed (a full 10-task run is on the leaderboard scale). "
            "Leaderboard: SUPERB's FBANK and SOTA constants (for full-scale runs). Normalised: this study's own "
            "FBANK row = 0 and teacher row = 100 per task (for the embedded study, whose numbers are not "
            "comparable to the leaderboard)." + seed_note + pub
        ),
    }


def _tex_escape(s) -> str:
    s = str(s)
    for a, b in [("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#"),
                 ("$", r"\$"), ("{", r"\{"), ("}", r"\}")]:
        if a == "\\":
            s = s.replace(a, "\0")
        else:
            s = s.replace(a, b)
    s = s.replace("\0", r"\textbackslash{}")
    return s.replace("±", r"$\pm$").replace("†", r"$^\dagger$").replace("–", "--").replace(" x ", r" $\times$ ")


def to_latex(df: pd.DataFrame, caption: str, label: str) -> str:
    align = "".join("l" if c in ("model", "method", "shape", "task") or c.startswith("tasks") else "r" for c in df.columns)
    lines = [
        r"% needs \usepackage{booktabs}",
        r"\begin{table}[t]", r"\centering", r"\small",
        rf"\caption{{{_tex_escape(caption)}}}", rf"\label{{tab:{label}}}",
        rf"\begin{{tabular}}{{{align}}}", r"\toprule",
        " & ".join(_tex_escape(c) for c in df.columns) + r" \\", r"\midrule",
    ]
    for _, r in df.iterrows():
        lines.append(" & ".join(_tex_escape(v) for v in r.values) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}", ""]
    return "\n".join(lines)


def to_markdown(df: pd.DataFrame, caption: str) -> str:
    body = df.to_markdown(index=False) if len(df) else "(no rows)"
    return f"{caption}\n\n{body}\n"


def build_tables(results: pd.DataFrame, reference: str = "normalised") -> tuple[dict[str, pd.DataFrame], dict[str, str]]:
    best = analysis.best_lr(results)
    summary = analysis.model_summary(best)
    sc = analysis.scores(best, summary)
    tables = {
        "results": results_table(summary),
        "grid": grid_table(summary),
        "families": families_table(sc),
        "score": score_table(sc),
        "trend": trend_table(sc, reference),
    }
    return tables, captions(summary, sc)


def write_tables(results: pd.DataFrame, out_dir: str | Path, include_published: bool = True,
                 reference: str = "normalised") -> list[Path]:
    if not include_published:
        results = results[~results["published"]]
    tables, caps = build_tables(results, reference)
    out_dir = Path(out_dir)
    written = []
    for name, df in tables.items():
        for ext in FORMATS:
            path = out_dir / f"{name}.{ext}"
            if ext == "md":
                text = to_markdown(df, caps[name])
            elif ext == "csv":
                text = df.to_csv(index=False)
            else:
                text = to_latex(df, caps[name], name)
            atomic_write_text(path, text)
            written.append(path)
    return written


__all__ = ["write_tables", "build_tables", "TABLES", "FORMATS", "CONTENT", "SPEAKER"]
