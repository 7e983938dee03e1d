"""The sbatch script from `orchestrator slurm` under stand-ins: only what a real Slurm here cannot show.

The script runs for real on a real Slurm in test_slurm_real.py: whole sweeps, requeue, the time
limit, scancel, two nodes. What that Slurm cannot show is GPUs (this machine has none, so its nodes
have no GPU gres): so here the script runs under small stand-ins put first on PATH
(tests/orchestrator/cluster_stubs: `sbatch`, `srun`, `scontrol`, `ray`, `python`, `hostname`) that
record every call in a log, to check that a job asking for GPUs asks Slurm for them and gives them
to every Ray node. The option checks at the end need no Slurm at all.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from db.engine import Database
from orchestrator.cluster import remote_sweep, slurm
from orchestrator.cli.app import app
from tests.orchestrator.cluster_support import write_sweep

STUBS = Path(__file__).parents[1] / "cluster_stubs"
# Special characters that a shell would mangle unless the script quotes the URL.
DB = "postgresql://resweep:p%40ss$word@db.example:5432/resweep?sslmode=require&application_name=sweep"


@pytest.fixture
def job(tmp_path):
    """Writes the script for 3 nodes and runs it under the stand-ins; returns a runner."""
    sweep = write_sweep(tmp_path)
    result = CliRunner().invoke(app, ["slurm", str(sweep), "--nodes", "3", "--gpus-per-node", "2",
                                      "--partition", "gpu", "--time", "04:00:00", "--account", "lab", "--db", DB])
    assert result.exit_code == 0, result.output
    script = tmp_path / "job.sbatch"
    script.write_text(result.stdout)
    state = tmp_path / "state"
    state.mkdir()
    log = tmp_path / "calls.log"

    class Job:
        def __init__(self):
            self.script, self.state, self.log, self.sweep = script, state, log, sweep
            self.run_dir = tmp_path / "run"

        def env(self, **extra: str) -> dict[str, str]:
            env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "SLURM_", "RESWEEP_"))}
            env.update(PATH=f"{STUBS}:{env['PATH']}", STUB_LOG=str(log), STUB_STATE=str(state),
                       STUB_NODES="gpu01,gpu02,gpu03", RESWEEP_RUN_DIR=str(self.run_dir), RESWEEP_WAIT_S="20",
                       RAY_AUTH_TOKEN="a-token-from-the-login-shell")
            env.update(extra)
            return env

        def start(self, launch: str = "ok", **extra: str) -> subprocess.Popen:
            (state / "launch").write_text(launch)
            for f in ("head_up", "worker_up", "launch_running"):
                (state / f).unlink(missing_ok=True)
            return subprocess.Popen(["sbatch", str(script)], env=self.env(**extra), cwd=tmp_path,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

        def run(self, launch: str = "ok", **extra: str) -> tuple[int, str]:
            proc = self.start(launch, **extra)
            out, _ = proc.communicate(timeout=60)
            return proc.returncode, out

        def calls(self) -> list[str]:
            return log.read_text().splitlines()

    return Job()


def index(calls: list[str], prefix: str) -> int:
    return next(i for i, c in enumerate(calls) if c.startswith(prefix))


def test_directives_ask_for_the_allocation_and_requeue(job):
    job.run()
    directives = {c.removeprefix("sbatch directive ") for c in job.calls() if c.startswith("sbatch directive")}
    assert {"--nodes=3", "--ntasks-per-node=1", "--gpus-per-node=2", "--partition=gpu", "--time=04:00:00",
            "--account=lab", "--requeue", "--job-name=resweep-cluster-tiny"} <= directives


def test_gpus_reach_every_ray_node_and_ray_stops_at_the_end(job):
    rc, out = job.run()
    assert rc == 0, out
    calls = job.calls()
    head = index(calls, "ray head start")
    workers = index(calls, "ray worker start")
    assert "BEFORE THE HEAD" not in "\n".join(calls)
    assert calls[head].startswith("ray head start on gpu01 --block --temp-dir=/tmp/resweep-ray-4242-gpu01 --head "
                                  "--node-ip-address=10.9.8.7 --port=6380")
    # Whole nodes: every CPU Slurm gave the node, and the GPUs asked for.
    assert "--num-cpus=32 --num-gpus=2" in calls[head] and "--num-cpus=32 --num-gpus=2" in calls[workers]
    assert all("--cpus-per-task=32" in c for c in calls if c.startswith("srun") and "ray-" in c)
    # One worker step over the other two nodes, pointed at the head, started once the head answers.
    worker_srun = next(i for i, c in enumerate(calls) if c.startswith("srun") and "--address" in c)
    assert "-w gpu02,gpu03" in calls[worker_srun] and "--ntasks=2" in calls[worker_srun]
    assert "--address=10.9.8.7:6380" in calls[workers]
    head_answered = index(calls, "ray status --address=10.9.8.7:6380 up")
    assert head < head_answered < worker_srun < workers
    launch = index(calls, "python launch ")
    assert workers < index(calls, "python wait-nodes done") < launch
    assert launch < index(calls, "ray worker stop") and launch < index(calls, "ray head stop")
    assert "Ray stopped" in out


def test_one_node_runs_no_worker_step(tmp_path):
    sweep = write_sweep(tmp_path)
    remote = remote_sweep.prepare(sweep, Database(f"sqlite:///{tmp_path}/r.db"))
    text = slurm.render(remote, slurm.SlurmOptions(nodes=1, gpus_per_node=0))
    script = tmp_path / "one.sbatch"
    script.write_text(text)
    state = tmp_path / "state"
    state.mkdir()
    log = tmp_path / "calls.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "SLURM_", "RESWEEP_"))}
    env.update(PATH=f"{STUBS}:{env['PATH']}", STUB_LOG=str(log), STUB_STATE=str(state), STUB_NODES="cpu07",
               RESWEEP_RUN_DIR=str(tmp_path / "run"))
    proc = subprocess.run(["sbatch", str(script)], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    calls = log.read_text().splitlines()
    assert not any(c.startswith("ray worker") for c in calls)
    assert not any(c.startswith("srun") and "--address" in c for c in calls)
    assert any(c.startswith("ray head start on cpu07") for c in calls)
    assert "python wait-nodes 1 300" in calls and "python wait-nodes done" in calls
    assert "#SBATCH --gpus-per-node" not in text and "#SBATCH --exclusive" in text


@pytest.mark.parametrize("args, message", [
    (["--nodes", "0", "--gpus-per-node", "1"], "--nodes 0"),
    (["--nodes", "2", "--gpus-per-node", "-1"], "--gpus-per-node -1"),
    (["--nodes", "2", "--gpus-per-node", "1", "--time", "soon"], "--time soon"),
    (["--nodes", "2", "--gpus-per-node", "1", "--db", "sqlite:///relative.db"], "PostgreSQL URL"),
])
def test_bad_options_are_refused_in_one_line(tmp_path, args, message):
    sweep = write_sweep(tmp_path)
    result = CliRunner().invoke(app, ["slurm", str(sweep), *args] + ([] if "--db" in args else ["--db", DB]))
    assert result.exit_code == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_an_invalid_sweep_is_refused_before_any_script_is_written(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(write_sweep(tmp_path).read_text().replace("depth: [8]", "depth: [9]"))
    result = CliRunner().invoke(app, ["slurm", str(bad), "--nodes", "1", "--gpus-per-node", "0", "--db", DB])
    assert result.exit_code == 2 and result.stdout == ""
    assert "grid.depth: 9 is not a depth" in result.stderr


def test_stubs_are_what_runs(job):
    # Guard: the test must never reach a real Slurm or Ray through PATH.
    path = job.env()["PATH"]
    for tool in ("sbatch", "srun", "scontrol", "ray", "python"):
        assert shutil.which(tool, path=path) == str(STUBS / tool)


def port_check(tmp_path) -> str:
    """The script's head-port snippet (`"$PYTHON" -c '...' "$HEAD_IP" "$RESWEEP_RAY_PORT"`), as written."""
    remote = remote_sweep.prepare(write_sweep(tmp_path), Database(f"sqlite:///{tmp_path}/r.db"))
    text = slurm.render(remote, slurm.SlurmOptions(nodes=1, gpus_per_node=0))
    match = re.search(r"""RAY_PORT=\$\(srun [^\n]* "\$PYTHON" -c '(.*?)' "\$HEAD_IP" "\$\{RESWEEP_RAY_PORT:-\}"\) \|\| exit 2""",
                      text, re.S)
    assert match, text
    return match.group(1)


