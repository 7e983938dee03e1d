"""Races a user makes without meaning to, through real `python -m orchestrator` processes on a
real Ray: two resumes of one sweep at once, two launches of one new name at once, Ctrl-C twice,
SIGTERM during a resume. Each leaves one honest sweep: one command proceeds, the other refuses
in one line with exit status 2 and changes nothing, and the last resume gives every trial every
epoch exactly once.

The guards are the layers underneath, each released by its owner's death (no stale claim after a
crash): the kernel's lock on a file in the sweep's results directory (orchestrator.run.stops.
claimed), PostgreSQL's session advisory lock per sweep (db.writes.claim_sweep) and the unique
sweep name (db.writes.create_sweep).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from db import writes
from db.engine import Database
from db.errors import SweepBusyError
from orchestrator.run.stops import CLAIM_FILE, claimed
from resweep.errors import UserError
from tests.orchestrator.conftest import REPO, cli_env, start_cli, wait_for
from tests.orchestrator.run.test_stops import (
    GRID, assert_every_trial_has_every_epoch, assert_interrupted_and_resumable, grid_sweep, ray_test, resume_to_the_end,
    stop_after_results,
)
from tests.orchestrator.run.test_sweeps_e2e import count, rows

BUSY = "another resweep command is running this sweep now"


def results(url: str) -> int:
    """The test_err results recorded so far (0 before the launch has made the tables)."""
    try:
        return count(url, "SELECT count(*) FROM metrics WHERE name = 'test_err'")
    except sa.exc.ProgrammingError:  # PostgreSQL: no such table yet
        return 0


def start(*args: str, cwd: Path) -> subprocess.Popen:
    """`python -m orchestrator ARGS` in the background, stdout and stderr apart."""
    return subprocess.Popen([sys.executable, "-m", "orchestrator", *args], cwd=cwd, env=cli_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def both(first: subprocess.Popen, second: subprocess.Popen, timeout: float = 400) -> list[tuple[int, str, str]]:
    """Each process's (exit status, stdout, stderr), the one that proceeded first."""
    done = []
    for process in (first, second):
        out, err = process.communicate(timeout=timeout)
        done.append((process.returncode, out, err))
    return sorted(done, key=lambda d: d[0])


def assert_refused_in_one_line(refused: tuple[int, str, str], *expected: str) -> None:
    code, out, err = refused
    assert code == 2, (code, out, err)
    assert "Traceback" not in out + err, out + err
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: ") and any(e in last for e in expected), err


# --- the guards themselves: refused while held, free again once the holder is killed ------------

HOLDER = textwrap.dedent("""
    import sys, time
    from orchestrator.run.stops import claimed
    with claimed(sys.argv[1], "held-sweep"):
        print("held", flush=True)
        time.sleep(600)
""")


