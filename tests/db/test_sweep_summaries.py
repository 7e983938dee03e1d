"""sweep_summaries: each sweep's trials counted by status and the epochs they recorded, kept by
the database's triggers (migration 0012), must equal what the sweeps list computed before it
(three grouped reads of trials and trial_summaries, kept below as the reference) after each
step of a sweep's life through db.writes, after trials and summaries changed, moved or deleted
by hand, whole sweeps deleted, bulk loads with triggers on and off, the migration, and writers
of one sweep on several PostgreSQL connections at once."""

from __future__ import annotations

import multiprocessing
import threading
import time

import pytest
import sqlalchemy as sa

from db import migrate, queries, writes
from db.engine import create_store_engine, get_engine, resolve_url
from db.errors import StoreError
from db.models import TRIAL_STATUSES, SweepSummary
from tests.db.known import errs, make_sweep, trial_config
from tests.db.test_grid_summaries import _migration

COUNTS = ("n_trials", *(f"n_{s}" for s in TRIAL_STATUSES), "epochs")


def reference(conn) -> dict[int, tuple[int, ...]]:
    """What sweeps() computed before sweep_summaries: per sweep, its trials grouped by status from
    the trials themselves, and the sum of their summaries' epochs (COUNTS, in order)."""
    ids = [i for (i,) in conn.exec_driver_sql("SELECT id FROM sweeps")]
    by_status: dict[int, dict[str, int]] = {}
    for sweep_id, status, n in conn.exec_driver_sql("SELECT sweep_id, status, count(*) FROM trials "
                                                    "GROUP BY sweep_id, status"):  # fmt: skip
        by_status.setdefault(sweep_id, {})[status] = int(n)
    epochs = dict(conn.exec_driver_sql("SELECT t.sweep_id, sum(f.epochs) FROM trials AS t "
                                       "JOIN trial_summaries AS f ON f.trial_id = t.id GROUP BY t.sweep_id").all())
    out = {}
    for sweep_id in ids:
        c = by_status.get(sweep_id, {})
        out[sweep_id] = (sum(c.values()), *(c.get(s, 0) for s in TRIAL_STATUSES), int(epochs.get(sweep_id) or 0))
    return out


def stored(conn) -> dict[int, tuple[int, ...]]:
    return {r[0]: tuple(int(n) for n in r[1:])
            for r in conn.exec_driver_sql(f"SELECT sweep_id, {', '.join(COUNTS)} FROM sweep_summaries")}  # fmt: skip


@pytest.fixture
def checked(engine):
    """A check that sweep_summaries, sweeps() and trial_counts() all equal the reference."""

    def check() -> dict[int, tuple[int, ...]]:
        with engine.connect() as conn:
            want, got = reference(conn), stored(conn)
        assert got == want
        frame = queries.sweeps(engine)
        listed = {int(r.id): (r.n_trials, *(getattr(r, f"n_{s}") for s in TRIAL_STATUSES), r.n_epochs)
                  for r in frame.itertuples()}  # fmt: skip
        assert listed == want
        for sweep_id, counts in want.items():
            by_status = {s: n for s, n in zip(TRIAL_STATUSES, counts[1:-1]) if n}
            assert queries.trial_counts(engine, sweep_id) == by_status
        return want

    return check


def test_the_counted_columns_are_the_statuses_and_the_migration_froze_them():
    assert tuple(SweepSummary.__table__.c.keys()) == ("sweep_id", *COUNTS)
    assert _migration("0012_sweep_summaries").STATUSES == TRIAL_STATUSES  # a new status needs a migration


