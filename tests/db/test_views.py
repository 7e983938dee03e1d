"""The views users query, against numbers computed by hand from what was written."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from db import writes
from tests.db.known import errs, make_sweep, sample_std, trial_config


def rows(engine, sql: str) -> list[dict]:
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(sa.text(sql)).mappings()]


def test_trial_results_has_one_row_per_trial_with_final_and_best_errors(engine):
    sweep = make_sweep(engine)
    got = {r["trial_id"]: r for r in rows(engine, "SELECT * FROM trial_results")}
    assert set(got) == set(sweep.trials.values())
    for n, key in enumerate(["none-0", "none-1", "none-2", "A-0", "A-1", "A-2"]):
        r = got[sweep.trials[key]]
        shortcut, seed = key.split("-")
        assert (r["sweep"], r["dataset"], r["model"], r["depth"], r["block"], r["shortcut"], r["seed"]) == (
            "known", "cifar10", "cifar", 20, "basic", shortcut, int(seed))  # fmt: skip
        assert (r["status"], r["epochs"], r["params_count"]) == ("terminated", 3, 270_000)
        assert r["final_train_err"] == pytest.approx(errs(n, 3)["train_err"])
        assert r["final_test_err"] == pytest.approx(errs(n, 3)["test_err"])
        assert r["best_test_err"] == pytest.approx(min(errs(n, e)["test_err"] for e in (1, 2, 3)))
    errored = got[sweep.trials["A-9"]]
    assert (errored["status"], errored["epochs"], errored["final_test_err"]) == ("error", 1, errs(50, 1)["test_err"])
    assert list(rows(engine, "SELECT * FROM trial_results")[0]) == [
        "sweep", "trial_id", "dataset", "model", "depth", "block", "shortcut", "seed", "status",
        "epochs", "final_train_err", "final_test_err", "best_test_err", "params_count",
    ]  # fmt: skip


def test_final_means_at_the_last_recorded_epoch_even_if_a_metric_is_missing_there(engine):
    sweep_id = writes.create_sweep(engine, name="gap", spec="", spec_hash="")
    tid = writes.upsert_trial(engine, sweep_id, "t", status="running", config=trial_config())
    writes.record_result(engine, tid, 1, {"train_err": 0.5, "test_err": 0.4})
    writes.record_result(engine, tid, 2, {"train_err": 0.3, "test_err": 0.45})
    writes.record_result(engine, tid, 3, {"train_err": 0.2})  # test set not evaluated
    (r,) = rows(engine, "SELECT * FROM trial_results")
    assert (r["epochs"], r["final_train_err"], r["final_test_err"], r["best_test_err"]) == (3, 0.2, None, 0.4)


def test_grid_results_average_finished_trials_over_seeds(engine):
    make_sweep(engine)
    got = rows(engine, "SELECT * FROM grid_results ORDER BY shortcut")
    assert [r["shortcut"] for r in got] == ["A", "none"]
    for r, trials in zip(got, ([3, 4, 5], [0, 1, 2])):  # errored A-9 and running A-8 left out
        train = [errs(n, 3)["train_err"] for n in trials]
        test = [errs(n, 3)["test_err"] for n in trials]
        assert (r["sweep"], r["dataset"], r["model"], r["depth"], r["block"], r["n_seeds"]) == (
            "known", "cifar10", "cifar", 20, "basic", 3)  # fmt: skip
        assert r["train_err_mean"] == pytest.approx(sum(train) / 3)
        assert r["test_err_mean"] == pytest.approx(sum(test) / 3)
        assert r["train_err_std"] == pytest.approx(sample_std(train))
        assert r["test_err_std"] == pytest.approx(sample_std(test))
    assert list(got[0]) == [
        "sweep", "dataset", "model", "depth", "block", "shortcut", "n_seeds",
        "train_err_mean", "train_err_std", "test_err_mean", "test_err_std",
    ]  # fmt: skip


def test_one_seed_has_no_std_and_equal_seeds_have_zero(engine):
    sweep_id = writes.create_sweep(engine, name="g", spec="", spec_hash="")
    for key, depth, seed in (("a", 20, 0), ("b", 32, 0), ("c", 32, 1)):
        tid = writes.upsert_trial(engine, sweep_id, key, status="running", config=trial_config(depth=depth, seed=seed))
        writes.record_result(engine, tid, 1, {"train_err": 0.1, "test_err": 0.3})
        writes.set_trial_status(engine, tid, "terminated")
    got = {r["depth"]: r for r in rows(engine, "SELECT * FROM grid_results")}
    assert (got[20]["n_seeds"], got[20]["test_err_std"]) == (1, None)
    assert (got[32]["n_seeds"], got[32]["test_err_std"]) == (2, pytest.approx(0.0))


def _lean_trial_results() -> str:
    """Migration 0007's `trial_results` (it aggregated metric_values itself), frozen there: the
    definition trial_summaries must keep, created beside the real view as `reference_results`."""
    import importlib.util

    from db import migrate

    path = migrate.MIGRATIONS_DIR / "versions" / "0007_lean_metrics.py"
    spec = importlib.util.spec_from_file_location("m0007_reference", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.TRIAL_RESULTS.replace("CREATE VIEW trial_results", "CREATE VIEW reference_results", 1)


def test_trial_summaries_stay_the_views_definition_through_replays_rewrites_and_gaps(engine):
    """trial_results reads trial_summaries, which db.writes recomputes on every write: after
    replayed epochs that change the best and the final value, NaN, a metric missing at the last
    epoch, a trial with only test_err and one with no metrics, it equals the view that
    aggregated metric_values itself (migration 0007's) row for row."""
    with engine.begin() as conn:
        conn.exec_driver_sql(_lean_trial_results())
    sql = "SELECT * FROM {} ORDER BY trial_id"

    def write(trial: str, epoch: int, metrics: dict) -> None:  # then the two views agree
        writes.record_result(engine, tid[trial], epoch, metrics)
        assert rows(engine, sql.format("trial_results")) == rows(engine, sql.format("reference_results"))

    sweep_id = writes.create_sweep(engine, name="replays", spec="", spec_hash="")
    tid = {k: writes.upsert_trial(engine, sweep_id, k, status="running", config=trial_config(seed=i))
           for i, k in enumerate(["replayed", "nan", "test-only", "empty", "batched"])}  # fmt: skip
    for epoch, test in enumerate([0.5, 0.2, 0.4, 0.35], start=1):
        write("replayed", epoch, {"train_err": test + 0.1, "test_err": test})
    # The trial is restored from its checkpoint at epoch 1 and reports epochs 2-3 again, worse:
    # the old best (0.2 at epoch 2) is gone, and epoch 4 stays the last; then it goes on.
    write("replayed", 2, {"train_err": 0.6, "test_err": 0.55})
    write("replayed", 3, {"train_err": 0.5, "test_err": 0.45})
    write("replayed", 5, {"train_err": 0.3, "test_err": 0.3})
    write("replayed", 6, {"train_err": 0.25})  # the test set's value for epoch 6 comes later
    write("replayed", 6, {"test_err": 0.33})
    write("nan", 1, {"train_err": 0.3, "test_err": 0.3})
    write("nan", 2, {"train_err": float("nan"), "test_err": float("nan")})
    write("test-only", 1, {"test_err": 0.7, "lr": 0.1})
    write("test-only", 2, {"test_err": 0.6})
    write("empty", 1, {"lr": 0.1, "epoch_time_s": 1.0})
    writes.record_results(engine, [writes.Result(tid["batched"], e, {"train_err": 1 / e, "test_err": 1 / e + 0.01})
                                   for e in (3, 1, 2, 1)])  # fmt: skip
    write("batched", 4, {"train_err": 0.2, "test_err": 0.21})
    got, want = rows(engine, sql.format("trial_results")), rows(engine, sql.format("reference_results"))
    assert got == want
    by_key = {r["trial_id"]: r for r in got}
    replayed = by_key[tid["replayed"]]
    assert (replayed["epochs"], replayed["final_test_err"], replayed["best_test_err"]) == (6, 0.33, 0.3)
    nan = by_key[tid["nan"]]
    assert (nan["epochs"], nan["final_train_err"], nan["final_test_err"], nan["best_test_err"]) == (2, None, None, 0.3)
    assert [by_key[tid[k]]["epochs"] for k in ("test-only", "empty", "batched")] == [0, 0, 4]
    assert by_key[tid["test-only"]]["best_test_err"] == 0.6
    assert by_key[tid["batched"]]["final_test_err"] == 0.21


def test_a_deleted_trial_takes_its_summary_with_it(engine):
    sweep = make_sweep(engine)
    gone = sweep.trials["A-0"]
    with engine.begin() as conn:
        conn.exec_driver_sql(f"DELETE FROM trials WHERE id = {gone}")
    assert rows(engine, f"SELECT * FROM trial_summaries WHERE trial_id = {gone}") == []
    assert len(rows(engine, "SELECT * FROM trial_summaries")) == len(sweep.trials) - 1


def test_refresh_summaries_summarises_values_loaded_around_the_writer(engine):
    """A bulk load into metric_values (as db_bench's) leaves trial_summaries behind; after
    db.writes.refresh_summaries, trial_results equals the aggregating view again."""
    with engine.begin() as conn:
        conn.exec_driver_sql(_lean_trial_results())
    sweep = make_sweep(engine)
    fresh = writes.upsert_trial(engine, sweep.id, "loaded", status="terminated", config=trial_config(seed=42))
    stale = sweep.trials["A-0"]
    with engine.begin() as conn:
        for epoch, value in ((1, 0.9), (2, 0.1), (3, 0.4)):
            for trial in (fresh, stale):
                for name_id in (4, 6):  # test_err, train_err
                    conn.exec_driver_sql(
                        "INSERT INTO metric_values (trial_id, name_id, epoch, value) VALUES "
                        f"({trial}, {name_id}, {epoch + 10}, {value + name_id / 100})")
    sql = "SELECT * FROM {} ORDER BY trial_id"
    assert rows(engine, sql.format("trial_results")) != rows(engine, sql.format("reference_results"))
    with engine.begin() as conn:
        writes.refresh_summaries(conn, [fresh, stale])
    assert rows(engine, sql.format("trial_results")) == rows(engine, sql.format("reference_results"))
