"""The typed write path: the recorder's events, the outbox's versioned spill file, and every write
of a run through the outbox (the interrupt path through a database outage, a launch that fails
after its sweep is recorded). Real SQLite and PostgreSQL, real Tune Trial objects, and real sweeps
on the session's Ray cluster where a run is needed."""

from __future__ import annotations

import dataclasses
import json
import signal
import sqlite3
import time

import pytest
import sqlalchemy as sa
from ray.tune.experiment import Trial

from db import writes
from orchestrator.run.outbox import (
    SPILL_FILE,
    SPILL_VERSION,
    Outbox,
    ResultReported,
    SpillError,
    TrialStatus,
)
from orchestrator.run.recorder import Recorder
from resweep.errors import UserError
from tests.orchestrator.run.test_outbox import CONFIG


def query(engine, sql: str) -> list:
    with engine.connect() as conn:
        return conn.execute(sa.text(sql)).all()


def lock(path):
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)  # released from a timer
    conn.execute("BEGIN EXCLUSIVE")
    return conn


def spilled(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_events_are_frozen_records():
    event = ResultReported("t1", 3, {"train_err": 0.1})
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.epoch = 4
    assert not hasattr(event, "__dict__")  # slots: one of these is made for every result


def test_the_trial_config_travels_once_per_trial_and_every_spilled_line_has_its_version(store):
    """A locked database keeps every event of two trials (a retry included) waiting; spilled, the
    file shows what travels: one registration (with the config) per trial, keys elsewhere."""
    engine, sweep_id, tmp = store
    spill = tmp / "results" / SPILL_FILE
    recorder = Recorder(engine, sweep_id, epochs=3, expected_trials=2, spill_path=spill)
    trials = [Trial("run_trial", config={**CONFIG, "seed": i, "lr": 0.1}, trial_id=f"t_{i}", stub=True)
              for i in range(2)]
    holder = lock(tmp / "resweep.db")
    for trial in trials:
        recorder.on_trial_start(0, trials, trial)
        for epoch in (1, 2):
            recorder.on_trial_result(0, trials, trial, {"epoch": epoch, "train_err": 0.5, "test_err": 0.5,
                                                        "node_ip": "10.0.0.1", "hostname": "n1"})
    recorder.on_trial_recover(0, trials, trials[0])
    recorder.on_trial_start(0, trials, trials[0])  # the retry: no second config
    recorder.outbox.persist()
    holder.execute("COMMIT")
    holder.close()

    records = spilled(spill)
    assert {r["v"] for r in records} == {SPILL_VERSION}
    with_config = [r for r in records if "config" in r]
    assert [(r["event"], r["key"], r["config"]["seed"]) for r in with_config] == [
        ("TrialRegistered", "t_0", 0), ("TrialRegistered", "t_1", 1)]
    assert sum(r["event"] == "ResultReported" for r in records) == 4
    assert all(set(r) <= {"v", "event", "key", "status", "error", "ended", "epoch", "metrics", "layer_stats",
                          "node_ip", "hostname"} for r in records if r["event"] != "TrialRegistered")

    again = Outbox(engine, sweep_id, spill_path=spill)  # a resumed run writes it back, in order
    assert again.waiting == len(records) and again.flush(force=True)
    assert query(engine, "SELECT trial_key, status, attempts FROM trials ORDER BY trial_key") == [
        ("t_0", "running", 2), ("t_1", "running", 1)]
    assert query(engine, "SELECT count(*) FROM metrics WHERE name = 'train_err'") == [(4,)]
    assert not spill.exists()


def test_a_version_1_spill_file_is_mapped_and_written_once(store):
    """The list format written before the version: each op carried the trial's config."""
    engine, sweep_id, tmp = store
    spill = tmp / SPILL_FILE
    v1 = [["trial", "t1", CONFIG, "running"], ["attempt_start", "t1", CONFIG],
          ["result", "t1", CONFIG, 1, {"train_err": 0.4, "test_err": 0.5}, None],
          # a trial whose registration was written before the outage: only its config says what it is
          ["result", "t2", {**CONFIG, "seed": 1}, 1, {"train_err": 0.3}, None],
          ["checkpoint", "t1", CONFIG, "/results/s/t1/checkpoint_000000"],
          ["status", "t2", {**CONFIG, "seed": 1}, "stopped", None, True],
          ["sweep", "interrupted", False]]
    spill.write_text("".join(json.dumps(op) + "\n" for op in v1))
    box = Outbox(engine, sweep_id, spill_path=spill)
    assert box.waiting == len(v1)
    box.put(ResultReported("t1", 1, {"train_err": 0.4, "test_err": 0.5}))  # the same epoch again
    assert box.waiting == 0 and not spill.exists()
    assert query(engine, "SELECT trial_key, status, seed, checkpoint_uri, attempts FROM trials ORDER BY trial_key") == [
        ("t1", "running", 0, "/results/s/t1/checkpoint_000000", 1), ("t2", "stopped", 1, None, 0)]
    assert query(engine, "SELECT count(*) FROM metrics") == [(3,)]
    assert query(engine, "SELECT status FROM sweeps") == [("running",)]  # a stopped run's word on the sweep


@pytest.mark.parametrize("line, says", [
    ('{"v": 3, "event": "ResultReported", "key": "t1", "epoch": 1, "metrics": {}}', "format version 3"),
    ('{"event": "ResultReported", "key": "t1", "epoch": 1, "metrics": {}}', "not a resweep spill record"),
    ('{"v": 2, "event": "Teleported", "key": "t1"}', "not a resweep spill record"),
    ('["result", "t1"', "not JSON"),
    ('["fly", "t1", {}, 1]', "not a resweep spill record (version 1)"),
])
def test_a_spill_file_this_resweep_cannot_read_is_refused_in_one_line_before_anything_is_written(store, line, says):
    engine, sweep_id, tmp = store
    spill = tmp / SPILL_FILE
    good = json.dumps(["trial", "t1", CONFIG, "running"])
    spill.write_text(f"{good}\n{line}\n")
    with pytest.raises(SpillError) as refused:
        Outbox(engine, sweep_id, spill_path=spill)
    message = str(refused.value)
    assert isinstance(refused.value, UserError) and "\n" not in message
    assert message.startswith(f"{spill}, line 2: ") and says in message and "db import" in message
    assert query(engine, "SELECT count(*) FROM trials") == [(0,)]  # the good line was not written either
    assert spill.read_text() == f"{good}\n{line}\n"  # and the file is left as it was


def test_an_event_of_a_trial_never_registered_is_our_bug_not_a_silent_row(store):
    engine, sweep_id, _ = store
    box = Outbox(engine, sweep_id)
    with pytest.raises(LookupError, match="'ghost', which was never registered"):
        box.put(TrialStatus("ghost", "pending"))
    assert query(engine, "SELECT count(*) FROM trials") == [(0,)]


def test_interrupted_through_an_outage_is_written_when_the_database_is_back(store):
    """The second stop signal's path queues like every other write: a SQLite file locked by
    another writer delays it; it lands once the lock goes, and leaves nothing running."""
    import threading

    engine, sweep_id, tmp = store
    recorder = Recorder(engine, sweep_id, epochs=2, expected_trials=2, db_wait_s=60)
    trials = [Trial("run_trial", config={**CONFIG, "seed": i}, trial_id=f"t_{i}", stub=True) for i in range(2)]
    for trial, epochs in zip(trials, (2, 1)):
        recorder.on_trial_start(0, trials, trial)
        for e in range(1, epochs + 1):
            recorder.on_trial_result(0, trials, trial, {"epoch": e, "train_err": 0.5, "test_err": 0.5})
    holder = lock(tmp / "resweep.db")
    release = threading.Timer(3.0, lambda: (holder.execute("COMMIT"), holder.close()))
    release.start()
    said = []
    started = time.monotonic()
    recorder.interrupted(said.append)
    release.join()
    assert time.monotonic() - started >= 2.5  # it waited for the database
    assert len(said) == 1 and said[0].startswith("Waiting up to 60 s for the database to record the interruption")
    assert recorder.final_status == "interrupted"
    assert query(engine, "SELECT trial_key, status, ended_at IS NOT NULL FROM trials ORDER BY trial_key") == [
        ("t_0", "terminated", 1), ("t_1", "pending", 0)]
    assert query(engine, "SELECT status FROM sweeps") == [("interrupted",)]


# --- real sweeps ---------------------------------------------------------------------------------


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.postgres
def test_a_double_stop_during_a_database_outage_records_interrupted_once_the_database_is_back(tmp_path,
                                                                                             ray_cluster):
    from tests.orchestrator.conftest import start_cli, wait_for
    from tests.orchestrator.private_pg import PrivatePostgres
    from tests.orchestrator.run.test_sweeps_e2e import rows, sweep_file

    def count(url: str, sql: str) -> int:  # 0 while the database or its tables are not there yet
        try:
            return rows(url, sql)[0][0] or 0
        except sa.exc.DBAPIError:
            return 0

    server = PrivatePostgres()
    try:
        url = server.url(server.new_database())
        path = sweep_file(tmp_path, "outage", epochs=30, image=16, num_train=512)
        driver = start_cli("launch", str(path), "--db", url, "--address", ray_cluster.address, "--db-wait", "120s",
                           cwd=tmp_path)
        wait_for(lambda: count(url, "SELECT max(epoch) FROM metrics") >= 2, timeout=180,
                 what="a trial's second epoch", proc=driver)
        server.stop()
        driver.send_signal(signal.SIGINT)
        time.sleep(1.0)
        driver.send_signal(signal.SIGINT)  # stop at once: the interrupt path, with the database down
        time.sleep(8)
        assert driver.poll() is None  # waiting for the database, not gone without a word
        server.start()
        out, _ = driver.communicate(timeout=180)
        assert driver.returncode == 130, out
        assert "Traceback" not in out, out
        assert rows(url, "SELECT status FROM sweeps") == [("interrupted",)]
        statuses = [s for (s,) in rows(url, "SELECT status FROM trials")]
        assert statuses and "running" not in statuses, statuses
    finally:
        server.close()


@pytest.mark.ray
@pytest.mark.postgres
def test_a_launch_that_fails_after_recording_its_sweep_never_leaves_it_running(tmp_path, ray_cluster, pg_url):
    """The sweep's claim is refused right after create_sweep (another session holds the lock of
    the id it gets): the launch fails in one line, and the sweep it recorded reads failed."""
    from tests.orchestrator.conftest import run_cli
    from tests.orchestrator.run.test_sweeps_e2e import rows, sweep_file

    path = sweep_file(tmp_path, "claimed", epochs=1)
    holder = sa.create_engine(pg_url).connect().execution_options(isolation_level="AUTOCOMMIT")
    try:
        assert holder.scalar(sa.text("SELECT pg_try_advisory_lock(:space, 1)"), {"space": writes.SWEEP_LOCK_SPACE})
        done = run_cli("launch", str(path), "--db", pg_url, "--address", ray_cluster.address, cwd=tmp_path)
    finally:
        holder.close()
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr and "is being run by another resweep command" in done.stderr
    ((sweep_id, status, finished),) = rows(pg_url, "SELECT id, status, finished_at IS NOT NULL FROM sweeps")
    assert (sweep_id, status, finished) == (1, "failed", True)
