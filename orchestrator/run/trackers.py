"""The trackers users already run, as mirrors: Ray Tune's own logger callbacks for a sweep's
`loggers:` (TensorBoard, MLflow, Weights & Biases), beside the recorder.

The database stays the record; these only copy each result into the tool. Each is configured the
way its tool is configured everywhere else, by its environment variables on the driver:
- tensorboard: event files in each trial's directory under the sweep's results
  (`tensorboard --logdir results/NAME`);
- mlflow: `MLFLOW_TRACKING_URI` (MLflow 3's default: sqlite:///mlflow.db in the working directory;
  its file store `./mlruns` is refused unless MLFLOW_ALLOW_FILE_STORE=true), one experiment named after the sweep, one run
  per trial with its config as params and every numeric result as a metric per epoch;
- wandb: `WANDB_PROJECT` (default: the sweep's name), `WANDB_API_KEY` or `wandb login`;
  `WANDB_MODE=offline` and `WANDB_DIR` are passed on to the per-trial logging actors.

The spec has checked that each package is installed (orchestrator/run/spec.py, LOGGER_PACKAGES).
"""

from __future__ import annotations

import os
from typing import Any

from orchestrator.run.spec import SweepSpec


def logger_callbacks(spec: SweepSpec) -> list[Any]:
    """One Ray Tune callback per entry of the spec's `loggers`, in the order given."""
    return [_callback(name, spec) for name in dict.fromkeys(spec.loggers)]


def _callback(name: str, spec: SweepSpec) -> Any:
    if name == "tensorboard":
        from ray.tune.logger import TBXLoggerCallback

        return TBXLoggerCallback()
    if name == "mlflow":
        from ray.air.integrations.mlflow import MLflowLoggerCallback

        return MLflowLoggerCallback(
            tracking_uri=os.environ.get("MLFLOW_TRACKING_URI"),
            experiment_name=spec.name,
            tags={"resweep.sweep": spec.name},
        )
    if name == "wandb":
        from ray.air.integrations.wandb import WandbLoggerCallback

        # The logging actors do not see the driver's environment: pass offline mode on.
        passed = {key: os.environ[var] for key, var in (("mode", "WANDB_MODE"), ("dir", "WANDB_DIR"))
                  if os.environ.get(var)}
        return WandbLoggerCallback(project=os.environ.get("WANDB_PROJECT") or spec.name, **passed)
    raise ValueError(f"unknown logger {name!r}")
