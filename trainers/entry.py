"""The function Ray Tune runs for every trial: `run_trial(config)`.

Kept apart from trainers.trainable so that what a Tune worker imports to unpickle the trainable
is this module alone: torch, the trainers and the dataset come in with the first trial the worker
runs (and stay for the next ones, since Tune reuses the worker), never in the driver, and none of
the driver's own packages (orchestrator, db: SQLAlchemy, rich, Alembic) are imported on a worker.
The name `orchestrator.run.launch.run_trial`, which the experiment state of sweeps launched before
this module existed refers to, is kept as an alias of this function.
"""

from __future__ import annotations

from typing import Any


def run_trial(config: dict[str, Any]) -> None:
    """One trial of a sweep (trainers.trainable.train_trial), in a Tune worker."""
    from trainers.trainable import train_trial

    train_trial(config)
