"""Commands that run sweeps and show how they stand: `launch`, `resume`, `status`."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from orchestrator.cli import DbOption, app, user_errors

AddressOption = typer.Option(
    None, "--address", help="Join the Ray cluster at this address (default: start a local Ray).",
    show_default=False,
)  # fmt: skip
ResultsOption = typer.Option(
    "results", "--results", help="Directory that holds each sweep's Tune state and checkpoints.",
)  # fmt: skip


@app.command()
def launch(
    sweep: Annotated[Path, typer.Argument(help="The sweep file (YAML), e.g. sweeps/quickstart.yaml.")],
    db: Optional[str] = DbOption,
    address: Optional[str] = AddressOption,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the sweep of this name.")] = False,
    new_name: Annotated[
        Optional[str],
        typer.Option("--new-name", help="Run the file again under this name (its name is taken).",
                     show_default=False),
    ] = None,
    results: str = ResultsOption,
) -> None:
    """Run a sweep: one Ray Tune trial per grid point, every result into the database."""
    from orchestrator import launch as launching  # imports Ray: only for the commands that run

    with user_errors():
        outcome = launching.launch(sweep, db=db, address=address, resume=resume, new_name=new_name,
                                   results=results)
    raise typer.Exit(outcome.exit_code)


@app.command()
def resume(
    name: Annotated[str, typer.Argument(help="The sweep's name, as `status` lists it.")],
    db: Optional[str] = DbOption,
    address: Optional[str] = AddressOption,
) -> None:
    """Continue an interrupted or crashed sweep from its last checkpoints."""
    from orchestrator import launch as launching

    with user_errors():
        outcome = launching.resume_sweep(name, db=db, address=address)
    raise typer.Exit(outcome.exit_code)


@app.command()
def status(
    name: Annotated[Optional[str], typer.Argument(help="A sweep's name: list its trials.")] = None,
    db: Optional[str] = DbOption,
) -> None:
    """List the sweeps, or one sweep's trials with their errors."""
    from db import queries
    from db.engine import get_engine, redact

    console = _console()
    with user_errors():
        engine = get_engine(db, create=False)
        if name is None:
            frame = queries.sweeps(engine)
            if frame.empty:
                console.print(f"No sweeps in {redact(engine)} yet: python -m orchestrator launch SWEEP.yaml")
                return
            console.print(_sweeps_table(frame))
            return
        frame = queries.trials(engine, name)
        if frame.empty and queries.sweep_details(engine, name).empty:
            from orchestrator.errors import UserError

            raise UserError(f"status: no sweep named {name!r} in {redact(engine)} "
                            "(`python -m orchestrator status` lists the sweeps)")
        details = queries.sweep_details(engine, name).iloc[0]
    console.print(f"[bold]{name}[/]  {details['status']}  ({len(frame)} trials)", highlight=False)
    console.print(_trials_table(frame))


def _console() -> Console:
    """Rich's console; piped output gets a wide one, so tables are not squeezed to 80 columns."""
    console = Console()
    return console if console.is_terminal else Console(width=200)


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    if hasattr(value, "strftime"):
        return value.strftime("%Y-%m-%d %H:%M")
    return str(value)


def _sweeps_table(frame: Any) -> Table:
    table = Table("sweep", "status", "trials", "done", "running", "failed", "created", "finished", "commit")
    for row in frame.itertuples(index=False):
        commit = (row.git_commit or "")[:8] + ("+dirty" if row.git_dirty else "")
        table.add_row(row.name, row.status, str(row.n_trials), str(row.n_terminated + row.n_stopped),
                      str(row.n_running), str(row.n_error), _fmt(row.created_at), _fmt(row.finished_at), commit)
    return table


def _trials_table(frame: Any) -> Table:
    table = Table("trial", "depth", "block", "shortcut", "seed", "status", "epochs",
                  "train_err", "test_err", "best test_err", "params", caption="errors at the last epoch, "
                  "and the lowest test_err of any epoch")
    searched = [k for k in ("lr", "weight_decay", "momentum", "batch_size") if _varies(frame, k)]
    for key in searched:
        table.add_column(key)
    frame = frame.sort_values(["depth", "block", "shortcut", "seed", "trial_key"], kind="stable")
    for row in frame.itertuples(index=False):
        cells = [str(row.trial_key), str(row.depth), row.block, row.shortcut, str(row.seed), row.status,
                 _fmt(row.epochs), _fmt(row.final_train_err), _fmt(row.final_test_err),
                 _fmt(row.best_test_err), f"{int(row.params_count):,}" if _present(row.params_count) else "-"]
        cells += [_fmt((row.config or {}).get(k), 5) for k in searched]
        table.add_row(*cells)
    return table


def _present(value: Any) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def _varies(frame: Any, key: str) -> bool:
    values = {(c or {}).get(key) for c in frame["config"]}
    return len(values) > 1
