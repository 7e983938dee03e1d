"""Every attempt of a trial has its row: where it ran, when, and why it failed, kept after a retry."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from db import queries, writes
from tests.db.known import trial_config


@pytest.fixture
def trial(engine) -> int:
    sweep_id = writes.create_sweep(engine, name="s", spec="name: s\n", spec_hash="h")
    return writes.upsert_trial(engine, sweep_id, "t0", status="running", config=trial_config())


def trial_row(engine, trial_id: int):
    with engine.connect() as conn:
        return conn.execute(sa.text("SELECT node_ip, hostname, attempts FROM trials WHERE id = :t"),
                            {"t": trial_id}).one()


def test_a_failure_and_its_host_stay_after_a_successful_retry(engine, trial):
    assert writes.start_attempt(engine, trial) == 1
    writes.set_host(engine, trial, "10.0.0.2", "node-a")
    writes.end_attempt(engine, trial, error="node-a died")
    assert writes.start_attempt(engine, trial) == 2
    writes.set_host(engine, trial, "10.0.0.3", "node-b")
    writes.end_attempt(engine, trial)
    frame = queries.sweep_attempts(engine, "s")
    assert list(frame.columns) == queries.SWEEP_ATTEMPT_COLUMNS
    assert frame[["attempt", "node_ip", "hostname"]].values.tolist() == [[1, "10.0.0.2", "node-a"],
                                                                         [2, "10.0.0.3", "node-b"]]
    assert frame["error"].iloc[0] == "node-a died" and frame["error"].isna().iloc[1]
    assert frame["ended_at"].notna().all()
    assert tuple(trial_row(engine, trial)) == ("10.0.0.3", "node-b", 2)


def test_a_trial_that_never_reported_gets_its_host_from_its_error(engine, trial):
    writes.start_attempt(engine, trial)
    writes.end_attempt(engine, trial, error="import failed", node_ip="10.0.0.4", hostname="node-c")
    (row,) = queries.sweep_attempts(engine, "s").itertuples()
    assert (row.node_ip, row.hostname, row.error) == ("10.0.0.4", "node-c", "import failed")
    assert tuple(trial_row(engine, trial)) == ("10.0.0.4", "node-c", 1)


def test_an_attempt_left_open_by_a_killed_driver_is_closed_by_the_next(engine, trial):
    writes.start_attempt(engine, trial)
    writes.set_host(engine, trial, "10.0.0.2", "node-a")
    assert writes.start_attempt(engine, trial) == 2  # a resumed sweep restarts the trial
    first, second = queries.sweep_attempts(engine, "s").itertuples()
    assert first.error == writes.UNENDED_ERROR and first.ended_at is not None
    assert second.ended_at is None or second.ended_at != second.ended_at  # NaT: still running
    assert second.error is None or second.error != second.error


def test_writing_the_same_host_or_end_twice_changes_nothing(engine, trial):
    writes.start_attempt(engine, trial)
    for _ in range(2):
        writes.set_host(engine, trial, "10.0.0.2", "node-a")
    writes.end_attempt(engine, trial, error="boom")
    ended = queries.sweep_attempts(engine, "s")["ended_at"].iloc[0]
    writes.end_attempt(engine, trial, error="boom")
    frame = queries.sweep_attempts(engine, "s")
    assert len(frame) == 1 and frame["ended_at"].iloc[0] == ended


def test_a_new_trial_has_no_attempts_yet(engine, trial):
    assert tuple(trial_row(engine, trial)) == (None, None, 0)
    assert queries.sweep_attempts(engine, "s").empty
