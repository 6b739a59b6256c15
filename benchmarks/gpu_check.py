"""One check of every accelerator code path, at smoke size, in one script (``make gpu-check``).

    python benchmarks/gpu_check.py [--device cuda] [--out results/gpu_check/gpu_check.json]

What it runs, through the real pipeline (Snakemake on the smoke study, results under
``--workdir``, never the user's study):

1. study A, ``distill.targets.mode: cached``: corpora, the teacher pretrained under
   ``precision: bf16`` on CUDA (fp32 on CPU), the targets cache, students ``pred`` and
   ``l2l`` trained from cached targets with ``torch.compile`` (CUDA; ``--compile`` forces
   it on CPU), the SUPERB sweep (PR, KS, SID) with the feature cache on, QbE, the report;
2. study B, the same with ``distill.targets.mode: online``: only the students (teacher
   forward in every step) and what reads them rerun;
3. ``benchmarks/kd_throughput.py --quick`` (``--compile`` on CUDA) and
   ``benchmarks/superb_throughput.py --quick`` on the same device.

Then it reads what the jobs recorded (device, precision, mode, compile, peak memory) and
checks each path really ran where it was asked to. It writes one JSON naming the card,
the torch version, every check (``ok`` and why), the wall time of each part and the
benchmark rows, and exits 1 when a check failed. ``--budget-s`` (default 480) bounds the
whole script: a part that would run past it is stopped and recorded as ``timeout``.
``--dry-run`` only plans both studies (``snakemake -n``), for tests.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "workflow" / "configs" / "smoke.yaml"
TASKS = ["pr", "ks", "sid", "qbe"]


def study_config(base: dict, results: Path, device: str, mode: str, compile_: bool) -> dict:
    """The smoke study with every accelerator path switched on (``mode``: cached/online)."""
    cfg = copy.deepcopy(base)
    cfg["results"] = str(results)
    cuda = device.startswith("cuda")
    train = cfg["teacher"]["pretrain"].setdefault("train", {})
    train["precision"] = "bf16" if cuda else "fp32"
    d = cfg["distill"]
    d["methods"] = ["pred", "l2l"]
    d["seeds"] = [0]
    d["targets"] = {**d.get("targets", {}), "mode": mode, "online_methods": []}
    d["train"] = {**d["train"], "compile": bool(compile_)}
    s = cfg["superb"]
    s.update({"tasks": list(TASKS), "device": device, "cache_mb": 256})
    return cfg


def run_part(name: str, argv: list[str], log: Path, deadline: float, env: dict | None = None) -> dict:
    """Run one part, its output in ``log``; never past ``deadline`` (time.time())."""
    left = deadline - time.time()
    if left < 5:
        return {"part": name, "status": "skipped (no time left in --budget-s)", "wall_s": 0.0, "log": None,
                "command": " ".join(argv)}
    t0 = time.time()
    with open(log, "w") as fh:
        try:
            rc = subprocess.run(argv, stdout=fh, stderr=subprocess.STDOUT, timeout=left, env=env, cwd=REPO).returncode
            status = "ok" if rc == 0 else f"failed (exit {rc})"
        except subprocess.TimeoutExpired:
            status = "timeout"
    return {"part": name, "status": status, "wall_s": round(time.time() - t0, 1), "log": str(log),
            "command": " ".join(argv)}


def tail(path: Path, n: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


def _json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def check(name: str, ok: bool, detail: str) -> dict:
    return {"check": name, "ok": bool(ok), "detail": detail}


def check_students(results: Path, device: str, compile_: bool, mode: str) -> list[dict]:
    """Both methods' students as the ``mode`` study trained them (read before the other
    study's students replace them: the mode is not part of a student's path)."""
    cuda = device.startswith("cuda")
    out = []
    for method in ("pred", "l2l"):
        infos = [i for i in (_json(p) for p in sorted(results.glob(f"students/{method}/*/seed*/info.json")))
                 if i.get("mode", "").startswith(mode)]
        got = infos[0] if infos else {}
        ok = bool(got) and str(got.get("device", "")).startswith("cuda") == cuda
        if compile_:
            ok = ok and got.get("compile") is True
        if cuda:
            ok = ok and got.get("autocast") == "bfloat16"
        detail = (f"mode={got.get('mode')!r} device={got.get('device')!r} compile={got.get('compile')!r} "
                  f"autocast={got.get('autocast')!r} steps={got.get('steps')} final_loss={got.get('final_loss')}"
                  if got else "no student info.json in this mode")
        out.append(check(f"distill {method} {mode}", ok, detail))
    return out


def check_results(results: Path, device: str) -> list[dict]:
    """What the teacher, targets, SUPERB, QbE and report jobs recorded, against what this
    script asked of them."""
    cuda = device.startswith("cuda")
    out = []
    teacher = _json(results / "teacher" / "info.json")
    num = teacher.get("numerics", {})
    want = "bf16" if cuda else "fp32"
    out.append(check("teacher pretrain precision", num.get("precision") == want,
                     f"numerics.precision={num.get('precision')!r} (want {want}), device={num.get('device')!r}"))
    out.append(check("teacher pretrain device", str(num.get("device", "")).startswith("cuda") == cuda,
                     f"device={num.get('device')!r}"))
    caches = sorted(results.glob("targets/*/*/cache.json"))
    out.append(check("targets cache written", bool(caches), f"{len(caches)} targets cache part(s)"))
    for task in TASKS[:-1]:
        rows = [_json(p) for p in sorted(results.glob(f"superb/*/{task}/lr*/seed*/result.json"))]
        dev_ok = rows and all(str(r.get("device", "")).startswith("cuda") == cuda for r in rows)
        out.append(check(f"superb {task} sweep", bool(dev_ok),
                         f"{len(rows)} result(s); devices {sorted({r.get('device_name', r.get('device')) for r in rows})}"))
    qbe = [_json(p) for p in sorted(results.glob("superb/*/qbe/*/result.json"))]
    out.append(check("superb qbe", bool(qbe) and all(q.get("metric") == "mtwv" for q in qbe),
                     f"{len(qbe)} QbE result(s); devices {sorted({str(q.get('device')) for q in qbe})}"))
    out.append(check("report written", (results / "report" / "tables" / "verdict.md").is_file(),
                     "report/tables/verdict.md"))
    return out


def card(device: str) -> dict:
    import torch

    info = {"torch": torch.__version__, "cuda_available": torch.cuda.is_available(), "device": device,
            "host": platform.node(), "cpu_count": os.cpu_count()}
    if device.startswith("cuda") and torch.cuda.is_available():
        p = torch.cuda.get_device_properties(torch.device(device))
        info.update({"card": p.name, "memory_gib": round(p.total_memory / 2**30, 1),
                     "capability": f"{p.major}.{p.minor}", "cuda": torch.version.cuda,
                     "bf16": torch.cuda.is_bf16_supported()})
    else:
        info["card"] = f"cpu ({platform.processor() or platform.machine()})"
    return info


def resolve(device: str) -> str:
    sys.path.insert(0, str(REPO / "src"))
    from deepwide.errors import DeepwideError
    from deepwide.utils.device import resolve_device

    try:
        return resolve_device(device, "gpu_check --device")
    except DeepwideError as err:
        raise SystemExit(f"gpu_check: {err}") from None


def main(argv: list[str] | None = None) -> int:
    import yaml

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="auto", help="cuda, cuda:N, cpu or auto (default)")
    ap.add_argument("--out", default="results/gpu_check/gpu_check.json")
    ap.add_argument("--workdir", default="results/gpu_check/work", help="the check's own study folder")
    ap.add_argument("--cores", type=int, default=os.cpu_count() or 2, help="snakemake --cores")
    ap.add_argument("--budget-s", type=float, default=480.0, help="wall-clock bound of the whole script")
    ap.add_argument("--compile", dest="compile_", action="store_true", default=None,
                    help="torch.compile the students (default: on CUDA only)")
    ap.add_argument("--skip-benchmarks", action="store_true")
    ap.add_argument("--dry-run", action="store_true", help="plan both studies only (snakemake -n)")
    args = ap.parse_args(argv)

    t0 = time.time()
    deadline = t0 + args.budget_s
    device = resolve(args.device)
    compile_ = device.startswith("cuda") if args.compile_ is None else args.compile_
    work = Path(args.workdir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    out_path = Path(args.out).resolve()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    base = yaml.safe_load(SMOKE.read_text())
    results = work / "results"
    parts = []
    # a check stopped by its budget leaves Snakemake's lock behind: clear it as `make run` does
    subprocess.run([sys.executable, "-m", "deepwide", "recover", "--directory", str(work)], cwd=REPO, check=False,
                   stdout=subprocess.DEVNULL)
    recorded = []
    for label, mode in (("A", "cached"), ("B", "online")):
        cfg_path = work / f"study_{label}.yaml"
        cfg_path.write_text(yaml.safe_dump(study_config(base, results, device, mode, compile_), sort_keys=False))
        argv_ = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(work),
                 "--configfile", str(cfg_path), "--cores", str(args.cores), "--rerun-incomplete", "--printshellcmds"]
        if args.dry_run:
            argv_.append("-n")
        part = run_part(f"pipeline, targets {mode}" + (" (dry run)" if args.dry_run else ""), argv_,
                        work / f"snakemake_{label}.log", deadline)
        if part["status"] != "ok" and part["log"]:
            part["tail"] = tail(Path(part["log"]))
        parts.append(part)
        if not args.dry_run:
            recorded += check_results(results, device) if mode == "cached" else []
            recorded += check_students(results, device, compile_, mode)
    if not args.skip_benchmarks and not args.dry_run:
        bench = REPO / "benchmarks"
        kd = [sys.executable, str(bench / "kd_throughput.py"), "--device", device, "--quick",
              "--out", str(work / "kd_throughput.json")] + (["--compile"] if compile_ else [])
        sb = [sys.executable, str(bench / "superb_throughput.py"), "--device", device, "--quick",
              "--out", str(work / "superb_throughput.json")]
        for name, cmd in (("benchmark kd_throughput", kd), ("benchmark superb_throughput", sb)):
            part = run_part(name, cmd, work / f"{name.split()[1]}.log", deadline)
            if part["status"] != "ok" and part["log"]:
                part["tail"] = tail(Path(part["log"]))
            parts.append(part)
    checks = [check(p["part"], p["status"] == "ok", p["status"]) for p in parts] + recorded
    report = {
        "machine": card(device),
        "compile": compile_,
        "budget_s": args.budget_s,
        "wall_s": round(time.time() - t0, 1),
        "parts": parts,
        "checks": checks,
        "benchmarks": {k: _json(work / f"{k}.json") for k in ("kd_throughput", "superb_throughput")},
        "ok": all(c["ok"] for c in checks),
    }
    out_path.write_text(json.dumps(report, indent=1) + "\n")
    width = max(len(c["check"]) for c in checks)
    print(f"gpu-check on {report['machine']['card']} (torch {report['machine']['torch']}), {report['wall_s']} s")
    for c in checks:
        print(f"  {'ok  ' if c['ok'] else 'FAIL'} {c['check']:<{width}}  {c['detail']}")
    for p in parts:
        print(f"  {p['part']}: {p['status']} in {p['wall_s']} s")
    print(f"wrote {out_path}")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
