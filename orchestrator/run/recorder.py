"""The recorder: a Ray Tune callback on the driver, the only writer of a sweep's results.

Trials report through `tune.report`; Tune hands every result to the driver's callbacks, and this
one turns it into an event that its outbox writes with `db.writes`. So the database sees one writer (SQLite is happy) and need only be
reachable from the head node. Every write is an upsert on a natural key: a trial restored from a
checkpoint that reports an epoch again replaces that epoch's rows, never duplicates them.

What it writes, when:
- a trial starts (or restarts after a failure): its row, status running (with its flat config the
  first time in a run);
- each result: the epoch's metrics, params_count, and layer records on probe epochs;
- each checkpoint Tune has persisted: its location (trials.checkpoint_uri, the latest wins);
- a trial fails and will be retried: status pending; fails for good: status error with the error
  (but pending when the driver is stopping: a trial killed by the stop has not failed);
- each attempt of a trial (first run, retry, restart by a resume): a `trial_attempts` row, with
  the node it ran on (from its results, or from its error when it never reported) and, when it
  failed, its error; the trial's node_ip, hostname and attempts follow its latest attempt;
- a trial ends: terminated if it ran every epoch, stopped if the scheduler stopped it early;
  a trial whose last epoch is recorded when a stop lands, before Tune completes it, is terminated;
- all of it as typed events (orchestrator.run.outbox: TrialRegistered, carrying the trial's
  config once, then ResultReported, TrialStatus, CheckpointSaved, Attempt*, SweepStatus,
  SweepInterrupted) through the outbox: in order, held and retried through a database outage,
  spilled to a versioned file past a size; a store that fails for good stops the run the way
  Ctrl-C does. Nothing here writes around it: the reads that judge the sweep wait for it first;
- the experiment ends: the sweep's status, judged from the database and the spec, not from Tune's
  trial statuses (on shutdown Tune marks every live trial TERMINATED before this callback runs):
  `finished` (or `failed`, when some failed for good) only when every trial of the sweep is in the
  database and reached its last epoch, was stopped by the scheduler or failed for good; else
  `interrupted`, with every unfinished trial, and every trial Tune created but never started,
  `pending` (a resume continues them, and creates the grid points Tune never reached). A trial
  Tune never saved before its driver was killed (a resume cannot continue it) is marked error,
  saying so.
"""

from __future__ import annotations

import os
import re
import signal
import time
from typing import Any, Callable

from ray.tune import Callback
from ray.tune.experiment import Trial
from sqlalchemy.engine import Engine

from db.errors import StoreError
from db.models import METRIC_NAMES
from orchestrator.run.outbox import (
    MEMORY_OPS, AttemptEnded, AttemptHost, AttemptStarted, CheckpointSaved, Outbox, ResultReported, SweepInterrupted,
    SweepStatus, TrialRegistered, TrialStatus,
)
from orchestrator.run.stops import STOPS
from orchestrator.run.storage import checkpoint_uri, newest_checkpoint

ERROR_CHARS = 4000  # the tail of a trial's error text kept in trials.error
ORPHAN_ERROR = ("lost: its driver was killed before Ray Tune saved this trial in the experiment state, "
                "so the resumed sweep ran a replacement")
ENDED = ("terminated", "stopped", "error")  # trial statuses that a resume does not continue


