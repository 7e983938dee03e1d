"""A sweep's trials run one after another in reused Ray workers (Tune's reuse_actors): fewer
processes than trials, and every trial's numbers exactly those of the same trial run alone."""

from __future__ import annotations

import json

import pytest
import torch

from tests.orchestrator.conftest import run_cli
from tests.orchestrator.run.test_sweeps_e2e import rows, sweep_file
from trainers.trainable import LocalReporter, train

pytestmark = [pytest.mark.ray, pytest.mark.slow]

TIMING = {"epoch_time_s", "images_per_s"}


def test_reused_workers_run_several_trials_each_and_leak_nothing_between_them(tmp_path, ray_cluster):
    path = sweep_file(tmp_path, "reuse", epochs=2, extra="", shortcut="[none, A]")
    path.write_text(path.read_text().replace("seed: [0]", "seed: [0, 1, 2]"))  # 6 trials on 2 CPUs
    url = f"sqlite:///{tmp_path / 'resweep.db'}"
    done = run_cli("launch", str(path), "--db", url, "--address", ray_cluster.address, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr

    pids = {json.loads(line)["pid"] for f in (tmp_path / "results" / "reuse").glob("*/result.json")
            for line in f.read_text().splitlines() if line}
    assert 1 <= len(pids) < 6  # some worker ran more than one trial

    trials = rows(url, "SELECT id, config FROM trials")
    assert len(trials) == 6
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the worker (1 CPU a trial)
    try:
        for trial_id, config in trials:
            alone = LocalReporter()
            train(json.loads(config), alone)
            expected = {(r["epoch"], k): v for r in alone.results for k, v in r.items()
                        if k not in TIMING | {"epoch", "params_count", "layer_stats"}}
            stored = {(e, n): v for e, n, v in rows(
                url, "SELECT epoch, name, value FROM metrics WHERE trial_id = :t", t=trial_id) if n not in TIMING}
            assert stored == expected, trial_id  # to the last digit
            layers = rows(url, "SELECT epoch, layer, std, mean FROM layer_stats WHERE trial_id = :t ORDER BY 1, 2",
                          t=trial_id)
            assert layers == [(r["epoch"], s["layer"], s["std"], s["mean"]) for r in alone.results
                              for s in r.get("layer_stats", [])]
    finally:
        torch.set_num_threads(before)
