"""One tiny real sweep for the session, read by the results tests of several modules.

Sweep `results-digits` on scikit-learn's digits: plain-8 and ResNet-8 (A), seed 0, 2 epochs,
layer responses and a checkpoint every epoch, launched once through the real command line on the
session's Ray cluster with every tracker mirror on (`loggers: [tensorboard, {mlflow: {log_model:
true}}, wandb]`). test_results.py reads its models and exports, test_trackers_readback.py its
mirrors and model files. Tests only read it: a test that moves a file puts it back before it ends,
and each test writes under a name of its own in the sweep's directory.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.orchestrator.conftest import run_cli

NAME = "results-digits"
EPOCHS = 2


@dataclass(frozen=True)
class DigitsSweep:
    root: Path  # the sweep file, its database, its results directory and what tests write
    url: str  # resweep's database
    mlflow_uri: str  # MLflow's tracking store
    out: str  # what `launch` printed (stdout, then stderr)

    @property
    def results(self) -> Path:
        return self.root / "results" / NAME


@pytest.fixture(scope="session")
def digits_sweep(tmp_path_factory, ray_cluster) -> DigitsSweep:
    """The finished sweep (both trials terminated), launched on first use."""
    root = tmp_path_factory.mktemp("results-digits")
    path = root / f"{NAME}.yaml"
    path.write_text(textwrap.dedent(f"""\
        name: {NAME}
        dataset: digits
        model: cifar
        grid: {{depth: [8], shortcut: [none, A], seed: [0]}}
        train: {{epochs: {EPOCHS}, batch_size: 64, lr: 0.05, augment: false}}
        probes: {{every: 1}}
        resources: {{cpu: 1}}
        fault_tolerance: {{max_failures: 0, checkpoint_every: 1}}
        loggers: [tensorboard, {{mlflow: {{log_model: true}}}}, wandb]
        """))
    url, mlflow_uri = f"sqlite:///{root / 'resweep.db'}", f"sqlite:///{root / 'mlflow.db'}"
    # No WANDB_DIR: the offline runs go where README says, in each trial's results directory.
    env = {"MLFLOW_TRACKING_URI": mlflow_uri, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    done = run_cli("launch", str(path), "--db", url, "--address", ray_cluster.address, cwd=root, env=env,
                   timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return DigitsSweep(root, url, mlflow_uri, done.stdout + done.stderr)
