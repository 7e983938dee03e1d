"""benchmarks/launch_scale.py runs both of its sweeps through `launch` and reports in the agreed
shape (a handful of trials; never asserted on timings)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import launch_scale
from benchmarks.common import KEYS
from orchestrator.run.tuner import TUNE_ENV

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def test_launch_scale_reports_wall_against_floor_growth_memory_and_the_searchers_time():
    before = {name: os.environ.get(name) for name in TUNE_ENV}
    m = launch_scale.measure(trials=6, samples=6)
    # Two launches in this process leave the variables Tune read during their runs as they were.
    assert {name: os.environ.get(name) for name in TUNE_ENV} == before
    grid, search = m["grid"], m["search"]
    assert grid["trials"] == 6 and search["samples"] == 6 and search["suggestions"] == 6
    # The floor is made of what the driver saw: Ray's start and every trial's epoch.
    assert 0 < grid["ray_start_s"] < grid["floor_s"] < grid["wall_s"]
    assert grid["epochs_s"] > 0 and grid["peak_rss_mb"] > 0
    # Both halves of each run hold epochs, and each half's wall time is at least its floor's
    # share of slot time (two slots: a half cannot take less than its epochs over two).
    for g in (grid["growth"], search["growth"]):
        assert g["first_epochs"] > 0 and g["second_epochs"] > 0
        assert g["first_over_floor"] > 0 and g["second_over_floor"] > 0
    assert grid["growth"]["first_epochs"] + grid["growth"]["second_epochs"] == 6 - 1  # less the first: the start
    assert 6 <= search["epochs"] <= 6 * 4  # ASHA: one epoch at least, four at most, per trial
    assert search["suggest_early_ms"] > 0 and search["suggest_last_ms"] > 0

    # The wall time splits into Ray's start, the start, the first epoch, the trials and the end.
    ph = grid["phases"]
    assert ph["start_s"] > 0 and ph["trials_s"] > 0 and ph["end_s"] > 0 and ph["fixed_per_trial_s"] > 0
    assert grid["ray_start_s"] + ph["start_s"] + ph["trials_s"] + ph["end_s"] < grid["wall_s"]  # + the first epoch

    rows = launch_scale.rows(m)
    assert len(rows) == 8 and all(set(KEYS) <= set(r) for r in rows)
    by_unit = [r["unit"] for r in rows]
    assert by_unit == ["s", "x", "ms", "MB", "ms", "ms", "x", "ms"]
    wall, halves, fixed, memory, _, status, search_halves, suggest = rows
    assert fixed["value"] == pytest.approx(ph["fixed_per_trial_s"] * 1000)
    assert status["value"] > 0 and status["baseline_value"] > 0  # each trial's end was written
    assert wall["ratio"] == pytest.approx(grid["wall_s"] / grid["floor_s"]) and wall["ratio"] > 1
    assert halves["baseline"] == "the first half's" and halves["ratio"] > 0
    assert memory["value"] == grid["peak_rss_mb"] and memory["baseline"] is None
    assert search_halves["ratio"] > 0 and suggest["baseline"] == "at trial 6" and suggest["ratio"] > 0


def test_launch_scale_times_a_trials_stages_from_the_workers_timeline_and_the_drivers_calls():
    # In a process of its own: its launch starts the local Ray whose workers get the trial hook's
    # variables (a Ray this test session started earlier would not pass them on).
    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    for name in ("RAY_ADDRESS", "RESWEEP_TRIAL_HOOK", "RESWEEP_TIMELINE_DIR"):
        env.pop(name, None)
    out = subprocess.run([sys.executable, "-m", "benchmarks.launch_scale", "--only", "grid", "--trials", "6",
                          "--stages", "--json"], cwd=repo, env=env, capture_output=True, text=True, timeout=600,
                         check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    rows = json.loads(out.stdout)
    stages = {r["name"].split("(median): ", 1)[1]: r["value"] for r in rows if "per trial (median)" in r["name"]}
    assert set(stages) == {name for name, _, _ in launch_scale.STAGES} | {"driver: of which the recorder's callbacks"}
    assert all(ms > 0 for ms in stages.values()), stages
    # The stages follow each other: together (as medians over a few trials) about the whole, less the epoch.
    parts = sum(ms for name, ms in stages.items() if not name.startswith(("in all", "driver: of which")))
    whole = stages["in all: trial entered -> next trial entered, less the epoch"]
    assert whole / 2 < parts < whole * 2, stages


def test_stages_refuse_a_ray_already_running_in_the_process(tmp_path, monkeypatch):
    import ray

    monkeypatch.setattr(ray, "is_initialized", lambda: True)
    with pytest.raises(RuntimeError, match="local Ray that launch starts"), launch_scale.staged(tmp_path):
        pass
