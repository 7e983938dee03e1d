"""The dashboard's seed aggregation agrees with the database's own views and with pandas."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dashboard import aggregate
from db import queries
from db.engine import get_engine
from tests.dashboard.conftest import DEPTH_SWEEP, build


@pytest.fixture
def engine(db_url):
    build(db_url)
    engine = get_engine(db_url, create=False)
    yield engine
    engine.dispose()


def test_grid_cells_equal_the_grid_results_view(engine):
    ours = aggregate.grid_cells(queries.trials(engine, DEPTH_SWEEP))
    view = queries.grid(engine, DEPTH_SWEEP)
    keys = aggregate.GROUP_AXES
    merged = ours.merge(view, on=keys, suffixes=("", "_view"))
    assert len(merged) == len(view) == 4
    assert (merged["n_seeds"] == merged["n_seeds_view"]).all()
    for column in ("train_err_mean", "train_err_std", "test_err_mean", "test_err_std"):
        assert np.allclose(merged[column], merged[f"{column}_view"] * 100), column


def test_curve_sums_of_blocks_combine_to_the_plain_mean_and_std(engine):
    trials = queries.trials(engine, DEPTH_SWEEP)
    curves = queries.curves(engine, trials["trial_id"], ["test_err", "train_err"])
    halves = [trials.iloc[::2], trials.iloc[1::2]]  # every group split across two blocks
    combined = aggregate.bands_from_sums(pd.concat([
        aggregate.curve_sums(curves[curves["trial_id"].isin(h["trial_id"])], h) for h in halves
    ]))  # fmt: skip
    merged = curves.merge(trials[["trial_id", *aggregate.GROUP_AXES]], on="trial_id")
    g = merged.groupby([*aggregate.GROUP_AXES, "name", "epoch"])["value"]
    plain = pd.DataFrame({"mean": g.mean(), "std": g.std(ddof=1), "n": g.count()}).reset_index()
    both = combined.merge(plain, on=[*aggregate.GROUP_AXES, "name", "epoch"], suffixes=("", "_pd"))
    assert len(both) == len(plain) == len(combined)
    assert np.allclose(both["mean"], both["mean_pd"])
    assert np.allclose(both["std"], both["std_pd"], equal_nan=True)
    assert (both["n"] == both["n_pd"]).all()
