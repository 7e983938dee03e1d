"""The sbatch script from `orchestrator slurm`, run on a real Slurm: one cluster for the module.

munged, slurmctld and two slurmd (nodes n1 and n2, 2 CPUs each) run on this machine from a config
in a temp dir (tests/orchestrator/slurm_cluster.py). Each test submits the generated script with
the real `sbatch`; the script starts Ray with the real `srun` and the driver runs the sweep into an
SQLite file (one machine: its filesystem is the shared one). Stops come from Slurm itself:
`scontrol requeue`, `scancel --batch --signal=TERM`, a real `--time` limit and a plain `scancel`;
after each the sweep must read `interrupted` (never `failed`), and a requeued or resubmitted job
(`RESWEEP_RESUME=1 sbatch`) must finish it with every epoch of every trial recorded. On two nodes,
Slurm's own node names (each job step's SLURMD_NODENAME, read from the Ray worker processes) show
that the trials ran on both.

Where Slurm is not installed the tests skip here and fail on CI (.ci/run installs slurm-wlm).
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path

import pytest

from orchestrator.cluster.remote_sweep import PROJECT_DIR
from tests.orchestrator import slurm_cluster

pytestmark = [pytest.mark.slow, pytest.mark.slurm]

REPO = Path(__file__).resolve().parents[3]
EPOCHS = 6
FIRST_RESULT_S = 300  # this machine is shared and slow: Ray, torch and the first epoch take a while
# The stop tests signal the job after its first result and need the sweep still running when the
# signal has passed through slurmctld, slurmd and the script's trap: ResNet-8 on 512 images ran
# its 6 epochs in under a second on CI's machine, so these train ResNet-20 on all of digits
# (about a second an epoch on one core): 7 epochs still to go after the first result.
STOPPED_MID_SWEEP = dict(depth=20, train_samples=None, epochs=8)


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    missing = slurm_cluster.missing_tools()
    if missing:
        pytest.skip(f"Slurm is not installed ({', '.join(missing)} missing; .ci/run installs slurm-wlm and munge)")
    if os.geteuid() != 0:
        pytest.skip("the test Slurm's daemons run as root")
    started = time.monotonic()
    cluster = slurm_cluster.start(Path(tmp_path_factory.mktemp("slurm")), nodes=2, cpus=2)
    print(f"\nSlurm (munged, slurmctld, slurmd n1 and n2) up in {time.monotonic() - started:.1f} s")
    try:
        yield cluster
    finally:
        cluster.stop()


class Job:
    """One sweep, its generated script and the jobs that run it."""

    def __init__(self, slurm: slurm_cluster.SlurmCluster, tmp: Path, *, trials: int, nodes: int = 1,
                 epochs: int = EPOCHS, time_limit: str | None = None, cpus_per_trial: int = 1, depth: int = 8,
                 train_samples: int | None = 512):
        self.slurm, self.tmp, self.epochs_total, self.trials = slurm, tmp, epochs, trials
        self.name = f"slurm-{uuid.uuid4().hex[:8]}"
        self.db = f"sqlite:///{tmp / 'resweep.db'}"
        seeds = list(range(trials))
        self.sweep = tmp / f"{self.name}.yaml"
        self.sweep.write_text(textwrap.dedent(f"""\
            name: {self.name}
            dataset: digits
            model: cifar
            grid:
              depth: [{depth}]
              shortcut: [A]
              seed: {seeds}
            train:
              epochs: {epochs}
              batch_size: 64
              augment: false
              max_train_samples: {"null" if train_samples is None else train_samples}
            probes: {{every: {epochs}}}
            resources: {{cpu: {cpus_per_trial}}}
            fault_tolerance: {{max_failures: 1, checkpoint_every: 1}}
            """))
        args = ["slurm", str(self.sweep), "--nodes", str(nodes), "--gpus-per-node", "0", "--cpus-per-node", "2",
                "--db", self.db]
        if time_limit:
            args += ["--time", time_limit]
        made = subprocess.run([sys.executable, "-m", "orchestrator", *args], cwd=tmp, env=self.env(),
                              capture_output=True, text=True, timeout=120)
        assert made.returncode == 0, made.stdout + made.stderr
        self.script = tmp / "job.sbatch"
        self.script.write_text(made.stdout)
        self.job_id = ""

    def env(self, **extra: str) -> dict[str, str]:
        env = self.slurm.env(**extra)
        for key in [k for k in env if k.startswith("RAY_")]:
            env.pop(key)
        env.update(PYTHONPATH=str(REPO), RAY_USAGE_STATS_ENABLED="0", RESWEEP_RUN_DIR=str(self.tmp / "run"),
                   RESWEEP_WAIT_S="120", PATH=f"{Path(sys.executable).parent}:{env['PATH']}")
        env.update(extra)
        return env

    def submit(self, *sbatch_args: str, **env: str) -> str:
        done = subprocess.run(["sbatch", "--parsable", *sbatch_args, str(self.script)], cwd=self.tmp,
                              env=self.env(**env), capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stdout + done.stderr
        self.job_id = done.stdout.strip().split(";")[0]
        return self.job_id

    def output(self) -> str:
        path = self.tmp / f"resweep-{self.name}-{self.job_id}.out"
        return path.read_text(errors="replace") if path.exists() else "(no job output yet)"

    def rows(self, sql: str, *params) -> list:
        path = self.tmp / "resweep.db"
        if not path.exists():
            return []
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30) as conn:
            try:
                return conn.execute(sql, params).fetchall()
            except sqlite3.OperationalError:  # the driver has not created the tables yet
                return []

    def sweep_status(self) -> str | None:
        got = self.rows("SELECT status FROM sweeps WHERE name = ?", self.name)
        return got[0][0] if got else None

    def results(self) -> int:
        got = self.rows("SELECT count(*) FROM metrics WHERE name = 'test_err'")
        return got[0][0] if got else 0

    def wait(self, condition, what: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return
            time.sleep(0.5)
        raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; job {self.job_id} "
                             f"{self.slurm.job_state(self.job_id)}\n{self.output()}\n{self.slurm.logs()}")

    def wait_done(self, timeout: float = 420) -> str:
        ended = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "PREEMPTED", "OUT_OF_MEMORY")
        self.wait(lambda: self.slurm.job_state(self.job_id) in ended, "the job to end", timeout)
        return self.slurm.job_state(self.job_id)

    def epochs(self) -> list[int]:
        """Per trial (by seed), how many epochs of test_err are recorded."""
        return [n for _, n in self.rows("SELECT t.seed, count(m.epoch) FROM trials t JOIN sweeps s ON s.id = t.sweep_id "
                                        "LEFT JOIN metrics m ON m.trial_id = t.id AND m.name = 'test_err' "
                                        "WHERE s.name = ? GROUP BY t.id ORDER BY t.seed", self.name)]

    def report(self, stop: str) -> None:
        """One line for the notes: the sweep's status and the epochs recorded per trial."""
        print(f"\n[{stop}] job {self.job_id} {self.slurm.job_state(self.job_id)}: sweep {self.sweep_status()}, "
              f"epochs per trial {self.epochs()} of {self.epochs_total}")

    def assert_interrupted(self) -> None:
        assert self.sweep_status() == "interrupted", self.output()
        statuses = [s for (s,) in self.rows("SELECT t.status FROM trials t JOIN sweeps s ON s.id = t.sweep_id "
                                            "WHERE s.name = ?", self.name)]
        assert "running" not in statuses and "error" not in statuses, (statuses, self.output())
        assert statuses.count("terminated") < self.trials

    def assert_finished_with_every_epoch(self) -> None:
        assert self.sweep_status() == "finished", self.output()
        trials = self.rows("SELECT t.id, t.status, t.seed FROM trials t JOIN sweeps s ON s.id = t.sweep_id "
                           "WHERE s.name = ?", self.name)
        assert sorted(seed for _, _, seed in trials) == list(range(self.trials)), trials
        assert {status for _, status, _ in trials} == {"terminated"}, trials
        for trial_id, _, _ in trials:
            for metric in ("train_err", "test_err"):
                epochs = [e for (e,) in self.rows("SELECT epoch FROM metrics WHERE trial_id = ? AND name = ? "
                                                  "ORDER BY epoch", trial_id, metric)]
                assert epochs == list(range(1, self.epochs_total + 1)), (trial_id, metric, epochs)

    def assert_ray_cleaned_up(self) -> None:
        """No Ray temp dir of this job on any node, and no current-cluster file in /tmp/ray of its making."""
        assert not list(Path("/tmp").glob(f"resweep-ray-{self.job_id}-*")), self.output()
        current = Path("/tmp/ray/ray_current_cluster")
        assert not (current.exists() and current.stat().st_mtime > self.started), current.read_text()

    def trial_pids(self) -> dict[str, set[int]]:
        """Per trial id, the PIDs Ray Tune reported it ran in (its result.json on the shared disk)."""
        pids: dict[str, set[int]] = {}
        for path in (PROJECT_DIR / "results" / self.name).glob("*/result.json"):
            for line in path.read_text().splitlines():
                if line.strip():
                    result = json.loads(line)
                    pids.setdefault(result["trial_id"], set()).add(int(result["pid"]))
        return pids

    def cleanup(self) -> None:
        shutil.rmtree(PROJECT_DIR / "results" / self.name, ignore_errors=True)


