"""Where a finished run's time went: per rule, and on the critical path.

    python benchmarks/pipeline_profile.py RUN_DIR [--log SNAKEMAKE_LOG] [--out profile.json]

Reads the Snakemake log of the run (``RUN_DIR/.snakemake/log/*.snakemake.log``: the newest
complete one unless ``--log`` names one) for each job's rule, start and finish time, threads,
inputs and outputs; and each job's ``usage`` record (:mod:`deepwide.utils.usage`) from the
JSON among its outputs (``info.json``, ``result.json``, ``heads.json``, ``cache.json``, or
one of those inside an output folder), or from the metadata of its Parquet output (the
report's CKA and KD-loss tables), where the job wrote one. Per rule it prints:

- jobs, and their total wall time (finish - start in the Snakemake log, 1 s resolution);
- total CPU time and the share of cores used, CPU time / (wall x the job's threads), from
  the jobs whose ``usage`` has ``cpu_s`` ("-" where none has); peak RSS likewise;
- the rule's place on the critical path: the chain of jobs, each needing an output of the
  one before, whose wall times add up to the most (what the run would take with unlimited
  cores); the jobs of the rule on it and their share of the run's elapsed time.

Totals: elapsed time, the cores Snakemake was given, how busy the scheduler kept them
(sum of wall x threads over elapsed x cores) and the critical path's length. Writes JSON.
Reads the run folder only.

What-if replay (``--scale RULE=F``, ``--threads RULE=N``, ``--first RULE``, ``--cores N``):
the run's jobs are scheduled again on the cores with the same dependencies, each job's wall
time multiplied by its rule's factor (``--scale '*=0.85'``: the rules without one of their
own), a rule's jobs claiming N cores, the ``--first`` rules' ready jobs started before all others, ties in the run's own start
order. It prints the replayed elapsed time beside the run's: what a change would buy before
paying a full run for it. A model: it assumes a job's wall time does not depend on what runs
beside it.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from datetime import datetime
from pathlib import Path

from deepwide.utils.usage import USAGE_SIDECAR, parquet_info

_STAMP = re.compile(r"^\[(\w{3} \w{3} +\d+ \d\d:\d\d:\d\d \d{4})\]$")
_START = re.compile(r"^(?:local)?(?:rule|checkpoint) (\S+):$")
_FINISHED = re.compile(r"^Finished (?:jobid: (\d+)|job (\d+)\.)")
_ERROR = re.compile(r"^Error in rule (\S+):$")
_FIELD = re.compile(r"^    (input|output|log|jobid|threads): (.*)$")
USAGE_FILES = ("info.json", "result.json", "heads.json", "cache.json")


class ProfileError(Exception):
    pass


def parse_log(text: str) -> dict:
    """{"cores", "complete", "jobs": {jobid: {rule, start, end, threads, inputs, outputs, failed}}}
    from a Snakemake log's text. Times are seconds since the first job started."""
    jobs: dict[int, dict] = {}
    stamp, block = None, None  # block: the job whose indented fields follow
    cores = None
    for line in text.splitlines():
        if m := _STAMP.match(line):
            stamp, block = datetime.strptime(m.group(1), "%a %b %d %H:%M:%S %Y").timestamp(), None
        elif line.startswith("Provided cores: "):
            cores = int(line.split(": ")[1])
        elif m := _START.match(line):
            block = {"rule": m.group(1), "start": stamp, "end": None, "threads": 1, "inputs": [], "outputs": [],
                     "failed": False}
        elif m := _ERROR.match(line):
            block = {"error": True}
        elif (m := _FIELD.match(line)) and block is not None:
            _field(jobs, block, m.group(1), m.group(2), stamp)
        elif m := _FINISHED.match(line):
            job = jobs.get(int(m.group(1) or m.group(2)))
            if job is not None:
                job["end"] = stamp
        elif not line.startswith("    "):
            block = None
    if not jobs:
        raise ProfileError("no job starts in the log (is it a Snakemake log of a run, not a dry run?)")
    t0 = min(j["start"] for j in jobs.values())
    for j in jobs.values():
        j["start"] -= t0
        j["end"] = None if j["end"] is None else j["end"] - t0
    complete = "(100%) done" in text or "Nothing to be done" in text
    return {"cores": cores, "complete": complete, "jobs": jobs}


