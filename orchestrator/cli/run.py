"""Commands that run sweeps and show how they stand: `launch`, `resume`, `status`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from db.engine import Database
from orchestrator.cli.options import DbOption, TokenFileOption, user_errors
from orchestrator.run.spec import DEFAULT_MAX_TRIALS  # the spec module has no Ray: the CLI starts fast

JoinAddressOption = typer.Option(  # Ray's own address (cluster.py's --address is the Jobs API's URL)
    None, "--address", help="Join the Ray cluster at this address (default: start a local Ray).",
    show_default=False,
)  # fmt: skip
ResultsOption = typer.Option(
    None, "--results", show_default=False,
    help="Where each sweep's Tune state and checkpoints go: a path (on a cluster, one every node shares) or a "
         "URI such as s3://BUCKET/PREFIX (default: $RESWEEP_RESULTS, else ./results).",
)  # fmt: skip
DbWaitOption = typer.Option(
    "10m", "--db-wait", help="How long results wait through a database outage before the sweep stops "
    "(interrupted, resumable): seconds, or 30s, 10m, 1h.",
)  # fmt: skip


def _seconds(text: str) -> float:
    """--db-wait as seconds: a number, or a number with s, m or h."""
    from resweep.errors import UserError

    raw = text.strip().lower()
    scale = {"s": 1, "m": 60, "h": 3600}.get(raw[-1:], None)
    number = raw[:-1] if scale else raw
    try:
        value = float(number) * (scale or 1)
    except ValueError:
        value = -1.0
    if not value >= 0 or value == float("inf"):
        raise UserError(f"--db-wait {text!r}: not a duration; give seconds (600) or 30s, 10m, 1h")
    return value


def launch(
    sweep: Annotated[Path, typer.Argument(help="The sweep file (YAML), e.g. sweeps/quickstart.yaml.")],
    db: Optional[str] = DbOption,
    address: Optional[str] = JoinAddressOption,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the sweep of this name.")] = False,
    new_name: Annotated[
        Optional[str],
        typer.Option("--new-name", help="Run the file again under this name (its name is taken).",
                     show_default=False),
    ] = None,
    results: Optional[str] = ResultsOption,
    token_file: Annotated[Optional[Path], TokenFileOption] = None,
    max_trials: Annotated[
        int, typer.Option("--max-trials", min=1, help="Refuse a sweep of more trials than this.")
    ] = DEFAULT_MAX_TRIALS,
    db_wait: str = DbWaitOption,
) -> None:
    """Run a sweep: one Ray Tune trial per grid point, every result into the database."""
    with user_errors():
        wait = _seconds(db_wait)
        from orchestrator.run import launch as launching  # imports Ray: only for the commands that run

        database = Database(db)
        outcome = launching.launch(sweep, db=database, address=address, resume=resume, new_name=new_name,
                                   results=results, token_file=token_file, max_trials=max_trials,
                                   db_wait=wait)
        _summarise(outcome, database)
    raise typer.Exit(outcome.exit_code)


def resume(
    name: Annotated[str, typer.Argument(help="The sweep's name, as `status` lists it.")],
    db: Optional[str] = DbOption,
    address: Optional[str] = JoinAddressOption,
    results: Annotated[Optional[str], typer.Option(
        "--results", show_default=False,
        help="Where the sweep's results are now, if not where it was launched with (a path or URI).")] = None,
    token_file: Annotated[Optional[Path], TokenFileOption] = None,
    db_wait: str = DbWaitOption,
) -> None:
    """Continue an interrupted or crashed sweep from its last checkpoints."""
    with user_errors():
        wait = _seconds(db_wait)
        from orchestrator.run import launch as launching

        database = Database(db)
        outcome = launching.resume_sweep(name, db=database, address=address, results=results, token_file=token_file,
                                         db_wait=wait)
        _summarise(outcome, database)
    raise typer.Exit(outcome.exit_code)


def _summarise(outcome, database: Database) -> None:
    """The summary of a run that ended with Tune's results (orchestrator.results.summary)."""
    if outcome.spec is None:
        return
    from rich.console import Console

    from orchestrator.results.summary import print_summary

    engine = database.engine()
    try:
        print_summary(Console(), engine, outcome, database.flag)
    finally:
        engine.dispose()


def status(
    name: Annotated[Optional[str], typer.Argument(help="A sweep's name: list its trials.")] = None,
    db: Optional[str] = DbOption,
) -> None:
    """List the sweeps, or one sweep's trials with their errors."""
    from db import queries
    from orchestrator.results import tables

    console = tables.console()
    with user_errors():
        database = Database(db)
        engine = _existing(database, "status")
        try:
            if name is None:
                frame = queries.sweeps(engine)
                if frame.empty:
                    console.print(f"No sweeps in {database.shown} yet: python -m orchestrator launch SWEEP.yaml")
                    return
                console.print(tables.sweeps_table(frame, width=console.width))
                return
            details = queries.sweep(engine, name)
            if details is None:
                from resweep.errors import UserError

                raise UserError(f"status: no sweep named {name!r} in {database.shown} "
                                "(`python -m orchestrator status` lists the sweeps)")
            counts = queries.trial_counts(engine, name)
            total = sum(counts.values())
            # A big sweep lists the trials that are not finished; its finished ones are its grid.
            big = total > tables.TRIALS_LISTED
            unfinished = [s for s in counts if s != "terminated"]
            frame = queries.trials(engine, name, status=unfinished) if big else queries.trials(engine, name)
            grid = queries.grid(engine, name) if big else None
        finally:
            engine.dispose()
    if not big:
        console.print(f"[bold]{name}[/]  {details.status}  ({len(frame)} trials)", highlight=False)
        console.print(tables.trials_table(frame, width=console.width))
        return
    console.print(f"[bold]{name}[/]  {details.status}  ({total:,} trials: "
                  + ", ".join(f"{n:,} {s}" for s, n in sorted(counts.items())) + ")", highlight=False)
    if len(frame):
        console.print(tables.trials_table(frame.head(tables.TRIALS_LISTED), width=console.width))
    console.print(tables.big_sweep_note(name, len(frame), counts.get("terminated", 0), database.flag),
                  highlight=False, soft_wrap=True)
    table = tables.grid_table(grid)
    if table is not None:
        console.print(table)


def _existing(database: Database, command: str):
    """The engine of a database that exists; a missing SQLite file is one line naming where it
    was looked for and how to make one."""
    from db.engine import sqlite_path
    from db.errors import NoDatabaseError
    from resweep.errors import UserError

    try:
        return database.engine(create=False)
    except NoDatabaseError:
        path = sqlite_path(database.url)
        if path is None:
            raise
        raise UserError(
            f"{command}: no resweep database at {path.resolve()} (looked in {path.resolve().parent}): launch a "
            "sweep there first (python -m orchestrator launch sweeps/quickstart.yaml), or point --db or "
            "$RESWEEP_DB at the database"
        ) from None
