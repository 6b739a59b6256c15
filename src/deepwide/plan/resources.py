"""``python -m deepwide plan resources``: measured peak memory and wall time per rule
against the SLURM requests of the config's ``resources`` section.

Measurements come from the ``usage`` key (:mod:`deepwide.utils.usage`) of the JSON files a
finished run left in its results folder, and of the metadata of its CKA and KD-loss tables
(``--measured RUN_DIR``, default: the config's own ``results``). Per rule the largest job counts. Scaling to the study's sizes is done only where
it can be justified:

- wall time of ``distill``: the measured job's training seconds x (study steps x batch
  seconds) / (audio seconds it trained on), plus its measured overhead (set-up, export), when
  it ran on CUDA (what the study's job gets) with a shape the study trains: a KD step's time
  is proportional to the audio in its batch for a fixed shape once the batch fills the card.
  A rehearsal's small batch underfills it (its seconds per audio second are higher), so the
  scaled time errs long: a ``LOW`` runtime flag may be a false alarm on the safe side, a
  ``>4x`` one holds. Otherwise, and for every other rule, wall time is "not scaled": a SUPERB
  job's time is set-up, training and dev/test passes whose shares differ between the
  embedded sets and the study's, and a CPU measurement says nothing of a GPU job's time.
- memory is never scaled: peak RSS depends on the model, the batch, the dataset index and the
  loader workers together, with no single factor to scale by. A CPU run's RSS holds what a GPU
  job keeps on the card, so it overstates a GPU job's host memory (a safe side for "low").
  A rehearsal's jobs (``RUN_DIR/config.yaml`` has a ``rehearsal`` section) ran with cut
  batches and data: their memory is a floor for the study's, so it flags ``LOW`` only.

Flags: a request below measured x ``--safety`` is ``LOW`` (the job may be killed); one more
than 4x the measurement is ``>4x`` (it wastes the node), each named with its quantity.

Beside the measurements, the study's own cost model (:mod:`deepwide.plan.cost`, GPU
throughputs measured on the machine its figures name) gives each ``distill`` and
``superb_run`` job's training time at the study's sizes (distill: the mean over its jobs,
which differ only by cached or online targets; SUPERB: its costliest task). It
leaves out set-up and evaluation, so it is a lower bound: a runtime request below it x
``--safety`` is ``LOW``; it raises no ``>4x``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from deepwide.resources import job_resources
from deepwide.utils.usage import USAGE_SIDECAR, parquet_info

OVERSIZE = 4.0

# rule -> (glob of its JSON files, or Parquet tables with the usage in their metadata, under
# a results folder); ``prepare_<corpus>`` reads ``manifests/<corpus>/info.json``. The rules
# not named here record no usage (corpus synthesis, only for the embedded corpora; select,
# which copies a head's result; the PR lexicon, whose folder s3prl reads) and are listed
# as "no measurement"
MEASURED_FILES = {
    "report_collect": [f"report/collect/{USAGE_SIDECAR}"],
    "report_tables": [f"report/tables/{USAGE_SIDECAR}"],
    "report_figures": [f"report/figures/{USAGE_SIDECAR}"],
    "teacher_import": ["teacher/info.json"],
    "teacher_pretrain": ["teacher/info.json"],
    "teacher_random": ["teacher/info.json"],
    "targets": ["targets/*/*/cache.json"],
    "distill": ["students/*/*/seed*/info.json"],
    "superb_run": ["superb/*/*/heads.json"],
    "superb_qbe": ["superb/*/qbe/*/result.json"],
    "report_cost": ["report/cost/*.json"],
    "report_cka": ["report/cka/*.parquet"],
    "report_kdloss": ["report/kd_loss/*.parquet"],
}
# the teacher's three rules write one teacher/info.json; its "source" names the rule
TEACHER_SOURCE = {"teacher_import": "import", "teacher_random": "random", "teacher_pretrain": "pretrain"}
# a rehearsal replaces a checkpoint missing on its machine by a random teacher of the same
# architecture: that job (build the model, write the checkpoint) stands in for the import
STAND_IN = {"teacher_import": "teacher_random"}


def _read_json(path: Path) -> dict | None:
    try:
        obj = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None


def _load(path: Path) -> dict | None:
    if path.suffix == ".parquet":
        return parquet_info(path)
    obj = _read_json(path)
    if obj is None or not isinstance(obj.get("usage"), dict):
        return None
    if path.name == "heads.json" and not obj.get("device"):
        # written before heads.json named its device: its first head's result.json does
        first = (obj.get("heads") or [{}])[0].get("result")
        obj["device"] = (_read_json(Path(first)) or {}).get("device") if first else None
    return obj


def measurements(run_dir: Path) -> dict[str, list[dict]]:
    """rule -> [{path, usage, info}] for every measured job under ``run_dir``."""
    found = [(rule, path) for rule, patterns in MEASURED_FILES.items() for pattern in patterns
             for path in sorted(run_dir.glob(pattern))]
    found += [(f"prepare_{p.parent.name}", p) for p in sorted(run_dir.glob("manifests/*/info.json"))]
    out: dict[str, list[dict]] = {}
    for rule, path in found:
        info = _load(path)
        if info is None or (rule in TEACHER_SOURCE and info.get("source") != TEACHER_SOURCE[rule]):
            continue
        out.setdefault(rule, []).append({"path": path, "usage": info["usage"], "info": info})
    return out


def _rss(u: dict) -> float:
    return float(u.get("peak_rss_mb") or 0.0) + float(u.get("peak_rss_children_mb") or 0.0)


def _device_kind(info: dict) -> str | None:
    dev = str(info.get("device") or "")
    return "cuda" if dev.startswith("cuda") else ("cpu" if dev else None)


def is_rehearsal(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds a rehearsal (``plan rehearse`` writes its config there, with
    a ``rehearsal`` section)."""
    import yaml

    try:
        cfg = yaml.safe_load((Path(run_dir) / "config.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return False
    return isinstance(cfg, dict) and isinstance(cfg.get("rehearsal"), dict)


def _scaled_wall(rule: str, m: dict, study, gpu: bool) -> tuple[float | None, str]:
    """(study-sized wall seconds, how) or (None, why not)."""
    info, wall = m["info"], float(m["usage"]["wall_s"])
    if not gpu:
        return None, "not scaled (a CPU job: its time depends on the data, not on a size the config names)"
    if _device_kind(info) != "cuda":
        return None, f"not scaled (measured on {info.get('device') or 'an unknown device'}, the study's job gets CUDA)"
    if rule != "distill":
        return None, "not scaled (no size known on both sides)"
    shape = m["path"].parent.parent.name
    if shape not in {j.shape for j in study.student_jobs}:
        return None, f"not scaled (shape {shape} is not one the study trains)"
    tr = study.dcfg["train"]
    audio, train_s = info.get("audio_seconds"), info.get("train_seconds")
    if not audio or train_s is None:
        return None, "not scaled (the measured job does not name its audio or training seconds)"
    ratio = float(tr["steps"]) * float(tr["batch_seconds"]) / float(audio)
    overhead = max(0.0, wall - float(train_s))
    return overhead + float(train_s) * ratio, f"scaled x{ratio:.3g} (steps x batch seconds)"


def model_seconds(study, figures: dict) -> dict[str, tuple[float, str]]:
    """rule -> (training seconds per job by the cost model, which stage), for the GPU rules
    the model covers: distill (the stage's mean job) and superb_run (its costliest task)."""
    from deepwide.plan.cost import cost

    out: dict[str, tuple[float, str]] = {}
    for stage in cost(study, figures)["stages"]:
        if not stage["jobs"]:
            continue
        per_job = stage["ours"] * 3600 / stage["jobs"]
        rule, what = ("superb_run", stage["stage"]) if stage["stage"].startswith("superb ") else (stage["stage"], stage["stage"])
        if rule in ("distill", "superb_run") and per_job > out.get(rule, (-1.0, ""))[0]:
            out[rule] = (per_job, what)
    return out


def compare(study, run_dir: Path, safety: float, figures: dict | None = None) -> list[dict]:
    """One row per rule of the study: request, measurement, cost model, flags."""
    from deepwide.plan.cost import DEFAULT_FIGURES

    meas = measurements(run_dir)
    rehearsal = is_rehearsal(run_dir)  # its jobs ran at cut sizes: their memory is a floor
    model = model_seconds(study, figures or DEFAULT_FIGURES)
    rows = []
    for rule, gpu in study.rule_classes().items():
        req = job_resources(study.config["resources"], rule, gpu=gpu)
        row = {"rule": rule, "class": "gpu" if gpu else "cpu", "request_mem_mb": req["mem_mb"],
               "request_runtime_min": req["runtime"], "request_gpu": req.get("gpu", 0), "jobs_measured": 0,
               "peak_rss_mb": None, "cuda_max_allocated_mb": None, "wall_s": None, "wall_study_s": None,
               "scaling": "no measurement", "flags": [], "model_s": None, "model_job": None}
        if rule in model:
            row["model_s"], row["model_job"] = round(model[rule][0], 1), model[rule][1]
            if req["runtime"] * 60 < model[rule][0] * safety:
                row["flags"].append(f"runtime LOW vs cost model ({req['runtime']} min < {model[rule][0] / 60:.1f} x {safety}, "
                                    f"{model[rule][1]} training alone)")
        ms, stand_in = meas.get(rule, []), ""
        if not ms and meas.get(STAND_IN.get(rule, "")):
            ms, stand_in = meas[STAND_IN[rule]], f"measured as {STAND_IN[rule]} (the rehearsal's stand-in); "
        if ms:
            top_mem = max(ms, key=lambda m: _rss(m["usage"]))
            top_wall = max(ms, key=lambda m: float(m["usage"]["wall_s"]))
            cudas = [m["usage"].get("cuda_max_allocated_mb") for m in ms if m["usage"].get("cuda_max_allocated_mb") is not None]
            scaled, how = _scaled_wall(rule, top_wall, study, gpu)
            row.update(jobs_measured=len(ms), peak_rss_mb=round(_rss(top_mem["usage"]), 1),
                       cuda_max_allocated_mb=max(cudas) if cudas else None, wall_s=round(float(top_wall["usage"]["wall_s"]), 1),
                       wall_study_s=None if scaled is None else round(scaled, 1),
                       scaling=stand_in + ("memory at the rehearsal's sizes: a floor, LOW only" if rehearsal
                                            else "memory not scaled") + "; wall " + how)
            mem = row["peak_rss_mb"]
            if mem and req["mem_mb"] < mem * safety:
                row["flags"].append(f"mem LOW ({req['mem_mb']} MB < {mem:.0f} x {safety})")
            elif mem and req["mem_mb"] > OVERSIZE * mem and not rehearsal:
                row["flags"].append(f"mem >4x ({req['mem_mb']} MB > 4 x {mem:.0f})")
            wall = row["wall_study_s"]
            if wall is not None:
                if req["runtime"] * 60 < wall * safety:
                    row["flags"].append(f"runtime LOW ({req['runtime']} min < {wall / 60:.1f} x {safety})")
                elif req["runtime"] * 60 > OVERSIZE * wall:
                    row["flags"].append(f"runtime >4x ({req['runtime']} min > 4 x {wall / 60:.1f})")
            if gpu and any(_device_kind(m["info"]) == "cuda" for m in ms) and not cudas:
                row["flags"].append("GPU requested but the CUDA run allocated nothing on it")
        rows.append(row)
    return rows


def _fmt(v, spec: str = ".0f") -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def format_rows(rows: list[dict], run_dir: Path, safety: float, figures: dict | None = None) -> str:
    from deepwide.plan.cost import DEFAULT_FIGURES

    lines = [f"requests (config `resources`) vs measured (usage in {run_dir}), safety x{safety}, oversize >{OVERSIZE:g}x",
             f"model s: training seconds per job by the cost model (distill: mean job; SUPERB: costliest task) ({(figures or DEFAULT_FIGURES)['machine']})",
             f"{'rule':30s} {'cls':3s} {'gpu':>3s} {'mem MB':>7s} {'min':>5s} {'jobs':>4s} {'RSS MB':>7s} {'CUDA MB':>7s}"
             f" {'wall s':>8s} {'study s':>8s} {'model s':>8s}  flags / scaling"]
    for r in rows:
        tail = "; ".join(r["flags"]) if r["flags"] else "ok" if r["jobs_measured"] else ""
        lines.append(f"{r['rule']:30s} {r['class']:3s} {r['request_gpu']:>3d} {r['request_mem_mb']:>7d} {r['request_runtime_min']:>5d}"
                     f" {r['jobs_measured']:>4d} {_fmt(r['peak_rss_mb']):>7s} {_fmt(r['cuda_max_allocated_mb']):>7s}"
                     f" {_fmt(r['wall_s']):>8s} {_fmt(r['wall_study_s']):>8s} {_fmt(r['model_s']):>8s}"
                     f"  {tail + ' | ' if tail else ''}{r['scaling']}")
    return "\n".join(lines)
