"""What a person watching a sweep sees: one status line, kept up to date, instead of Ray's tables.

    cifar10-depth  12/30 done · 4 running · 1 failed · best test_err 0.0712 (ResNet-56 A seed 1)
                   · 3m12s elapsed · ~6m left

On a terminal the line is redrawn in place (rich's Live, twice a second at most, however many
trials end meanwhile); when output goes to a file or a pipe it is printed as a new line when the
count of ended trials reaches the next hundredth of the sweep (every end, up to 100 trials), when
a trial fails, or every `log_every_s` seconds, so a log of 10,000 trials stays about a hundred
lines. Counts come from Tune's own trial list, so a resumed sweep starts with the trials it had
already finished; that list is read only to draw a line, never on each of Tune's steps, so a
step costs the same at the 1st trial and the 10,000th.
"""

from __future__ import annotations

import math
import time
from typing import Any

from ray.tune import Callback
from ray.tune.experiment import Trial
from rich.console import Console
from rich.live import Live
from rich.text import Text

from orchestrator.run.stops import STOPS
from orchestrator.run.outcome import duration
from resweep.paper import trial_label  # a trial as the console names it (also launch's summary)


class Progress(Callback):
    """Keeps one line about the sweep on the console while Tune runs it."""

    _last_mark: tuple[int, int] | None = None  # (hundredths of the sweep ended, failed) last logged
    _ends = 0  # trials ended (or failed) since the last line: news for the log

    def __init__(
        self,
        name: str,
        *,
        total: int,
        epochs: int,
        metric: str,
        mode: str,
        console: Console | None = None,
        log_every_s: float = 30.0,
        store: Any = None,
    ):
        self.name = name
        self.total = total
        self.epochs = epochs
        self.metric = metric
        self.mode = mode
        self.console = console
        self.log_every_s = log_every_s
        self.store = store  # has note(): the recorder's word on the database while writes wait
        self._last_note: str | None = None
        self._start = time.monotonic()
        self._epochs_at_start: int | None = None
        self._first_report: tuple[float, int] | None = None  # (when, epochs done) at the first epoch reported
        self._live: Live | None = None
        self._last_draw = 0.0
        self._last_line = ""
        self._last_mark = None
        self._ends = 0
        self._trials: list[Trial] = []
        self._best: dict[str, float] = {}  # per trial, the best value of the metric it has reported

    def __getstate__(self) -> dict[str, Any]:
        # Pickled into Tune's experiment state; the console and the live display do not travel.
        state = self.__dict__.copy()
        state.update(console=None, _live=None, _trials=[], _best={}, store=None, _first_report=None,
                     _epochs_at_start=None)  # monotonic times mean nothing in another process
        return state

    # --- Tune's hooks --------------------------------------------------------------------

    def on_trial_result(
        self, iteration: int, trials: list[Trial], trial: Trial, result: dict, **info: Any
    ) -> None:
        value = result.get(self.metric)
        if isinstance(value, (int, float)) and not math.isnan(value):
            old = self._best.get(trial.trial_id)
            better = old is None or (value < old if self.mode == "min" else value > old)
            self._best[trial.trial_id] = float(value) if better else old

    def on_step_end(self, iteration: int, trials: list[Trial], **info: Any) -> None:
        self._trials = trials
        self._draw(force=False)

    def on_trial_complete(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        self._trials = trials
        self._ends += 1
        self._draw(force=False)

    def on_trial_error(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        self._trials = trials
        self._ends += 1
        self._draw(force=False)

    def on_experiment_end(self, trials: list[Trial], **info: Any) -> None:
        if not STOPS.requested:  # on a stop Tune has marked every live trial TERMINATED: not done
            self._trials = trials
            self._draw(force=True)
        self.close()

    def close(self) -> None:
        """Stop redrawing the line (leaves it on the terminal)."""
        if self._live is not None:
            self._live.stop()
            self._live = None

    # --- the line ------------------------------------------------------------------------

    def line(self) -> str:
        trials = self._trials
        done = sum(t.status == Trial.TERMINATED for t in trials)
        running = sum(t.status == Trial.RUNNING for t in trials)
        failed = sum(t.status == Trial.ERROR for t in trials)
        parts = [f"{done}/{self.total} done", f"{running} running"]
        if failed:
            parts.append(f"{failed} failed")
        best = self.best()
        if best is not None:
            value, trial = best
            parts.append(f"best {self.metric} {value:.4f} ({trial_label(trial.config)})")
        elapsed = time.monotonic() - self._start
        parts.append(f"{duration(elapsed)} elapsed")
        eta = self._eta(trials, elapsed)
        if eta is not None:
            parts.append(f"~{duration(eta)} left")
        note = self._note()
        if note:
            parts.append(note)
        return f"{self.name}  " + " · ".join(parts)

    def best(self) -> tuple[float, Trial] | None:
        """The best value of the metric any trial has reported so far, and that trial."""
        found = []
        for t in self._trials:
            value = self._best.get(t.trial_id)
            if value is None and t.last_result:  # finished before this session (a resume)
                value = t.last_result.get(self.metric)
            if isinstance(value, (int, float)) and not math.isnan(value):
                found.append((float(value), t))
        if not found:
            return None
        pick = min if self.mode == "min" else max
        return pick(found, key=lambda pair: pair[0])

    def _eta(self, trials: list[Trial], elapsed: float) -> float | None:
        """Seconds left at this session's pace in epochs, measured from its first reported epoch
        (Ray's start, the workers' start and the data's first load are not the pace of training:
        counted in, a 90 s sweep's first estimate was 20 minutes); none until a second report.
        An upper bound when trials stop early."""
        epochs_done = sum(
            self.epochs if t.status in (Trial.TERMINATED, Trial.ERROR) else (t.last_result or {}).get("epoch", 0)
            for t in trials
        )
        now = time.monotonic()
        if self._epochs_at_start is None:
            self._epochs_at_start = epochs_done
        if getattr(self, "_first_report", None) is None and epochs_done > self._epochs_at_start:
            self._first_report = (now, epochs_done)
        if getattr(self, "_first_report", None) is None:  # (a Progress pickled before it had one)
            return None
        since, first = self._first_report
        trained = epochs_done - first
        if trained <= 0 or now <= since:
            return None
        left = self.total * self.epochs - epochs_done
        return max(0.0, left * (now - since) / trained)

    def _note(self) -> str | None:
        return self.store.note() if self.store is not None else None

    def _draw(self, *, force: bool) -> None:
        """Draw the line if it is due (see the module docstring); `force`: now, whatever the time."""
        if self.console is None:
            return
        now = time.monotonic()
        note = self._note()
        # An outage starting or ending is news: shown at once, also in logs. While it lasts the
        # note's seconds change, so the log line repeats only every log_every_s.
        if (note is None) != (self._last_note is None):
            force = True
            self._last_mark = None
        self._last_note = note
        if self.console.is_terminal:
            if not force and now - self._last_draw < 0.5:
                return
            self._last_draw = now
            text = Text(self.line(), overflow="ellipsis", no_wrap=True)
            if self._live is None:
                self._live = Live(text, console=self.console, auto_refresh=False, transient=False)
                self._live.start()
            self._live.update(text, refresh=True)
            return
        # The trial list is counted only when a trial has ended since the last line, or when a
        # line is due anyway; a step with no news costs nothing however long the list.
        if not (force or self._ends or self._last_mark is None or now - self._last_draw >= self.log_every_s):
            return
        self._ends = 0
        done = sum(t.status in (Trial.TERMINATED, Trial.ERROR) for t in self._trials)
        failed = sum(t.status == Trial.ERROR for t in self._trials)
        mark = (done * 100 // max(1, self.total), failed) if self.total > 100 else (done, failed)
        if force or mark != self._last_mark or now - self._last_draw >= self.log_every_s:
            line = self.line()
            if line != self._last_line:
                self.console.print(line, highlight=False, soft_wrap=True)
                self._last_line = line
            self._last_draw, self._last_mark = now, mark
