"""grid_summaries: each grid point's seeds pooled, kept by db.writes on every write that moves a
point, must equal the view that pooled every trial itself (migration 0009's grid_results) after
each step of a sweep's life: results of finished trials replayed and rewritten, trials that end,
fail, are retried, resumed, interrupted, moved to another grid point, deleted, loaded in bulk,
and whole sweeps deleted."""

from __future__ import annotations

import importlib.util
import math
import threading
import time

import pytest
import sqlalchemy as sa

from db import migrate, writes
from db.engine import create_store_engine, resolve_url
from tests.db.known import errs, make_sweep, trial_config

READ = "SELECT * FROM {} ORDER BY sweep, dataset, model, depth, block, shortcut"


def _migration(name: str):
    path = migrate.MIGRATIONS_DIR / "versions" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"m{name}_reference", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _reference_view() -> str:
    """Migration 0009's grid_results (it pooled trial_results itself) as `reference_grid`."""
    sql = _migration("0009_trial_summaries").GRID_RESULTS
    return sql.replace("CREATE VIEW grid_results", "CREATE VIEW reference_grid", 1)


def rows(engine, view: str) -> list[tuple]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.exec_driver_sql(READ.format(view))]


def same(got: list[tuple], want: list[tuple]) -> bool:
    """Row for row equal; floats to the last bits a different summation order may change."""
    if len(got) != len(want):
        return False
    for g, w in zip(got, want):
        for a, b in zip(g, w):
            if isinstance(a, float) and isinstance(b, float):
                if not math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-15):
                    return False
            elif a != b:
                return False
    return True


@pytest.fixture
def checked(engine):
    """The engine with the reference view beside grid_results, and a check that they agree."""
    with engine.begin() as conn:
        conn.exec_driver_sql(_reference_view())

    def check() -> list[tuple]:
        got, want = rows(engine, "grid_results"), rows(engine, "reference_grid")
        assert same(got, want), f"\ngrid_results:   {got}\nreference_grid: {want}"
        return got

    return check


def test_grid_summaries_follow_every_write_path(engine, checked):
    sweep = make_sweep(engine)
    other = make_sweep(engine, name="other")  # a second sweep of the same points stays apart
    grid = checked()
    assert [r[6] for r in grid] == [3, 3, 3, 3]  # n_seeds: A and none of each sweep
    t = sweep.trials

    # A finished trial's results replayed and rewritten (a restored checkpoint): its final changes.
    writes.record_result(engine, t["A-0"], 3, {"train_err": 0.91, "test_err": 0.92})
    checked()
    writes.record_results(engine, [writes.Result(t["A-1"], e, {"train_err": 0.3 / e, "test_err": 0.4 / e})
                                   for e in (4, 2, 5)])  # appends past its last epoch, out of order
    checked()
    writes.record_result(engine, t["A-2"], 3, {"train_err": float("nan"), "test_err": float("nan")})
    checked()

    # A trial that fails after finishing stays finished; an errored one retried to the end joins.
    assert writes.set_trial_status(engine, t["A-0"], "error", error="late", ended=True) == "terminated"
    checked()
    writes.upsert_trial(engine, sweep.id, "A-9", status="pending", config=trial_config(seed=9))
    writes.set_trial_status(engine, t["A-9"], "running")
    writes.record_result(engine, t["A-9"], 2, errs(51, 2))
    checked()
    writes.set_trial_status(engine, t["A-9"], "terminated", ended=True)
    assert [r[6] for r in checked() if r[0] == "known" and r[5] == "A"] == [4]

    # A finished trial registered again with other axes (a replaced trial) moves between points.
    writes.upsert_trial(engine, sweep.id, "none-0", status="terminated", config=trial_config(shortcut="B", seed=0))
    checked()
    writes.upsert_trial(engine, sweep.id, "none-0", status="running", config=trial_config(shortcut="none", seed=0))
    checked()

    # A new trial registered finished (db import) and its results after.
    tid = writes.upsert_trial(engine, sweep.id, "imported", status="terminated", config=trial_config(depth=56))
    checked()
    writes.record_results(engine, [writes.Result(tid, e, errs(7, e)) for e in (1, 2, 3)])
    checked()

    # An interrupted sweep: its running trial whose epochs are all in ends, and joins its point.
    writes.record_results(engine, [writes.Result(t["A-8"], e, errs(61, e)) for e in (2, 3)])
    writes.interrupt_sweep(engine, sweep.id, epochs=3)
    checked()

    # Deleted by hand: one finished trial, then a whole point's, then a whole sweep.
    with engine.begin() as conn:
        conn.exec_driver_sql(f"DELETE FROM trials WHERE id = {t['A-1']}")
    checked()
    with engine.begin() as conn:
        conn.exec_driver_sql(f"DELETE FROM trials WHERE sweep_id = {sweep.id} AND depth = 56")
    assert not [r for r in checked() if r[3] == 56]
    with engine.begin() as conn:
        conn.exec_driver_sql(f"DELETE FROM sweeps WHERE id = {other.id}")
    assert {r[0] for r in checked()} == {"known"}
    with engine.connect() as conn:
        assert conn.exec_driver_sql(f"SELECT count(*) FROM grid_summaries WHERE sweep_id = {other.id}").scalar() == 0


