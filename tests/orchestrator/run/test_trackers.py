"""The `loggers:` key: validated with the rest of the sweep file (a missing package is one line,
before Ray starts) and turned into Ray Tune's own logger callbacks. Their output is tested on a
real sweep in test_results.py."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from orchestrator.run.spec import SpecError, parse_spec
from tests.orchestrator.conftest import cli_env

GOOD = """\
name: tracked
dataset: synthetic
model: cifar
grid: {depth: [8]}
train: {epochs: 1}
"""


def problems(text: str) -> list[str]:
    with pytest.raises(SpecError) as info:
        parse_spec(text, "bad.yaml")
    return info.value.problems


def test_loggers_default_to_none():
    assert parse_spec(GOOD).loggers == []


def test_loggers_become_ray_tunes_own_callbacks_in_order():
    from ray.air.integrations.mlflow import MLflowLoggerCallback
    from ray.air.integrations.wandb import WandbLoggerCallback
    from ray.tune.logger import TBXLoggerCallback

    from orchestrator.run.trackers import logger_callbacks

    spec = parse_spec(GOOD + "loggers: [mlflow, tensorboard, wandb]\n")
    mlflow, tensorboard, wandb = logger_callbacks(spec)
    assert type(mlflow).__name__ == "MlflowMirror" and mlflow.experiment_name == "tracked"
    assert isinstance(tensorboard, TBXLoggerCallback)
    assert type(wandb).__name__ == "WandbMirror" and wandb.ray is None  # Ray's callback, made in setup()
    assert isinstance(MLflowLoggerCallback, type) and isinstance(WandbLoggerCallback, type)


def test_a_logger_entry_may_carry_options():
    from orchestrator.run.trackers import logger_callbacks, logger_entries

    spec = parse_spec(GOOD + "loggers: [tensorboard, {mlflow: {log_model: true}}]\n")
    assert logger_entries(spec) == {"tensorboard": {}, "mlflow": {"log_model": True}}
    assert logger_callbacks(spec)[1].log_model is True
    assert problems(GOOD + "loggers: [{mlflow: {log_modle: true}}]\n") == [
        "bad.yaml: loggers[0].mlflow.log_modle: unknown key (allowed: log_model)"]


def test_importing_the_trackers_imports_neither_mlflow_nor_wandb():
    code = "import sys, orchestrator.run.trackers; print(sorted({'mlflow', 'wandb'} & set(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], env=cli_env(), capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "[]", done.stderr


def test_an_unknown_logger_lists_the_allowed_ones():
    assert problems(GOOD + "loggers: [neptune]\n") == [
        "bad.yaml: loggers[0]: 'neptune' is not allowed (allowed: tensorboard, mlflow, wandb)"]


def test_a_logger_whose_package_is_missing_is_one_line(monkeypatch):
    # sys.modules[name] = None is Python's own way to make a module unimportable: find_spec says None.
    monkeypatch.setitem(sys.modules, "mlflow", None)
    assert problems(GOOD + "loggers: [tensorboard, mlflow]\n") == [
        'bad.yaml: loggers[1]: mlflow needs the mlflow package, which is not installed '
        '(pip install -e ".[mlflow]", or remove it from loggers)']


def test_launch_with_a_missing_logger_package_stops_before_ray_and_writes_nothing(tmp_path):
    sweep = tmp_path / "tracked.yaml"
    sweep.write_text(GOOD + "loggers: [wandb]\n")
    code = textwrap.dedent(f"""\
        import sys
        sys.modules["wandb"] = None  # as if wandb were not installed
        sys.argv = ["orchestrator", "launch", {str(sweep)!r}, "--db", "sqlite:///{tmp_path / 'r.db'}",
                    "--results", {str(tmp_path / 'results')!r}]
        from orchestrator.cli.app import main
        main()
        """)
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=cli_env(), capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f'error: {sweep}: loggers[0]: wandb needs the wandb package, which is not installed '
        '(pip install -e ".[wandb]", or remove it from loggers)']
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tracked.yaml"]  # no database, no results


def test_callbacks_counted_by_name_match_ray_tunes_own_count():
    """orchestrator.run.tuner counts a run's callbacks for Ray's usage tag without importing the
    tracker integrations; the counts must be Ray's, for resweep's callbacks, the trackers' (by
    class, as `loggers:` makes them), Tune's file loggers, and anything else."""
    from ray.air._internal.usage import _count_callbacks
    from ray.tune import Callback
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback, LoggerCallback

    from orchestrator.run.progress import Progress
    from orchestrator.run.recorder import Recorder
    from orchestrator.run.trackers import logger_callbacks
    from orchestrator.run.ray_compat import TRACKER_CALLBACKS, count_callbacks_by_name

    class Mine(Callback):
        pass

    class MyLogger(LoggerCallback):
        pass

    trackers = logger_callbacks(parse_spec(GOOD + "loggers: [tensorboard, mlflow, wandb]\n"))
    assert {type(c).__name__ for c in trackers} == {"TensorBoardMirror", "MlflowMirror", "WandbMirror"}
    ours = [Recorder.__new__(Recorder), Progress.__new__(Progress), CSVLoggerCallback(), JsonLoggerCallback()]
    for callbacks in ([], ours, [*ours, *trackers], [Mine(), MyLogger(), MyLogger(), object(), *trackers]):
        assert count_callbacks_by_name(callbacks) == _count_callbacks(callbacks), callbacks
    assert count_callbacks_by_name(ours) == {"CustomCallback": 2, "CSVLoggerCallback": 1, "JsonLoggerCallback": 1}
    # Each integration module named holds the class named (so an import of one turns Ray's count back on).
    import importlib

    for module, name in TRACKER_CALLBACKS.items():
        assert hasattr(importlib.import_module(module), name), (module, name)
