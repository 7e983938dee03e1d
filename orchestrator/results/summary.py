"""What a launch or resume prints when it ends with Tune's results: the verdict, the best trial,
the failures, the grid (orchestrator.results.tables), and the commands that look at the results
or continue the sweep.

Every command it suggests repeats the --db the run was given as `db_flag`
(db.engine.Database.flag): text that works when pasted, never the password.
"""

from __future__ import annotations

from rich.console import Console
from sqlalchemy.engine import Engine

from db import queries
from orchestrator.results.tables import grid_table
from orchestrator.run.outcome import Outcome, duration, print_commands
from orchestrator.run.spec import SweepSpec


def print_summary(console: Console, engine: Engine, outcome: Outcome, db_flag: str) -> None:
    """After Tune's fit: `outcome` as orchestrator.run.launch returned it; nothing for a run that
    ended without Tune's results (already finished, stopped by the store, a second Ctrl-C)."""
    spec = outcome.spec
    if spec is None:
        return
    status = outcome.status
    console.print()
    verdict = {"finished": "[green]finished[/]", "failed": "[red]finished with failed trials[/]",
               "interrupted": "[yellow]interrupted[/]"}.get(status, status)
    if status == "interrupted":
        console.print(f"Sweep [bold]{spec.name}[/] {verdict} after {duration(outcome.seconds)}: "
                      f"{_unfinished(engine, spec)}.", highlight=False, soft_wrap=True)
    else:
        console.print(f"Sweep [bold]{spec.name}[/] {verdict} in {duration(outcome.seconds)}: {outcome.trials} trials, "
                      f"{outcome.errors} failed.", highlight=False)
    if outcome.best is not None:
        console.print(f"Best final {spec.metric}: {outcome.best[0]:.4f} ({outcome.best[1]})", highlight=False)
    for line in outcome.failures[:5]:
        console.print(f"  failed: {line}", highlight=False)
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