def test_a_bulk_load_is_pooled_by_refresh_summaries(engine, checked):
    """Values and trials loaded around db.writes (db_bench's builders) are pooled by
    refresh_summaries, as they are summarised."""
    sweep = make_sweep(engine)
    with engine.begin() as conn:
        conn.exec_driver_sql("INSERT INTO trials (sweep_id, trial_key, status, dataset, model, depth, block, shortcut, "
                             f"seed, config) VALUES ({sweep.id}, 'loaded', 'terminated', 'cifar10', 'cifar', 20, "
                             "'basic', 'A', 5, '{}')")
        loaded = conn.exec_driver_sql("SELECT id FROM trials WHERE trial_key = 'loaded'").scalar()
        for trial in (loaded, sweep.trials["none-1"]):
            for epoch in (4, 5):
                for name_id, value in ((4, 0.11), (6, 0.07)):  # test_err, train_err
                    conn.exec_driver_sql("INSERT INTO metric_values (trial_id, name_id, epoch, value) "
                                         f"VALUES ({trial}, {name_id}, {epoch}, {value * epoch + trial / 100})")
    assert not same(rows(engine, "grid_results"), rows(engine, "reference_grid"))
    with engine.begin() as conn:
        writes.refresh_summaries(conn, [loaded, sweep.trials["none-1"]])
    assert [r[6] for r in checked()] == [4, 3]


def test_grid_summaries_migration_pools_existing_sweeps_and_downgrades_back(db_url):
    """0010 -> 0011 pools the sweeps already stored; grid_results reads the same rows before,
    after, and after a downgrade back to 0010's view."""
    from alembic import command

    engine = create_store_engine(resolve_url(db_url))
    with engine.begin() as conn:
        command.upgrade(migrate.alembic_config(connection=conn), "0010")
        conn.exec_driver_sql("INSERT INTO sweeps (id, name, spec, spec_hash, status, created_at) "
                             "VALUES (1, 's', '', '', 'finished', CURRENT_TIMESTAMP), "
                             "(2, 't', '', '', 'finished', CURRENT_TIMESTAMP)")
        trials = [(1, 1, 20, "A", 0, "terminated"), (2, 1, 20, "A", 1, "terminated"), (3, 1, 20, "A", 2, "running"),
                  (4, 1, 32, "none", 0, "terminated"), (5, 1, 32, "none", 1, "error"), (6, 2, 20, "A", 0, "terminated"),
                  (7, 2, 20, "A", 1, "terminated"), (8, 2, 20, "A", 2, "terminated")]  # fmt: skip
        for tid, sweep, depth, shortcut, seed, status in trials:
            conn.exec_driver_sql("INSERT INTO trials (id, sweep_id, trial_key, status, dataset, model, depth, block, "
                                 f"shortcut, seed, config) VALUES ({tid}, {sweep}, 'k{tid}', '{status}', 'digits', "
                                 f"'cifar', {depth}, 'basic', '{shortcut}', {seed}, '{{}}')")
            if tid != 7:  # trial 7 finished with no summary: counted, with no finals
                conn.exec_driver_sql(
                    "INSERT INTO trial_summaries (trial_id, epochs, final_epoch, final_train_err, final_test_err, "
                    f"best_test_err, last_epoch) VALUES ({tid}, 3, 3, {0.1 + tid / 7}, "
                    f"{'NULL' if tid == 8 else 0.2 + tid / 11}, 0.1, 3)")
    with engine.connect() as conn:
        before = conn.exec_driver_sql(READ.format("grid_results")).all()
    assert [(r.sweep, r.depth, r.n_seeds) for r in before] == [("s", 20, 2), ("s", 32, 1), ("t", 20, 3)]
    with engine.begin() as conn:
        command.upgrade(migrate.alembic_config(connection=conn), "0011")
    with engine.connect() as conn:
        assert same([tuple(r) for r in conn.exec_driver_sql(READ.format("grid_results"))], [tuple(r) for r in before])
        assert conn.exec_driver_sql("SELECT count(*) FROM grid_summaries").scalar() == 3
    with engine.begin() as conn:
        command.downgrade(migrate.alembic_config(connection=conn), "0010")
    with engine.connect() as conn:
        assert [tuple(r) for r in conn.exec_driver_sql(READ.format("grid_results"))] == [tuple(r) for r in before]
        assert "grid_summaries" not in sa.inspect(conn).get_table_names()
    engine.dispose()


def test_two_trials_of_one_point_ending_at_once_are_both_pooled(engine, checked):
    """Two writers end two trials of one grid point in overlapping transactions: the point
    counts both. (On PostgreSQL, without the grid lock, the later writer pooled from a snapshot
    that lacked the earlier one's uncommitted trial and its upsert overwrote the point's row
    with one seed too few; SQLite's database lock serialises the writers.)"""
    sweep = make_sweep(engine)
    ids = []
    for seed in (20, 21):
        tid = writes.upsert_trial(engine, sweep.id, f"A-{seed}", status="running", config=trial_config(seed=seed))
        writes.record_results(engine, [writes.Result(tid, e, errs(seed, e)) for e in (1, 2, 3)])
        ids.append(tid)
    first, second = ids
    done = threading.Event()

    def end_second() -> None:
        writes.set_trial_status(engine, second, "terminated", ended=True)
        done.set()

    with engine.begin() as conn:  # the first writer: its trial ended and pooled, not yet committed
        conn.exec_driver_sql(f"UPDATE trials SET status = 'terminated' WHERE id = {first}")
        writes._pool_points(conn, "trial", [{"trial_id": first}])
        other = threading.Thread(target=end_second)
        other.start()
        time.sleep(1.0)
        assert not done.is_set()  # the second writer waits for the first to commit
    other.join(timeout=30)
    assert done.is_set()
    assert [r[6] for r in checked() if r[5] == "A"] == [5]  # 3 seeds, and both new ones