def test_sweep_summaries_follow_every_write_path(engine, checked):
    empty = writes.create_sweep(engine, name="empty", spec="", spec_hash="")
    assert checked()[empty] == (0,) * len(COUNTS)  # a sweep with no trials: a row of zeros
    sweep = make_sweep(engine)
    other = make_sweep(engine, name="other")
    counts = checked()
    assert counts[sweep.id] == (8, 0, 1, 6, 1, 0, 20)  # 6 finished x 3 epochs, 2 trials of 1
    t = sweep.trials

    # Results replayed and rewritten (a restored checkpoint), appended out of order, NaN.
    writes.record_result(engine, t["A-0"], 3, {"train_err": 0.91, "test_err": 0.92})
    writes.record_results(engine, [writes.Result(t["A-1"], e, errs(4, e)) for e in (5, 2, 4)])
    writes.record_result(engine, t["A-2"], 4, {"train_err": float("nan"), "test_err": float("nan")})
    writes.record_results(engine, [writes.Result(t["A-1"], e, errs(4, e)) for e in (1, 2, 3, 4, 5)])  # all again
    assert checked()[sweep.id][-1] == 23
    # A batch of several trials, with a params_count (trial rows written in the same transaction).
    writes.record_results(engine, [writes.Result(t[k], 6, {**errs(1, 6), "params_count": 270_001})
                                   for k in ("none-0", "none-1", "A-8")])  # fmt: skip
    checked()

    # Status changes: a late error of a finished trial is ignored; an errored trial is retried.
    writes.set_trial_status(engine, t["A-0"], "error", error="late", ended=True)
    writes.upsert_trial(engine, sweep.id, "A-9", status="pending", config=trial_config(seed=9))
    assert checked()[sweep.id][:6] == (8, 1, 1, 6, 0, 0)
    writes.set_trial_status(engine, t["A-9"], "running")
    writes.record_results(engine, [writes.Result(t["A-9"], e, errs(51, e)) for e in (1, 2, 3)])
    writes.set_trial_status(engine, t["A-9"], "terminated", ended=True)
    writes.upsert_trial(engine, sweep.id, "A-9", status="running", config=trial_config(seed=9))  # stays finished
    checked()
    # New trials: registered finished (db import), stopped by the scheduler, registered twice.
    tid = writes.upsert_trial(engine, sweep.id, "imported", status="terminated", config=trial_config(depth=56))
    writes.record_results(engine, [writes.Result(tid, e, errs(7, e)) for e in (1, 2, 3)])
    stopped = writes.upsert_trial(engine, sweep.id, "stopped", status="running", config=trial_config(seed=30))
    writes.upsert_trial(engine, sweep.id, "stopped", status="running", config=trial_config(seed=30))
    writes.record_result(engine, stopped, 1, errs(30, 1))
    writes.set_trial_status(engine, stopped, "stopped", ended=True)
    writes.upsert_trial(engine, sweep.id, "waiting", status="pending", config=trial_config(seed=31))
    assert checked()[sweep.id][:6] == (11, 1, 1, 8, 0, 1)

    # An interrupted sweep: its running trials go back to pending, or end when all their epochs are in.
    writes.record_results(engine, [writes.Result(t["A-8"], e, errs(61, e)) for e in (2, 3)])
    for seed in (40, 41):
        writes.upsert_trial(engine, sweep.id, f"run-{seed}", status="running", config=trial_config(seed=seed))
    writes.interrupt_sweep(engine, sweep.id, epochs=3)
    assert checked()[sweep.id][:6] == (13, 3, 0, 9, 0, 1)

    # By hand: many trials' status in one statement, a trial moved to another sweep, a summary
    # rewritten and one deleted, one trial deleted, a grid point's trials deleted.
    with engine.begin() as conn:
        conn.exec_driver_sql(f"UPDATE trials SET status = 'error' WHERE sweep_id = {sweep.id} AND status = 'pending'")
        conn.exec_driver_sql(f"UPDATE trials SET sweep_id = {other.id}, trial_key = 'moved' WHERE id = {t['A-2']}")
        conn.exec_driver_sql(f"UPDATE trial_summaries SET epochs = epochs + 10 WHERE trial_id = {t['none-2']}")
        conn.exec_driver_sql(f"DELETE FROM trial_summaries WHERE trial_id = {t['none-1']}")
    counts = checked()
    assert counts[sweep.id][:6] == (12, 0, 0, 8, 3, 1) and counts[other.id][:2] == (9, 0)
    with engine.begin() as conn:
        conn.exec_driver_sql(f"DELETE FROM trials WHERE id = {t['A-1']}")
    checked()
    with engine.begin() as conn:
        conn.exec_driver_sql(f"DELETE FROM trials WHERE sweep_id = {sweep.id} AND shortcut = 'none'")
    assert checked()[sweep.id][0] == 8

    # A whole sweep deleted: its row goes with it, the others are untouched.
    with engine.begin() as conn:
        conn.exec_driver_sql(f"DELETE FROM sweeps WHERE id = {other.id}")
    counts = checked()
    assert other.id not in counts and len(counts) == 2


