"""A real one-node SLURM cluster on localhost, for tests: munged, MariaDB, slurmdbd,
slurmctld and slurmd from Debian's packages, all state under one temporary folder.

    with LocalSlurm(tmp_path / "slurm") as cluster:
        subprocess.run(["sbatch", ...], env=cluster.env())
        cluster.sacct(...)

Everything runs as root (slurmd must), on free localhost ports, with its own munge key and
socket, its own database folder and ``SLURM_CONF`` pointing at the config written here, so
nothing under /etc is read or changed and a system SLURM on the same host is not touched.
The node advertises one GPU (``gres/gpu``, device file /dev/null, AutoDetect=off) so GPU
requests are scheduled on a GPU-less machine; nothing in a job can use it.

Accounting is real (slurmdbd on MariaDB) because snakemake-executor-plugin-slurm polls job
states with ``sacct`` and because ``sacct`` keeps what was asked for: the sbatch command line
(SubmitLine), the requested TRES (ReqTRES, incl. gres/gpu) and requeue records.

Run by hand: ``python tests/slurm_cluster.py up /tmp/dwslurm`` starts a cluster and waits
for Ctrl-C, printing the SLURM_CONF to export.
"""

from __future__ import annotations

import getpass
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

# Debian packages (bookworm names); slurm-wlm is the metapackage of the first three plus
# many optional plugins (hdf5, rrd, influxdb...) that the test does not need.
APT_PACKAGES = ["slurmctld", "slurmd", "slurm-client", "slurmdbd", "munge", "mariadb-server"]
PROGRAMS = ["munged", "slurmctld", "slurmd", "slurmdbd", "sbatch", "srun", "sacct", "sacctmgr",
            "scontrol", "squeue", "mariadbd", "mariadb-install-db", "mariadb"]
CLUSTER = "deepwidetest"
ACCOUNT = "deepwide"
# the default partition, and a second one that a job only gets when it asks for it
PARTITIONS = ("main", "dwgpu")


class SlurmUnavailable(RuntimeError):
    """This machine cannot run the local cluster (not root, no apt, install failed...)."""


def missing_programs() -> list[str]:
    return [p for p in PROGRAMS if shutil.which(p) is None]


def ensure_installed(log=print) -> None:
    """Install the Debian packages when a program is missing (root + apt-get only).

    Services are kept from starting during the install (a temporary policy-rc.d), so no
    system munged/slurm/mariadb daemon is left running by it.
    """
    missing = missing_programs()
    if not missing:
        return
    if os.geteuid() != 0:
        raise SlurmUnavailable(f"not root and missing {' '.join(missing)} "
                               f"(install: apt-get install {' '.join(APT_PACKAGES)})")
    if shutil.which("apt-get") is None:
        raise SlurmUnavailable(f"missing {' '.join(missing)} and no apt-get to install {' '.join(APT_PACKAGES)}")
    log(f"installing Debian packages for the SLURM test: {' '.join(APT_PACKAGES)}")
    policy = Path("/usr/sbin/policy-rc.d")
    own_policy = not policy.exists()
    if own_policy:
        policy.write_text("#!/bin/sh\n# written by deepwide's SLURM test during apt-get install\nexit 101\n")
        policy.chmod(0o755)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    try:
        last = None
        for attempt in range(6):  # the dpkg lock may be held by another install
            upd = subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, text=True)
            res = subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *APT_PACKAGES],
                                 env=env, capture_output=True, text=True)
            if res.returncode == 0:
                break
            last = (upd.stderr + res.stderr)[-2000:]
            time.sleep(10)
        else:
            raise SlurmUnavailable(f"apt-get install {' '.join(APT_PACKAGES)} failed: {last}")
    finally:
        if own_policy:
            policy.unlink(missing_ok=True)
    still = missing_programs()
    if still:
        raise SlurmUnavailable(f"still missing after install: {' '.join(still)}")


def free_ports(n: int) -> list[int]:
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


