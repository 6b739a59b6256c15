"""One study per results folder, and recovery from a killed run in one command.

- :func:`acquire_results_lock` (the Snakefile's ``onstart``) writes
  ``<results>/.deepwide-study.lock`` naming the host, pid and start time of the snakemake
  that runs the study. Snakemake's own lock lives in the working directory's
  ``.snakemake/``, so two clones whose configs name the same absolute ``results:`` path
  did not see each other: now the second refuses, naming the first. ``onsuccess`` and
  ``onerror`` release it (:func:`release_results_lock`); a lock whose process is gone (a
  crash, ``kill -9``) is stale and taken over with a WARNING.
- ``python -m deepwide recover [--directory D]`` (run by ``make run`` before snakemake)
  removes Snakemake's lock in ``D/.snakemake/locks`` when no snakemake process on this
  host runs in ``D``: the lock a killed run leaves behind. ``make run`` also passes
  ``--rerun-incomplete``, so the same command completes a killed study.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from pathlib import Path

from deepwide.errors import DeepwideError

log = logging.getLogger(__name__)

LOCK_NAME = ".deepwide-study.lock"


def _proc_stat(pid: int) -> tuple[str, str] | None:
    """The process's state letter and start time in clock ticks since boot (None: no such
    process)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return fields[0], fields[19]


def _proc_start(pid: int) -> str | None:
    stat = _proc_stat(pid)
    return stat[1] if stat else None


def _alive(pid: int, start: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    stat = _proc_stat(pid)
    if stat and stat[0] in ("Z", "X"):  # killed, not yet reaped: a `kill -9`'d run is gone
        return False
    return start is None or stat is None or stat[1] == start  # a reused pid started at another time


def _describe(info: dict) -> str:
    return (f"pid {info.get('pid')} on host {info.get('host')}, started {info.get('started')} in "
            f"{info.get('cwd')}")


def acquire_results_lock(results: str | os.PathLike) -> Path:
    """Take ``results``'s study lock for this process, or raise DeepwideError naming the holder."""
    results = Path(results)
    results.mkdir(parents=True, exist_ok=True)
    path = results / LOCK_NAME
    me = {"pid": os.getpid(), "host": socket.gethostname(), "proc_start": _proc_start(os.getpid()),
          "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "cwd": os.getcwd()}
    for _ in range(3):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            try:
                held = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError):
                held = {}
            if held.get("host") == me["host"] and held.get("pid") == me["pid"]:
                return path  # ours already
            if held.get("host") == me["host"] and isinstance(held.get("pid"), int) \
                    and not _alive(held["pid"], held.get("proc_start")):
                log.warning("results folder %s: removing the stale study lock of a run that no longer exists (%s)",
                            results, _describe(held))
                path.unlink(missing_ok=True)
                continue
            if not held:
                raise DeepwideError(f"results folder {results} holds an unreadable study lock {path}; if no study runs "
                                    "on it, remove that file")
            where = ("" if held.get("host") == me["host"] else
                     f" (another host: this one, {me['host']}, cannot tell whether it still runs; if it does not, remove {path})")
            raise DeepwideError(
                f"results folder {results} is in use by another study: {_describe(held)}{where}. Two studies writing "
                "one results folder overwrite each other's jobs; wait for it to finish, or give this study its own "
                "`results:` folder"
            )
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(me) + "\n")
        return path
    raise DeepwideError(f"could not take the study lock {path}")


def release_results_lock(results: str | os.PathLike) -> None:
    """Remove ``results``'s study lock if this process holds it."""
    path = Path(results) / LOCK_NAME
    try:
        held = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return
    if held.get("pid") == os.getpid() and held.get("host") == socket.gethostname():
        path.unlink(missing_ok=True)


def _snakemakes_in(directory: Path) -> list[int]:
    """Pids of snakemake processes on this host whose working directory is ``directory``."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            cwd = Path(os.readlink(proc / "cwd"))
        except OSError:
            continue
        if "snakemake" in cmd and cwd == directory:
            found.append(int(proc.name))
    return found


def clear_stale_snakemake_lock(directory: str | os.PathLike = ".") -> str | None:
    """Remove Snakemake's locks in ``directory/.snakemake/locks`` when no snakemake process
    on this host runs in ``directory``; return what was done (None: no lock). A live one is
    a DeepwideError naming its pid."""
    directory = Path(directory).resolve()
    locks = directory / ".snakemake" / "locks"
    files = sorted(locks.glob("*.lock")) if locks.is_dir() else []
    if not files:
        return None
    live = _snakemakes_in(directory)
    if live:
        raise DeepwideError(f"snakemake is running in {directory} (pid {', '.join(map(str, live))}); wait for it to finish "
                            "or stop it before starting another run there")
    for f in files:
        f.unlink(missing_ok=True)
    return (f"removed Snakemake's lock in {locks}: it was left by a run that was killed (no snakemake process runs in "
            f"{directory}); the interrupted jobs rerun (--rerun-incomplete)")


def cmd_recover(args) -> int:
    msg = clear_stale_snakemake_lock(args.directory)
    if msg:
        log.warning("%s", msg)
    return 0


def register(sub) -> None:
    p = sub.add_parser("recover", help="remove a stale Snakemake lock left by a killed run (make run does this)")
    p.add_argument("--directory", default=".", help="snakemake's working directory (default: here)")
    p.set_defaults(func=cmd_recover)
