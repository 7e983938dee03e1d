"""Seed pooling agrees with the database's own view and with pandas' mean and std (ddof=1), and
the curves' sums cached in blocks combine to the same numbers; frames from the dashboard's fixture
database and by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from db import queries
from resweep import pooling
from tests.dashboard.conftest import DEPTH_SWEEP, built_engine  # noqa: F401 (a fixture)


def test_final_errors_equal_the_grid_results_view_plus_the_best_seed(built_engine):
    trials = queries.trials(built_engine, DEPTH_SWEEP)
    ours = pooling.final_errors(trials)
    view = queries.grid(built_engine, DEPTH_SWEEP)
    merged = ours.merge(view, on=pooling.GROUP_AXES, suffixes=("", "_view"))
    assert len(merged) == len(view) == len(ours) == 4
    assert (merged["n_seeds"] == merged["n_seeds_view"]).all()
    for column in ("train_err_mean", "train_err_std", "test_err_mean", "test_err_std"):
        assert np.allclose(merged[column], merged[f"{column}_view"]), column
    done = trials[trials["status"] == "terminated"]
    best = done.groupby(pooling.GROUP_AXES)["final_test_err"].min().rename("want").reset_index()
    both = ours.merge(best, on=pooling.GROUP_AXES)
    assert np.allclose(both["test_err_best"], both["want"])


def test_curve_sums_of_blocks_combine_to_the_plain_mean_and_std(built_engine):
    trials = queries.trials(built_engine, DEPTH_SWEEP)
    curves = queries.curves(built_engine, trials["trial_id"], ["test_err", "train_err"])
    halves = [trials.iloc[::2], trials.iloc[1::2]]  # every group split across two blocks
    combined = pooling.bands_from_sums(pd.concat([
        pooling.curve_sums(curves[curves["trial_id"].isin(h["trial_id"])], h) for h in halves
    ]))  # fmt: skip
    merged = curves.merge(trials[["trial_id", *pooling.GROUP_AXES]], on="trial_id")
    g = merged.groupby([*pooling.GROUP_AXES, "name", "epoch"])["value"]
    plain = pd.DataFrame({"mean": g.mean(), "std": g.std(ddof=1), "n": g.count()}).reset_index()
    keys = [*pooling.GROUP_AXES, "name", "epoch"]
    for bands in (combined, pooling.curve_bands(curves, trials)):  # in blocks (dashboard), at once (report)
        both = bands.merge(plain, on=keys, suffixes=("", "_pd"))
        assert len(both) == len(plain) == len(bands)
        assert np.allclose(both["mean"], both["mean_pd"])
        assert np.allclose(both["std"], both["std_pd"], equal_nan=True)
        assert (both["n"] == both["n_pd"]).all()


TRIALS = pd.DataFrame([
    dict(trial_id=i, dataset="cifar10", model="cifar", depth=20, block="basic", shortcut=s, seed=seed)
    for i, (s, seed) in enumerate([("none", 0), ("none", 1), ("A", 0)], start=1)
])  # fmt: skip
# layer responses: trial 1 (plain, seed 0) 3.0, 1.0; trial 2 (plain, seed 1) 5.0, 2.0; trial 3 (A) 1.0, 4.0
LAYERS = pd.DataFrame([
    dict(trial_id=t, epoch=e, layer=layer, std=v)
    for t, e, values in [(1, 3, (3.0, 1.0)), (2, 2, (5.0, 2.0)), (3, 3, (1.0, 4.0))]
    for layer, v in enumerate(values)
])  # fmt: skip


def test_layer_profiles_pool_each_layer_over_seeds_and_rank_by_magnitude():
    prof = pooling.layer_profiles(LAYERS, TRIALS).set_index(["shortcut", "layer"])
    plain0, plain1 = prof.loc[("none", 0)], prof.loc[("none", 1)]
    assert (plain0["mean"], plain0["std"], plain0["n"], plain0["epoch"]) == (4.0, pytest.approx(np.sqrt(2)), 2, 3)
    assert (plain1["mean"], plain1["std"], plain1["n"]) == (1.5, pytest.approx(np.sqrt(0.5)), 2)
    assert (plain0["rank"], plain1["rank"]) == (0, 1)
    assert (prof.loc[("A", 0), "rank"], prof.loc[("A", 1), "rank"]) == (1, 0)  # layer 1 is the larger
    assert np.isnan(prof.loc[("A", 0), "std"])  # one seed: no spread
    assert pooling.layer_profiles(LAYERS.iloc[0:0], TRIALS).empty


def test_response_summary_averages_layers_then_seeds():
    summary = pooling.response_summary(LAYERS, TRIALS).set_index("shortcut")
    assert summary.loc["none", "std_mean"] == pytest.approx((2.0 + 3.5) / 2)
    assert summary.loc["none", "std_std"] == pytest.approx(np.std([2.0, 3.5], ddof=1))
    assert (summary.loc["none", "n_seeds"], summary.loc["A", "n_seeds"]) == (2, 1)
    assert pooling.response_summary(LAYERS.iloc[0:0], TRIALS).empty
