"""What a launch or resume prints when it ends: the verdict, the best trial, the failures, the
grid (orchestrator.tables), and the commands that look at the results or continue the sweep.

Every command it suggests repeats the --db the run was given as `db_flag`
(db.engine.Database.flag): text that works when pasted, never the password.

`Outcome` (how a launch or resume ended) and `duration` live here rather than beside the Tuner
and the progress line, so that orchestrator.launch imports Ray Tune only once it needs it: while
a new local Ray starts (orchestrator.ray_session's background imports).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from sqlalchemy.engine import Engine

from db import queries
from orchestrator.spec import SweepSpec
from orchestrator.tables import grid_table
from resweep.paper import trial_label

if TYPE_CHECKING:
    from orchestrator.recorder import Recorder


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


def print_summary(
    console: Console, engine: Engine, spec: SweepSpec, grid: Any, status: str, seconds: float, db_flag: str
) -> None:
    """After Tune's fit: `grid` is its ResultGrid, `status` the sweep's status in the database."""
    results = list(grid)
    errors = [r for r in results if r.error is not None]
    best = None
    for r in results:
        value = (r.metrics or {}).get(spec.metric)
        if isinstance(value, (int, float)) and (best is None or (value < best[0]) == (spec.mode == "min")):
            best = (value, r)
    console.print()
    verdict = {"finished": "[green]finished[/]", "failed": "[red]finished with failed trials[/]",
               "interrupted": "[yellow]interrupted[/]"}.get(status, status)
    if status == "interrupted":
        console.print(f"Sweep [bold]{spec.name}[/] {verdict} after {duration(seconds)}: {_unfinished(engine, spec)}.",
                      highlight=False, soft_wrap=True)
    else:
        console.print(f"Sweep [bold]{spec.name}[/] {verdict} in {duration(seconds)}: {len(results)} trials, "
                      f"{len(errors)} failed.", highlight=False)
    if best is not None:
        console.print(f"Best final {spec.metric}: {best[0]:.4f} ({trial_label(best[1].config)})", highlight=False)
    for r in errors[:5]:
        first = str(r.error).strip().splitlines()[-1] if str(r.error).strip() else type(r.error).__name__
        console.print(f"  failed: {trial_label(r.config)}: {first[:200]}", highlight=False)
    table = grid_table(queries.grid(engine, spec.name))
    if table is not None:
        console.print(table)
    if status == "interrupted":
        console.print(f"Resume with: python -m orchestrator resume {spec.name}{db_flag}", highlight=False,
                      soft_wrap=True)
    print_commands(console, spec.name, db_flag)


def _unfinished(engine: Engine, spec: SweepSpec) -> str:
    """How far an interrupted sweep got, from the database: what a resume will continue."""
    frame = queries.trials(engine, spec.name)
    ended = int(frame["status"].isin(("terminated", "stopped", "error")).sum())
    started = int(frame["started_at"].notna().sum())
    return (f"{ended} of {spec.num_trials} trials ended, {spec.num_trials - ended} to continue on resume "
            f"({max(spec.num_trials - started, 0)} never started)")


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
