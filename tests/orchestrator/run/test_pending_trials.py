"""How many trials of a grid Tune stages ahead: as many as run at once on the driver's own local
Ray (Tune's own rule, up to 200, on a cluster that may grow, and for a searcher)."""

from __future__ import annotations

import os
import textwrap

from orchestrator.run.spec import parse_spec
from orchestrator.run.tuner import (
    PENDING_TRIALS_ENV,
    max_pending_trials,
    pending_trials,
)


def spec_of(extra: str = "", resources: str = "{cpu: 1}") -> object:
    return parse_spec(textwrap.dedent(f"""\
        name: s
        dataset: synthetic
        model: cifar
        grid: {{depth: [8], seed: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]}}
        train: {{epochs: 2}}
        resources: {resources}
        """) + extra)


def test_a_grid_stages_as_many_trials_as_the_node_runs_at_once_and_never_fewer_than_two():
    assert max_pending_trials(spec_of(), {"CPU": 16.0}) == 16
    assert max_pending_trials(spec_of(resources="{cpu: 2}"), {"CPU": 2.0}) == 2  # one at a time: still 2
    assert max_pending_trials(spec_of(resources="{cpu: 0.5}"), {"CPU": 2.0}) == 4
    assert max_pending_trials(spec_of(resources="{cpu: 1, gpu: 0.25}"), {"CPU": 16.0, "GPU": 1.0}) == 4


def test_a_searcher_keeps_tunes_own_rule():
    spec = spec_of("search:\n  algorithm: optuna\n  num_samples: 4\n  metric: test_err\n  mode: min\n"
                   "  space: {lr: {log_uniform: [0.01, 0.1]}}\n")
    assert max_pending_trials(spec, {"CPU": 2.0}) is None


def test_the_limit_is_set_for_the_run_only_and_a_users_own_setting_wins(monkeypatch):
    monkeypatch.delenv(PENDING_TRIALS_ENV, raising=False)
    with pending_trials(3):
        assert os.environ[PENDING_TRIALS_ENV] == "3"
    assert PENDING_TRIALS_ENV not in os.environ
    with pending_trials(None):
        assert PENDING_TRIALS_ENV not in os.environ
    monkeypatch.setenv(PENDING_TRIALS_ENV, "50")
    with pending_trials(3):
        assert os.environ[PENDING_TRIALS_ENV] == "50"
    assert os.environ[PENDING_TRIALS_ENV] == "50"


def test_the_environment_tune_reads_is_set_for_the_run_only(monkeypatch):
    from orchestrator.run.tuner import TUNE_ENV, environment

    monkeypatch.delenv("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", raising=False)
    monkeypatch.setenv("RAY_AIR_NEW_OUTPUT", "1")  # the user's own value
    with environment(TUNE_ENV):
        assert os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] == "1"
        assert os.environ["RAY_AIR_NEW_OUTPUT"] == "0"
    assert "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS" not in os.environ
    assert os.environ["RAY_AIR_NEW_OUTPUT"] == "1"
    try:
        with environment(TUNE_ENV):
            raise KeyboardInterrupt  # a stop during the run restores it too
    except KeyboardInterrupt:
        pass
    assert "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS" not in os.environ