def _field(jobs: dict, block: dict, key: str, value: str, stamp) -> None:
    if block.get("error"):  # "Error in rule" repeats the job's fields: only its id matters
        if key == "jobid" and int(value) in jobs:
            jobs[int(value)].update(failed=True, end=stamp)
        return
    if key == "jobid":
        jobs[int(value)] = block
    elif key == "threads":
        block["threads"] = int(value)
    elif key in ("input", "output"):
        block[key + "s"] = [p.strip() for p in value.split(",") if p.strip()]


def pick_log(run_dir: Path) -> Path:
    """The newest complete Snakemake log of ``run_dir`` (else the newest, which a warning names)."""
    logs = sorted((run_dir / ".snakemake" / "log").glob("*.snakemake.log"))
    if not logs:
        raise ProfileError(f"{run_dir}/.snakemake/log has no *.snakemake.log (not a Snakemake run folder?)")
    for log in reversed(logs):
        if "(100%) done" in log.read_text(errors="replace"):
            return log
    print(f"warning: no complete log in {run_dir}/.snakemake/log; using the newest, {logs[-1].name}", file=sys.stderr)
    return logs[-1]


def critical_path(jobs: dict) -> list[int]:
    """Job ids of the dependency chain with the largest sum of wall times (finished jobs only)."""
    done = {i: j for i, j in jobs.items() if j["end"] is not None}
    producer = {}
    for i, j in done.items():
        for out in j["outputs"]:
            producer[out.rstrip("/")] = i
    best: dict[int, tuple[float, int | None]] = {}  # id -> (longest chain ending here, previous job)
    for i in sorted(done, key=lambda i: (done[i]["start"], done[i]["end"])):
        j = done[i]
        deps = {d for p in j["inputs"] if (d := _producer(producer, p)) is not None and d != i and d in best}
        prev = max(deps, key=lambda d: best[d][0], default=None)
        best[i] = ((best[prev][0] if prev is not None else 0.0) + j["end"] - j["start"], prev)
    if not best:
        return []
    node, path = max(best, key=lambda i: (best[i][0], done[i]["end"], done[i]["start"])), []  # ties: the later end
    while node is not None:
        path.append(node)
        node = best[node][1]
    return path[::-1]


def _producer(producer: dict, path: str):
    """The job whose output is ``path`` or a folder holding it."""
    p = path.rstrip("/")
    while p:
        if p in producer:
            return producer[p]
        p = p.rpartition("/")[0]
    return None


# rules whose JSON output copies another job's record, ``usage`` included: superb_select's
# selected.json is the chosen head's result.json, written by superb_run
COPIES_USAGE = {"superb_select"}
# rules (by name prefix) whose usage is in a file beside their declared outputs, relative to
# an output's folder: prepare_<corpus> writes manifests/<corpus>/info.json after its
# manifests; the report's collect, tables and figures write usage.json
SIDECAR_USAGE = {"prepare_": "info.json", "report_collect": f"collect/{USAGE_SIDECAR}", "report_tables": USAGE_SIDECAR,
                 "report_figures": USAGE_SIDECAR}


def job_usage(run_dir: Path, job: dict) -> dict | None:
    """The ``usage`` record of the JSON (or Parquet table) the job wrote among its outputs, if any."""
    if job.get("rule") in COPIES_USAGE:
        return None
    for out in job["outputs"]:
        p = run_dir / out
        if p.suffix == ".parquet" and (info := parquet_info(p)) is not None:
            return info["usage"]
        cands = [p] if p.suffix == ".json" else [p / n for n in USAGE_FILES] if p.is_dir() else []
        cands += [p.parent / name for prefix, name in SIDECAR_USAGE.items() if str(job.get("rule", "")).startswith(prefix)]
        for c in cands:
            try:
                obj = json.loads(c.read_text())
            except (OSError, ValueError):
                continue
            if isinstance(obj, dict) and isinstance(obj.get("usage"), dict):
                return obj["usage"]
    return None


