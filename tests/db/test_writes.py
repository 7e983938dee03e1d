"""Writes are idempotent upserts: the same result twice is one row, a later one replaces it."""

from __future__ import annotations


import pytest
import sqlalchemy as sa

from db import queries, writes
from db.engine import get_engine
from db.errors import IntegrityStoreError, SweepExistsError
from tests.db.known import errs, trial_config


def counts(engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {t: conn.scalar(sa.text(f"SELECT count(*) FROM {t}"))
                for t in ("sweeps", "trials", "metrics", "layer_stats")}  # fmt: skip


def values(engine, trial_id: int) -> dict[tuple[str, int], float]:
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT name, epoch, value FROM metrics WHERE trial_id = :t"), {"t": trial_id})
        return {(name, epoch): value for name, epoch, value in rows}


@pytest.fixture
def trial(engine) -> int:
    sweep_id = writes.create_sweep(engine, name="s", spec="name: s\n", spec_hash="h", git_commit="abc", git_dirty=True)
    return writes.upsert_trial(engine, sweep_id, "t0", status="running", config=trial_config())


LAYERS = [{"layer": i, "name": f"layer{i}.conv1", "stage": 1, "std": 1.0 + i, "mean": 0.1} for i in range(5)]


def test_the_same_result_twice_leaves_one_row_per_key(engine, trial):
    for _ in range(2):
        writes.record_result(engine, trial, 1, errs(0, 1), LAYERS)
    assert counts(engine) == {"sweeps": 1, "trials": 1, "metrics": len(errs(0, 1)), "layer_stats": 5}


def test_the_same_batch_twice_leaves_one_row_per_key(engine, trial):
    batch = [writes.Result(trial, e, errs(0, e), LAYERS if e == 3 else None) for e in (1, 2, 3)]
    assert writes.record_results(engine, batch) == 3 * len(errs(0, 1))
    writes.record_results(engine, batch)
    assert counts(engine)["metrics"] == 3 * len(errs(0, 1))
    assert counts(engine)["layer_stats"] == 5


def test_a_later_write_of_the_same_key_replaces_the_value(engine, trial):
    writes.record_result(engine, trial, 1, {"test_err": 0.9}, [{**LAYERS[0], "std": 1.0}])
    writes.record_result(engine, trial, 1, {"test_err": 0.7}, [{**LAYERS[0], "std": 2.0}])
    assert values(engine, trial) == {("test_err", 1): 0.7}
    with engine.connect() as conn:
        assert conn.scalar(sa.text("SELECT std FROM layer_stats")) == 2.0


def test_replayed_epochs_after_a_restart_do_not_duplicate(db_url, engine, trial):
    for epoch in range(1, 6):
        writes.record_result(engine, trial, epoch, errs(0, epoch))
    engine.dispose()
    # The driver restarts, the trial is restored from its epoch-2 checkpoint and reports 3..5
    # again (different numbers: data order differs) and then goes on to 6.
    again = get_engine(db_url)
    tid = writes.upsert_trial(again, queries.sweep(again, "s").id, "t0", status="running", config=trial_config())
    assert tid == trial
    for epoch in range(3, 7):
        writes.record_result(again, trial, epoch, errs(1, epoch))
    stored = values(again, trial)
    assert len(stored) == 6 * len(errs(0, 1))
    assert stored["test_err", 2] == errs(0, 2)["test_err"] and stored["test_err", 4] == errs(1, 4)["test_err"]
    again.dispose()


def test_nan_is_stored_as_null_and_non_metrics_are_skipped(engine, trial):
    writes.record_result(
        engine, trial, 1,
        {"train_loss": float("nan"), "train_err": 0.5, "epoch": 1.0, "params_count": 1234.0, "note": "x",
         "done": True},
    )  # fmt: skip
    assert values(engine, trial) == {("train_loss", 1): None, ("train_err", 1): 0.5}
    with engine.connect() as conn:
        assert conn.scalar(sa.text("SELECT params_count FROM trials")) == 1234


def test_numpy_scalars_are_stored_as_plain_numbers(engine, trial):
    np = pytest.importorskip("numpy")
    layer = {"layer": np.int64(0), "name": "c", "stage": np.int64(1), "std": np.float32(2.0), "mean": 0.0}
    writes.record_result(engine, trial, 1, {"test_err": np.float32(0.25), "lr": np.float64(0.1)}, [layer])
    assert values(engine, trial) == {("test_err", 1): 0.25, ("lr", 1): 0.1}


def test_a_sweep_name_is_registered_once(engine, trial):
    with pytest.raises(SweepExistsError, match="--resume"):
        writes.create_sweep(engine, name="s", spec="", spec_hash="")
    row = queries.sweep(engine, "s")
    assert (row.name, row.status, row.git_commit, row.git_dirty, row.finished_at) == ("s", "running", "abc", True, None)
    assert row.created_at.tzinfo is not None
    assert queries.sweep(engine, "nope") is None


def test_sweep_status_and_finish_time(engine, trial):
    sweep_id = queries.sweep(engine, "s").id
    writes.set_sweep_status(engine, sweep_id, "interrupted", finished=True)
    assert queries.sweep(engine, "s").finished_at is not None
    writes.set_sweep_status(engine, sweep_id, "running")  # resumed
    assert queries.sweep(engine, "s").finished_at is None
    with pytest.raises(ValueError):
        writes.set_sweep_status(engine, sweep_id, "done")


def trial_row(engine, trial_id: int) -> dict:
    with engine.connect() as conn:
        return dict(conn.execute(sa.text("SELECT * FROM trials WHERE id = :t"), {"t": trial_id}).mappings().one())


def test_trial_axes_come_from_the_config(engine, trial):
    row = trial_row(engine, trial)
    assert {k: row[k] for k in ("dataset", "model", "depth", "block", "shortcut", "seed")} == {
        "dataset": "cifar10", "model": "cifar", "depth": 20, "block": "basic", "shortcut": "A", "seed": 0,
    }  # fmt: skip
    assert row["started_at"] is not None and row["status"] == "running"
    with pytest.raises(ValueError, match="lacks depth"):
        writes.upsert_trial(engine, 1, "t1", status="pending", config={**trial_config(), "depth": None})


def test_terminated_is_final_but_errored_trials_can_be_retried(engine, trial):
    assert writes.set_trial_status(engine, trial, "error", error="boom", ended=True) == "error"
    row = trial_row(engine, trial)
    assert row["error"] == "boom" and row["ended_at"] is not None
    # A resumed sweep retries it: running again clears the error.
    assert writes.set_trial_status(engine, trial, "running") == "running"
    assert trial_row(engine, trial)["error"] is None
    assert writes.set_trial_status(engine, trial, "terminated", ended=True, params_count=99) == "terminated"
    # A late or replayed status never overwrites terminated, by either path.
    assert writes.set_trial_status(engine, trial, "running") == "terminated"
    writes.upsert_trial(engine, queries.sweep(engine, "s").id, "t0", status="pending", config=trial_config())
    row = trial_row(engine, trial)
    assert row["status"] == "terminated" and row["ended_at"] is not None and row["params_count"] == 99


def test_upsert_keeps_the_first_start_time_and_known_params_count(engine, trial):
    first = trial_row(engine, trial)
    sweep_id = queries.sweep(engine, "s").id
    writes.upsert_trial(engine, sweep_id, "t0", status="running", config=trial_config(), params_count=7)
    writes.upsert_trial(engine, sweep_id, "t0", status="running", config=trial_config(lr=0.05))
    row = trial_row(engine, trial)
    assert row["started_at"] == first["started_at"] and row["params_count"] == 7
    assert counts(engine)["trials"] == 1


def test_deleting_a_sweep_deletes_its_results(engine, trial):
    writes.record_result(engine, trial, 1, errs(0, 1), LAYERS)
    with engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM sweeps")
    assert counts(engine) == {"sweeps": 0, "trials": 0, "metrics": 0, "layer_stats": 0}


def test_every_block_name_fits_the_trials_table(engine):
    # "preact_bottleneck" has 17 characters: PostgreSQL refused it in the VARCHAR(16) of 0001 (0003).
    sweep_id = writes.create_sweep(engine, name="blocks", spec="name: blocks\n", spec_hash="0" * 64)
    for i, block in enumerate(["basic", "bottleneck", "preact", "preact_bottleneck"]):
        writes.upsert_trial(engine, sweep_id, f"t{i}", status="running", config=trial_config(block=block))
    with engine.connect() as conn:
        got = set(conn.execute(sa.text("SELECT block FROM trials")).scalars())
        assert got == {"basic", "bottleneck", "preact", "preact_bottleneck"}
        assert set(conn.execute(sa.text("SELECT block FROM trial_results")).scalars()) == got  # views back


def test_a_metric_name_outside_the_known_ones_gets_its_own_id_once(engine, trial):
    writes.record_result(engine, trial, 1, {"grad_norm": 2.5, "train_err": 0.5})
    writes.record_result(engine, trial, 2, {"grad_norm": 1.5, "zeta": 0.0})
    assert values(engine, trial) == {("grad_norm", 1): 2.5, ("train_err", 1): 0.5, ("grad_norm", 2): 1.5,
                                     ("zeta", 2): 0.0}
    with engine.connect() as conn:
        ids = dict(conn.execute(sa.text("SELECT name, id FROM metric_names")).all())
    assert ids["epoch_time_s"] == 1 and ids["train_err"] == 6 and ids["grad_norm"] == 11 and ids["zeta"] == 12 and len(ids) == 12


def test_sweep_status_changes_are_fsynced_on_sqlite_and_results_are_not(sqlite_url):
    # SQLite only: PostgreSQL commits are durable by default (synchronous_commit on).
    engine = get_engine(sqlite_url)
    sweep_id = writes.create_sweep(engine, name="s", spec="name: s\n", spec_hash="h")
    trial = writes.upsert_trial(engine, sweep_id, "t0", status="running", config=trial_config())
    sent: list[str] = []
    listen = lambda conn, cursor, statement, *args: sent.append(statement)  # noqa: E731
    sa.event.listen(engine, "before_cursor_execute", listen)
    try:
        writes.set_sweep_status(engine, 1, "finished", finished=True)
        durable = list(sent)
        sent.clear()
        writes.record_result(engine, trial, 1, {"train_err": 0.5})
    finally:
        sa.event.remove(engine, "before_cursor_execute", listen)
    update = next(i for i, s in enumerate(durable) if s.startswith("UPDATE sweeps"))
    assert durable[:update].count("PRAGMA synchronous=FULL") == 1
    assert durable[update + 1:].count("PRAGMA synchronous=NORMAL") == 1
    assert not any("synchronous" in s for s in sent)  # results keep NORMAL
    with engine.connect() as conn:  # and the pooled connection is back at NORMAL (1)
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1
        assert conn.scalar(sa.text("SELECT status FROM sweeps WHERE id = 1")) == "finished"
    engine.dispose()


def test_sweep_writes_commit_under_synchronous_full_and_results_under_normal(sqlite_url):
    # The pragma in effect at each commit, read on the committing connection itself: a sweep's
    # registration and status change must reach the disk at commit (FULL = 2), results need not
    # (NORMAL = 1: Tune's files can replay them through `db import`).
    engine = get_engine(sqlite_url)
    statements: list[str] = []
    commits: list[tuple[str, int]] = []

    def executed(conn, cursor, statement, *args):
        statements.append(" ".join(statement.split()[:3]))

    def committing(conn):
        sync = conn.connection.dbapi_connection.execute("PRAGMA synchronous").fetchone()[0]
        commits.append(("; ".join(statements), sync))
        statements.clear()

    sa.event.listen(engine, "before_cursor_execute", executed)
    sa.event.listen(engine, "commit", committing)
    try:
        sweep_id = writes.create_sweep(engine, name="s", spec="name: s\n", spec_hash="h")
        trial = writes.upsert_trial(engine, sweep_id, "t0", status="running", config=trial_config())
        writes.record_result(engine, trial, 1, {"train_err": 0.5})
        writes.set_sweep_status(engine, sweep_id, "interrupted")
        writes.set_sweep_status(engine, sweep_id, "finished", finished=True)
    finally:
        sa.event.remove(engine, "before_cursor_execute", executed)
        sa.event.remove(engine, "commit", committing)
    engine.dispose()

    def sync_of(prefix: str) -> list[int]:
        return [sync for sql, sync in commits if any(s.startswith(prefix) for s in sql.split("; "))]

    assert sync_of("INSERT INTO sweeps") == [2]
    assert sync_of("UPDATE sweeps SET") == [2, 2]
    assert sync_of("INSERT INTO metric_values") == [1]


def test_a_refused_result_is_a_store_error_and_leaves_the_writer_usable(engine):
    """On PostgreSQL a result's statements go in one pipeline: a constraint they break is still
    the store's IntegrityStoreError, nothing of the result is kept, and the next write works."""
    sweep_id = writes.create_sweep(engine, name="refused", spec="", spec_hash="")
    tid = writes.upsert_trial(engine, sweep_id, "t", status="running", config=trial_config())
    with pytest.raises(IntegrityStoreError, match="write refused"):
        writes.record_results(engine, [writes.Result(tid, 1, {"train_err": 0.5, "params_count": 10}),
                                       writes.Result(tid + 999, 1, {"train_err": 0.4})])  # no such trial
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM metric_values").scalar() == 0
        assert conn.exec_driver_sql("SELECT count(*) FROM trial_summaries").scalar() == 0
    writes.record_result(engine, tid, 1, {"train_err": 0.5, "test_err": 0.45, "params_count": 10})
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT epochs, final_test_err FROM trial_results").one() == (1, 0.45)
