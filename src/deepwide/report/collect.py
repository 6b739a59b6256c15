"""Collect SUPERB ``result.json``, student ``info.json`` and cost JSON files into one tidy table.

One row per (upstream, score key, lr, seed): method, shape (depth, width, ffn, heads),
params, task, metric, dev and test value in SUPERB units, upstream, published flag.
Two seeds identify a replicate: ``distill_seed`` (the student's, from its upstream name
``METHOD-SHAPE-seedN``; empty for the teacher, FBANK and published rows) and ``seed`` (the
SUPERB head's, the result's ``seed`` key). ``test_n``: the number of scored test units
(utterances, trials, words) when the result carries it as ``n_test``, for a sampling
standard error of the test metric.
Published rows (src/deepwide/data/published.yaml, with their sources) carry only test values and ``published=True``.

Units: s3prl reports accuracy, WER, PER, CER, EER, DER and slot F1/CER as fractions; the
report shows percent. The superb stage writes ``dev_score``/``test_score`` already scaled and
says so with ``"unit": "%"`` (``""`` for unscaled values such as QbE's MTWV); ``"percent"``
and ``"fraction"`` are accepted too. Without a unit these metrics are taken as fractions,
and an accuracy or F1 above 1 is refused (percent mislabelled as a fraction). The
``test_metrics``/``dev_metrics`` dicts are s3prl's raw logs (fractions) whatever the unit.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from deepwide.errors import DeepwideError
from deepwide.utils.io import read_json_object
from deepwide.report.score import HIGHER_IS_BETTER, METRIC, PUBLISHED, canonical_task

RESULT_KEYS = ["upstream", "task", "lr", "metric", "dev_score", "test_score", "layer_weights"]
# s3prl metric names reported as fractions
FRACTION_METRICS = {"accuracy", "acc", "wer", "per", "cer", "eer", "der", "f1", "slot_type_f1", "slot_value_cer"}
UNITS = {"%": "percent", "percent": "percent", "": "raw", "raw": "raw", "fraction": "fraction"}
BOUNDED_METRICS = {"accuracy", "acc", "f1", "slot_type_f1"}
# SF's two score keys by s3prl metric name
SF_KEYS = {"slot_type_f1": "SF_F1", "f1": "SF_F1", "slot_value_cer": "SF_CER", "cer": "SF_CER"}

UPSTREAM_RE = re.compile(r"^(?P<method>[A-Za-z0-9_]+)-(?P<shape>\d+x\d+f\d+h\d+)(?:-seed(?P<seed>\d+))?$")
REFERENCE_UPSTREAMS = ("teacher", "fbank")

COLUMNS = [
    "upstream", "model", "method", "shape", "depth", "width", "ffn", "heads", "params",
    "task", "key", "metric", "higher_is_better", "lr", "distill_seed", "seed", "dev", "test", "test_n", "test_se",
    "best_step", "published", "runtime_s", "device", "source",
]


def parse_upstream(name: str) -> dict[str, Any]:
    """``pred-4x192f768h4[-seed1]`` -> method, shape (the label), model, seed.

    The architecture (depth, width, ffn, heads, params) is never read from a name: it comes
    from the student's info.json or the upstream's cost file (:func:`collect`).
    ``teacher`` and ``fbank`` are the reference rows; any other name (superb's
    ``extra_upstreams``, e.g. an imported HuBERT) is method ``extra``.
    """
    if name in REFERENCE_UPSTREAMS:
        return {"method": name, "shape": None, "seed": None, "model": name}
    m = UPSTREAM_RE.match(name)
    if not m:
        if not re.fullmatch(r"[A-Za-z0-9_.+-]+", name or ""):
            raise DeepwideError(f"upstream name {name!r}: use letters, digits and _.+- only")
        return {"method": "extra", "shape": None, "seed": None, "model": name}
    return {"method": m["method"], "shape": m["shape"], "model": f"{m['method']}-{m['shape']}",
            "seed": int(m["seed"]) if m["seed"] is not None else None}


def _number(path, obj, key, allow_none=False):
    value = obj.get(key)
    if value is None and allow_none:
        return math.nan
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise DeepwideError(f"{path}: key {key!r} must be a number, got {value!r}")
    return float(value)


def _scale(path, metric: str, value: float, unit: str | None) -> float:
    name = metric.lower()
    if unit is not None and unit not in UNITS:
        raise DeepwideError(f"{path}: key 'unit' must be one of {', '.join(map(repr, UNITS))}, got {unit!r}")
    unit = UNITS.get(unit) if unit is not None else None
    if unit in ("percent", "raw") or math.isnan(value):
        return value
    if unit == "fraction" or name in FRACTION_METRICS:
        if unit is None and name in BOUNDED_METRICS and value > 1.0:
            raise DeepwideError(
                f"{path}: metric {metric!r} = {value} is above 1 but taken as a fraction; "
                "add \"unit\": \"percent\" if it is in percent"
            )
        return 100.0 * value
    return value


def read_result(path: str | Path) -> tuple[list[dict[str, Any]], list[float]]:
    """Rows of one SUPERB result.json (two for SF when it also carries the CER)."""
    path = Path(path)
    obj = read_json_object(path, "SUPERB result")
    for key in RESULT_KEYS:
        if key not in obj:
            raise DeepwideError(f"{path}: missing key {key!r} (a SUPERB result.json needs {', '.join(RESULT_KEYS)})")
    upstream = str(obj["upstream"])
    info = parse_upstream(upstream)
    task = canonical_task(obj["task"])
    metric = str(obj["metric"])
    lr = _number(path, obj, "lr")
    seed = obj.get("seed")
    seed = int(seed) if seed is not None else 0
    n_test = obj.get("n_test")
    n_test = _number(path, obj, "n_test") if n_test is not None else math.nan
    test_se = obj.get("test_se")  # the superb stage's sampling error of an error rate (PR, ASR)
    test_se = _number(path, obj, "test_se") if test_se is not None else math.nan
    unit = obj.get("unit")
    weights = obj["layer_weights"]
    if weights is not None and (not isinstance(weights, list) or not all(isinstance(w, (int, float)) for w in weights)):
        raise DeepwideError(f"{path}: key 'layer_weights' must be a list of numbers")
    base = {
        "upstream": upstream, "model": info["model"], "method": info["method"], "shape": info["shape"],
        "depth": None, "width": None, "ffn": None, "heads": None,  # from info.json / cost files (collect)
        "params": math.nan, "task": task, "lr": lr, "distill_seed": info["seed"], "seed": seed, "test_n": n_test,
        "test_se": test_se,
        "best_step": obj.get("best_step"), "published": False,
        "runtime_s": obj.get("runtime_s"), "device": obj.get("device"), "source": str(path),
    }
    pairs = [(metric, _number(path, obj, "dev_score", allow_none=True), _number(path, obj, "test_score"))]
    if task == "SF":
        # the CER term of SF, when the result carries it beside the F1
        dev_m, test_m = obj.get("dev_metrics") or {}, obj.get("test_metrics") or {}
        for name in ("slot_value_cer",):
            if name in test_m and name.lower() != metric.lower():
                # s3prl's raw logs: fractions
                pairs.append((name, _number(path, dev_m, name, allow_none=True), _number(path, test_m, name), "fraction"))
    pairs[0] = (*pairs[0], unit)
    rows = []
    for name, dev, test, pair_unit in pairs:
        if task == "SF":
            key = SF_KEYS.get(name.lower())
            if key is None:
                raise DeepwideError(f"{path}: SF metric {name!r} is neither slot_type_f1 nor slot_value_cer")
        else:
            key = task
        rows.append({
            **base, "key": key, "metric": METRIC[key], "higher_is_better": HIGHER_IS_BETTER[key],
            "dev": _scale(path, name, dev, pair_unit), "test": _scale(path, name, test, pair_unit),
        })
    return rows, (weights or [])


def read_info(path: str | Path) -> dict[str, Any]:
    """Params and shape of a student from its ``info.json`` (students/{method}/{shape}/)."""
    path = Path(path)
    obj = read_json_object(path, "student info")
    if "params" not in obj:
        raise DeepwideError(f"{path}: missing key 'params'")
    d = path.parent.parent if re.fullmatch(r"seed\d+", path.parent.name) else path.parent  # students/{m}/{shape}/seed{n}
    method, shape = d.parent.name, d.name
    out = {"model": f"{obj.get('method', method)}-{obj.get('shape', shape)}", "params": _number(path, obj, "params")}
    arch = obj.get("arch")
    if isinstance(arch, dict):
        for k in ("depth", "width", "ffn", "heads"):
            if k in arch:
                out[k] = int(arch[k])
    for k in ("wall_time_s", "wall_s", "train_wall_s"):
        if k in obj:
            out["train_wall_s"] = _number(path, obj, k)
            break
    if isinstance(obj.get("mode"), str):
        out["train_mode"] = obj["mode"]
    return out


def read_cost(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    obj = read_json_object(path, "cost file")
    for key in ("upstream", "params", "macs_per_second", "rtf", "machine"):
        if key not in obj:
            raise DeepwideError(f"{path}: missing key {key!r}")
    return obj


def published_rows() -> list[dict[str, Any]]:
    rows = []
    for name, pub in PUBLISHED.items():
        shape = f"{pub['depth']}x{pub['width']}f{pub['ffn']}" + (f"h{pub['heads']}" if pub["heads"] else "")
        for key, value in pub["metrics"].items():
            rows.append({
                "upstream": f"published:{name}", "model": f"published:{name}", "method": pub["method"],
                "shape": shape, "depth": pub["depth"], "width": pub["width"], "ffn": pub["ffn"],
                "heads": pub["heads"], "params": pub["params"], "task": "SF" if key.startswith("SF") else key,
                "key": key, "metric": METRIC[key], "higher_is_better": HIGHER_IS_BETTER[key],
                "lr": math.nan, "distill_seed": None, "seed": 0, "dev": math.nan, "test": value, "test_n": math.nan,
                "test_se": math.nan, "best_step": None,
                "published": True, "runtime_s": None, "device": None, "source": pub["source"],
            })
    return rows


ITEM_COLUMNS = ["upstream", "key", "lr", "seed", "item", "value", "weight"]


def collect_items(results: Iterable[str | Path]) -> pd.DataFrame:
    """Per-utterance test results of every head that has them (PR, ASR: edits and reference
    tokens; KS, SID, IC, ER: right or wrong), from the ``predictions/`` folder beside each
    result.json (:mod:`deepwide.superb.items`): the report's test-item noise, paired across
    models. Heads without them (other tasks, or jobs that kept no dump) are simply absent."""
    from deepwide.superb.items import test_items

    frames = []
    for path in results:
        path = Path(path)
        obj = read_json_object(path, "SUPERB result")
        key = canonical_task(obj.get("task", ""))
        got = test_items(key, path.parent / "predictions")
        if got is None:
            continue
        n = len(got["item"])
        frames.append(pd.DataFrame({"upstream": [str(obj["upstream"])] * n, "key": [key] * n,
                                    "lr": [float(obj["lr"])] * n, "seed": [int(obj.get("seed") or 0)] * n,
                                    "item": got["item"], "value": got["value"], "weight": got["weight"]}))
    if not frames:
        return pd.DataFrame({c: pd.Series(dtype=t) for c, t in zip(
            ITEM_COLUMNS, ["object", "object", "float64", "int64", "object", "float64", "float64"])})
    return pd.concat(frames, ignore_index=True)[ITEM_COLUMNS]


def collect(results: Iterable[str | Path], infos: Iterable[str | Path] = (), costs: Iterable[str | Path] = (),
            include_published: bool = True) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Return (results table, layer-weight table, cost table)."""
    rows, weight_rows = [], []
    seen = {}
    for path in results:
        new, weights = read_result(path)
        for r in new:
            ident = (r["upstream"], r["key"], r["lr"], r["seed"])  # the upstream holds the distill seed
            if ident in seen:
                raise DeepwideError(f"{path}: duplicate result for upstream {ident[0]}, task {ident[1]}, lr {ident[2]}, seed {ident[3]} (also in {seen[ident]})")
            seen[ident] = path
        rows.extend(new)
        r = new[0]
        weight_rows.extend(
            {"upstream": r["upstream"], "model": r["model"], "method": r["method"], "shape": r["shape"],
             "task": r["task"], "lr": r["lr"], "seed": r["seed"], "layer": i, "weight": float(w)}
            for i, w in enumerate(weights)
        )
    if not rows:
        raise DeepwideError("report: no SUPERB result.json given")
    df = pd.DataFrame(rows)
    info = {}
    for path in infos:
        i = read_info(path)
        info[i["model"]] = i
    cost_rows = [read_cost(p) for p in costs]
    cost = pd.DataFrame(cost_rows, columns=["upstream", "params", "macs_per_second", "rtf", "machine", "device", "audio_seconds", "utterances"])
    cost_by_model = {parse_upstream(c["upstream"])["model"]: c for c in cost_rows}
    # params and shape: info.json first (students), then cost files (teacher too)
    for model, idx in df.groupby("model").groups.items():
        src = info.get(model) or {}
        c = cost_by_model.get(model) or {}
        params = src.get("params", c.get("params", math.nan))
        df.loc[idx, "params"] = float(params) if params is not None else math.nan
        arch = c.get("arch") or {}
        for k in ("depth", "width", "ffn", "heads"):
            v = src.get(k, arch.get(k))
            if v is not None:
                df.loc[idx, k] = v
        if all(k in arch for k in ("depth", "width", "ffn", "heads")) and df.loc[idx, "shape"].isna().all():
            df.loc[idx, "shape"] = f"{arch['depth']}x{arch['width']}f{arch['ffn']}h{arch['heads']}"
        if model == "fbank":
            df.loc[idx, "params"] = 0.0
    df["train_wall_s"], df["train_mode"] = math.nan, None
    for model, i in info.items():
        df.loc[df["model"] == model, "train_wall_s"] = i.get("train_wall_s", math.nan)
        df.loc[df["model"] == model, "train_mode"] = i.get("train_mode")
    for model, c in cost_by_model.items():
        df.loc[df["model"] == model, "macs_per_second"] = float(c["macs_per_second"])
        df.loc[df["model"] == model, "rtf"] = float(c["rtf"])
        df.loc[df["model"] == model, "machine"] = str(c["machine"])
    if include_published:
        df = pd.concat([df, pd.DataFrame(published_rows())], ignore_index=True)
    for col in ("macs_per_second", "rtf"):
        if col not in df:
            df[col] = math.nan
    if "machine" not in df:
        df["machine"] = None
    df = df[COLUMNS + ["macs_per_second", "rtf", "machine", "train_wall_s", "train_mode"]]
    for col in ("depth", "width", "ffn", "heads", "distill_seed", "seed"):
        df[col] = df[col].astype("Int64")
    for col in ("params", "lr", "dev", "test", "test_n", "test_se", "macs_per_second", "rtf", "train_wall_s"):
        df[col] = df[col].astype(float)
    df["published"] = df["published"].astype(bool)
    df["higher_is_better"] = df["higher_is_better"].astype(bool)
    lw = pd.DataFrame(weight_rows, columns=["upstream", "model", "method", "shape", "task", "lr", "seed", "layer", "weight"])
    return df.sort_values(["published", "method", "depth", "model", "key", "lr", "distill_seed", "seed"], na_position="first").reset_index(drop=True), lw, cost
