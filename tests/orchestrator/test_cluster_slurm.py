"""The sbatch script from `orchestrator slurm`, checked by bash and then run.

Slurm cannot run on this machine, so the script runs under small stand-ins put first on PATH
(tests/orchestrator/cluster_stubs: `sbatch`, `srun`, `scontrol`, `ray`, `python`, `hostname`) that
record every call in a log. `sbatch` runs the script here as the batch step; `srun` runs its
step's command here; `ray start` blocks until SIGTERM like `ray start --block`; the `python`
driver succeeds, fails or hangs as the test asks. So the order in which the script starts the head
and the workers, the database URL and token that reach the driver, the resume flag of a requeued
job and the cleanup on every way out are exercised, not only string-matched.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from orchestrator import cluster, slurm
from orchestrator.cli import app
from tests.orchestrator.cluster_support import write_sweep

STUBS = Path(__file__).parent / "cluster_stubs"
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


def test_script_passes_bash_syntax_check(job):
    subprocess.run(["bash", "-n", str(job.script)], check=True)


def test_directives_ask_for_the_allocation_and_requeue(job):
    job.run()
    directives = {c.removeprefix("sbatch directive ") for c in job.calls() if c.startswith("sbatch directive")}
    assert {"--nodes=3", "--ntasks-per-node=1", "--gpus-per-node=2", "--partition=gpu", "--time=04:00:00",
            "--account=lab", "--requeue", "--job-name=resweep-cluster-tiny"} <= directives


def test_head_starts_first_then_workers_then_the_driver_and_ray_stops_at_the_end(job):
    rc, out = job.run()
    assert rc == 0, out
    calls = job.calls()
    head = index(calls, "ray head start")
    workers = index(calls, "ray worker start")
    assert "BEFORE THE HEAD" not in "\n".join(calls)
    assert calls[head].startswith("ray head start on gpu01 --head --block --node-ip-address=10.9.8.7 --port=6379")
    # Whole nodes: every CPU Slurm gave the node, and the GPUs asked for.
    assert "--num-cpus=32 --num-gpus=2" in calls[head] and "--num-cpus=32 --num-gpus=2" in calls[workers]
    assert all("--cpus-per-task=32" in c for c in calls if c.startswith("srun") and "ray start" in c)
    # One worker step over the other two nodes, pointed at the head, started once the head answers.
    worker_srun = next(i for i, c in enumerate(calls) if c.startswith("srun") and "--address" in c)
    assert "-w gpu02,gpu03" in calls[worker_srun] and "--ntasks=2" in calls[worker_srun]
    assert "--address=10.9.8.7:6379" in calls[workers]
    head_answered = index(calls, "ray status --address=10.9.8.7:6379 up")
    assert head < head_answered < worker_srun < workers
    # The driver starts only once all three nodes are in.
    assert "python wait-nodes 3 20" in calls
    launch = index(calls, "python launch ")
    assert workers < index(calls, "python wait-nodes done") < launch
    # Cleanup after the driver: both Ray steps got SIGTERM and shut down.
    assert launch < index(calls, "ray worker stop") and launch < index(calls, "ray head stop")
    assert "Ray stopped" in out
    assert not (job.state / "head_up").exists() and not (job.state / "worker_up").exists()


def test_driver_gets_the_database_url_verbatim_and_the_head_address(job):
    rc, out = job.run()
    assert rc == 0, out
    argv = (job.state / "launch_argv").read_text().splitlines()
    assert argv == [str(job.sweep.resolve()), "--db", cluster.remote_db_url(DB), "--address", "10.9.8.7:6379"]
    assert "p%40ss$word" not in out  # the password is not echoed into the job's output


def test_token_auth_is_on_with_a_private_token_file_shared_by_every_ray_process(job):
    rc, out = job.run()
    assert rc == 0, out
    token_file = job.run_dir / "ray_auth_token"
    token = token_file.read_text()
    assert len(token) == 64 and oct(token_file.stat().st_mode & 0o777) == "0o600"
    ray_calls = [c for c in job.calls() if c.startswith(("ray head start", "ray worker start", "ray status"))]
    # Every Ray process reads the job's token file; the login shell's RAY_AUTH_TOKEN is dropped, since
    # it would take precedence over the file.
    assert all(f"auth=token token_path={token_file} token_env=" in c and c.endswith("token_env=") for c in ray_calls)
    assert f"python launch env auth=token token_env= token_perms=600" in "\n".join(job.calls())
    assert token not in out and token not in job.log.read_text()


def test_a_requeued_job_resumes_the_sweep_with_the_same_token(job):
    job.run()
    token = (job.run_dir / "ray_auth_token").read_text()
    assert "--resume" not in (job.state / "launch_argv").read_text()
    rc, out = job.run(STUB_RESTART_COUNT="1")
    assert rc == 0, out
    assert (job.state / "launch_argv").read_text().splitlines()[-1] == "--resume"
    assert "continuing sweep 'cluster-tiny' (restart 1)" in out
    assert (job.run_dir / "ray_auth_token").read_text() == token


def test_a_rerun_after_the_driver_started_resumes_even_without_restart_count(job):
    job.run(launch="fail")
    job.run()  # e.g. `scontrol requeue` after a failure: same job id, same run directory
    assert (job.state / "launch_argv").read_text().splitlines()[-1] == "--resume"


def test_a_requeued_job_starts_the_sweep_when_no_earlier_run_registered_it(job):
    job.run(launch="unregistered")  # e.g. preempted while Ray was starting
    rc, out = job.run(STUB_RESTART_COUNT="1")
    assert rc == 0, out
    assert "--resume" not in (job.state / "launch_argv").read_text()
    assert "sweep 'cluster-tiny' is not in the database yet: starting it" in out
    status = next(c for c in job.calls() if c.startswith("python status"))
    assert status == f"python status cluster-tiny --db {cluster.remote_db_url(DB)}"


def test_a_failing_driver_fails_the_job_and_still_stops_ray(job):
    rc, out = job.run(launch="fail")
    assert rc == 3, out
    calls = job.calls()
    assert index(calls, "python launch ") < index(calls, "ray head stop")
    assert any(c.startswith("ray worker stop") for c in calls)


def test_preemption_interrupts_the_driver_then_stops_ray(job):
    """Slurm signals the batch shell (--signal=B:TERM, or scancel/preemption): the driver gets SIGINT so
    Tune saves its state, then the Ray steps are stopped, and the job ends with 143."""
    proc = job.start(launch="hang")
    deadline = time.monotonic() + 30
    while not (job.state / "launch_running").exists():
        assert proc.poll() is None, proc.stdout.read()
        assert time.monotonic() < deadline, "the driver never started"
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 143, out
    calls = job.calls()
    interrupted = index(calls, "python launch interrupted (SIGINT)")
    assert interrupted < index(calls, "ray worker stop") and interrupted < index(calls, "ray head stop")


def test_a_head_that_never_comes_up_ends_the_job_with_a_clear_line(job, tmp_path):
    # A `ray` whose head dies at once: status never succeeds.
    broken = tmp_path / "broken-bin"
    broken.mkdir()
    (broken / "ray").write_text('#!/bin/bash\necho "ray $*" >> "$STUB_LOG"\n[ "$1" = status ] && exit 1\nexit 1\n')
    (broken / "ray").chmod(0o755)
    env_path = f"{broken}:{STUBS}:{os.environ['PATH']}"
    rc, out = job.run(PATH=env_path, RESWEEP_WAIT_S="2")
    assert rc == 1
    assert "the Ray head did not come up within 2s" in out
    assert not any(c.startswith("python launch") for c in job.calls())


def test_one_node_runs_no_worker_step(tmp_path):
    sweep = write_sweep(tmp_path)
    remote = cluster.prepare(sweep, f"sqlite:///{tmp_path}/r.db")
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
