"""Several processes writing the same sweep at once on PostgreSQL: nothing lost, nothing doubled."""

from __future__ import annotations

import multiprocessing

import pytest
import sqlalchemy as sa

from db import writes
from db.engine import get_engine
from tests.db.known import errs, trial_config

WORKERS = 4
TRIALS = 6
EPOCHS = 12


def write_overlapping(url: str, sweep_id: int, worker: int, start) -> None:
    """Each worker registers every trial and writes an overlapping share of the epochs, in a
    different order per worker, in single results and in batches."""
    engine = get_engine(url)
    start.wait(timeout=60)  # all writers go at once
    for t in range(TRIALS):
        tid = writes.upsert_trial(engine, sweep_id, f"t{t}", status="running", config=trial_config(seed=t))
        epochs = [e for e in range(1, EPOCHS + 1) if e % WORKERS != worker]  # each epoch 3 of 4 times
        if worker % 2:
            epochs.reverse()
        for e in epochs[: len(epochs) // 2]:
            layers = [{"layer": i, "name": f"l{i}", "stage": 1, "std": float(t + e + i), "mean": 0.0} for i in range(3)]
            writes.record_result(engine, tid, e, errs(t, e), layers)
        writes.record_results(engine, [writes.Result(tid, e, errs(t, e)) for e in epochs[len(epochs) // 2 :]])
    engine.dispose()


@pytest.mark.postgres
def test_concurrent_writers_lose_and_duplicate_nothing(pg_url):
    engine = get_engine(pg_url)
    sweep_id = writes.create_sweep(engine, name="c", spec="", spec_hash="")
    ctx = multiprocessing.get_context("fork")  # each child opens its own engine
    start = ctx.Barrier(WORKERS)
    procs = [ctx.Process(target=write_overlapping, args=(pg_url, sweep_id, w, start)) for w in range(WORKERS)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0] * WORKERS
    with engine.connect() as conn:
        trials = dict(conn.execute(sa.text("SELECT trial_key, id FROM trials")).all())
        assert sorted(trials) == [f"t{t}" for t in range(TRIALS)]
        metrics = conn.execute(sa.text("SELECT trial_id, name, epoch, value FROM metrics")).all()
        layer_keys = conn.execute(sa.text("SELECT trial_id, epoch, layer FROM layer_stats")).all()
    expected = {
        (trials[f"t{t}"], name, e): value
        for t in range(TRIALS) for e in range(1, EPOCHS + 1) for name, value in errs(t, e).items()
    }  # fmt: skip
    got = {(tid, name, e): value for tid, name, e, value in metrics}
    assert len(metrics) == len(got) == len(expected)  # no duplicates, nothing lost
    assert got == expected
    assert len(layer_keys) == len(set(layer_keys)) > 0
    engine.dispose()


def open_new_database(url: str, start, revisions) -> None:
    """Open (and so create) the database the moment every opener is ready."""
    start.wait(timeout=60)
    engine = get_engine(url)
    with engine.connect() as conn:
        revisions.put(conn.scalar(sa.text("SELECT version_num FROM alembic_version")))
    engine.dispose()


@pytest.mark.postgres
def test_launchers_opening_one_new_database_at_once_all_get_it_created_once(pg_url):
    from db.migrate import head_revision

    ctx = multiprocessing.get_context("fork")
    start, revisions = ctx.Barrier(WORKERS), ctx.Queue()
    procs = [ctx.Process(target=open_new_database, args=(pg_url, start, revisions)) for _ in range(WORKERS)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0] * WORKERS  # none hit "relation already exists"
    assert sorted(revisions.get(timeout=5) for _ in range(WORKERS)) == [head_revision()] * WORKERS
    engine = get_engine(pg_url)
    with engine.connect() as conn:
        assert conn.scalar(sa.text("SELECT count(*) FROM alembic_version")) == 1
    engine.dispose()