def _load(conn, sweep_id: int, n: int, prefix: str) -> list[int]:
    """n finished trials x 2 epochs written around db.writes (a bulk load), in one statement each."""
    rows = ", ".join(f"({sweep_id}, '{prefix}{i}', '{'terminated' if i % 3 else 'error'}', 'cifar10', 'cifar', 20, "
                     f"'basic', 'A', {i}, '{{}}')" for i in range(n))  # fmt: skip
    conn.exec_driver_sql("INSERT INTO trials (sweep_id, trial_key, status, dataset, model, depth, block, shortcut, "
                         f"seed, config) VALUES {rows}")  # fmt: skip
    ids = conn.execute(sa.text("SELECT id FROM trials WHERE trial_key LIKE :p ORDER BY id"), {"p": f"{prefix}%"})
    ids = [i for (i,) in ids]
    conn.execute(sa.text(
        "INSERT INTO metric_values (trial_id, name_id, epoch, value) SELECT t.id, n.id, e.epoch, 0.5 "
        "FROM trials AS t CROSS JOIN metric_names AS n CROSS JOIN (SELECT 1 AS epoch UNION ALL SELECT 2) AS e "
        "WHERE t.trial_key LIKE :p AND n.name IN ('train_err', 'test_err')"
    ), {"p": f"{prefix}%"})  # fmt: skip
    return ids


def test_a_bulk_load_is_counted_and_refresh_summaries_recounts(engine, checked):
    """Trials loaded around db.writes are counted by the triggers, their epochs once
    refresh_summaries summarises them; a load with triggers off (PostgreSQL's replica role, as
    benchmarks/read_scale.py loads) and a row gone wrong are recounted by it."""
    sweep = make_sweep(engine)
    with engine.begin() as conn:
        ids = _load(conn, sweep.id, 30, "bulk-")
    assert checked()[sweep.id][:2] == (38, 0)
    with engine.begin() as conn:
        writes.refresh_summaries(conn, ids)
    assert checked()[sweep.id][-1] == 20 + 60

    with engine.begin() as conn:  # a count gone wrong (a row written by hand) is put right
        conn.exec_driver_sql(f"UPDATE sweep_summaries SET n_trials = 0, n_error = 7, epochs = 1 "
                             f"WHERE sweep_id = {sweep.id}")  # fmt: skip
        writes.refresh_summaries(conn, ids[:1])
    checked()
    with engine.begin() as conn:  # a row gone: the sweep is listed with no trials until recounted
        conn.exec_driver_sql(f"DELETE FROM sweep_summaries WHERE sweep_id = {sweep.id}")
    listed = queries.sweeps(engine).set_index("id").loc[sweep.id]
    assert [listed[c] for c in queries.SWEEP_COLUMNS[-7:]] == [0] * 7 and queries.trial_counts(engine, sweep.id) == {}
    with engine.begin() as conn:
        writes.refresh_sweep_counts(conn, [sweep.id])
    checked()
    if engine.dialect.name == "postgresql":
        bulk = writes.create_sweep(engine, name="bulk", spec="", spec_hash="")
        with engine.begin() as conn:
            conn.exec_driver_sql("SET LOCAL session_replication_role = replica")  # no trigger fires
            more = _load(conn, bulk, 12, "replica-")
            writes.refresh_summaries(conn, more)
        assert checked()[bulk] == (12, 0, 0, 8, 4, 0, 24)


