"""Results out of the database: `model` (a trained network to a file) and `export` (tables to files).

    python -m orchestrator model TRIAL_ID --out FILE.pt [--db URL]
    python -m orchestrator export NAME --format csv|parquet|json --out DIR [--db URL]
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from db.engine import Database
from orchestrator.cli.options import DbOption, Format, refuse_format, user_errors
from resweep.errors import UserError

MAX_ID = 2**63 - 1  # the largest id a 64-bit integer key holds


def _bounded(number: int) -> str:
    text = str(number)
    return text if len(text) <= 24 else f"{text[:20]}... ({len(text)} digits)"


def _trial_id(database: Database, reference: str) -> int:
    """The id a user's reference names: an integer id as given, else the trial whose Tune key it is."""
    text = reference.strip()
    if text.isdigit():
        return int(text)
    from db import queries

    engine = database.engine(create=False)
    try:
        ids = queries.trial_ids(engine, text)
    finally:
        engine.dispose()
    if not ids:
        raise UserError(f"model: no trial with id or Tune key {_bounded(text)!r} in {database.shown} "
                        "(`python -m orchestrator status NAME` lists a sweep's trials with both)")
    if len(ids) > 1:
        raise UserError(f"model: Tune key {text!r} names trials {', '.join(map(str, ids))} (one per sweep) in "
                        f"{database.shown}; give the trial's id instead")
    return ids[0]


def model(
    trial_id: Annotated[str, typer.Argument(
        help="The trial: its id (12, the `trial` column of `status NAME`) or Tune's trial key (b68e4_00006).",
        show_default=False)],
    out: Annotated[Path, typer.Option("--out", "-o", help="The file to write (e.g. resnet56.pt).")],
    db: Optional[str] = DbOption,
) -> None:
    """Write a trial's trained network to one file: its weights (the trial's latest checkpoint)
    with its config and input mean. Read it with torch.load(FILE, weights_only=True), or build the
    model with trainers.restore.load_model_file(FILE)."""
    import resweep
    from resweep.results import NotFound

    with user_errors():
        database = Database(db)
        trial_id = _trial_id(database, trial_id)
        if not 1 <= trial_id <= MAX_ID:  # SQLite and PostgreSQL ids are 64-bit: no such trial, and no query
            raise UserError(f"model: no trial {_bounded(trial_id)} in {database.shown} (trial ids are 1 to {MAX_ID}; "
                            "`python -m orchestrator status NAME` lists a sweep's trials with their ids)")
        try:
            with resweep.open(database.url) as results:
                row = results.trial(trial_id)
                uri, config = results.checkpoint(trial_id)
                last = results.last_epoch(trial_id)
            from trainers.restore import save_model_file  # torch: only here

            saved = save_model_file(out, uri, config, trial_id=int(trial_id), sweep=str(row["sweep"]),
                                    trial_key=str(row["trial_key"]))
        except (NotFound, FileNotFoundError) as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
    # A checkpoint every N epochs, or a stop before the last one was saved: say which epoch it is.
    epoch = "" if saved["epoch"] == last else (
        f"; it holds epoch {saved['epoch']}, and the trial's last recorded epoch is {last}")
    typer.echo(f"{out}: trial {trial_id} ({row['sweep']}, depth {row['depth']}, {row['block']}, "
               f"shortcut {row['shortcut']}, seed {row['seed']}) from {uri}{epoch}")


def export(
    name: Annotated[str, typer.Argument(help="The sweep's name.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory to write the files into.")],
    format: Annotated[Format, typer.Option("--format", "-f", help="File format: csv, parquet or json.")] = Format.csv,
    db: Optional[str] = DbOption,
) -> None:
    """Write one sweep's trials, per-epoch metrics (long and wide), layer stats and sweep.json
    (spec and provenance) as CSV, Parquet or JSON files."""
    with user_errors():
        refuse_format(format, (Format.csv, Format.parquet, Format.json), "export writes files; `query` prints tables")
        from orchestrator.results.export import export_sweep

        engine = Database(db).engine(create=False)
        try:
            start = time.perf_counter()
            done = export_sweep(engine, name, format.value, out)
        finally:
            engine.dispose()
    seconds = time.perf_counter() - start
    for file, size in done.files.items():
        typer.echo(f"{done.directory / file}  {size:,} bytes")
    typer.echo(f"exported {name}: {done.rows['trials']:,} trials, {done.rows['metrics']:,} metric values, "
               f"{done.rows['layer_stats']:,} layer records in {seconds:.1f} s", err=True)