def hold(*args: str, code: str = HOLDER) -> subprocess.Popen:
    holder = subprocess.Popen([sys.executable, "-c", code, *args], cwd=REPO, stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
    assert holder.stdout.readline().strip() == "held"
    return holder


@pytest.mark.parametrize("where", ["local", "object-store"])
def test_a_sweeps_claim_refuses_a_second_driver_and_is_free_again_when_the_first_is_killed(tmp_path, where,
                                                                                        monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # the claims of object-store results: in ~/.cache
    experiment_dir = str(tmp_path / "results" / "held-sweep") if where == "local" else "s3://bucket/p/held-sweep"
    if where == "local":
        Path(experiment_dir).mkdir(parents=True)
    holder = hold(experiment_dir)
    try:
        with pytest.raises(UserError, match=f"held-sweep: {BUSY} \\(pid {holder.pid} on ") as refused:
            with claimed(experiment_dir, "held-sweep"):
                pass
        assert "\n" not in str(refused.value)
    finally:
        holder.send_signal(signal.SIGKILL)  # a crash: no code of the holder's runs again
        holder.wait()
    if where == "local":
        assert os.listdir(experiment_dir) == [CLAIM_FILE]  # the killed holder's file stays, unlocked
    with claimed(experiment_dir, "held-sweep"):  # the kernel released the lock with the process
        pass
    if where == "local":
        assert os.listdir(experiment_dir) == []  # a claim that ends cleanly takes its file with it


def test_a_launch_refused_after_claiming_a_new_results_directory_leaves_no_directory(tmp_path):
    experiment_dir = tmp_path / "results" / "new-sweep"
    with pytest.raises(RuntimeError):
        with claimed(str(experiment_dir), "new-sweep", new=True) as claim:
            assert claim.fresh and experiment_dir.is_dir()
            raise RuntimeError("refused after the claim (say, by the database's unique name)")
    assert not (tmp_path / "results").exists()  # nor the results directory made for it
    experiment_dir.mkdir(parents=True)
    (experiment_dir / "experiment_state-x.json").write_text("{}")
    with claimed(str(experiment_dir), "new-sweep", new=True) as claim:
        assert not claim.fresh  # another launch wrote there first
    assert os.listdir(experiment_dir) == ["experiment_state-x.json"]


OPENER = textwrap.dedent("""
    import sys, time
    from db.engine import Database
    start = float(sys.argv[2])
    while time.time() < start:  # every opener starts at the same moment
        pass
    Database(sys.argv[1]).engine().dispose()
""")


def test_commands_opening_one_new_sqlite_file_at_once_all_find_its_schema_whole(tmp_path):
    """Two launches from two shells in a new directory both make ./resweep.db: the second waits
    for the first's schema. Without that wait, one opener in eighteen (six rounds of three) saw
    half a schema and failed: "table sweeps already exists", or "no schema version"."""
    for attempt in range(3):
        url = f"sqlite:///{tmp_path / f'new-{attempt}.db'}"
        start = time.time() + 3
        openers = [subprocess.Popen([sys.executable, "-c", OPENER, url, str(start)], cwd=REPO, text=True,
                                    stderr=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(REPO)})
                   for _ in range(3)]
        failed = [err for p in openers if (err := p.communicate(timeout=60)[1]) and p.returncode != 0]
        assert failed == [], failed[0][-600:]
        assert rows(url, "SELECT count(*) FROM alembic_version") == [(1,)]


PG_HOLDER = textwrap.dedent("""
    import sys, time
    import sqlalchemy as sa
    from db import writes
    engine = sa.create_engine(sys.argv[1])
    with writes.claim_sweep(engine, int(sys.argv[2]), "held-sweep"):
        print("held", flush=True)
        time.sleep(600)
""")


@pytest.mark.postgres
def test_postgresqls_claim_of_a_sweep_refuses_a_second_driver_and_is_free_again_when_the_first_is_killed(pg_url):
    engine = Database(pg_url).engine()
    try:
        sweep_id = writes.create_sweep(engine, name="held-sweep", spec="name: held-sweep", spec_hash="x")
        other = writes.create_sweep(engine, name="other-sweep", spec="name: other-sweep", spec_hash="y")
        holder = hold(pg_url, str(sweep_id), code=PG_HOLDER)
        try:
            with pytest.raises(SweepBusyError, match="'held-sweep' is being run by another resweep command"):
                with writes.claim_sweep(engine, sweep_id, "held-sweep"):
                    pass
            with writes.claim_sweep(engine, other, "other-sweep"):  # another sweep of the database: free
                pass
        finally:
            holder.send_signal(signal.SIGKILL)
            holder.wait()
        deadline = time.monotonic() + 30  # the server ends the dead client's session when it sees the socket close
        while True:
            try:
                with writes.claim_sweep(engine, sweep_id, "held-sweep"):
                    break
            except SweepBusyError:
                assert time.monotonic() < deadline, "the killed driver's claim outlived it"
                time.sleep(0.2)
        with writes.claim_sweep(engine, sweep_id, "held-sweep"):  # and the one just ended left none behind
            pass
    finally:
        engine.dispose()


# --- through the command line, on the real Ray ---------------------------------------------------


def interrupted_sweep(tmp_path: Path, ray_cluster, name: str, url: str) -> None:
    """A grid sweep stopped by Ctrl-C after its first two results (interrupted, resumable)."""
    path = grid_sweep(tmp_path, name)
    driver = start_cli("launch", str(path), "--db", url, "--address", ray_cluster.address, cwd=tmp_path)
    wait_for(lambda: results(url) >= 2, timeout=180, what="2 results", proc=driver)
    driver.send_signal(signal.SIGINT)
    out, _ = driver.communicate(timeout=120)
    assert driver.returncode == 130, out
    assert_interrupted_and_resumable(url, name, out)


@ray_test
def test_two_resumes_of_one_sweep_at_once_one_runs_it_the_other_refuses(tmp_path, ray_cluster, db_url):
    interrupted_sweep(tmp_path, ray_cluster, "race-resume", db_url)
    args = ("resume", "race-resume", "--db", db_url, "--address", ray_cluster.address)
    ran, refused = both(start(*args, cwd=tmp_path), start(*args, cwd=tmp_path))
    assert ran[0] == 0, ran
    assert "Sweep race-resume finished" in ran[1]
    assert_refused_in_one_line(refused, BUSY, "is being run by another resweep command")
    assert refused[1] == ""  # it printed nothing of a run: refused before Ray started
    assert rows(db_url, "SELECT status FROM sweeps") == [("finished",)]
    assert_every_trial_has_every_epoch(db_url, "race-resume")


@ray_test
def test_two_launches_of_one_new_name_at_once_one_runs_it_the_other_refuses(tmp_path, ray_cluster, db_url):
    path = grid_sweep(tmp_path, "race-launch")
    args = ("launch", str(path), "--db", db_url, "--address", ray_cluster.address)
    ran, refused = both(start(*args, cwd=tmp_path), start(*args, cwd=tmp_path))
    assert ran[0] == 0, ran
    assert "Sweep race-launch finished" in ran[1]
    # Refused by the results directory's claim, or, had it started later, by the name it found taken.
    assert_refused_in_one_line(refused, BUSY, "already exists", "already holds results", "wrote its results there")
    assert rows(db_url, "SELECT name, status FROM sweeps") == [("race-launch", "finished")]
    assert count(db_url, "SELECT count(*) FROM trials") == GRID
    assert_every_trial_has_every_epoch(db_url, "race-launch")


@ray_test
def test_two_launches_of_one_new_name_into_two_results_directories_meet_the_databases_unique_name(
        tmp_path, ray_cluster, db_url):
    """No shared results directory to lock: the database's unique sweep name decides, and the
    refused launch leaves no results directory behind."""
    path = grid_sweep(tmp_path, "race-name")
    first, second = tmp_path / "results-a", tmp_path / "results-b"
    ran, refused = both(*(start("launch", str(path), "--db", db_url, "--address", ray_cluster.address,
                                "--results", str(where), cwd=tmp_path) for where in (first, second)))
    assert ran[0] == 0, ran
    assert_refused_in_one_line(refused, "already exists")
    assert rows(db_url, "SELECT name, status FROM sweeps") == [("race-name", "finished")]
    assert [(where / "race-name").is_dir() for where in (first, second)].count(True) == 1
    assert_every_trial_has_every_epoch(db_url, "race-name")


@ray_test
def test_ctrl_c_twice_in_quick_succession_leaves_a_resumable_sweep(tmp_path, ray_cluster):
    url, rc, out, seconds = stop_after_results(tmp_path, ray_cluster, "race-twice", [signal.SIGINT, signal.SIGINT],
                                               results=2, gap=0.05)
    assert rc == 130, out
    assert seconds < 30, seconds
    assert "Traceback" not in out, out
    assert_interrupted_and_resumable(url, "race-twice", out)
    resume_to_the_end(tmp_path, url, "race-twice", ray_cluster)


@ray_test
def test_sigterm_during_a_resume_interrupts_it_and_the_next_resume_finishes_every_trial(tmp_path, ray_cluster):
    url = f"sqlite:///{tmp_path / 'resweep.db'}"
    interrupted_sweep(tmp_path, ray_cluster, "race-term", url)
    before = results(url)
    resumed = start_cli("resume", "race-term", "--db", url, "--address", ray_cluster.address, cwd=tmp_path)
    wait_for(lambda: results(url) > before, timeout=180, what="a result of the resume", proc=resumed)
    resumed.send_signal(signal.SIGTERM)
    out, _ = resumed.communicate(timeout=120)
    assert resumed.returncode == 143, out
    assert "Traceback" not in out, out
    assert_interrupted_and_resumable(url, "race-term", out)
    resume_to_the_end(tmp_path, url, "race-term", ray_cluster)


@ray_test
def test_ctrl_c_twice_at_a_terminal_reaches_the_drivers_own_local_ray_too_and_the_sweep_stays_resumable(tmp_path):
    """A terminal's Ctrl-C signals its whole foreground process group: the driver and the local
    Ray it started (its raylet, GCS and workers), not the driver alone."""
    import tempfile

    url = f"sqlite:///{tmp_path / 'resweep.db'}"
    path = grid_sweep(tmp_path, "race-tty")
    with tempfile.TemporaryDirectory(prefix="rs", dir="/tmp") as temp_dir:  # short: Ray's socket paths
        env = cli_env({"RAY_TMPDIR": temp_dir, "RAY_ADDRESS": "", "RAY_AUTH_MODE": "disabled"})
        driver = subprocess.Popen([sys.executable, "-m", "orchestrator", "launch", str(path), "--db", url],
                                  cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                  start_new_session=True)  # a process group of its own, as a shell's job
        wait_for(lambda: results(url) >= 2, timeout=240, what="2 results", proc=driver)
        for _ in range(2):
            os.killpg(driver.pid, signal.SIGINT)
            time.sleep(0.05)
        out, _ = driver.communicate(timeout=120)
        assert driver.returncode == 130, out
        assert "Traceback" not in out, out
        assert_interrupted_and_resumable(url, "race-tty", out)
        resumed = subprocess.run([sys.executable, "-m", "orchestrator", "resume", "race-tty", "--db", url],
                                 cwd=tmp_path, env=env, capture_output=True, text=True, timeout=400)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert rows(url, "SELECT status FROM sweeps") == [("finished",)]
    assert_every_trial_has_every_epoch(url, "race-tty")
