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
