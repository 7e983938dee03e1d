"""A small sweep written through db.writes whose every number the tests know."""

from __future__ import annotations

import math
from dataclasses import dataclass

from db import writes

CONFIG = {
    "dataset": "cifar10", "model": "cifar", "depth": 20, "block": "basic", "shortcut": "A",
    "seed": 0, "epochs": 3, "lr": 0.1,
}  # fmt: skip


def trial_config(**axes) -> dict:
    return {**CONFIG, **axes}


def errs(trial: int, epoch: int) -> dict[str, float]:
    """Deterministic metrics of a trial at an epoch (so any writer writes the same values)."""
    return {
        "train_loss": 2.0 / epoch, "train_err": round(0.5 / epoch + 0.01 * trial, 6),
        "test_loss": 2.5 / epoch, "test_err": round(0.6 / epoch + 0.02 * trial, 6),
        "lr": 0.1, "epoch_time_s": 1.5, "images_per_s": 1000.0 + trial,
    }  # fmt: skip


@dataclass
class Sweep:
    """A small sweep written through db.writes, with every value known to the test."""

    id: int
    trials: dict[str, int]  # trial_key -> id


def make_sweep(engine, name: str = "known") -> Sweep:
    """depth 20 x shortcut {none, A} x seed {0, 1, 2}, 3 epochs each, probes at epochs 1 and 3;
    plus one errored and one still-running trial, which grid_results must leave out."""
    sweep_id = writes.create_sweep(engine, name=name, spec="name: known\n", spec_hash="abc")
    trials: dict[str, int] = {}
    n = 0
    for shortcut in ("none", "A"):
        for seed in (0, 1, 2):
            key = f"{shortcut}-{seed}"
            tid = writes.upsert_trial(
                engine, sweep_id, key, status="running", config=trial_config(shortcut=shortcut, seed=seed)
            )
            trials[key] = tid
            for epoch in (1, 2, 3):
                layer_stats = (
                    [{"layer": i, "name": f"layer{i}", "stage": 1 + i // 2, "std": n + i + epoch, "mean": 0.0}
                     for i in range(4)]
                    if epoch in (1, 3) else None
                )  # fmt: skip
                writes.record_result(engine, tid, epoch, {**errs(n, epoch), "params_count": 270_000}, layer_stats)
            writes.set_trial_status(engine, tid, "terminated", ended=True)
            n += 1
    tid = writes.upsert_trial(engine, sweep_id, "A-9", status="running", config=trial_config(seed=9))
    writes.record_result(engine, tid, 1, errs(50, 1))
    writes.set_trial_status(engine, tid, "error", error="CUDA out of memory", ended=True)
    trials["A-9"] = tid
    tid = writes.upsert_trial(engine, sweep_id, "A-8", status="running", config=trial_config(seed=8))
    writes.record_result(engine, tid, 1, errs(60, 1))
    trials["A-8"] = tid
    return Sweep(sweep_id, trials)


def sample_std(values: list[float]) -> float:
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
