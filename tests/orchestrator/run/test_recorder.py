"""The recorder against real databases (SQLite and PostgreSQL), driven with real Tune Trial objects
(no cluster needed)."""

from __future__ import annotations

import pickle

import sqlalchemy as sa
from ray.tune.experiment import Trial

from db import writes
from orchestrator.run.recorder import Recorder

CONFIG = {"dataset": "synthetic", "model": "cifar", "depth": 8, "block": "basic", "shortcut": "A", "epochs": 3}


def setup(engine, n_trials: int = 2, expected: int | None = None):
    sweep_id = writes.create_sweep(engine, name="s", spec="name: s\n", spec_hash="0" * 64)
    recorder = Recorder(engine, sweep_id, epochs=3, expected_trials=expected or n_trials)
    trials = [Trial("run_trial", config={**CONFIG, "seed": i}, trial_id=f"t_{i:05d}", stub=True)
              for i in range(n_trials)]
    return recorder, trials


def result(epoch: int, test_err: float = 0.5, layers: bool = False) -> dict:
    r = {"epoch": epoch, "train_loss": 1.0, "train_err": 0.4, "test_loss": 1.1, "test_err": test_err, "lr": 0.1,
         "epoch_time_s": 0.2, "images_per_s": 900.0, "params_count": 1234,
         # what Tune adds to every result: never metrics
         "training_iteration": epoch, "time_total_s": 1.5, "pid": 42, "done": False, "trial_id": "x"}
    if layers:
        r["layer_stats"] = [{"layer": k, "name": f"conv{k}", "stage": 1, "std": 0.5, "mean": 0.0} for k in range(3)]
    return r


def query(engine, sql: str) -> list:
    with engine.connect() as conn:
        return conn.execute(sa.text(sql)).all()


def test_results_are_written_once_per_epoch_even_when_replayed(engine):
    recorder, (trial, _) = setup(engine)
    recorder.on_trial_start(0, [trial], trial)
    recorder.on_trial_result(0, [trial], trial, result(1))
    recorder.on_trial_result(0, [trial], trial, result(2, layers=True))
    recorder.on_trial_result(0, [trial], trial, result(2, test_err=0.3, layers=True))  # restored, re-reported
    names = {n for (n,) in query(engine, "SELECT DISTINCT name FROM metrics")}
    assert names == {"train_loss", "train_err", "test_loss", "test_err", "lr", "epoch_time_s", "images_per_s"}
    assert query(engine, "SELECT epoch, value FROM metrics WHERE name = 'test_err' ORDER BY epoch") == [(1, 0.5), (2, 0.3)]
    assert query(engine, "SELECT count(*) FROM layer_stats") == [(3,)]
    assert query(engine, "SELECT trial_key, status, params_count, depth, seed FROM trials") == [
        ("t_00000", "running", 1234, 8, 0)]
    assert len(recorder.seconds_per_result) == 3


def test_trial_end_states(engine):
    recorder, (done, early) = setup(engine)
    for trial, epochs in ((done, 3), (early, 1)):
        run_epochs(recorder, [done, early], trial, epochs)
        recorder.on_trial_complete(0, [done, early], trial)
    assert query(engine, "SELECT trial_key, status FROM trials ORDER BY trial_key") == [
        ("t_00000", "terminated"), ("t_00001", "stopped")]


def test_errors_are_kept_and_a_retry_clears_them(engine):
    recorder, (trial, _) = setup(engine)
    recorder.on_trial_start(0, [trial], trial)
    recorder.on_trial_error(0, [trial], trial)
    assert query(engine, "SELECT status, error IS NOT NULL, ended_at IS NOT NULL FROM trials") == [("error", 1, 1)]
    recorder.on_trial_recover(0, [trial], trial)
    recorder.on_trial_start(0, [trial], trial)
    assert query(engine, "SELECT status, error FROM trials") == [("running", None)]


def run_epochs(recorder, trials, trial, epochs: int) -> None:
    """A trial that started and reported `epochs` epochs, as Tune reports it (not ended)."""
    recorder.on_trial_start(0, trials, trial)
    for e in range(1, epochs + 1):
        recorder.on_trial_result(0, trials, trial, result(e))
        trial.update_last_result(result(e))


def complete(recorder, trials, trial, epochs: int = 3) -> None:
    """A trial that ran `epochs` epochs and ended, as Tune reports it."""
    run_epochs(recorder, trials, trial, epochs)
    trial.set_status(Trial.TERMINATED)
    recorder.on_trial_complete(0, trials, trial)


def test_sweep_finishes_only_when_every_expected_trial_has_ended(engine):
    recorder, trials = setup(engine, n_trials=2, expected=3)
    for t in trials:
        complete(recorder, trials, t)
    recorder.on_experiment_end(trials)  # the searcher had a third trial to go: interrupted
    assert recorder.final_status == "interrupted"
    assert query(engine, "SELECT status, finished_at FROM sweeps") == [("interrupted", None)]
    recorder.expected_trials = 2
    recorder.on_experiment_end(trials)
    assert query(engine, "SELECT status, finished_at IS NOT NULL FROM sweeps") == [("finished", 1)]


def test_trials_tune_marked_terminated_at_shutdown_are_unfinished_and_go_back_to_pending(engine):
    """On a stop, Tune's _cleanup_trials marks every live trial TERMINATED before on_experiment_end,
    without on_trial_complete; a created, never started trial is still PENDING. Neither is done."""
    recorder, (done, running, never) = setup(engine, n_trials=3)
    complete(recorder, [done, running, never], done)
    recorder.on_trial_start(0, [done, running, never], running)
    recorder.on_trial_result(0, [done, running, never], running, result(1))
    running.set_status(Trial.TERMINATED)
    recorder.on_experiment_end([done, running, never])
    assert recorder.final_status == "interrupted"
    assert query(engine, "SELECT trial_key, status FROM trials ORDER BY trial_key") == [
        ("t_00000", "terminated"), ("t_00001", "pending"), ("t_00002", "pending")]
    assert query(engine, "SELECT status, finished_at FROM sweeps") == [("interrupted", None)]


