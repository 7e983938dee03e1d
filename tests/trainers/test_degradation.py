"""The paper's degradation problem, reproduced on real data (scikit-learn's digits) in seconds a net."""

from __future__ import annotations

import pytest

from trainers.trainable import LocalReporter, train

RECIPE = {"dataset": "digits", "epochs": 15, "seed": 0, "batch_size": 64, "lr": 0.1, "momentum": 0.9,
          "weight_decay": 1e-4, "lr_milestones": [], "augment": False, "probes_every": 15, "checkpoint_every": 15}


def _final_train_err(depth: int, shortcut: str) -> float:
    reporter = LocalReporter()
    train({**RECIPE, "depth": depth, "shortcut": shortcut}, reporter)
    return reporter.results[-1]["train_err"]


@pytest.mark.slow
def test_deeper_plain_net_trains_worse_and_residual_learning_fixes_it():
    plain20, plain56, residual56 = _final_train_err(20, "none"), _final_train_err(56, "none"), _final_train_err(56, "A")
    assert plain56 > plain20 + 0.2, (plain20, plain56)  # degradation: more layers, higher *training* error
    assert residual56 < plain56 - 0.3, (plain56, residual56)  # the same depth with shortcuts trains
