"""Whole sweeps through the real command line on a real local Ray: results, crashes, resume.

Each driver is its own `python -m orchestrator` process joining the session's Ray cluster, so it
can be killed for real; the trials are tiny nets on synthetic data (a few seconds each).
"""

from __future__ import annotations

import hashlib
import json
import signal
import textwrap
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.orchestrator.conftest import run_cli, start_cli, wait_for

pytestmark = [pytest.mark.ray, pytest.mark.slow]

METRICS = {"train_loss", "train_err", "test_loss", "test_err", "lr", "epoch_time_s", "images_per_s"}


def sweep_file(tmp_path: Path, name: str, *, epochs: int, extra: str = "", image: int = 8,
               shortcut: str = "[none, A]", num_train: int = 128) -> Path:
    text = textwrap.dedent(f"""\
        name: {name}
        dataset: synthetic
        model: cifar
        synthetic: {{num_train: {num_train}, num_test: 64, image_size: {image}, channels: 3, num_classes: 4}}
        grid:
          depth: [8]
          shortcut: {shortcut}
          seed: [0]
        train:
          epochs: {epochs}
          batch_size: 32
          augment: false
        probes: {{every: 2}}
        resources: {{cpu: 1}}
        fault_tolerance: {{max_failures: 2, checkpoint_every: 1}}
        """) + textwrap.dedent(extra)
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    return path


def rows(url: str, sql: str, **params) -> list:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(sa.text(sql), params).all()
    finally:
        engine.dispose()


def count(url: str, sql: str, **params) -> int:
    try:
        return rows(url, sql, **params)[0][0] or 0
    except sa.exc.OperationalError:  # the driver has not created the database yet
        return 0


def assert_every_epoch_once(url: str, sweep: str, epochs: int) -> None:
    """Each trial of the sweep has every metric at every epoch 1..epochs, exactly once."""
    got = rows(url, """SELECT t.trial_key, m.name, count(*), min(m.epoch), max(m.epoch), count(DISTINCT m.epoch)
                       FROM metrics m JOIN trials t ON t.id = m.trial_id JOIN sweeps s ON s.id = t.sweep_id
                       WHERE s.name = :sweep GROUP BY t.trial_key, m.name""", sweep=sweep)
    by_trial: dict[str, set] = {}
    for key, name, n, lo, hi, distinct in got:
        assert (n, lo, hi, distinct) == (epochs, 1, epochs, epochs), (key, name, n, lo, hi)
        by_trial.setdefault(key, set()).add(name)
    n_trials = count(url, "SELECT count(*) FROM trials t JOIN sweeps s ON s.id = t.sweep_id WHERE s.name = :s", s=sweep)
    assert len(by_trial) == n_trials and all(names == METRICS for names in by_trial.values())


def reported_epochs(trial_dir: Path) -> list[int]:
    """The epochs as Tune logged them, in order, across restarts (result.json is appended to)."""
    return [json.loads(line)["epoch"] for line in (trial_dir / "result.json").read_text().splitlines() if line]


