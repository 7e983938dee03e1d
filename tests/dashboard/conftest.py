"""A small result database for the dashboard tests, written through db.writes like the recorder.

Sweep `cifar10-depth` (finished): CIFAR-10, 6n+2 nets with basic blocks, depth 20 and 56, plain
(shortcut none) and ResNet (shortcut A), seeds 0 and 1, three epochs each, layer responses at
epochs 2 and 3; plus one failed trial (depth 56, A, seed 2) that the grid must leave out.
Sweep `cifar10-starting` (running): two trials that have not finished an epoch.
The final errors (FINAL_TEST, FINAL_TRAIN) are chosen so the means and stds are easy by hand.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from db import writes
from db.engine import get_engine

DEPTH_SWEEP = "cifar10-depth"
STARTING_SWEEP = "cifar10-starting"
EPOCHS = 3
PROBED = (2, 3)
# (depth, shortcut) -> final test error of seed 0, seed 1
FINAL_TEST = {(20, "none"): (0.10, 0.12), (20, "A"): (0.09, 0.08), (56, "none"): (0.14, 0.16), (56, "A"): (0.065, 0.075)}
TRAIN_GAP = 0.03  # final train error = final test error - TRAIN_GAP


def config(depth: int, shortcut: str, seed: int) -> dict:
    return {"dataset": "cifar10", "data_dir": None, "model": "cifar", "depth": depth, "block": "basic",
            "shortcut": shortcut, "seed": seed, "epochs": EPOCHS, "batch_size": 128, "lr": 0.1,
            "probes_every": 2}  # fmt: skip


def error_at(final: float, epoch: int) -> float:
    """Errors fall by 0.1 an epoch to their final value at epoch 3."""
    return round(final + 0.1 * (EPOCHS - epoch), 6)


def layer_std(depth: int, shortcut: str, seed: int, layer: int, epoch: int) -> float:
    """Plain nets respond more, and more so the deeper they are (the paper's Fig. 7)."""
    base = 1.5 + depth / 40 if shortcut == "none" else 1.5 - depth / 80
    wobble = 0.05 * (layer % 3)  # so the sorted panel differs from the forward one
    return base - 0.5 * layer / depth + wobble + 0.1 * seed + 0.001 * epoch


def build(url: str) -> None:
    """Write the fixture database at `url` (a new, empty database)."""
    engine = get_engine(url)
    sweep = writes.create_sweep(engine, name=DEPTH_SWEEP, spec="name: cifar10-depth\n", spec_hash="0" * 64,
                                git_commit="0123456789abcdef0123456789abcdef01234567", git_dirty=False)  # fmt: skip
    for (depth, shortcut), finals in FINAL_TEST.items():
        for seed, final in enumerate(finals):
            trial = writes.upsert_trial(engine, sweep, f"t_{depth}_{shortcut}_{seed}", status="running",
                                        config=config(depth, shortcut, seed), params_count=1000 * depth)  # fmt: skip
            for epoch in range(1, EPOCHS + 1):
                layers = None
                if epoch in PROBED:
                    layers = [{"layer": i, "name": f"conv{i}", "stage": 1 + 3 * i // depth,
                               "std": layer_std(depth, shortcut, seed, i, epoch), "mean": 0.0}
                              for i in range(depth - 1)]  # fmt: skip
                test = error_at(final, epoch)
                writes.record_result(engine, trial, epoch, {
                    "train_err": round(test - TRAIN_GAP, 6), "test_err": test, "train_loss": 2 * test,
                    "test_loss": 2 * test + 0.1, "lr": 0.1,
                }, layers)  # fmt: skip
            writes.set_trial_status(engine, trial, "terminated", ended=True)
    failed = writes.upsert_trial(engine, sweep, "t_56_A_2", status="running", config=config(56, "A", 2))
    writes.record_result(engine, failed, 1, {"train_err": 0.9, "test_err": 0.9})
    writes.set_trial_status(engine, failed, "error", error="CUDA out of memory", ended=True)
    writes.set_sweep_status(engine, sweep, "finished", finished=True)

    starting = writes.create_sweep(engine, name=STARTING_SWEEP, spec="name: cifar10-starting\n", spec_hash="1" * 64)
    for seed in (0, 1):
        writes.upsert_trial(engine, starting, f"s_{seed}", status="running", config=config(110, "A", seed))
    engine.dispose()


@pytest.fixture(scope="session")
def fixture_db(tmp_path_factory) -> str:
    """The URL of the fixture database (SQLite), built once per test session; read-only."""
    url = f"sqlite:///{Path(tmp_path_factory.mktemp('dashboard')) / 'resweep.db'}"
    build(url)
    return url


@pytest.fixture
def built_engine(db_url):
    """An engine on a new fixture database, once on SQLite and once on PostgreSQL (db_url)."""
    build(db_url)
    engine = get_engine(db_url, create=False)
    yield engine
    engine.dispose()


def free_port() -> int:
    """A TCP port on localhost that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