def test_the_head_port_is_a_free_one_outside_rays_worker_range_or_a_free_resweep_ray_port(tmp_path):
    """The real snippet, run by the real Python: no port given, one the kernel says is free, never in
    10002-19999; RESWEEP_RAY_PORT taken, in the workers' range or no number: one line, a failure
    (which the script turns into exit 2)."""
    code = port_check(tmp_path)

    def run(want: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-c", code, "127.0.0.1", want], capture_output=True, text=True,
                              timeout=30)

    for _ in range(20):
        free = run("")
        assert free.returncode == 0, free.stderr
        port = int(free.stdout)
        assert not 10002 <= port <= 19999 and port != 6379
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))  # free indeed
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        taken_port = taken.getsockname()[1]
        busy = run(str(taken_port))
    assert busy.returncode != 0 and busy.stdout == ""
    assert busy.stderr.strip().splitlines() == [
        f"RESWEEP_RAY_PORT={taken_port}: taken on {socket.gethostname()} (Address already in use); "
        "pick another, or leave it unset for a free one"]
    inside = run("16379")
    assert inside.returncode != 0 and len(inside.stderr.strip().splitlines()) == 1
    assert "inside the port range Ray gives its workers (10002-19999)" in inside.stderr
    assert "not a port number" in run("http").stderr
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        mine = s.getsockname()[1]
    chosen = run(str(mine))
    assert chosen.returncode == 0 and int(chosen.stdout) == mine