def test_tiny_sweep_end_to_end(tmp_path, ray_cluster):
    path = sweep_file(tmp_path, "tiny", epochs=3)
    url = f"sqlite:///{tmp_path / 'resweep.db'}"
    done = run_cli("launch", str(path), "--db", url, "--address", ray_cluster.address, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Sweep tiny finished" in done.stdout
    assert f"python -m orchestrator status tiny --db '{url}'" in done.stdout
    assert "grid_results WHERE sweep = 'tiny'" in done.stdout and "orchestrator dashboard" in done.stdout

    ((status, spec, spec_hash, commit, storage, finished),) = rows(
        url, "SELECT status, spec, spec_hash, git_commit, storage_path, finished_at FROM sweeps")
    assert status == "finished" and finished is not None
    assert spec == path.read_text() and spec_hash == hashlib.sha256(spec.encode()).hexdigest()
    assert commit is not None and len(commit) == 40
    assert storage == str(tmp_path / "results" / "tiny")

    trials = rows(url, "SELECT depth, block, shortcut, seed, status, config FROM trials ORDER BY shortcut")
    assert [t[:5] for t in trials] == [(8, "basic", "A", 0, "terminated"), (8, "basic", "none", 0, "terminated")]
    assert json.loads(trials[0][5])["synthetic"]["image_size"] == 8
    assert json.loads(trials[0][5])["nesterov"] is False  # the flat config, every hyperparameter
    assert_every_epoch_once(url, "tiny", epochs=3)
    probed = rows(url, "SELECT trial_id, epoch, count(*) FROM layer_stats GROUP BY trial_id, epoch ORDER BY 1, 2")
    assert [(e, n) for _, e, n in probed] == [(2, 7), (3, 7)] * 2  # probes every 2 and at the last; 7 conv layers

    view = rows(url, "SELECT sweep, depth, shortcut, status, epochs, final_test_err, params_count FROM trial_results "
                     "ORDER BY shortcut")
    assert [(v[0], v[1], v[2], v[3], v[4]) for v in view] == [("tiny", 8, "A", "terminated", 3),
                                                             ("tiny", 8, "none", "terminated", 3)]
    assert all(0 <= v[5] <= 1 and v[6] > 0 for v in view)
    grid = rows(url, "SELECT shortcut, n_seeds, train_err_mean FROM grid_results WHERE sweep = 'tiny' ORDER BY 1")
    assert [(g[0], g[1]) for g in grid] == [("A", 1), ("none", 1)]

    status = run_cli("status", "tiny", "--db", url, cwd=tmp_path)
    assert status.returncode == 0 and status.stdout.count("terminated") == 2
    again = run_cli("launch", str(path), "--db", url, cwd=tmp_path)
    assert again.returncode == 2 and "name: 'tiny' already exists" in again.stderr
    finished = run_cli("resume", "tiny", "--db", url, cwd=tmp_path)
    assert finished.returncode == 0 and "already finished" in finished.stdout


def test_a_worker_killed_mid_trial_is_retried_from_its_checkpoint(tmp_path, ray_cluster, fault_dir):
    (fault_dir / "crash_at_epoch_2").touch()
    path = sweep_file(tmp_path, "crash", epochs=4, shortcut="[A]")
    url = f"sqlite:///{tmp_path / 'resweep.db'}"
    done = run_cli("launch", str(path), "--db", url, "--address", ray_cluster.address, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (fault_dir / "crash_at_epoch_2.claimed").exists()  # the worker really died

    (trial_dir,) = [p for p in (tmp_path / "results" / "crash").iterdir() if p.is_dir()]
    assert (trial_dir / "error.txt").exists()
    epochs = reported_epochs(trial_dir)
    # Tune's own result.json is no record of a retry: its JsonLoggerCallback copies the file back
    # from storage, as last synced, when the retry starts, and a restored trial reports its restored
    # epoch again (issue 12). That the retry trains no epoch again is tested on the trainable
    # (tests/trainers/test_trainable.py); here, the database: two attempts, every epoch once.
    assert epochs[-1] == 4
    assert rows(url, "SELECT attempts FROM trials") == [(2,)]
    assert count(url, "SELECT count(*) FROM trial_attempts WHERE error IS NOT NULL") == 1
    assert rows(url, "SELECT status, error FROM trials") == [("terminated", None)]
    assert_every_epoch_once(url, "crash", epochs=4)
    assert rows(url, "SELECT status FROM sweeps") == [("finished",)]


def test_driver_killed_then_resumed_finishes_every_trial_once(tmp_path, ray_cluster):
    path = sweep_file(tmp_path, "killed", epochs=6, image=16, num_train=1024)
    url = f"sqlite:///{tmp_path / 'resweep.db'}"
    driver = start_cli("launch", str(path), "--db", url, "--address", ray_cluster.address, cwd=tmp_path)
    wait_for(lambda: count(url, "SELECT max(epoch) FROM metrics") >= 2, timeout=120,
             what="a trial's second epoch", proc=driver)
    driver.send_signal(signal.SIGKILL)
    driver.wait(timeout=30)
    assert count(url, "SELECT count(*) FROM metrics WHERE name = 'test_err' AND epoch = 6") < 2
    assert rows(url, "SELECT status FROM sweeps") == [("running",)]  # nobody had the chance to say otherwise

    done = run_cli("resume", "killed", "--db", url, "--address", ray_cluster.address, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "resuming from" in done.stdout and "Sweep killed finished" in done.stdout
    assert rows(url, "SELECT status FROM sweeps") == [("finished",)]
    assert rows(url, "SELECT status FROM trials") == [("terminated",)] * 2
    assert_every_epoch_once(url, "killed", epochs=6)
    layer_epochs = rows(url, "SELECT DISTINCT epoch FROM layer_stats ORDER BY epoch")
    assert layer_epochs == [(2,), (4,), (6,)]


def optuna_study(url: str, sweep_name: str):
    """The Optuna study of an optuna sweep, loaded from its journal in the database."""
    import optuna
    from optuna.storages import JournalStorage

    from db import queries
    from db.engine import get_engine
    from db.optuna_journal import SqlJournalBackend
    from orchestrator.run.space import study_name

    engine = get_engine(url, create=False)
    try:
        storage = JournalStorage(SqlJournalBackend(engine, queries.sweep(engine, sweep_name).id))
        return optuna.load_study(study_name=study_name(sweep_name), storage=storage)
    finally:
        engine.dispose()


def test_optuna_with_asha_stops_some_and_keeps_its_study_across_interrupt_and_resume(tmp_path, ray_cluster):
    # 2,048 images: the 4 trials still to run after two ended take seconds, not the half second
    # 128 images took (a faster machine could finish the search before the Ctrl-C).
    path = sweep_file(tmp_path, "searched", epochs=4, shortcut="[none, A]", num_train=2048, extra="""\
        search:
          algorithm: optuna
          num_samples: 6
          metric: test_err
          space:
            lr: {log_uniform: [1.0e-5, 1.0]}
        scheduler: {type: asha, grace_period: 1, reduction_factor: 2}
        """)
    url = f"sqlite:///{tmp_path / 'resweep.db'}"
    driver = start_cli("launch", str(path), "--db", url, "--address", ray_cluster.address, cwd=tmp_path)
    wait_for(lambda: count(url, "SELECT count(*) FROM trials WHERE status IN ('terminated', 'stopped')") >= 2,
             timeout=150, what="two trials to end", proc=driver)
    driver.send_signal(signal.SIGINT)  # Ctrl-C
    out, _ = driver.communicate(timeout=120)
    assert driver.returncode == 130, out
    assert "interrupted" in out and "python -m orchestrator resume searched" in out
    assert rows(url, "SELECT status FROM sweeps") == [("interrupted",)]
    assert not list((tmp_path / "results" / "searched").glob("*journal*"))  # the study is in the database
    before = {t.number: t.params for t in optuna_study(url, "searched").trials}
    assert len(before) >= 2

    done = run_cli("launch", str(path), "--resume", "--db", url, "--address", ray_cluster.address, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert rows(url, "SELECT status FROM sweeps") == [("finished",)]
    statuses = [s for (s,) in rows(url, "SELECT status FROM trials")]
    assert len(statuses) == 6 and set(statuses) <= {"terminated", "stopped"}
    assert "stopped" in statuses  # ASHA cut some short
    study = optuna_study(url, "searched")
    after = {t.number: t.params for t in study.trials}
    assert all(after[n] == params for n, params in before.items())  # the earlier trials are still there
    assert sum(t.state.name in ("COMPLETE", "PRUNED") for t in study.trials) >= 6
    stopped = rows(url, "SELECT count(*) FROM trial_results WHERE status = 'stopped' AND epochs < 4")
    assert stopped[0][0] == statuses.count("stopped")