@pytest.mark.postgres
def test_on_postgresql_a_statement_of_many_rows_updates_its_sweeps_row_once(pg_url):
    """PostgreSQL makes a row version per update, and one row updated thousands of times in one
    transaction slows every later update: a statement (a bulk insert, refresh_summaries, a
    sweep's trials interrupted) counts its rows once per sweep, and a sweep deleted updates nothing."""
    engine = get_engine(pg_url)
    sweep_id = writes.create_sweep(engine, name="bulk", spec="", spec_hash="")
    # the rows updated by this backend, as yet unsent to the statistics (this transaction's, and
    # maybe those of the transactions just before): counted from a baseline in each transaction
    updates = "SELECT coalesce(sum(n_tup_upd), 0) FROM pg_stat_xact_user_tables WHERE relname = 'sweep_summaries'"
    with engine.begin() as conn:
        base = conn.exec_driver_sql(updates).scalar()
        ids = _load(conn, sweep_id, 300, "bulk-")
        assert conn.exec_driver_sql(updates).scalar() - base == 1
        writes.refresh_summaries(conn, ids)
        assert conn.exec_driver_sql(updates).scalar() - base <= 3  # + the summaries' recount, the sweep's recount
        conn.exec_driver_sql(f"UPDATE trials SET status = 'pending' WHERE sweep_id = {sweep_id}")
        assert conn.exec_driver_sql(updates).scalar() - base <= 4
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT n_trials, n_pending, epochs FROM sweep_summaries").one() == (300, 300, 600)
    with engine.begin() as conn:
        base = conn.exec_driver_sql(updates).scalar()
        conn.exec_driver_sql(f"DELETE FROM sweeps WHERE id = {sweep_id}")
        assert conn.exec_driver_sql(updates).scalar() - base == 0
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM sweep_summaries").scalar() == 0
    engine.dispose()


@pytest.mark.postgres
def test_on_postgresql_a_one_row_write_after_a_bulk_one_reads_no_whole_table(pg_url):
    """A trigger function's plan is kept for the session: planned for a statement of thousands of
    rows, a join of its rows with trial_summaries or trials would be a hash join reading the whole
    table, for every later statement of one row too. The functions look each row up by its key."""
    engine = get_engine(pg_url)
    sweep_id = writes.create_sweep(engine, name="bulk", spec="", spec_hash="")
    with engine.begin() as conn:
        ids = _load(conn, sweep_id, 3000, "bulk-")
        writes.refresh_summaries(conn, ids)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("ANALYZE")
    scans = ("SELECT relname, seq_scan FROM pg_stat_xact_user_tables "
             "WHERE relname IN ('trials', 'trial_summaries') ORDER BY relname")  # fmt: skip
    with engine.begin() as conn:  # one session: the functions planned for a bulk statement first
        conn.exec_driver_sql(f"UPDATE trials SET status = 'pending' WHERE sweep_id = {sweep_id}")
        conn.exec_driver_sql(f"UPDATE trial_summaries SET epochs = epochs + 1 WHERE trial_id IN "
                             f"(SELECT id FROM trials WHERE sweep_id = {sweep_id})")  # fmt: skip
        before = conn.exec_driver_sql(scans).all()
        for tid in ids[:20]:
            conn.exec_driver_sql(f"UPDATE trials SET status = 'running' WHERE id = {tid}")
            conn.exec_driver_sql(f"UPDATE trial_summaries SET epochs = epochs + 1 WHERE trial_id = {tid}")
        assert conn.exec_driver_sql(scans).all() == before  # no sequential scan
    with engine.connect() as conn:
        assert stored(conn) == reference(conn)
        assert stored(conn)[sweep_id][:3] == (3000, 2980, 20)
    engine.dispose()