def test_a_trial_stopped_after_reporting_its_last_epoch_is_terminated_not_pending(engine, monkeypatch):
    """A stop that lands between a trial's last report and Tune's completion of it (seen in CI):
    the trial ran every epoch, so the sweep's resume has nothing of it to continue. At the signal
    (stopping) and at the experiment's end alike, it reads terminated; the one mid-way, pending."""
    from orchestrator.run.stops import STOPS

    recorder, (last, mid) = setup(engine)
    for trial, epochs in ((last, 3), (mid, 1)):
        run_epochs(recorder, [last, mid], trial, epochs)
    monkeypatch.setattr(STOPS, "first", 2)
    recorder.outbox.wait_until_written()
    recorder.stopping()
    assert query(engine, "SELECT trial_key, status FROM trials ORDER BY trial_key") == [
        ("t_00000", "terminated"), ("t_00001", "pending")]
    for trial in (last, mid):  # Tune's shutdown marks both TERMINATED without on_trial_complete
        trial.set_status(Trial.TERMINATED)
    recorder.on_experiment_end([last, mid])
    assert recorder.final_status == "interrupted"
    assert query(engine, "SELECT trial_key, status, ended_at IS NOT NULL FROM trials ORDER BY trial_key") == [
        ("t_00000", "terminated", 1), ("t_00001", "pending", 0)]
    assert query(engine, "SELECT status, finished_at FROM sweeps") == [("interrupted", None)]


def test_grid_points_tune_never_created_keep_the_sweep_interrupted(engine):
    recorder, trials = setup(engine, n_trials=2, expected=12)
    for t in trials:
        complete(recorder, trials, t)
    recorder.on_experiment_end(trials)
    assert recorder.final_status == "interrupted"


def test_a_failed_trial_fails_the_sweep(engine):
    recorder, (ok, bad) = setup(engine)
    complete(recorder, [ok, bad], ok)
    recorder.on_trial_start(0, [ok, bad], bad)
    bad.set_status(Trial.ERROR)
    recorder.on_trial_error(0, [ok, bad], bad)
    recorder.on_experiment_end([ok, bad])
    assert query(engine, "SELECT status FROM sweeps") == [("failed",)]


def test_a_trial_that_dies_while_the_driver_stops_is_pending_not_failed(engine, monkeypatch):
    """Slurm's SIGTERM reaches the trials' Ray nodes too: their deaths are the stop's, not theirs."""
    from orchestrator.run.stops import STOPS

    recorder, (trial, _) = setup(engine)
    recorder.on_trial_start(0, [trial], trial)
    monkeypatch.setattr(STOPS, "first", 15)
    recorder.on_trial_error(0, [trial], trial)
    assert query(engine, "SELECT status, error FROM trials") == [("pending", None)]


def test_a_stop_signal_marks_the_sweep_interrupted_at_once(engine):
    recorder, (trial, _) = setup(engine)
    recorder.on_trial_start(0, [trial], trial)
    recorder.stopping()
    assert query(engine, "SELECT status FROM sweeps") == [("interrupted",)]
    assert query(engine, "SELECT status FROM trials") == [("pending",)]


def test_pickled_recorder_carries_no_engine(engine):
    recorder, _ = setup(engine)
    data = pickle.dumps(recorder)
    clone = pickle.loads(data)
    # The engine lives in the outbox only (Recorder.engine was never read), and stays out.
    assert clone.outbox is None and recorder.outbox.engine is not None and clone.sweep_id == recorder.sweep_id
    assert b"Engine" not in data and str(engine.url.database).encode() not in data


def test_trials_tune_forgot_are_closed_as_lost(engine):
    recorder, (kept, lost) = setup(engine)
    complete(recorder, [kept, lost], kept)
    recorder.on_trial_start(0, [kept, lost], lost)
    recorder.on_experiment_end([kept])  # the resumed run never heard of `lost`
    ((status, error),) = query(engine, "SELECT status, error FROM trials WHERE trial_key = 't_00001'")
    assert status == "error" and error.startswith("lost: its driver was killed")


def test_each_checkpoint_records_where_it_lies_and_the_latest_wins(engine, tmp_path):
    from ray.tune import Checkpoint

    recorder, (trial, _) = setup(engine)
    recorder.on_trial_start(0, [trial], trial)
    for epoch in (1, 2):
        directory = tmp_path / f"checkpoint_{epoch - 1:06d}"
        directory.mkdir()
        recorder.on_checkpoint(0, [trial], trial, Checkpoint.from_directory(str(directory)))
        assert query(engine, "SELECT checkpoint_uri FROM trials WHERE trial_key = 't_00000'") == [(str(directory),)]


def test_a_checkpoint_in_an_object_store_is_recorded_as_its_uri():
    import pyarrow.fs
    from ray.tune import Checkpoint

    from orchestrator.run.storage import checkpoint_uri

    # Constructing the filesystem contacts nothing; only its scheme and the path are read.
    s3 = pyarrow.fs.S3FileSystem(region="us-east-1", anonymous=True)
    checkpoint = Checkpoint(path="bucket/prefix/sweep/trial_1/checkpoint_000003", filesystem=s3)
    assert checkpoint_uri(checkpoint) == "s3://bucket/prefix/sweep/trial_1/checkpoint_000003"
