"""A real Slurm cluster for tests: munged, slurmctld and one slurmd per node, all on this machine.

Everything lives in one temporary directory: the munge key and socket, slurm.conf, the state and
spool directories, the daemons' logs. Several slurmd processes, each with its own NodeName and
Port, make a cluster of several nodes on one machine. Clients find it through $SLURM_CONF. The
daemons are ended by their own PIDs. Debian's slurm-wlm and munge must be installed (.ci/run
installs them); the daemons run as root, as on CI.

Slurm holds a requeued job back for `cred_expire` seconds (120 by default) before it may start
again; the config sets it (AuthInfo cred_expire) to 10 s, so that a requeue test waits seconds, not minutes.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd", "sbatch", "scontrol", "squeue", "scancel", "srun")
CRED_EXPIRE_S = 10  # how long a requeued job waits before it may start again


def missing_tools() -> list[str]:
    return [tool for tool in DAEMONS if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists()]


def _tool(name: str) -> str:
    return shutil.which(name) or f"/usr/sbin/{name}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class SlurmCluster:
    root: Path
    nodes: list[str]
    cpus: int
    pids: dict[str, int] = field(default_factory=dict)

    @property
    def conf(self) -> Path:
        return self.root / "slurm.conf"

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "RESWEEP_", "RAY_ADDRESS"))}
        env["SLURM_CONF"] = str(self.conf)
        env.update(extra)
        return env

    def run(self, *argv: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
        done = subprocess.run([_tool(argv[0]), *argv[1:]], env=self.env(), capture_output=True, text=True,
                              timeout=timeout)
        if check and done.returncode != 0:
            raise AssertionError(f"{' '.join(argv)}: exit {done.returncode}: {done.stdout}{done.stderr}")
        return done

    def job_state(self, job_id: str) -> str:
        """The job's state (PENDING, RUNNING, COMPLETED, CANCELLED, TIMEOUT, ...), '' when Slurm forgot it."""
        out = self.run("scontrol", "-o", "show", "job", job_id, check=False).stdout
        for part in out.split():
            if part.startswith("JobState="):
                return part.split("=", 1)[1]
        return ""

    def job_field(self, job_id: str, name: str) -> str:
        out = self.run("scontrol", "-o", "show", "job", job_id, check=False).stdout
        for part in out.split():
            if part.startswith(f"{name}="):
                return part.split("=", 1)[1]
        return ""

    def wait_state(self, job_id: str, states: tuple[str, ...], timeout: float) -> str:
        deadline = time.monotonic() + timeout
        state = ""
        while time.monotonic() < deadline:
            state = self.job_state(job_id)
            if state in states:
                return state
            time.sleep(0.5)
        raise AssertionError(f"job {job_id} still {state or 'unknown'} after {timeout:.0f} s, not {'/'.join(states)}"
                             f"\n{self.logs()}")

    def logs(self) -> str:
        parts = []
        for log in sorted(self.root.glob("*.log")):
            parts.append(f"--- {log.name}\n" + "\n".join(log.read_text(errors="replace").splitlines()[-15:]))
        return "\n".join(parts)

    def stop(self) -> None:
        for name, pid in reversed(list(self.pids.items())):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
        deadline = time.monotonic() + 15
        for pid in self.pids.values():
            while time.monotonic() < deadline:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.2)
            else:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


def _pid_from(path: Path, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().strip():
            return int(path.read_text().split()[0])
        time.sleep(0.1)
    raise AssertionError(f"{path} did not appear within {timeout:.0f} s")


def start(root: Path, nodes: int = 2, cpus: int = 2) -> SlurmCluster:
    """Start munged, slurmctld and `nodes` slurmd under `root`; returns once every node is idle."""
    root.mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o755)
    names = [f"n{i + 1}" for i in range(nodes)]
    cluster = SlurmCluster(root=root, nodes=names, cpus=cpus)
    munge = root / "munge"
    munge.mkdir(exist_ok=True)
    munge.chmod(0o711)  # munged wants its socket directory searchable
    key = munge / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    sock = munge / "munge.socket"
    subprocess.run([_tool("munged"), "--force", f"--key-file={key}", f"--socket={sock}",
                    f"--pid-file={munge / 'munged.pid'}", f"--log-file={root / 'munged.log'}",
                    f"--seed-file={munge / 'munge.seed'}"], check=True, timeout=30)
    cluster.pids["munged"] = _pid_from(munge / "munged.pid", 10)

    ctld_port = free_port()
    node_lines = []
    for name in names:
        node_lines.append(f"NodeName={name} NodeHostname={socket.gethostname()} NodeAddr=127.0.0.1 "
                          f"Port={free_port()} CPUs={cpus} RealMemory=1000 State=UNKNOWN")
    (root / "state").mkdir(exist_ok=True)
    cluster.conf.write_text("\n".join([
        "ClusterName=resweeptest",
        f"SlurmctldHost={socket.gethostname()}(127.0.0.1)",
        f"SlurmctldPort={ctld_port}",
        "SlurmUser=root",
        "SlurmdUser=root",
        "AuthType=auth/munge",
        "CredType=cred/munge",
        f"AuthInfo=socket={sock},cred_expire={CRED_EXPIRE_S}",
        f"StateSaveLocation={root / 'state'}",
        f"SlurmdSpoolDir={root / 'spool-%n'}",
        f"SlurmctldPidFile={root / 'slurmctld.pid'}",
        f"SlurmdPidFile={root / 'slurmd-%n.pid'}",
        f"SlurmctldLogFile={root / 'slurmctld.log'}",
        f"SlurmdLogFile={root / 'slurmd-%n.log'}",
        "SlurmctldDebug=info",
        "SlurmdDebug=info",
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "MpiDefault=none",
        "SwitchType=switch/none",
        "SchedulerType=sched/backfill",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_CPU",
        "ReturnToService=2",
        "JobRequeue=1",
        "KillWait=30",
        "MinJobAge=600",
        "InactiveLimit=0",
        "OverTimeLimit=0",
        "AccountingStorageType=accounting_storage/none",
        "JobCompType=jobcomp/none",
        "JobAcctGatherType=jobacct_gather/none",
        "PluginDir=/usr/lib/x86_64-linux-gnu/slurm-wlm",
        *node_lines,
        "PartitionName=test Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO",
        "",
    ]))
    env = cluster.env()
    subprocess.run([_tool("slurmctld"), "-f", str(cluster.conf)], env=env, check=True, timeout=30)
    cluster.pids["slurmctld"] = _pid_from(root / "slurmctld.pid", 15)
    for name in names:
        (root / f"spool-{name}").mkdir(exist_ok=True)
        subprocess.run([_tool("slurmd"), "-f", str(cluster.conf), "-N", name], env=env, check=True, timeout=30)
        cluster.pids[f"slurmd-{name}"] = _pid_from(root / f"slurmd-{name}.pid", 15)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        out = cluster.run("sinfo", "-h", "-N", "-o", "%N %t", check=False).stdout.split()
        states = dict(zip(out[::2], out[1::2]))
        if sorted(states) == names and all(s == "idle" for s in states.values()):
            return cluster
        time.sleep(0.5)
    cluster.stop()
    raise AssertionError(f"the Slurm nodes did not come up idle within 60 s:\n{cluster.logs()}")