def profile(run_dir: Path, log: Path) -> dict:
    parsed = parse_log(log.read_text(errors="replace"))
    jobs = parsed["jobs"]
    done = [j for j in jobs.values() if j["end"] is not None]
    elapsed = max((j["end"] for j in done), default=0.0)
    path = critical_path(jobs)
    on_path = set(path)
    rules: dict[str, dict] = {}
    for i, j in sorted(jobs.items()):
        r = rules.setdefault(j["rule"], {"rule": j["rule"], "jobs": 0, "failed": 0, "unfinished": 0, "wall_s": 0.0,
                                         "core_s": 0.0, "measured": 0, "cpu_s": None, "cpu_share": None,
                                         "peak_rss_mb": None, "path_jobs": 0, "path_s": 0.0})
        r["jobs"] += 1
        r["failed"] += j["failed"]
        if j["end"] is None:
            r["unfinished"] += 1
            continue
        wall = j["end"] - j["start"]
        r["wall_s"] += wall
        r["core_s"] += wall * j["threads"]
        if i in on_path:
            r["path_jobs"] += 1
            r["path_s"] += wall
        u = job_usage(run_dir, j)
        if u is not None:
            rss = float(u.get("peak_rss_mb") or 0) + float(u.get("peak_rss_children_mb") or 0)
            r["peak_rss_mb"] = max(r["peak_rss_mb"] or 0.0, round(rss, 1))
            if u.get("cpu_s") is not None:
                r["measured"] += 1
                r["cpu_s"] = (r["cpu_s"] or 0.0) + float(u["cpu_s"])
                r["_cpu_core_s"] = r.get("_cpu_core_s", 0.0) + wall * j["threads"]
    for r in rules.values():
        cap = r.pop("_cpu_core_s", 0.0)  # wall x threads of the jobs that measured CPU time
        r["cpu_share"] = round(r["cpu_s"] / cap, 3) if r["cpu_s"] is not None and cap > 0 else None
        r["path_share"] = round(r["path_s"] / elapsed, 3) if elapsed else None
    cores = parsed["cores"]
    busy = sum(r["core_s"] for r in rules.values())
    return {"run_dir": str(run_dir), "log": str(log), "complete": parsed["complete"], "cores": cores,
            "elapsed_s": elapsed, "jobs": len(jobs),
            "scheduler_busy": round(busy / (elapsed * cores), 3) if cores and elapsed else None,
            "critical_path_s": sum(jobs[i]["end"] - jobs[i]["start"] for i in path),
            "critical_path": [{"jobid": i, "rule": jobs[i]["rule"], "start_s": jobs[i]["start"], "end_s": jobs[i]["end"],
                               "outputs": jobs[i]["outputs"][:1]} for i in path],
            "rules": sorted(rules.values(), key=lambda r: -r["wall_s"])}


def replay(jobs: dict, cores: int, scale: dict[str, float] | None = None, threads: dict[str, int] | None = None,
           first: set[str] | frozenset = frozenset()) -> float:
    """Elapsed seconds of a list schedule of the finished ``jobs`` on ``cores`` (see the
    module's what-if replay)."""
    import heapq

    scale, threads = scale or {}, threads or {}
    done_jobs = {i: j for i, j in jobs.items() if j["end"] is not None}
    producer = {out.rstrip("/"): i for i, j in done_jobs.items() for out in j["outputs"]}
    deps = {i: {d for p in j["inputs"] if (d := _producer(producer, p)) is not None and d != i and d in done_jobs}
            for i, j in done_jobs.items()}
    wall = {i: (j["end"] - j["start"]) * scale.get(j["rule"], scale.get("*", 1.0)) for i, j in done_jobs.items()}
    need = {i: min(cores, threads.get(j["rule"], j["threads"])) for i, j in done_jobs.items()}
    rank = {i: (j["rule"] not in first, j["start"], i) for i, j in done_jobs.items()}
    t, free, running, finished, pending = 0.0, cores, [], set(), set(done_jobs)
    while pending or running:
        for i in sorted((i for i in pending if deps[i] <= finished), key=rank.get):
            if need[i] <= free:
                free -= need[i]
                pending.discard(i)
                heapq.heappush(running, (t + wall[i], i))
        if not running:
            raise ProfileError("replay: jobs wait on each other (a dependency cycle in the log?)")
        t, i = heapq.heappop(running)
        free += need[i]
        finished.add(i)
    return t