@pytest.fixture
def job_factory(slurm, tmp_path):
    made: list[Job] = []

    def make(**kwargs) -> Job:
        job = Job(slurm, tmp_path, **kwargs)
        job.started = time.time()
        made.append(job)
        return job

    yield make
    for job in made:
        if job.job_id and slurm.job_state(job.job_id) in ("PENDING", "RUNNING", "REQUEUED", "COMPLETING"):
            slurm.run("scancel", job.job_id, check=False)
        job.cleanup()


class SlurmNodesOfRayWorkers:
    """Which Slurm node each of a job's Ray worker processes runs under, watched in /proc while the
    job runs. Both "nodes" are this machine, so Ray and Tune report one host name and IP for all
    trials; what tells the nodes apart is Slurm's: every process of a job step carries the step's
    SLURMD_NODENAME, and a Ray worker inherits it from the raylet that `srun` started on its node."""

    def __init__(self, job_id: str):
        self.job_id, self.nodes, self._done = job_id, {}, threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._done.is_set():
            for proc in Path("/proc").iterdir():
                if not proc.name.isdigit() or int(proc.name) in self.nodes:
                    continue
                try:
                    if not (proc / "cmdline").read_bytes().startswith(b"ray::"):
                        continue
                    env = dict(item.split(b"=", 1) for item in (proc / "environ").read_bytes().split(b"\0")
                               if b"=" in item)
                except OSError:  # ended meanwhile
                    continue
                if env.get(b"SLURM_JOB_ID", b"").decode() == self.job_id:
                    self.nodes[int(proc.name)] = env.get(b"SLURMD_NODENAME", b"?").decode()
            self._done.wait(0.3)

    def stop(self) -> dict[int, str]:
        self._done.set()
        self._thread.join(10)
        return self.nodes