def test_migration_counts_existing_sweeps_and_downgrades_back(db_url):
    """0011 -> 0012 counts the sweeps already stored (one without trials, trials without
    summaries), the triggers count from then on, and a downgrade removes table and triggers."""
    from alembic import command

    engine = create_store_engine(resolve_url(db_url))
    with engine.begin() as conn:
        command.upgrade(migrate.alembic_config(connection=conn), "0011")
        conn.exec_driver_sql("INSERT INTO sweeps (id, name, spec, spec_hash, status, created_at) "
                             "VALUES (1, 's', '', '', 'finished', CURRENT_TIMESTAMP), "
                             "(2, 't', '', '', 'running', CURRENT_TIMESTAMP), "
                             "(3, 'u', '', '', 'running', CURRENT_TIMESTAMP)")  # fmt: skip
        statuses = ["terminated", "terminated", "error", "running", "pending", "stopped", "terminated"]
        for tid, status in enumerate(statuses, start=1):
            conn.exec_driver_sql("INSERT INTO trials (id, sweep_id, trial_key, status, dataset, model, depth, block, "
                                 f"shortcut, seed, config) VALUES ({tid}, {1 if tid < 6 else 2}, 'k{tid}', '{status}', "
                                 f"'digits', 'cifar', 20, 'basic', 'A', {tid}, '{{}}')")  # fmt: skip
            if tid != 4:  # trial 4 has no summary: counted, with no epochs
                conn.exec_driver_sql(f"INSERT INTO trial_summaries (trial_id, epochs) VALUES ({tid}, {tid * 10})")
        assert "sweep_summaries" not in sa.inspect(conn).get_table_names()
    with engine.begin() as conn:
        command.upgrade(migrate.alembic_config(connection=conn), "0012")
    with engine.connect() as conn:
        assert stored(conn) == reference(conn) == {1: (5, 1, 1, 2, 1, 0, 110), 2: (2, 0, 0, 1, 0, 1, 130),
                                                   3: (0, 0, 0, 0, 0, 0, 0)}  # fmt: skip
    with engine.begin() as conn:  # the triggers count from now on
        conn.exec_driver_sql("INSERT INTO trials (id, sweep_id, trial_key, status, dataset, model, depth, block, "
                             "shortcut, seed, config) VALUES (8, 3, 'k8', 'running', 'digits', 'cifar', 20, 'basic', "
                             "'A', 8, '{}')")  # fmt: skip
        conn.exec_driver_sql("INSERT INTO trial_summaries (trial_id, epochs) VALUES (8, 4)")
        conn.exec_driver_sql("DELETE FROM trials WHERE id = 1")
    with engine.connect() as conn:
        assert stored(conn) == reference(conn)
        assert stored(conn)[3] == (1, 0, 1, 0, 0, 0, 4)
    with engine.begin() as conn:
        command.downgrade(migrate.alembic_config(connection=conn), "0011")
    with engine.connect() as conn:
        assert "sweep_summaries" not in sa.inspect(conn).get_table_names()
        if engine.dialect.name == "postgresql":
            left = conn.exec_driver_sql("SELECT tgname FROM pg_trigger WHERE NOT tgisinternal UNION ALL "
                                        "SELECT proname FROM pg_proc WHERE starts_with(proname, 'sweep_summaries')")
        else:
            left = conn.exec_driver_sql("SELECT name FROM sqlite_master WHERE type = 'trigger'")
        assert [n for (n,) in left] == ["trials_delete_pools_grid"]  # 0011's, and nothing of 0012
    with engine.begin() as conn:  # writes still work without the triggers
        conn.exec_driver_sql("DELETE FROM trials WHERE id = 2")
        conn.exec_driver_sql("INSERT INTO sweeps (id, name, spec, spec_hash, status, created_at) "
                             "VALUES (4, 'v', '', '', 'running', CURRENT_TIMESTAMP)")  # fmt: skip
    engine.dispose()


# --- several writers on PostgreSQL ----------------------------------------------------------------

WRITERS = 4
TRIALS = 6
EPOCHS = 8