def _pairs(items: list[str], cast, flag: str) -> dict:
    out = {}
    for item in items:
        rule, sep, value = item.partition("=")
        try:
            out[rule] = cast(value)
        except ValueError:
            sep = ""
        if not sep or not rule:
            raise ProfileError(f"{flag} {item!r}: expected RULE=VALUE")
    return out


def _hms(s: float) -> str:
    return f"{int(s // 3600)}:{int(s % 3600 // 60):02d}:{int(s % 60):02d}"


def print_table(p: dict) -> None:
    print(f"{p['log']} ({'complete' if p['complete'] else 'INCOMPLETE'}): {p['jobs']} jobs, elapsed "
          f"{_hms(p['elapsed_s'])} on {p['cores']} cores; scheduler kept {100 * (p['scheduler_busy'] or 0):.0f} % of "
          f"core-time claimed; critical path {_hms(p['critical_path_s'])} "
          f"({100 * p['critical_path_s'] / max(p['elapsed_s'], 1):.0f} % of elapsed)")
    head = "| rule | jobs | wall s | CPU s | CPU/(wall x threads) | peak RSS MB | on path | path s | % of elapsed |"
    print(head + "\n|" + "---|" * (head.count("|") - 1))
    for r in p["rules"]:
        jobs = f"{r['jobs']}" + (f" ({r['failed']} failed)" if r["failed"] else "") + (
            f" ({r['unfinished']} unfinished)" if r["unfinished"] else "")
        cpu = f"{r['cpu_s']:.0f} ({r['measured']} jobs)" if r["cpu_s"] is not None else "-"
        share = f"{100 * r['cpu_share']:.0f} %" if r["cpu_share"] is not None else "-"
        rss = f"{r['peak_rss_mb']:.0f}" if r["peak_rss_mb"] is not None else "-"
        path = f"{r['path_jobs']}" if r["path_jobs"] else ""
        ps = f"{r['path_s']:.0f}" if r["path_jobs"] else ""
        pct = f"{100 * r['path_share']:.1f}" if r["path_jobs"] else ""
        print(f"| {r['rule']} | {jobs} | {r['wall_s']:.0f} | {cpu} | {share} | {rss} | {path} | {ps} | {pct} |")
    print("critical path: " + " -> ".join(f"{c['rule']}({c['end_s'] - c['start_s']:.0f} s)" for c in p["critical_path"]))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", help="a run folder (the Snakemake --directory)")
    ap.add_argument("--log", help="the Snakemake log to read (default: the newest complete one of RUN_DIR)")
    ap.add_argument("--out", default="pipeline_profile.json", help="JSON to write")
    ap.add_argument("--scale", action="append", default=[], metavar="RULE=F", help="what-if: RULE's wall x F ('*': all)")
    ap.add_argument("--threads", action="append", default=[], metavar="RULE=N", help="what-if: RULE's jobs claim N cores")
    ap.add_argument("--first", action="append", default=[], metavar="RULE", help="what-if: RULE's jobs start first")
    ap.add_argument("--cores", type=int, help="what-if: cores (default: the run's)")
    args = ap.parse_args(argv)
    run_dir = Path(args.run_dir)
    try:
        log = Path(args.log) if args.log else pick_log(run_dir)
        p = profile(run_dir, log)
        if args.scale or args.threads or args.first or args.cores:
            what_if = {"scale": _pairs(args.scale, float, "--scale"), "threads": _pairs(args.threads, int, "--threads"),
                       "first": sorted(args.first), "cores": args.cores or p["cores"]}
            jobs = parse_log(log.read_text(errors="replace"))["jobs"]
            what_if["elapsed_s"] = replay(jobs, what_if["cores"], what_if["scale"], what_if["threads"], set(args.first))
            what_if["same_run_replayed_s"] = replay(jobs, p["cores"])
            p["what_if"] = what_if
    except (ProfileError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print_table(p)
    if "what_if" in p:
        w = p["what_if"]
        print(f"what-if replay on {w['cores']} cores (scale {w['scale']}, threads {w['threads']}, first {w['first']}): "
              f"{_hms(w['elapsed_s'])}; the run itself replayed unchanged: {_hms(w['same_run_replayed_s'])}, "
              f"measured {_hms(p['elapsed_s'])}")
    Path(args.out).write_text(json.dumps(p, indent=1) + "\n")
    print(f"JSON: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
