"""How a launch or resume ended (`Outcome`), and the lines the run path itself prints at its end:
the commands that look at the results, and why a store failure stopped the sweep. The summary of
a run that ended with Tune's results (verdict, best trial, failures, the grid) is printed from
its `Outcome` by orchestrator/results/summary.py.

Every command it suggests repeats the --db the run was given as `db_flag`
(db.engine.Database.flag): text that works when pasted, never the password.

`Outcome` and `duration` live here rather than beside the Tuner and the progress line, so that
orchestrator.run.launch imports Ray Tune only once it needs it: while a new local Ray starts
(orchestrator.run.ray_session's background imports).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console

from orchestrator.run.spec import SweepSpec

if TYPE_CHECKING:
    from orchestrator.run.recorder import Recorder


@dataclass
class Outcome:
    """How a launch or resume ended."""

    name: str
    status: str  # finished | failed | interrupted | already-finished
    trials: int = 0
    errors: int = 0
    seconds: float = 0.0
    recorder: Recorder | None = field(default=None, repr=False)
    signal: int | None = None  # the stop signal that interrupted it, if one did
    # What a summary shows of a run that ended with Tune's results (None when it ended otherwise):
    spec: SweepSpec | None = field(default=None, repr=False)
    best: tuple[float, str] | None = None  # the best final value of spec.metric, and its trial's label
    failures: list[str] = field(default_factory=list)  # "label: last line of its error", each failed trial

    @property
    def exit_code(self) -> int:
        if self.status == "interrupted":
            return 128 + (self.signal or 2)  # 130 for SIGINT (and Tune's own stops), 143 for SIGTERM
        return {"finished": 0, "already-finished": 0, "failed": 1}[self.status]


def duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def print_commands(console: Console, name: str, db_flag: str) -> None:
    """The commands that look at the sweep's results."""
    console.print("Look at the results:", highlight=False)
    console.print(f"  python -m orchestrator status {name}{db_flag}", highlight=False, soft_wrap=True)
    console.print(f"  python -m orchestrator query \"SELECT * FROM grid_results WHERE sweep = '{name}'\"{db_flag}",
                  highlight=False, soft_wrap=True)
    console.print(f"  python -m orchestrator dashboard{db_flag}", highlight=False, soft_wrap=True)


def store_stop_line(name: str, reason: str, experiment_dir: Path, db_flag: str) -> str:
    """One line: why the database stopped the sweep, and the command that continues it."""
    resume = f"python -m orchestrator resume {name}{db_flag}"
    if "was deleted" in reason or "was replaced" in reason or "is gone" in reason:
        return (f"Stopped: {reason}; Tune's state is saved in {experiment_dir}: rebuild the database with "
                f"`python -m orchestrator db import {experiment_dir}{db_flag}`, then `{resume}`")
    return f"Stopped: {reason}; Tune's state is saved: when it is fixed, `{resume}`"
