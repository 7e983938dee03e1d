"""The dashboard's grid cells are the pooled final errors (resweep.pooling, tested against the
grid_results view in tests/resweep/test_pooling.py) in percent."""

from __future__ import annotations

import numpy as np

from dashboard import aggregate
from db import queries
from resweep import pooling
from tests.dashboard.conftest import DEPTH_SWEEP


def test_grid_cells_are_the_pooled_final_errors_in_percent(built_engine):
    trials = queries.trials(built_engine, DEPTH_SWEEP)
    cells, pooled = aggregate.grid_cells(trials), pooling.final_errors(trials)
    assert len(cells) == 4 and cells[pooling.GROUP_AXES].equals(pooled[pooling.GROUP_AXES])
    assert (cells["n_seeds"] == pooled["n_seeds"]).all()
    for column in ("train_err_mean", "train_err_std", "test_err_mean", "test_err_std", "test_err_best"):
        assert np.allclose(cells[column], pooled[column] * 100), column