def _wait(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None, log: Path | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc is not None and proc.poll() is not None:
            break
        time.sleep(0.2)
    tail = log.read_text(errors="replace")[-3000:] if log is not None and log.exists() else ""
    state = f"exited with {proc.returncode}" if proc is not None and proc.poll() is not None else f"not ready after {timeout:.0f} s"
    raise SlurmUnavailable(f"{what} {state}\n{tail}")


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


class LocalSlurm:
    """munged + MariaDB + slurmdbd + slurmctld + slurmd on localhost, state under ``root``."""

    def __init__(self, root: str | Path, cpus: int | None = None, mem_mb: int | None = None, gpus: int = 1):
        self.root = Path(root).resolve()
        self.node = socket.gethostname().split(".")[0]
        self.cpus = cpus or os.cpu_count() or 1
        total_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20
        self.mem_mb = mem_mb or max(1000, min(4000, total_mb // 2))
        self.gpus = gpus
        self.user = getpass.getuser()
        self.procs: list[tuple[str, subprocess.Popen]] = []
        self.conf = self.root / "etc" / "slurm.conf"

    # ---------------------------------------------------------------- public
    def env(self, base: dict | None = None) -> dict:
        """Environment for SLURM client commands (and everything they start) on this cluster."""
        env = dict(os.environ if base is None else base)
        for key in [k for k in env if k.startswith(("SLURM_", "SBATCH_", "SRUN_", "SALLOC_"))]:
            del env[key]
        env["SLURM_CONF"] = str(self.conf)
        env["PATH"] = f"{self.root / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        return env

    def run(self, *cmd: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run(list(cmd), env=self.env(), capture_output=True, text=True, check=check, timeout=timeout)

    def start(self) -> "LocalSlurm":
        if os.geteuid() != 0:
            raise SlurmUnavailable("slurmd needs root (run the SLURM test as root, as CI does)")
        ensure_installed()
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Cancel every job of this cluster, then stop the daemons (newest first)."""
        if any(name == "slurmctld" for name, p in self.procs if p.poll() is None):
            self.run("scancel", "--user", self.user, check=False, timeout=20)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                q = self.run("squeue", "-h", "-o", "%i", check=False, timeout=20)
                if q.returncode != 0 or not q.stdout.strip():
                    break
                time.sleep(0.5)
        for name, proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=10)
        self.procs.clear()
        self._kill_own_stepds()
        # the database (~120 MB) is of no use once its server is gone; logs and configs stay
        shutil.rmtree(self.root / "db", ignore_errors=True)

    def __enter__(self) -> "LocalSlurm":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def sacct(self, *args: str, fields: str = "JobIDRaw,JobName,State,Account,Partition,ReqTRES,Comment,SubmitLine%-1000") -> list[dict]:
        """Rows of ``sacct --parsable2`` (all users, since a day ago) as dicts."""
        names = [f.split("%")[0] for f in fields.split(",")]
        out = self.run("sacct", "--allusers", "--parsable2", "--noheader", "--starttime", "now-1days",
                       f"--format={fields}", *args).stdout
        rows = []
        for line in out.splitlines():
            if line.strip():
                rows.append(dict(zip(names, line.split("|", len(names) - 1))))
        return rows

    # ---------------------------------------------------------------- internals
    def _daemon(self, name: str, cmd: list[str], log: Path) -> subprocess.Popen:
        out = open(log, "ab")
        proc = subprocess.Popen(cmd, env=self.env(), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                cwd=self.root, start_new_session=True)
        out.close()
        self.procs.append((name, proc))
        return proc

    def _start(self) -> None:
        # unix sockets (munge, MariaDB) live under root: their paths must stay < 108 bytes
        if len(str(self.root)) > 70:
            raise SlurmUnavailable(f"state folder path too long for unix sockets (keep it under 70 characters): {self.root}")
        if self.root.exists():
            shutil.rmtree(self.root)
        r = self.root
        for sub in ("bin", "etc", "munge", "db", "state", "spool", "log", "run"):
            (r / sub).mkdir(parents=True)
        # snakemake-executor-plugin-slurm-jobstep drops SLURM_CONF from the environment of
        # the srun it runs inside each job (it keeps only SLURM_JOB_ID & co.), so that srun
        # would look for /etc/slurm/slurm.conf or a configless cache as on a real cluster.
        # This cluster's config lives here instead: an srun first on PATH points back to it.
        srun = r / "bin" / "srun"
        srun.write_text(f'#!/bin/sh\nSLURM_CONF="{self.conf}" exec {shutil.which("srun")} "$@"\n')
        srun.chmod(0o755)
        self.ctld_port, self.slurmd_port, self.dbd_port, self.db_port = free_ports(4)
        self._stepds_before = set(self._stepd_pids())

        # munge: own key and socket
        key = r / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        (r / "munge").chmod(0o700)
        self.munge_socket = r / "munge" / "munge.sock"
        munged = self._daemon("munged", ["munged", "--foreground", "--force", f"--socket={self.munge_socket}",
                                         f"--key-file={key}", f"--pid-file={r / 'run' / 'munged.pid'}",
                                         f"--log-file={r / 'log' / 'munged.log'}", f"--seed-file={r / 'munge' / 'seed'}"],
                              r / "log" / "munged.out")
        _wait(self.munge_socket.exists, 20, "munged", munged, r / "log" / "munged.log")

        # MariaDB for slurmdbd
        subprocess.run(["mariadb-install-db", "--no-defaults", f"--datadir={r / 'db'}", f"--user={self.user}",
                        "--auth-root-authentication-method=normal", "--skip-test-db"],
                       check=True, capture_output=True, timeout=120)
        db_sock = r / "run" / "mysql.sock"
        mariadb = self._daemon("mariadbd", ["mariadbd", "--no-defaults", f"--datadir={r / 'db'}", f"--user={self.user}",
                                            "--bind-address=127.0.0.1", f"--port={self.db_port}", f"--socket={db_sock}",
                                            f"--pid-file={r / 'run' / 'mariadbd.pid'}", f"--log-error={r / 'log' / 'mariadb.log'}",
                                            "--innodb-buffer-pool-size=64M", "--innodb-log-file-size=16M",
                                            "--innodb-lock-wait-timeout=900", "--skip-name-resolve"],
                               r / "log" / "mariadb.out")

        def db_ready():
            return subprocess.run(["mariadb", "--no-defaults", "-S", str(db_sock), "-uroot", "-e", "select 1"],
                                  capture_output=True).returncode == 0

        _wait(db_ready, 60, "mariadbd", mariadb, r / "log" / "mariadb.log")
        sql = ("CREATE USER 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurm';"
               "GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';")
        subprocess.run(["mariadb", "--no-defaults", "-S", str(db_sock), "-uroot", "-e", sql], check=True, capture_output=True)

        self._write_configs()

        dbd = self._daemon("slurmdbd", ["slurmdbd", "-D"], r / "log" / "slurmdbd.out")
        _wait(lambda: _port_open(self.dbd_port), 60, "slurmdbd", dbd, r / "log" / "slurmdbd.log")
        self.run("sacctmgr", "-i", "add", "cluster", CLUSTER)
        self.run("sacctmgr", "-i", "add", "account", ACCOUNT, "Description=deepwide tests", "Organization=deepwide")
        self.run("sacctmgr", "-i", "add", "user", self.user, f"Account={ACCOUNT}", f"DefaultAccount={ACCOUNT}")

        ctld = self._daemon("slurmctld", ["slurmctld", "-D", "-i"], r / "log" / "slurmctld.out")
        _wait(lambda: self.run("scontrol", "ping", check=False).stdout.count("UP") > 0, 60, "slurmctld", ctld,
              r / "log" / "slurmctld.log")
        slurmd = self._daemon("slurmd", ["slurmd", "-D"], r / "log" / "slurmd.out")

        def node_idle():
            out = self.run("sinfo", "-h", "-n", self.node, "-o", "%T", check=False).stdout.split()
            return bool(out) and all(s == "idle" for s in out)

        _wait(node_idle, 60, f"slurmd (node {self.node} idle)", slurmd, r / "log" / "slurmd.log")

    def _write_configs(self) -> None:
        r = self.root
        etc = r / "etc"
        conf = f"""# written by tests/slurm_cluster.py: a one-node test cluster
ClusterName={CLUSTER}
SlurmctldHost={self.node}(127.0.0.1)
SlurmctldPort={self.ctld_port}
SlurmdPort={self.slurmd_port}
AuthType=auth/munge
AuthInfo=socket={self.munge_socket}
CredType=cred/munge
SlurmUser={self.user}
SlurmdUser=root
StateSaveLocation={r / 'state'}
SlurmdSpoolDir={r / 'spool'}
SlurmctldPidFile={r / 'run' / 'slurmctld.pid'}
SlurmdPidFile={r / 'run' / 'slurmd.pid'}
SlurmctldLogFile={r / 'log' / 'slurmctld.log'}
SlurmdLogFile={r / 'log' / 'slurmd.log'}
SlurmctldDebug=info
SlurmdDebug=info
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
MpiDefault=none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort={self.dbd_port}
AccountingStoragePass={self.munge_socket}
AccountingStorageTRES=gres/gpu
AccountingStorageEnforce=associations
AccountingStoreFlags=job_comment
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
GresTypes=gpu
ReturnToService=2
MinJobAge=300
KillWait=5
# the node may promise more CPUs than the machine has (test jobs mostly wait)
SlurmdParameters=config_overrides
InactiveLimit=0
NodeName={self.node} NodeAddr=127.0.0.1 CPUs={self.cpus} RealMemory={self.mem_mb} Gres=gpu:{self.gpus} State=UNKNOWN
PartitionName={PARTITIONS[0]} Nodes={self.node} Default=YES MaxTime=INFINITE State=UP
PartitionName={PARTITIONS[1]} Nodes={self.node} Default=NO MaxTime=INFINITE State=UP
"""
        self.conf.write_text(conf)
        # File=/dev/null: slurmd drops GPUs without a device file; nothing opens it
        (etc / "gres.conf").write_text(f"AutoDetect=off\nNodeName={self.node} Name=gpu File=/dev/null\n")
        dbd = etc / "slurmdbd.conf"
        dbd.write_text(f"""AuthType=auth/munge
AuthInfo=socket={self.munge_socket}
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort={self.dbd_port}
SlurmUser={self.user}
PidFile={r / 'run' / 'slurmdbd.pid'}
LogFile={r / 'log' / 'slurmdbd.log'}
DebugLevel=info
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort={self.db_port}
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
""")
        dbd.chmod(0o600)

    @staticmethod
    def _stepd_pids() -> list[int]:
        pids = []
        for p in Path("/proc").iterdir():
            if p.name.isdigit():
                try:
                    if (p / "comm").read_text().strip() == "slurmstepd":
                        pids.append(int(p.name))
                except OSError:
                    pass
        return pids

    def _kill_own_stepds(self) -> None:
        """slurmstepd processes that appeared while this cluster ran and outlived slurmd."""
        before = getattr(self, "_stepds_before", None)
        if before is None:
            return
        for pid in set(self._stepd_pids()) - before:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] != "up":
        print("usage: python tests/slurm_cluster.py up STATE_DIR", file=sys.stderr)
        return 2
    def interrupt(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGINT, interrupt)
    with LocalSlurm(argv[1]) as cluster:
        print(f"export SLURM_CONF={cluster.conf}\n(Ctrl-C or SIGTERM to pid {os.getpid()} stops the cluster)", flush=True)
        try:
            signal.pause()
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