def write_trials(url: str, sweep_ids: list[int], worker: int, start) -> None:
    """Each writer registers every trial of each sweep, writes an overlapping share of its epochs
    (in a different order per writer), moves its status and, for some, ends it."""
    engine = get_engine(url)
    start.wait(timeout=60)  # all writers go at once
    for t in range(TRIALS):
        for sweep_id in sweep_ids if worker % 2 else reversed(sweep_ids):
            key = f"t{t}"
            tid = writes.upsert_trial(engine, sweep_id, key, status="running", config=trial_config(seed=t))
            epochs = [e for e in range(1, EPOCHS + 1) if e % WRITERS != worker]
            if worker % 2:
                epochs.reverse()
            for e in epochs[: len(epochs) // 2]:
                writes.record_result(engine, tid, e, {**errs(t, e), "params_count": 270_000 + t})
            writes.record_results(engine, [writes.Result(tid, e, errs(t, e)) for e in epochs[len(epochs) // 2 :]])
            writes.set_trial_status(engine, tid, ("error", "pending", "terminated")[(t + worker) % 3], ended=True)
    engine.dispose()


@pytest.mark.postgres
def test_writers_of_one_sweep_on_several_connections_count_exactly(pg_url):
    """Four processes write the same trials of two sweeps at once (their results, statuses and
    params_count, in different orders): the counts equal the trials' own, and none deadlocked."""
    engine = get_engine(pg_url)
    sweep_ids = [writes.create_sweep(engine, name=name, spec="", spec_hash="") for name in ("a", "b")]
    ctx = multiprocessing.get_context("fork")  # each child opens its own engine
    start = ctx.Barrier(WRITERS)
    procs = [ctx.Process(target=write_trials, args=(pg_url, sweep_ids, w, start)) for w in range(WRITERS)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=180)
    assert [p.exitcode for p in procs] == [0] * WRITERS
    with engine.connect() as conn:
        got, want = stored(conn), reference(conn)
    assert got == want
    assert [got[s][0] for s in sweep_ids] == [TRIALS, TRIALS] and got[sweep_ids[0]][-1] == TRIALS * EPOCHS
    engine.dispose()


def _waits_for_a_lock(conn, timeout_s: float = 30.0) -> bool:
    """Whether another session comes to wait for a row lock within the timeout."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if conn.exec_driver_sql("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                                "AND datname = current_database()").scalar():  # fmt: skip
            return True
        time.sleep(0.05)
    return False


@pytest.mark.postgres
def test_a_trial_written_and_then_ended_beside_its_results_does_not_deadlock(pg_url):
    """A writer updates a trial (its host, as set_host does), then ends it, which locks its
    sweep's row by the trigger; meanwhile a batch of that trial's results with its params_count
    arrives. record_results updates the trial first, so the batch waits for the writer holding
    nothing the writer needs. Were params_count written after the summaries, the batch would
    hold the sweep's row while waiting for the trial, and the writer the trial while waiting for
    the row: a deadlock, which PostgreSQL ends by failing one."""
    engine = get_engine(pg_url)
    sweep = make_sweep(engine)
    tid = sweep.trials["A-8"]  # running
    failed: list[StoreError] = []

    def results() -> None:
        try:
            writes.record_results(engine, [writes.Result(tid, 2, {**errs(60, 2), "params_count": 280_000})])
        except StoreError as exc:  # a deadlock, PostgreSQL's error translated: reported below
            failed.append(exc)

    with engine.begin() as conn:  # the writer: the trial updated, not yet committed
        conn.exec_driver_sql(f"UPDATE trials SET hostname = 'node-1' WHERE id = {tid}")
        batch = threading.Thread(target=results)
        batch.start()
        with engine.connect() as watch:
            assert _waits_for_a_lock(watch)  # the batch waits for the trial
        conn.exec_driver_sql(f"UPDATE trials SET status = 'terminated' WHERE id = {tid}")  # then the sweep's row
    batch.join(timeout=30)
    assert not batch.is_alive() and not failed, failed
    with engine.connect() as conn:
        assert stored(conn) == reference(conn)
        assert stored(conn)[sweep.id][3] == 7
    engine.dispose()


@pytest.mark.postgres
def test_a_writer_waits_for_another_of_its_sweep_and_never_for_one_of_another(pg_url):
    """The counts are one row per sweep, locked by a writer until it commits: a second writer of
    the same sweep waits for the first and then adds its own change; a writer of another sweep
    does not wait at all."""
    engine = get_engine(pg_url)
    a = make_sweep(engine, name="a")
    b = make_sweep(engine, name="b")
    done = {"a": threading.Event(), "b": threading.Event()}

    def write(name: str, sweep_id: int) -> None:
        tid = writes.upsert_trial(engine, sweep_id, "late", status="running", config=trial_config(seed=70))
        writes.record_results(engine, [writes.Result(tid, e, errs(70, e)) for e in (1, 2)])
        done[name].set()

    with engine.begin() as conn:  # the first writer of sweep a: a trial in, not yet committed
        conn.exec_driver_sql("INSERT INTO trials (sweep_id, trial_key, status, dataset, model, depth, block, shortcut, "
                             f"seed, config) VALUES ({a.id}, 'first', 'running', 'cifar10', 'cifar', 20, 'basic', 'A', "
                             "60, '{}')")  # fmt: skip
        writers = [threading.Thread(target=write, args=(name, s.id)) for name, s in (("a", a), ("b", b))]
        for w in writers:
            w.start()
        assert done["b"].wait(timeout=30)  # another sweep's writer went through
        time.sleep(0.5)
        assert not done["a"].is_set()  # this sweep's writer waits for the first to commit
    for w in writers:
        w.join(timeout=30)
    assert done["a"].is_set()
    with engine.connect() as conn:
        got, want = stored(conn), reference(conn)
    assert got == want and got[a.id][:3] == (10, 0, 3) and got[b.id][:3] == (9, 0, 2)
    engine.dispose()
