"""`db import`: a sweep rebuilt from its results directory, on both backends, row for row.

One tiny sweep is launched for the module (real CLI, real Ray); each test imports its results into
a fresh database and compares with what the recorder wrote.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.orchestrator.conftest import run_cli
from tests.orchestrator.run.test_store_faults import snapshot
from tests.orchestrator.run.test_sweeps_e2e import assert_every_epoch_once, rows, sweep_file

pytestmark = [pytest.mark.ray, pytest.mark.slow]


@pytest.fixture(scope="module")
def launched(tmp_path_factory, ray_cluster):
    """A finished tiny sweep: its directory, database URL and results directory."""
    where = tmp_path_factory.mktemp("imported")
    path = sweep_file(where, "tiny", epochs=3)
    url = f"sqlite:///{where / 'recorded.db'}"
    # With Python's import profile on stderr, for the test of what the driver imports.
    done = run_cli("launch", str(path), "--db", url, "--address", ray_cluster.address, cwd=where,
                   env={"PYTHONPROFILEIMPORTTIME": "1"})
    assert done.returncode == 0, done.stdout + done.stderr[-4000:]
    (where / "driver-imports.txt").write_text(done.stderr)
    return where, url, where / "results" / "tiny"


def sweep_row(url: str) -> list:
    return rows(url, "SELECT name, status, spec, spec_hash, git_commit, git_dirty, storage_path, "
                     "finished_at IS NOT NULL FROM sweeps")


def execute(url: str, *statements: str) -> None:
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            for sql in statements:
                conn.execute(sa.text(sql))
    finally:
        engine.dispose()


def test_import_rebuilds_the_sweep_row_for_row_and_fills_gaps_without_duplicates(launched, db_url):
    where, recorded, results = launched
    done = run_cli("db", "import", str(results), "--db", db_url, cwd=where)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "tiny: imported from" in done.stdout and "2 terminated" in done.stdout
    assert "6 epochs (42 metric rows, 28 layer records); sweep finished" in done.stdout
    assert sweep_row(db_url) == sweep_row(recorded)
    assert snapshot(db_url) == snapshot(recorded)
    assert_every_epoch_once(db_url, "tiny", epochs=3)
    # Each trial's latest checkpoint, which `model` loads: where the recorder put it, and there.
    where_saved = "SELECT trial_key, checkpoint_uri FROM trials ORDER BY trial_key"
    assert rows(db_url, where_saved) == rows(recorded, where_saved)
    assert all(uri and Path(uri).is_dir() for _, uri in rows(db_url, where_saved))

    # A database holding only part of the sweep: the gaps are filled, nothing doubles. (metric_values
    # is the table behind the metrics view.)
    (keep, lose) = [k for (k,) in rows(db_url, "SELECT trial_key FROM trials ORDER BY trial_key")]
    execute(db_url,
            f"DELETE FROM metric_values WHERE epoch = 2 AND trial_id = (SELECT id FROM trials WHERE trial_key = '{keep}')",
            f"DELETE FROM layer_stats WHERE trial_id = (SELECT id FROM trials WHERE trial_key = '{keep}')",
            f"DELETE FROM metric_values WHERE trial_id = (SELECT id FROM trials WHERE trial_key = '{lose}')",
            f"DELETE FROM layer_stats WHERE trial_id = (SELECT id FROM trials WHERE trial_key = '{lose}')",
            f"DELETE FROM trials WHERE trial_key = '{lose}'")
    again = run_cli("db", "import", str(results.parent), "--db", db_url, cwd=where)  # the results root
    assert again.returncode == 0, again.stdout + again.stderr
    assert snapshot(db_url) == snapshot(recorded)
    assert sweep_row(db_url) == sweep_row(recorded)
    assert_every_epoch_once(db_url, "tiny", epochs=3)


def test_each_trial_directory_holds_tunes_result_files_and_no_event_files_unasked(launched):
    """Tune's result.json (what `db import` reads) and progress.csv in every trial's directory;
    TensorBoard event files only with `loggers: [tensorboard]` (test_results.py), not by default."""
    _, _, results = launched
    trial_dirs = sorted(p for p in results.iterdir() if p.is_dir() and (p / "params.json").exists())
    assert len(trial_dirs) == 2
    for trial_dir in trial_dirs:
        lines = (trial_dir / "result.json").read_text().splitlines()
        assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3]
        assert len((trial_dir / "progress.csv").read_text().splitlines()) == 1 + 3  # header and 3 epochs
        assert list(trial_dir.glob("events.out.tfevents.*")) == []


def test_the_driver_imports_no_tracker_the_sweep_did_not_ask_for(launched):
    """wandb and mlflow are installed here (the tracker tests use them): Ray Tune's usage tag of
    the callbacks imported both in every driver, ~1 s a sweep, until orchestrator.run.tuner counted
    the callbacks by name (TRACKER_CALLBACKS)."""
    where, _, _ = launched
    imported = {line.rsplit("|", 1)[-1].strip() for line in (where / "driver-imports.txt").read_text().splitlines()
                if line.startswith("import time:")}
    assert {"ray.tune", "sqlalchemy"} <= imported  # the profile covers the whole launch
    trackers = ("wandb", "mlflow", "comet_ml", "aim", "ray.air.integrations", "ray.tune.logger.aim")
    assert sorted(m for m in imported if any(m == t or m.startswith(f"{t}.") for t in trackers)) == []


def test_import_refuses_a_directory_without_tune_state_in_one_line(tmp_path):
    done = run_cli("db", "import", str(tmp_path / "nowhere"), "--db", f"sqlite:///{tmp_path / 'x.db'}", cwd=tmp_path)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "no such directory" in done.stderr
    (tmp_path / "empty").mkdir()
    done = run_cli("db", "import", str(tmp_path / "empty"), "--db", f"sqlite:///{tmp_path / 'x.db'}", cwd=tmp_path)
    assert done.returncode == 2 and "no Ray Tune experiment state" in done.stderr and "Traceback" not in done.stderr


def _foreign_trainable(config):
    from ray import tune

    for epoch in range(1, 4):
        tune.report({"epoch": epoch, "train_err": 0.5 / epoch, "test_err": 0.6 / epoch, "accuracy": 1 - 0.6 / epoch,
                     "layer_stats": [{"layer": 0, "name": "conv1", "stage": 0, "std": 1.0 * epoch, "mean": 0.0}]})


def test_import_of_a_tune_experiment_resweep_did_not_launch(tmp_path, ray_cluster):
    from ray import tune

    tuner = tune.Tuner(
        _foreign_trainable,
        param_space={"dataset": "cifar10", "model": "cifar", "depth": tune.grid_search([20, 56]), "block": "basic",
                     "shortcut": "A", "seed": 0, "note": "not resweep's"},
        run_config=tune.RunConfig(name="theirs", storage_path=str(tmp_path / "ray_results"), verbose=0),
    )
    grid = tuner.fit()
    assert not grid.errors
    url = f"sqlite:///{tmp_path / 'resweep.db'}"
    done = run_cli("db", "import", str(tmp_path / "ray_results" / "theirs"), "--db", url, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 terminated" in done.stdout and "sweep finished" in done.stdout and "resume" not in done.stdout
    ((name, status, spec),) = rows(url, "SELECT name, status, spec FROM sweeps")
    assert (name, status) == ("theirs", "finished") and "did not launch" in spec
    got = rows(url, "SELECT t.depth, m.name, m.epoch, m.value FROM metrics m JOIN trials t ON t.id = m.trial_id "
                    "ORDER BY 1, 2, 3")
    assert [(d, n, e) for d, n, e, _ in got] == [(d, n, e) for d in (20, 56) for n in ("test_err", "train_err")
                                                for e in (1, 2, 3)]  # `accuracy` is not one of resweep's names
    assert rows(url, "SELECT count(*), max(std) FROM layer_stats") == [(6, 3.0)]
    configs = [json.loads(c) if isinstance(c, str) else c for (c,) in rows(url, "SELECT config FROM trials")]
    assert all(c["note"] == "not resweep's" for c in configs)
