"""The recorder: a Ray Tune callback on the driver, the only writer of a sweep's results.

Trials report through `tune.report`; Tune hands every result to the driver's callbacks, and this
one writes it with `db.writes`. So the database sees one writer (SQLite is happy) and need only be
reachable from the head node. Every write is an upsert on a natural key: a trial restored from a
checkpoint that reports an epoch again replaces that epoch's rows, never duplicates them.

What it writes, when:
- a trial starts (or restarts after a failure): its row, status running, with its flat config;
- each result: the epoch's metrics, params_count, and layer records on probe epochs;
- a trial fails and will be retried: status pending; fails for good: status error with the error;
- a trial ends: terminated if it ran every epoch, stopped if the scheduler stopped it early;
- the experiment ends: the sweep's status (finished, failed or interrupted) and any trial Tune
  left unfinished goes back to pending (a resume continues it); a trial Tune never saved before
  its driver was killed (a resume cannot continue it) is marked error, saying so.
"""

from __future__ import annotations

import time
from typing import Any

from ray.tune import Callback
from ray.tune.experiment import Trial
from sqlalchemy.engine import Engine

from db import writes
from db.models import METRIC_NAMES

ERROR_CHARS = 4000  # the tail of a trial's error text kept in trials.error
ORPHAN_ERROR = ("lost: its driver was killed before Ray Tune saved this trial in the experiment state, "
                "so the resumed sweep ran a replacement")


class Recorder(Callback):
    """Writes one sweep's trials and results to the database, idempotently.

    `expected_trials` is how many trials the sweep has in all, so that an experiment that ends
    with fewer (an interrupted Optuna search) is not taken for a finished one.
    """

    def __init__(self, engine: Engine, sweep_id: int, *, epochs: int, expected_trials: int):
        self.engine = engine
        self.sweep_id = sweep_id
        self.epochs = epochs
        self.expected_trials = expected_trials
        self.trial_ids: dict[str, int] = {}  # Ray's trial id -> trials.id
        self.seconds_per_result: list[float] = []
        self.final_status: str | None = None

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles its callbacks into tuner.pkl; the engine (and the URL's password with it)
        # stays out. launch.resume() puts a fresh Recorder in place before anything runs.
        state = self.__dict__.copy()
        state["engine"] = None
        return state

    def _trial_id(self, trial: Trial, status: str = "running") -> int:
        key = trial.trial_id
        if key not in self.trial_ids:
            self.trial_ids[key] = writes.upsert_trial(
                self.engine, self.sweep_id, key, status=status, config=trial.config
            )
        return self.trial_ids[key]

    def on_trial_start(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        self.trial_ids[trial.trial_id] = writes.upsert_trial(
            self.engine, self.sweep_id, trial.trial_id, status="running", config=trial.config
        )

    def on_trial_result(
        self, iteration: int, trials: list[Trial], trial: Trial, result: dict, **info: Any
    ) -> None:
        start = time.perf_counter()
        metrics = {name: result[name] for name in METRIC_NAMES if name in result}
        if "params_count" in result:
            metrics["params_count"] = result["params_count"]
        writes.record_result(
            self.engine, self._trial_id(trial), int(result["epoch"]), metrics, result.get("layer_stats")
        )
        self.seconds_per_result.append(time.perf_counter() - start)

    def on_trial_recover(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        writes.set_trial_status(self.engine, self._trial_id(trial, "pending"), "pending")

    def on_trial_error(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        error = _error_text(trial)
        writes.set_trial_status(self.engine, self._trial_id(trial, "error"), "error", error=error, ended=True)

    def on_trial_complete(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        epochs_done = (trial.last_result or {}).get("epoch", 0)
        status = "terminated" if epochs_done >= self.epochs else "stopped"
        writes.set_trial_status(self.engine, self._trial_id(trial, status), status, ended=True)

    def on_experiment_end(self, trials: list[Trial], **info: Any) -> None:
        self._close_orphans(trials)
        ended = [t for t in trials if t.status in (Trial.TERMINATED, Trial.ERROR)]
        if len(ended) == len(trials) and len(trials) >= self.expected_trials:
            failed = any(t.status == Trial.ERROR for t in trials)
            self.final_status = "failed" if failed else "finished"
            writes.set_sweep_status(self.engine, self.sweep_id, self.final_status, finished=True)
            return
        for t in trials:
            if t.status not in (Trial.TERMINATED, Trial.ERROR):
                writes.set_trial_status(self.engine, self._trial_id(t, "pending"), "pending")
        self.final_status = "interrupted"
        writes.set_sweep_status(self.engine, self.sweep_id, "interrupted")

    def _close_orphans(self, trials: list[Trial]) -> None:
        """Trials of the database Tune no longer knows: started after its last saved state by a
        driver that was then killed, and replaced on resume by the searcher's new ones."""
        from db import queries

        known = {t.trial_id for t in trials}
        frame = queries.trials(self.engine, self.sweep_id)
        for key, trial_id, status in zip(frame["trial_key"], frame["trial_id"], frame["status"]):
            if key not in known and status in ("pending", "running"):
                writes.set_trial_status(self.engine, int(trial_id), "error", ended=True, error=ORPHAN_ERROR)


def _error_text(trial: Trial) -> str:
    """The trial's last failure as Tune recorded it (the tail of its error file)."""
    try:
        text = trial.get_error() or ""
    except Exception:  # the error file may be gone with a moved results directory
        text = ""
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    text = str(text)
    last = text.rfind("Failure # ")
    text = text[last:] if last >= 0 else text
    return text[-ERROR_CHARS:].strip() or "the trial failed (no error text was recorded)"
