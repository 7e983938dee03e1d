"""A sweep past what a terminal lists: `status NAME` gives counts, the unfinished trials and the
grid, not every trial; `export` writes block by block and the files equal one whole read."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from benchmarks import read_scale
from db import queries, writes
from db.engine import get_engine
from orchestrator.results import export, tables
from tests.orchestrator.conftest import run_cli


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    """A finished sweep of 250 trials x 10 epochs (more than status lists), two of them unfinished."""
    url = f"sqlite:///{tmp_path_factory.mktemp('big') / 'resweep.db'}"
    engine = get_engine(url)
    _, ids = read_scale.build_sweep(engine, "big", 250, 10)
    with engine.begin() as conn:  # two trials that did not finish (as a recorder would leave them)
        conn.exec_driver_sql(f"UPDATE trials SET status = 'error', error = 'CUDA out of memory' WHERE id = {ids[7]}")
        conn.exec_driver_sql(f"UPDATE trials SET status = 'running' WHERE id = {ids[8]}")
        writes.refresh_grid(conn, [conn.exec_driver_sql("SELECT id FROM sweeps").scalar()])
    writes.record_result(engine, ids[9], 11, {"train_err": 0.5, "test_err": 0.5, "warmup_iterations": 3.0})
    engine.dispose()
    return url, ids


def test_status_of_a_big_sweep_counts_lists_the_unfinished_and_shows_the_grid(big, tmp_path):
    url, ids = big
    assert len(ids) > tables.TRIALS_LISTED
    done = run_cli("status", "big", "--db", url, cwd=tmp_path, env={"COLUMNS": "100"})
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "big  finished  (250 trials: 1 error, 1 running, 248 terminated)" in out
    listed = [line.split()[0] for line in out.splitlines() if line.strip() and line.split()[0].isdigit()]
    assert listed == [str(ids[7]), str(ids[8])]  # the unfinished trials, and none of the finished
    assert "248 finished trials are pooled in the grid below" in out
    assert f"SELECT * FROM trial_results WHERE sweep = 'big'\" --db '{url}'" in out
    assert "final errors, mean ± std over seeds" in out and out.count(" basic ") == 20  # 5 depths x 4 shortcuts


def test_export_written_block_by_block_equals_one_whole_read(big, tmp_path, monkeypatch):
    """Blocks of 7 trials: the long and wide metrics and the layers are the whole sweep's, in
    trial order, and a metric only some blocks have (warmup_iterations) is a column of every one."""
    url, ids = big
    monkeypatch.setattr(export, "BLOCK_TRIALS", 7)
    engine = get_engine(url, create=False)
    try:
        done = export.export_sweep(engine, "big", "parquet", tmp_path / "out")
        whole = queries.curves(engine, ids)
        probed = queries.probed_epochs(engine, ids)
        layers = pd.concat([queries.layer_stats(engine, ids, e) for e in probed]).sort_values(
            ["trial_id", "epoch", "layer"], ignore_index=True)
    finally:
        engine.dispose()
    long = pd.read_parquet(tmp_path / "out" / "metrics.parquet")
    pd.testing.assert_frame_equal(long, whole.astype({"value": float}), check_dtype=False)
    wide = pd.read_parquet(tmp_path / "out" / "metrics_wide.parquet")
    assert list(wide.columns)[8:] == sorted(whole["name"].unique()) and "warmup_iterations" in wide
    assert len(wide) == len(whole[["trial_id", "epoch"]].drop_duplicates())
    assert wide.loc[wide["warmup_iterations"].notna(), "trial_id"].tolist() == [ids[9]]
    got = pd.read_parquet(tmp_path / "out" / "layer_stats.parquet")
    assert len(got) == len(layers) and got["trial_id"].tolist() == layers["trial_id"].tolist()
    info = json.loads((tmp_path / "out" / "sweep.json").read_text())
    assert info["export"]["rows"] == done.rows == {"trials": 250, "metrics": len(whole), "metrics_wide": len(wide),
                                                   "layer_stats": len(layers)}