@pytest.mark.ray
@pytest.mark.slow
def test_a_local_launch_starts_its_own_ray_even_with_a_dead_clusters_address_file(tmp_path):
    """What a killed job's Ray leaves behind (Ray's current-cluster file naming a dead head) does not
    make a local launch (no --address) join it, or hang retrying it: it starts its own Ray.
    RAY_TMPDIR points Ray at a temp dir of the test's, where that file is written."""
    ray_tmp = Path(tempfile.mkdtemp(prefix="rs-", dir="/tmp"))  # short: Ray's socket paths are limited
    try:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            dead = f"127.0.0.1:{s.getsockname()[1]}"  # nothing listens there once closed
        (ray_tmp / "ray").mkdir()
        (ray_tmp / "ray" / "ray_current_cluster").write_text(dead)
        sweep = write_sweep(tmp_path)
        sweep.write_text(sweep.read_text().replace("epochs: 2", "epochs: 1"))
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "RESWEEP_"))}
        env.update(RAY_TMPDIR=str(ray_tmp), RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="disabled",
                   PYTHONPATH=str(Path(__file__).resolve().parents[3]))
        done = subprocess.run([sys.executable, "-m", "orchestrator", "launch", str(sweep), "--db",
                               f"sqlite:///{tmp_path / 'r.db'}"], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=600)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "finished" in done.stdout, done.stdout
        assert (ray_tmp / "ray" / "ray_current_cluster").read_text() == dead  # never taken as the address
        assert dead not in done.stdout + done.stderr
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
