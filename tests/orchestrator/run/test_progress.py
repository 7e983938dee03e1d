"""The progress line: counts, best so far, time left; a few lines in a log, never a flood."""

from __future__ import annotations

import io

from ray.tune.experiment import Trial
from rich.console import Console

from orchestrator.run.progress import Progress, duration


def trials(n: int) -> list[Trial]:
    return [Trial("run_trial", config={"depth": 20 + 36 * (i % 2), "block": "basic", "shortcut": "A" if i > 1 else "none",
                                       "seed": i}, trial_id=f"t{i}", stub=True) for i in range(n)]


def report(progress: Progress, all_trials: list[Trial], trial: Trial, epoch: int, test_err: float) -> None:
    result = {"epoch": epoch, "test_err": test_err}
    progress.on_trial_result(0, all_trials, trial, result)
    trial.update_last_result(result)


def test_durations_are_short():  # trial labels: tests/resweep/test_paper.py
    assert [duration(s) for s in (5, 65, 3725)] == ["5s", "1m05s", "1h02m"]


def test_line_counts_trials_and_keeps_the_best_value_ever_reported():
    ts = trials(4)
    progress = Progress("demo", total=4, epochs=10, metric="test_err", mode="min")
    ts[0].set_status(Trial.TERMINATED)
    ts[1].set_status(Trial.RUNNING)
    ts[2].set_status(Trial.ERROR)
    report(progress, ts, ts[1], 1, 0.30)
    report(progress, ts, ts[1], 2, 0.20)
    report(progress, ts, ts[1], 3, 0.25)  # worse than before: the best stays 0.20
    progress.on_step_end(0, ts)
    line = progress.line()
    assert line.startswith("demo  1/4 done · 1 running · 1 failed · best test_err 0.2000 (plain-56 seed 1) · ")
    assert "elapsed" in line


def test_log_output_prints_when_a_trial_ends_not_on_every_step():
    out = io.StringIO()
    ts = trials(2)
    progress = Progress("demo", total=2, epochs=2, metric="test_err", mode="min",
                        console=Console(file=out, force_terminal=False, width=200), log_every_s=3600)
    for t in ts:
        t.set_status(Trial.RUNNING)
    for step in range(50):
        progress.on_step_end(step, ts)
    ts[0].set_status(Trial.TERMINATED)
    progress.on_trial_complete(50, ts, ts[0])
    ts[1].set_status(Trial.TERMINATED)
    progress.on_experiment_end(ts)
    lines = out.getvalue().splitlines()
    assert len(lines) == 3
    assert [line.split("  ")[1].split(" · ")[0] for line in lines] == ["0/2 done", "1/2 done", "2/2 done"]


def test_the_line_says_when_the_database_is_unreachable_and_logs_it_at_once(tmp_path):
    """The store is a real outbox on a real SQLite file that another connection holds locked."""
    import sqlite3

    from db import writes
    from db.engine import get_engine
    from orchestrator.run.outbox import Outbox, TrialRegistered

    engine = get_engine(f"sqlite:///{tmp_path / 'r.db'}")
    box = Outbox(engine, writes.create_sweep(engine, name="s", spec="", spec_hash="0" * 64))
    out = io.StringIO()
    ts = trials(1)
    ts[0].set_status(Trial.RUNNING)
    progress = Progress("demo", total=1, epochs=2, metric="test_err", mode="min", store=box,
                        console=Console(file=out, force_terminal=False, width=300), log_every_s=3600)
    progress.on_step_end(0, ts)
    holder = sqlite3.connect(tmp_path / "r.db", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    box.put(TrialRegistered("t0", {"dataset": "synthetic", "model": "cifar", "depth": 8, "block": "basic",
                                   "shortcut": "A", "seed": 0}, "running"))
    progress.on_step_end(1, ts)
    holder.execute("COMMIT")
    assert box.flush(force=True)
    progress.on_step_end(2, ts)
    lines = out.getvalue().splitlines()
    assert len(lines) == 3 and "database unreachable for" in lines[1]
    assert lines[1].endswith(", 1 result waiting")
    assert "unreachable" not in lines[0] + lines[2]
    engine.dispose()


def test_time_left_is_the_pace_of_training_not_of_the_start(monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr("orchestrator.run.progress.time.monotonic", lambda: clock[0])
    ts = trials(2)
    progress = Progress("demo", total=2, epochs=10, metric="test_err", mode="min")
    for t in ts:
        t.set_status(Trial.RUNNING)
    progress.on_step_end(0, ts)
    assert "left" not in progress.line()  # the line as the sweep starts
    clock[0] += 60  # a minute of Ray, workers and data before the first epoch
    report(progress, ts, ts[0], 1, 0.9)
    report(progress, ts, ts[1], 1, 0.9)
    progress.on_step_end(0, ts)
    assert "left" not in progress.line()  # one report: no pace yet
    clock[0] += 2  # then an epoch of each trial every 2 s
    report(progress, ts, ts[0], 2, 0.8)
    report(progress, ts, ts[1], 2, 0.8)
    line = progress.line()
    assert line.endswith("· ~16s left"), line  # 16 epochs left at 1 epoch a second, not 16 * 62 / 2 s


def test_a_log_of_a_thousand_trials_has_a_line_per_hundredth_and_one_per_failure():
    out = io.StringIO()
    ts = trials(1000)
    progress = Progress("demo", total=1000, epochs=1, metric="test_err", mode="min",
                        console=Console(file=out, force_terminal=False, width=200), log_every_s=3600)
    progress.on_step_end(0, ts)
    for i, t in enumerate(ts):
        t.set_status(Trial.ERROR if i == 500 else Trial.TERMINATED)
        (progress.on_trial_error if i == 500 else progress.on_trial_complete)(i, ts, t)
    progress.on_experiment_end(ts)
    lines = out.getvalue().splitlines()
    counts = [line.split("  ")[1].split(" · ")[0] for line in lines]
    assert counts[0] == "0/1000 done" and counts[-1] == "999/1000 done"
    assert len(lines) == 1 + 100 + 1  # the first, each hundredth, the failure (its own line)
    assert sum("1 failed" in line for line in lines[:52]) == 1


class CountedList(list):
    """A trial list that counts how often it is read through."""

    reads = 0

    def __iter__(self):
        CountedList.reads += 1
        return super().__iter__()


def test_a_step_with_no_trial_ended_does_not_read_the_trial_list():
    ts = CountedList(trials(1000))
    for t in ts:
        t.set_status(Trial.RUNNING)
    progress = Progress("demo", total=1000, epochs=1, metric="test_err", mode="min",
                        console=Console(file=io.StringIO(), force_terminal=False), log_every_s=3600)
    progress.on_step_end(0, ts)  # the first line
    CountedList.reads = 0
    for step in range(1, 1000):
        progress.on_step_end(step, ts)
    assert CountedList.reads == 0
    ts[0].set_status(Trial.TERMINATED)
    progress.on_trial_complete(1000, ts, ts[0])
    assert CountedList.reads > 0  # a trial ended: counted, and a line when it is news
