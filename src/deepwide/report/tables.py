"""Tables of the report, each written as Markdown, CSV and LaTeX (booktabs).

- ``results``: every model x task (test metric at the best lr by dev) with cost columns;
- ``grid``: each task over depth x width (rows) and KD method (columns);
- ``families``: SUPERB's task families: content (PR, ASR, KS, QbE), speaker (SID, ASV, SD),
  semantics (IC, SF), paralinguistics (ER);
- ``score``: SUPERB score with the leaderboard constants and the study-normalised score;
- ``trend``: per KD method and task family the students' normalised score at each depth with
  its 95 % interval, from the verdict's estimator and tasks, and the verdict's answer;
- ``guard``: per task, teacher vs FBANK and whether the task is informative at this scale
  (only informative tasks enter the normalised score and the verdict);
- ``verdict``: the study's answer (:mod:`deepwide.report.verdict`): the primary depth x
  family interaction, then per-family and per-task contrasts, with 95 % intervals over every
  noise source, Holm-adjusted tests and detection limits; its Markdown states the answer
  from these verdicts, primary test first.

Values are ``mean ± std`` over replicates (distillation x head seeds) when a model has several.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from deepwide.report import analysis, verdict
from deepwide.report.score import CONTENT, FAMILIES, METRIC, SCORE_KEYS, SPEAKER
from deepwide.utils.io import atomic_write_text

TABLES = ("results", "grid", "families", "score", "trend", "guard", "verdict", "kd_loss")
# the teacher's first-vs-last-layer linear CKA above which the report warns (no hierarchy for depth)
CKA_WARN = 0.8
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
        rec = {"model": model_label(r), "params (M)": _params(r["params"])}
        for ref in ("normalised", "leaderboard"):
            for f in FAMILIES:
                rec[f"{f} ({ref})"] = fmt(r[f"{ref}_{f}"], r[f"{ref}_{f}_std"], 1)
        rows.append(rec)
    return pd.DataFrame(rows)


def guard_table(g: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for _, r in g.iterrows():
        d = digits_for(r["key"])
        rows.append({
            "task": _label(r["key"]), "teacher": fmt(r["teacher"], r["teacher_sd"], d), "FBANK": fmt(r["fbank"], r["fbank_sd"], d),
            "teacher - FBANK (better direction)": fmt(r["gap"], digits=d), "SE": fmt(r["se"], digits=d),
            "SE (seeds)": fmt(r["se_seeds"], digits=d), "SE (test items)": fmt(r["se_items"], digits=d),
            "informative": "yes" if r["informative"] else "not informative at this scale", "why": r["reason"],
        })
    return pd.DataFrame(rows, columns=["task", "teacher", "FBANK", "teacher - FBANK (better direction)", "SE",
                                       "SE (seeds)", "SE (test items)", "informative", "why"])


def verdict_csv(v: pd.DataFrame) -> pd.DataFrame:
    out = v.copy()
    for c in ("estimate", "ci_low", "ci_high", "se", "se_seeds", "se_items", "df", "mdd"):
        out[c] = out[c].astype(float).round(3)
    for c in ("p", "p_holm", "alpha_row"):
        out[c] = out[c].astype(float).round(5)
    return out


def verdict_view(v: pd.DataFrame) -> pd.DataFrame:
    """The verdict table as verdict.md and verdict.tex show it (verdict.csv has every column)."""
    rows = []
    for _, r in v.iterrows():
        unit = "" if r["unit"] == verdict.NORM_UNIT else f" {r['unit']}"
        ci = f"[{r['ci_low']:+.1f}, {r['ci_high']:+.1f}]" if pd.notna(r["ci_low"]) else "–"
        rows.append({"method": r["method"], "test": r["role"], "tasks": r["tasks"], "contrast": r["contrast"],
                     "estimate": f"{r['estimate']:+.1f}{unit}", "95 % CI": ci,
                     "SE (seeds, items)": (f"{r['se']:.2f} ({r['se_seeds']:.2f}, {r['se_items']:.2f})"
                                           if pd.notna(r["se"]) else "–"),
                     "Holm p": f"{r['p_holm']:.3g}" if pd.notna(r["p_holm"]) else "–",
                     "detection limit": f"±{abs(r['mdd']):.1f}{unit}" if pd.notna(r["mdd"]) else "–",
                     "n": int(r["n_seeds"]), "verdict": r["verdict"]})
    return pd.DataFrame(rows, columns=["method", "test", "tasks", "contrast", "estimate", "95 % CI", "SE (seeds, items)",
                                       "Holm p", "detection limit", "n", "verdict"])


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


def trend_table(depths: pd.DataFrame, v: pd.DataFrame) -> pd.DataFrame:
    """Per KD method and task family (``all``: every verdict task): the students' normalised
    score at each depth with its 95 % interval, from the verdict's estimator, tasks and noise
    model (:func:`deepwide.report.verdict.depth_estimates`), and the verdict's own answer for
    that family. It ranks no depth by itself: the answer is the verdict's."""
    if depths.empty:
        return pd.DataFrame(columns=["method", "family", "tasks", "verdict"])
    cols = [f"L={d}" for d in sorted(depths["depth"].unique())]
    rows = []
    for (method, family), g in depths.groupby(["method", "family"], sort=False):
        rec = {"method": method, "family": family, "tasks": g["tasks"].iloc[0]}
        for _, r in g.iterrows():
            rec[f"L={r['depth']}"] = (f"{r['estimate']:.1f} [{r['ci_low']:.1f}, {r['ci_high']:.1f}]"
                                      if not math.isnan(r["ci_low"]) else f"{r['estimate']:.1f} [–]")
        if family == "all":
            rec["verdict"] = "see the primary test"
        else:
            vr = v[(v["method"] == method) & (v["family"] == family) & (v["role"] == verdict.SECONDARY)]
            vr = vr[vr["tasks"] == rec["tasks"]]
            rec["verdict"] = vr["verdict"].iloc[0] if len(vr) else "–"
        rows.append(rec)
    return pd.DataFrame(rows, columns=["method", "family", "tasks", *cols, "verdict"])