def test_a_sweep_runs_to_the_end_on_two_nodes_with_trials_on_both(job_factory):
    # Two CPUs a trial on nodes of two CPUs: the two trials run at once only on two nodes.
    job = job_factory(trials=2, nodes=2, epochs=3, cpus_per_trial=2)
    start = time.monotonic()
    job.submit()
    watcher = SlurmNodesOfRayWorkers(job.job_id)
    state = job.wait_done()
    workers = watcher.stop()
    assert state == "COMPLETED", job.output()
    print(f"two-node sweep: {time.monotonic() - start:.0f} s")
    job.report("two nodes, plain run")
    job.assert_finished_with_every_epoch()
    assert "all 2 Ray nodes are up" in job.output()
    assert "Ray workers on n2" in job.output()
    # Each trial's process (the PID Tune reported for it) ran under one Slurm node; both nodes ran one.
    trial_nodes = {trial: {workers.get(pid, "not seen") for pid in pids} for trial, pids in job.trial_pids().items()}
    print(f"two nodes: trial -> Slurm node {trial_nodes}; Ray worker processes seen {workers}")
    assert len(trial_nodes) == 2, (trial_nodes, workers)
    assert all(len(nodes) == 1 for nodes in trial_nodes.values()), (trial_nodes, workers)
    assert set().union(*trial_nodes.values()) == {"n1", "n2"}, (trial_nodes, workers)
    job.assert_ray_cleaned_up()


def test_scontrol_requeue_interrupts_and_the_requeued_job_finishes_the_sweep(job_factory, slurm):
    job = job_factory(trials=1, **STOPPED_MID_SWEEP)
    start = time.monotonic()
    job.submit()
    job.wait(lambda: job.results() >= 1, "a first result", FIRST_RESULT_S)
    slurm.run("scontrol", "requeue", job.job_id)
    # Between the runs the sweep reads interrupted, never failed.
    job.wait(lambda: job.sweep_status() != "running", "the sweep to leave running", 60)
    job.report("scontrol requeue, between the runs")
    job.assert_interrupted()
    job.wait(lambda: "continuing sweep" in job.output(), "the requeued run to resume", 300)
    state = job.wait_done()
    print(f"requeue: {time.monotonic() - start:.0f} s")
    assert state == "COMPLETED", job.output()
    assert slurm.job_field(job.job_id, "Restarts") == "1"
    job.report("scontrol requeue, after the requeued run")
    job.assert_finished_with_every_epoch()
    job.assert_ray_cleaned_up()