class Recorder(Callback):
    """Writes one sweep's trials and results to the database, idempotently.

    `expected_trials` is how many trials the sweep has in all, so that an experiment that ends
    with fewer (an interrupted Optuna search) is not taken for a finished one.

    Writes go through an `Outbox` (orchestrator.run.outbox): in order, held and retried while the
    database is unreachable (at most `db_wait_s`), spilled to `spill_path` past a size. When the
    store fails for good (gone, full, unreachable too long) the recorder ends the Tune run the way
    Ctrl-C does (Tune saves its experiment state, unfinished trials stay resumable) and keeps the
    one line that says why in `stop_reason`.
    """

    def __init__(self, engine: Engine, sweep_id: int, *, epochs: int, expected_trials: int,
                 db_wait_s: float = 600.0, spill_path: str | os.PathLike | None = None,
                 memory_ops: int = MEMORY_OPS):
        self.sweep_id = sweep_id
        self.epochs = epochs
        self.expected_trials = expected_trials
        self.outbox = Outbox(engine, sweep_id, wait_s=db_wait_s, spill_path=spill_path, memory_ops=memory_ops,
                             on_fatal=self._stop_run)
        self.trial_ids = self.outbox.trial_ids  # Ray's trial id -> trials.id
        self.seconds_per_result: list[float] = []
        self.final_status: str | None = None
        self.stop_reason: str | None = None
        self._ending = False
        self._ended: set[str] = set()  # trials recorded as ended (terminated, stopped, error)
        self._registered: set[str] = set()  # trials whose TrialRegistered (with the config) was put
        self.hosts: dict[str, tuple[str | None, str | None]] = {}  # Ray's trial id -> (node_ip, hostname) now
        self._hostnames: dict[str, str] = {}  # node ip -> host name, from Ray's node table
        self._unsaved: dict[str, Trial] = {}  # reported a checkpoint that Tune has not registered yet

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles its callbacks into tuner.pkl; the outbox (its engine, and the URL's password
        # with it) stays out. A resume (orchestrator.run.launch) puts a fresh Recorder in place
        # before anything runs.
        state = self.__dict__.copy()
        state["outbox"] = None
        return state

    def _stop_run(self, line: str) -> None:
        """End the Tune run as Ctrl-C would: SIGUSR1 is Tune's own "stop, save the experiment
        state" signal (tune.run installs its handler on the driver's main thread). A Stopper's
        stop_all would instead mark every trial terminated, and a resume would not continue them."""
        self.stop_reason = line
        if self._ending:
            return
        handler = signal.getsignal(signal.SIGUSR1)
        if callable(handler):  # Tune's handler is in place (never the default, which would kill us)
            os.kill(os.getpid(), signal.SIGUSR1)

    @property
    def stopping_run(self) -> bool:
        """A stop is under way (a signal, or the store's): Tune ending trials now is not their end."""
        return self.stop_reason is not None or STOPS.requested

    def _key(self, trial: Trial, status: str = "running") -> str:
        """The trial's key for its events; the first time in this run, after a TrialRegistered
        with its config (in `status`: the one its first event gives it)."""
        key = trial.trial_id
        if key not in self._registered:
            self._registered.add(key)
            self.outbox.put(TrialRegistered(key, dict(trial.config), status))
        return key

    def note(self) -> str | None:
        """The progress line's word on the database while writes wait (None when all is written)."""
        return self.outbox.note()

    def on_step_begin(self, iteration: int, trials: list[Trial], **info: Any) -> None:
        self.outbox.check_space()  # every few seconds
        self.outbox.flush()  # a retry, when one is due

    def on_trial_start(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        if trial.trial_id in self._registered:  # a retry, or a restart after a stop
            self.outbox.put(TrialStatus(trial.trial_id, "running"))
        key = self._key(trial)
        self.hosts.pop(key, None)
        self.outbox.put(AttemptStarted(key))

    def on_trial_result(
        self, iteration: int, trials: list[Trial], trial: Trial, result: dict, **info: Any
    ) -> None:
        start = time.perf_counter()
        metrics = {name: result[name] for name in METRIC_NAMES if name in result}
        if "params_count" in result:
            metrics["params_count"] = result["params_count"]
        key = self._key(trial)
        self.outbox.put(ResultReported(key, int(result["epoch"]), metrics, result.get("layer_stats")))
        if result.get("should_checkpoint"):  # on storage already; on_checkpoint follows unless a stop comes first
            self._unsaved[key] = trial
        host = (result.get("node_ip"), result.get("hostname"))
        if host != self.hosts.get(key) and any(host):
            self.hosts[key] = host
            self.outbox.put(AttemptHost(key, *host))
        self.seconds_per_result.append(time.perf_counter() - start)

    def on_checkpoint(
        self, iteration: int, trials: list[Trial], trial: Trial, checkpoint: Any, **info: Any
    ) -> None:
        # Tune has persisted the checkpoint to the sweep's storage by now (local or object store).
        self._unsaved.pop(trial.trial_id, None)
        self.outbox.put(CheckpointSaved(self._key(trial), checkpoint_uri(checkpoint)))

    def _record_unsaved_checkpoints(self) -> None:
        """A trial's checkpoint reaches storage before its result reaches the driver, and Tune
        registers it (on_checkpoint) a step later; a stop in between leaves the result recorded and
        the checkpoint not. The newest checkpoint in the trial's directory is that one."""
        for key, trial in list(self._unsaved.items()):  # a copy: the stop's thread runs this too
            newest = newest_checkpoint(trial.storage.storage_filesystem, trial.path)
            if newest is not None:
                self.outbox.put(CheckpointSaved(self._key(trial), newest))
            self._unsaved.pop(key, None)

    def on_trial_recover(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        self._set_trial(trial, "pending")
        self._end_attempt(trial, _error_text(trial))

    def on_trial_error(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        if self.stopping_run:  # e.g. Slurm's SIGTERM reached the trial's Ray node too: not its failure
            self._set_trial(trial, "pending")
            return
        error = _error_text(trial)
        self._ended.add(trial.trial_id)
        self._set_trial(trial, "error", error=error, ended=True)
        self._end_attempt(trial, error)

    def on_trial_complete(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        epochs_done = (trial.last_result or {}).get("epoch", 0)
        if self.stopping_run and epochs_done < self.epochs:
            return  # Tune stopping it for the stop (see _end), not its end
        self._end_trial(trial, "terminated" if epochs_done >= self.epochs else "stopped")

    def _end_trial(self, trial: Trial, status: str) -> None:
        """The trial ended (terminated or stopped): its status, and its attempt closed without error."""
        self._ended.add(trial.trial_id)
        self._set_trial(trial, status, ended=True)
        self.outbox.put(AttemptEnded(self._key(trial)))

    def _end_attempt(self, trial: Trial, error: str) -> None:
        """Close the trial's attempt with its error; a trial that never reported names its node
        only there (Ray's `ip=...` / `ip: ...`)."""
        node_ip, hostname = self.hosts.pop(trial.trial_id, (None, None))
        if node_ip is None and (found := _ERROR_IP.search(error)):
            node_ip = found.group(1)
        if node_ip is not None and hostname is None:
            hostname = self._hostname(node_ip)
        self.outbox.put(AttemptEnded(self._key(trial), error, node_ip, hostname))

    def _hostname(self, node_ip: str) -> str | None:
        if node_ip not in self._hostnames:
            try:
                import ray

                for node in ray.nodes():
                    self._hostnames[node["NodeManagerAddress"]] = node.get("NodeManagerHostname")
            except Exception:  # Ray's node table is a nicety here, not a reason to stop recording
                return None
        return self._hostnames.get(node_ip)

    def _set_trial(self, trial: Trial, status: str, *, error: str | None = None, ended: bool = False) -> None:
        self.outbox.put(TrialStatus(self._key(trial, status), status, error, ended))

    def _set_sweep(self, status: str, *, finished: bool = False) -> None:
        self.outbox.put(SweepStatus(status, finished))

    def on_experiment_end(self, trials: list[Trial], **info: Any) -> None:
        self._ending = True
        STOPS.join()  # what a stop signal wrote at once comes before the verdict
        try:
            self._record_unsaved_checkpoints()
            self._end(trials)
        finally:
            self.outbox.persist()  # what could not be written waits in the spill file for a resume
            self.outbox.close()

    def _end(self, trials: list[Trial]) -> None:
        # Everything reported must be in before the orphans are looked for and the sweep judged.
        if not self.outbox.wait_until_written():
            self._unjudged(trials)
            return
        self._close_orphans(trials)
        try:
            frame = self._rows() if self.outbox.wait_until_written() else None
        except StoreError:
            frame = None
        if frame is None:
            self._unjudged(trials)
            return
        status = dict(zip(frame["trial_key"], frame["status"]))
        epochs = dict(zip(frame["trial_key"], frame["epochs"].fillna(0)))
        for t in trials:  # created by Tune, not ended as far as the database knows
            if status.get(t.trial_id) in ENDED:
                continue
            if epochs.get(t.trial_id, 0) >= self.epochs:
                # Its last epoch is recorded: the stop came between that report and Tune's
                # completion of the trial. It ran every epoch, so it is terminated, not pending.
                self._end_trial(t, "terminated")
            else:  # to be continued by a resume
                self._set_trial(t, "pending")
        if self.stop_reason is not None or not self.outbox.wait_until_written():
            verdict = "interrupted"
        else:
            try:
                verdict = self.verdict()
            except StoreError:
                verdict = "interrupted"
        self.final_status = verdict
        self._set_sweep(verdict, finished=verdict != "interrupted")

    def _unjudged(self, trials: list[Trial]) -> None:
        """The database cannot be read: every trial not ended goes back to pending and the sweep
        reads interrupted, in the spill file for a resume to write first."""
        for t in trials:
            if t.trial_id not in self._ended:
                self._set_trial(t, "pending")
        self.final_status = "interrupted"
        self._set_sweep("interrupted")

    def stopping(self) -> None:
        """A stop signal arrived (see orchestrator.run.stops): the sweep reads interrupted and its
        running trials pending from now on, even if the driver is killed before Tune has stopped;
        on_experiment_end then judges the sweep again. Runs in the stop's own thread: it queues
        and tries once (the outbox keeps the order), and never waits out an outage."""
        self.final_status = "interrupted"
        try:
            self._record_unsaved_checkpoints()
            self.outbox.put(SweepInterrupted(self.epochs))
        except Exception:  # e.g. a checkpoint's storage unreadable: on_experiment_end tries again
            pass

    def interrupted(self, say: Callable[[str], None] | None = None) -> None:
        """The driver stopped before the experiment ended (a second stop signal): every trial the
        database has as running goes back to pending (or terminated when its last epoch is
        recorded), and the sweep is interrupted. Through the outbox like every write: through an
        outage it waits for the database (at most --db-wait; `say` tells the user once), and
        what is still unwritten then goes to the spill file for the resume."""
        self.final_status = "interrupted"
        self._ending = True  # no SIGUSR1 from here: Tune has stopped
        try:
            self._record_unsaved_checkpoints()
            self.outbox.put(SweepInterrupted(self.epochs))
            self._wait(say, "to record the interruption")
        finally:
            self.outbox.persist()
            self.outbox.close()

    def failed(self, status: str = "failed", say: Callable[[str], None] | None = None) -> None:
        """The run broke before Tune ended it (the Tuner could not be built or restored, or Tune
        raised): the sweep is `status` (failed; a resume that could not restore puts back the
        status it found), never left running."""
        self.final_status = status
        self._ending = True
        try:
            self.outbox.put(SweepStatus(status, finished=status in ("failed", "finished")))
            self._wait(say, "to record the failure")
        finally:
            self.outbox.persist()
            self.outbox.close()

    def running(self) -> None:
        """A resumed sweep runs again: its first event (after what a stopped run spilled)."""
        self.outbox.put(SweepStatus("running"))

    def _wait(self, say: Callable[[str], None] | None, what: str) -> None:
        if not self.outbox.flush(force=True) and self.outbox.fatal is None and say is not None:
            say(f"Waiting up to {self.outbox.wait_s:g} s for the database {what} ({self.outbox.note()}); "
                "what is not written then waits in the spill file for the resume.")
        self.outbox.wait_until_written()

    def verdict(self) -> str:
        """finished | failed | interrupted, from the database's trials and the spec's count."""
        frame = self._rows()
        real = frame[frame["error"].fillna("") != ORPHAN_ERROR]
        if len(real) < self.expected_trials or not real["status"].isin(ENDED).all():
            return "interrupted"
        return "failed" if (real["status"] == "error").any() else "finished"

    def _rows(self) -> Any:
        from db import queries

        return queries.trials(self.outbox.engine, self.sweep_id)

    def _close_orphans(self, trials: list[Trial]) -> None:
        """Trials of the database Tune no longer knows: started after its last saved state by a
        driver that was then killed, and replaced on resume by the searcher's new ones. (Read
        once everything queued is written; the outbox finds them by key.)"""
        known = {t.trial_id for t in trials}
        try:
            frame = self._rows()
        except StoreError:
            return  # the database went away just now: the next run's end looks again
        for key, status in zip(frame["trial_key"], frame["status"]):
            if key not in known and status in ("pending", "running"):
                self.outbox.put(TrialStatus(key, "error", ORPHAN_ERROR, ended=True))


_ERROR_IP = re.compile(r"\bip[=:]\s*(\d{1,3}(?:\.\d{1,3}){3})\b")


def _error_text(trial: Trial) -> str:
    """The trial's last failure as Tune recorded it (the tail of its error file)."""
    text = ""
    try:  # Tune writes the error file on the driver first and copies it to storage later
        local = trial.error_file
        if local and os.path.isfile(local):
            with open(local, errors="replace") as f:
                text = f.read()
    except Exception:
        text = ""
    try:
        text = text or trial.get_error() or ""
    except Exception:  # the error file may be gone with a moved results directory
        text = ""
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    text = str(text)
    last = text.rfind("Failure # ")
    text = text[last:] if last >= 0 else text
    return text[-ERROR_CHARS:].strip() or "the trial failed (no error text was recorded)"
