"""Results out of a real sweep: trained models back and exports.

The session's tiny sweep on scikit-learn's digits (conftest.py: two 8-layer nets, plain and
residual, 2 epochs), launched once through the real command line on the session's Ray cluster;
test_trackers_readback.py reads the same sweep's tracker mirrors.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import torch

from tests.orchestrator.conftest import run_cli
from tests.orchestrator.results.conftest import EPOCHS, NAME, DigitsSweep
from tests.orchestrator.run.test_sweeps_e2e import rows

pytestmark = [pytest.mark.ray, pytest.mark.slow]

METRICS = ["epoch_time_s", "images_per_s", "lr", "test_err", "test_loss", "train_err", "train_loss"]


def cli(*args: str, cwd: Path, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return run_cli(*args, cwd=cwd, env=env, timeout=timeout)


class Sweep:
    def __init__(self, root: Path, url: str):
        self.root, self.url = root, url
        self.results = root / "results" / NAME

    def trials(self) -> list:
        return rows(self.url, "SELECT r.trial_id, r.shortcut, r.final_test_err, t.checkpoint_uri, t.config "
                              "FROM trial_results r JOIN trials t ON t.id = r.trial_id ORDER BY r.shortcut")


@pytest.fixture(scope="module")
def sweep(digits_sweep: DigitsSweep) -> Sweep:
    return Sweep(digits_sweep.root, digits_sweep.url)


def test_each_trial_records_its_final_checkpoint(sweep):
    trials = sweep.trials()
    assert len(trials) == 2
    for _, _, _, uri, _ in trials:
        assert uri and Path(uri).is_relative_to(sweep.results)
        assert Path(uri).name == f"checkpoint_{EPOCHS - 1:06d}"  # Tune numbers from 0: the last epoch's
        assert (Path(uri) / "checkpoint.pt").is_file()


def _test_error(model: torch.nn.Module, config: dict) -> float:
    """The model's error on the trial's test split, loaded as the trial loaded it."""
    from trainers.data import load_data
    from trainers.trainable import TrialConfig

    cfg = TrialConfig.from_dict(config)
    data = load_data(cfg.dataset, cfg.data_dir, val_size=cfg.val_size, max_train_samples=cfg.max_train_samples,
                     augment=False, synthetic=cfg.synthetic)
    wrong = 0
    with torch.no_grad():
        for start in range(0, len(data.test), 512):
            x, y = data.test.x[start:start + 512], data.test.y[start:start + 512]
            wrong += int((model(x).argmax(1) != y).sum())
    return wrong / len(data.test)


def test_loaded_model_reproduces_the_recorded_final_test_error_exactly(sweep):
    import resweep

    for trial_id, shortcut, final_test_err, _, config in sweep.trials():
        model = resweep.load_model(trial_id, db=sweep.url)
        assert isinstance(model, torch.nn.Module) and not model.training
        assert _test_error(model, json.loads(config)) == final_test_err, shortcut
    untrained = _test_error(_fresh(json.loads(config)), json.loads(config))
    assert untrained != final_test_err  # the weights matter: a new net of the same config does worse


def _fresh(config: dict) -> torch.nn.Module:
    from trainers.models import build_model

    torch.manual_seed(123)
    return build_model(config["model"], config["depth"], config["block"], config["shortcut"], 10, 1).eval()


def test_model_command_writes_one_file_torch_loads_with_weights_only(sweep):
    from trainers.restore import load_model_file

    trial_id, shortcut, final_test_err, uri, config = sweep.trials()[1]
    out = sweep.root / "models" / "plain8.pt"
    done = cli("model", str(trial_id), "--db", sweep.url, "--out", str(out), cwd=sweep.root)
    assert done.returncode == 0, done.stdout + done.stderr
    assert str(out) in done.stdout and uri in done.stdout

    saved = torch.load(out, weights_only=True)
    assert saved["format"] == "resweep-model/1" and saved["trial_id"] == trial_id and saved["sweep"] == NAME
    assert {k: v for k, v in saved["config"].items() if k != "architecture"} == json.loads(config)
    assert saved["config"]["architecture"]["shortcut_padding"] == "after" and saved["epoch"] == EPOCHS
    assert saved["input_mean"].shape == (1, 1, 8, 8)
    assert all(isinstance(v, torch.Tensor) for v in saved["state_dict"].values())
    assert _test_error(load_model_file(out), json.loads(config)) == final_test_err
    assert not list(out.parent.glob(".*partial"))


def test_model_of_a_missing_checkpoint_is_one_line_saying_where_it_looked(sweep):
    trial_id, _, _, uri, _ = sweep.trials()[0]
    moved = sweep.results.with_name(NAME + "-moved")
    os.rename(sweep.results, moved)
    try:
        out = sweep.root / "gone.pt"
        done = cli("model", str(trial_id), "--db", sweep.url, "--out", str(out), cwd=sweep.root)
    finally:
        os.rename(moved, sweep.results)
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith(f"error: {uri}/checkpoint.pt: no checkpoint there") and "moved or removed" in line
    assert not out.exists()

    unknown = cli("model", "9999", "--db", sweep.url, "--out", str(out), cwd=sweep.root)
    assert unknown.returncode == 2 and unknown.stderr.strip() == (
        f"error: trial 9999: no such trial in {sweep.url} "
        "(db.trials(SWEEP) or `python -m orchestrator status NAME` list them)")


@pytest.mark.parametrize("fmt", ["csv", "parquet", "json"])
def test_export_writes_trials_metrics_long_and_wide_layers_and_sweep_json(sweep, fmt):
    out = sweep.root / f"export-{fmt}"
    done = cli("export", NAME, "--format", fmt, "--out", str(out), "--db", sweep.url, cwd=sweep.root)
    assert done.returncode == 0, done.stdout + done.stderr
    files = sorted(p.name for p in out.iterdir())
    assert files == sorted([f"trials.{fmt}", f"metrics.{fmt}", f"metrics_wide.{fmt}", f"layer_stats.{fmt}",
                            "sweep.json"])
    # pandas reads JSON floats to 15 digits unless asked for precise_float; the file has every digit.
    read = {"csv": pd.read_csv, "parquet": pd.read_parquet,
            "json": functools.partial(pd.read_json, precise_float=True)}[fmt]

    trials = read(out / f"trials.{fmt}")
    assert sorted(trials["shortcut"]) == ["A", "none"] and set(trials["status"]) == {"terminated"}
    config = trials["config"][0]
    assert (json.loads(config) if isinstance(config, str) else config)["dataset"] == "digits"

    long = read(out / f"metrics.{fmt}")
    assert list(long.columns) == ["trial_id", "epoch", "name", "value"]
    assert len(long) == rows(sweep.url, "SELECT count(*) FROM metrics")[0][0] == 2 * EPOCHS * len(METRICS)
    wide = read(out / f"metrics_wide.{fmt}")
    assert list(wide.columns) == ["trial_id", "dataset", "model", "depth", "block", "shortcut", "seed", "epoch",
                                  *METRICS]
    assert len(wide) == 2 * EPOCHS
    final = wide[wide["epoch"] == EPOCHS].set_index("trial_id")["test_err"]
    recorded = {t: err for t, _, err, _, _ in sweep.trials()}
    assert final.to_dict() == recorded

    layers = read(out / f"layer_stats.{fmt}")
    assert list(layers.columns) == ["trial_id", "epoch", "layer", "name", "stage", "std", "mean"]
    assert len(layers) == rows(sweep.url, "SELECT count(*) FROM layer_stats")[0][0] == 2 * EPOCHS * 7  # 7 3x3 conv layers in an 8-layer net

    info = json.loads((out / "sweep.json").read_text())
    assert info["name"] == NAME and info["status"] == "finished" and "probes:" in info["spec"]
    assert info["spec_parsed"]["grid"]["shortcut"] == ["none", "A"]
    assert len(info["git_commit"]) == 40 and isinstance(info["git_dirty"], bool)
    assert info["export"]["rows"]["metrics"] == len(long)


def test_export_of_an_unknown_sweep_is_one_line_and_writes_nothing(sweep):
    out = sweep.root / "export-none"
    done = cli("export", "nope", "--out", str(out), "--db", sweep.url, cwd=sweep.root)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"error: export: no sweep named 'nope' in {sweep.url} (`python -m orchestrator status` lists the sweeps)"]
    assert not out.exists()