def captions(summary: pd.DataFrame, sc: pd.DataFrame, g: pd.DataFrame | None = None) -> dict[str, str]:
    seeds = int(sc.loc[~sc["published"], "seeds"].max()) if (~sc["published"]).any() else 1
    seed_note = (f" Values are mean ± standard deviation over {seeds} seeds (replicates: distillation x head seeds)."
                 if seeds > 1 else " One seed.")
    g = pd.DataFrame(columns=["task", "key", "informative"]) if g is None else g
    informative = analysis.informative_tasks(g) if len(g) else []
    left_out = sorted({t for t in g["task"] if t not in informative}, key=lambda t: list(g["task"]).index(t)) if len(g) else []
    guard_note = (f" Not informative at this scale (left out of the normalised score and the verdict): {', '.join(left_out)}."
                  if left_out else "")
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
            "SUPERB's task families: content (PR, ASR, KS, QbE), speaker (SID, ASV, SD), semantics (IC, SF), "
            "paralinguistics (ER): mean per-task score over the family's tasks present, 0 = FBANK, 100 = upper "
            "anchor. Normalised: this study's own FBANK and teacher rows as anchors, informative tasks only; "
            "leaderboard: SUPERB's FBANK and SOTA constants (meaningful at full scale)."
            + seed_note + guard_note + pub
        ),
        "trend": (
            "Depth vs width at a roughly constant parameter count: per KD method and task family, the students' "
            "study-normalised score (0 = FBANK, 100 = teacher; mean over the family's informative tasks that every "
            "replicate ran, 'all' over every such task) at each depth, with its 95 % interval [low, high] from the "
            "verdict's estimator and noise model (distillation and head seeds, test items), and the verdict "
            "table's answer for that family. Overlapping intervals here do not test a difference: the verdict's "
            "paired contrasts do."
        ),
        "guard": (
            f"Which tasks can carry a claim: a task is informative only when the teacher beats FBANK by more than "
            f"{analysis.Z_GUARD:g} standard errors of the difference. The SE adds the variances of every source: "
            "seeds (each row's replicate spread; a row with one replicate borrows this study's pooled replicate "
            "variance of the task) and test items (paired over the shared test utterances where per-item results "
            "exist, else each row's sampling error). Only informative tasks enter the normalised score and the "
            "verdict; the others are listed with their numbers as not informative at this scale."
        ),
        "verdict": (
            "Depth vs width, with uncertainty. Primary test (per KD method, fixed in advance): the depth x family "
            "interaction (deepest - shallowest student on content) - (deepest - shallowest on speaker), in "
            "study-normalised points (each task in units of its teacher - FBANK gap). Secondary rows: deepest - "
            "shallowest per family (normalised points) and per task (its own metric). Estimates average every "
            "replicate; 95 % Student-t intervals carry the seed noise (distillation and head seeds, unpaired across "
            "students) and the test-item noise (paired: every model sees the same test items), with "
            "Welch-Satterthwaite degrees of freedom. A direction is named only when the Holm-adjusted p over every "
            "row is below 0.05; mdd is the detection limit: the smallest true difference found with 80 % power at "
            "the Bonferroni level alpha_row. All rows are conditional on the study's one teacher."
        ),
        "score": (
            "SUPERB score = 1000/10 x sum over tasks of (s - s_FBANK)/(s_ref - s_FBANK), SF as the mean of its F1 "
            "and CER terms, summed over the tasks listed (a full 10-task run is on the leaderboard scale). "
            "Leaderboard: SUPERB's FBANK and SOTA constants (for full-scale runs). Normalised: this study's own "
            "FBANK row = 0 and teacher row = 100 per task (for the embedded study, whose numbers are not "
            "comparable to the leaderboard), over the informative tasks only (guard table)." + seed_note + guard_note + pub
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


def to_markdown(df: pd.DataFrame, caption: str, notes: str = "") -> str:
    body = df.to_markdown(index=False) if len(df) else "(no rows)"
    return f"{caption}\n\n{body}\n" + (f"\n{notes}\n" if notes else "")


def teacher_warning(teacher_info: dict | None) -> str:
    """A warning when the teacher has little layer hierarchy (first-vs-last linear CKA > CKA_WARN)."""
    cka = (teacher_info or {}).get("cka_first_last")
    if cka is None or (isinstance(cka, float) and math.isnan(cka)) or float(cka) <= CKA_WARN:
        return ""
    return (f"**Warning:** the teacher's first and last layers have linear CKA {float(cka):.2f} > {CKA_WARN:g} on "
            "held-out audio: it has little layer hierarchy for depth to exploit, so this study's depth-vs-width "
            "answer says little about a real HuBERT teacher's.")


def verdict_notes(v: pd.DataFrame, g: pd.DataFrame, teacher_info: dict | None = None) -> str:
    """The report's answer, stated from the verdict table (never from a point estimate)."""
    lines = ["## Answer", ""]
    lines += verdict.answer_lines(v) if len(v) else ["- no student results: no answer."]
    bad = g[~g["informative"].astype(bool)] if len(g) else g
    if len(bad):
        lines += ["", "Not informative at this scale (teacher vs FBANK within noise; left out of the normalised score "
                  "and the verdict): " + "; ".join(
                      f"{_label(r['key'])} teacher {fmt(r['teacher'], r['teacher_sd'], digits_for(r['key']))}, "
                      f"FBANK {fmt(r['fbank'], r['fbank_sd'], digits_for(r['key']))} ({r['reason']})"
                      for _, r in bad.iterrows()) + "."]
    used = {t for ts in (v["tasks"] if len(v) else []) for t in str(ts).split(",") if t}
    single = [t for t in analysis.informative_tasks(g) if t not in used] if len(g) and len(v) else []
    if single:
        lines += ["", "Informative but not run on every distillation seed (superb.replicate_tasks), so listed in the "
                  "tables with one replicate and left out of the verdict: " + ", ".join(single) + "."]
    warn = teacher_warning(teacher_info)
    if warn:
        lines += ["", warn]
    return "\n".join(lines)


def kd_loss_table(df: pd.DataFrame, results: pd.DataFrame) -> pd.DataFrame:
    """One row per (student model, teacher layer): mean ± sd over distillation seeds of L1,
    cosine, loss; method, depth and width from the results table (the students' info.json)."""
    cols = ["model", "method", "depth", "width", "teacher layer", "L1", "cos", "loss", "seeds"]
    if df.empty:
        return pd.DataFrame(columns=cols)
    arch = results.drop_duplicates("model").set_index("model")[["method", "depth", "width"]]
    rows = []
    for (model, layer), g in df.groupby(["model", "teacher_layer"], sort=True):
        a = arch.loc[model] if model in arch.index else {"method": None, "depth": None, "width": None}
        rec = {"model": model, "method": a["method"], "depth": a["depth"], "width": a["width"], "teacher layer": int(layer)}
        for col, name in (("l1", "L1"), ("cos", "cos"), ("loss", "loss")):
            rec[name] = fmt(g[col].mean(), g[col].std(ddof=1) if len(g) > 1 else float("nan"), 3)
        rec["seeds"] = len(g)
        rows.append(rec)
    return pd.DataFrame(rows, columns=cols).sort_values(["method", "depth", "model", "teacher layer"]).reset_index(drop=True)


def build_tables(results: pd.DataFrame, reference: str = "normalised", teacher_info: dict | None = None,
                 kd_loss: pd.DataFrame | None = None,
                 items: pd.DataFrame | None = None) -> tuple[dict[str, pd.DataFrame], dict[str, str], dict[str, str]]:
    """(tables, captions, Markdown notes) of the report; ``items``: per-item test results
    (``report collect --items``) for the paired test-item noise."""
    best = analysis.best_lr(results)
    summary = analysis.model_summary(best)
    sc = analysis.scores(best, summary, items)
    g = analysis.guard(best, items=items)
    v = verdict.verdict_table(best, summary, items)
    tables = {
        "results": results_table(summary),
        "grid": grid_table(summary),
        "families": families_table(sc),
        "score": score_table(sc),
        "trend": trend_table(verdict.depth_estimates(best, summary, items), v),
        "guard": guard_table(g),
        "verdict": verdict_csv(v),
        "kd_loss": kd_loss_table(kd_loss if kd_loss is not None else pd.DataFrame(), results),
    }
    caps = captions(summary, sc, g)
    caps["kd_loss"] = ("Held-out KD loss per KD target (teacher layer) of every student, a readout needing no downstream "
                       "training: L1, cosine similarity and the training loss L1 - log sigmoid(cos), averaged over the "
                       "frames of the held-out set (report.heldout), mean ± sd over distillation seeds.")
    warn = teacher_warning(teacher_info)
    if warn:
        for name in ("score", "trend"):
            caps[name] += " " + warn.replace("**", "")
    return tables, caps, {"verdict": verdict_notes(v, g, teacher_info)}


def write_tables(results: pd.DataFrame, out_dir: str | Path, include_published: bool = True,
                 reference: str = "normalised", teacher_info: dict | None = None,
                 kd_loss: pd.DataFrame | None = None, items: pd.DataFrame | None = None) -> list[Path]:
    if not include_published:
        results = results[~results["published"]]
    tables, caps, notes = build_tables(results, reference, teacher_info, kd_loss, items)
    out_dir = Path(out_dir)
    written = []
    for name, df in tables.items():
        for ext in FORMATS:
            path = out_dir / f"{name}.{ext}"
            shown = verdict_view(df) if name == "verdict" and ext != "csv" else df
            if ext == "md":
                text = to_markdown(shown, caps[name], notes.get(name, ""))
            elif ext == "csv":
                text = shown.to_csv(index=False)
            else:
                text = to_latex(shown, caps[name], name)
            atomic_write_text(path, text)
            written.append(path)
    return written


__all__ = ["write_tables", "build_tables", "TABLES", "FORMATS", "CONTENT", "SPEAKER"]