def test_scancel_batch_term_interrupts_then_a_resubmitted_job_finishes(job_factory, slurm):
    job = job_factory(trials=1, **STOPPED_MID_SWEEP)
    start = time.monotonic()
    job.submit()
    job.wait(lambda: job.results() >= 1, "a first result", FIRST_RESULT_S)
    slurm.run("scancel", "--batch", "--signal=TERM", job.job_id)
    job.wait_done()
    assert "stop signal: letting the sweep save its state" in job.output()
    job.report("scancel --batch --signal=TERM")
    job.assert_interrupted()
    job.assert_ray_cleaned_up()
    job.submit(RESWEEP_RESUME="1")
    assert job.wait_done() == "COMPLETED", job.output()
    print(f"scancel --batch --signal=TERM + resubmit: {time.monotonic() - start:.0f} s")
    job.report("scancel --batch --signal=TERM, after RESWEEP_RESUME=1 sbatch")
    job.assert_finished_with_every_epoch()


def slurm_seconds(duration: str) -> int:
    """Seconds in one of Slurm's durations: [D-]HH:MM:SS or MM:SS."""
    days, _, clock = duration.rpartition("-")
    seconds = 0
    for part in clock.split(":"):
        seconds = seconds * 60 + int(part)
    return seconds + int(days or 0) * 86400


def test_the_time_limit_interrupts_then_a_resubmitted_job_finishes(job_factory, slurm):
    """A real time limit and the script's own warning (`--signal=B:TERM@120`), landing mid-sweep.

    Slurm counts a limit in minutes from the job's start, and its checker runs every 30 s (and
    sends the warning up to 30 s early), so a limit set at submission lands 0-60 s later than
    asked, at an unknown point of the sweep: at the first epoch on a loaded machine, after the
    last one on a quiet one (the job then ends COMPLETED). So the job is submitted with --time=30
    and, once the sweep is training, its limit is cut (`scontrol update TimeLimit=`, as an admin
    would) to the minute whose warning is due now: the warning comes at the checker's next round,
    while the trial is at most ~30 s further on, and the script's trap stops the driver. The job
    ends by itself before the limit, exit 143 (state FAILED), the sweep `interrupted`.

    The warning lands up to ~60 s after the cut (the limit's minute, then the checker's round), so
    the trial must still be training then on the fastest machine: ResNet-20 on all of digits'
    training set (about 1 s an epoch on a quiet core), 100 epochs. ResNet-8 on 512 images, 60
    epochs, took 7 s on a quiet CI machine and finished before the warning came."""
    job = job_factory(trials=1, epochs=100, time_limit="30", depth=20, train_samples=None)
    start = time.monotonic()
    job.submit()
    job.wait(lambda: job.results() >= 1, "a first result", FIRST_RESULT_S)
    ran = slurm_seconds(slurm.job_field(job.job_id, "RunTime"))
    limit_min = (ran + 150) // 60  # its end - 150 s is at most now: the warning is due
    slurm.run("scontrol", "update", f"JobId={job.job_id}", f"TimeLimit={limit_min}")
    cut = time.monotonic()
    assert slurm.job_field(job.job_id, "TimeLimit") == f"00:{limit_min:02d}:00"
    state = job.wait_done(timeout=150)
    stopped_s = time.monotonic() - cut
    print(f"time limit: cut to {limit_min} min at {ran} s of the job; it ended {state} "
          f"{stopped_s:.0f} s later, {time.monotonic() - start:.0f} s after submission")
    assert "stop signal: letting the sweep save its state" in job.output()
    assert (state, slurm.job_field(job.job_id, "ExitCode")) in (("FAILED", "143:0"), ("TIMEOUT", "0:0")), job.output()
    job.report("time limit")
    job.assert_interrupted()
    assert 1 <= max(job.epochs()) < job.epochs_total
    job.assert_ray_cleaned_up()
    job.submit("--time=20", RESWEEP_RESUME="1")  # the rest of the sweep, well within its limit
    assert job.wait_done(timeout=1200) == "COMPLETED", job.output()
    print(f"time limit + resubmit: {time.monotonic() - start:.0f} s")
    job.report("time limit, after RESWEEP_RESUME=1 sbatch")
    job.assert_finished_with_every_epoch()


def test_a_plain_scancel_interrupts_the_sweep(job_factory, slurm):
    job = job_factory(trials=1, **STOPPED_MID_SWEEP)
    start = time.monotonic()
    job.submit()
    job.wait(lambda: job.results() >= 1, "a first result", FIRST_RESULT_S)
    slurm.run("scancel", job.job_id)
    job.wait_done()
    job.wait(lambda: job.sweep_status() != "running", "the sweep to leave running", 60)
    print(f"plain scancel: {time.monotonic() - start:.0f} s")
    job.report("plain scancel")
    job.assert_interrupted()
