"""Commands on the result store: `query` (read-only SQL from the shell) and `db upgrade`."""

from __future__ import annotations

import csv
import datetime as dt
import decimal
import json
import math
import re
import sys
from typing import Annotated, Any, Optional

import typer
from rich.console import Console

from db.engine import Database, upgrade as upgrade_schema
from db.readonly import DEFAULT_LIMIT, MAX_LIMIT, QueryResult, run_readonly
from orchestrator.cli.options import DbOption, Format, refuse_format, user_errors
from orchestrator.results.tables import query_table
from resweep.errors import UserError


def query(
    sql: Annotated[str, typer.Argument(help="One read-only SQL statement, e.g. \"SELECT * FROM grid_results\".")],
    db: Optional[str] = DbOption,
    format: Annotated[Format, typer.Option("--format", "-f", help="Output format.")] = Format.table,
    limit: Annotated[
        int, typer.Option("--limit", "-n", help=f"Print at most this many rows (1 to {MAX_LIMIT:,}).")
    ] = DEFAULT_LIMIT,
) -> None:
    """Run one read-only SQL statement on the result database and print the rows.

    Anything that could write (INSERT, UPDATE, DELETE, DROP, CREATE, several statements), file
    and admin functions, and results past the 64 MiB byte cap end with exit status 2 and one
    line; at most --limit rows (1 to 100,000) are printed. The database itself enforces it:
    PostgreSQL runs the statement as the role resweep_reader in a READ ONLY transaction, SQLite
    opens the file read-only (docs/security.md).
    """
    with user_errors():
        refuse_format(format, (Format.table, Format.csv, Format.json),
                      "query prints to the terminal; `export NAME --format parquet` writes Parquet files")
        if not 1 <= limit <= MAX_LIMIT:  # "all rows" of a huge result took minutes and gigabytes to print
            raise UserError(f"--limit {_bounded(limit)}: give 1 to {MAX_LIMIT} rows; a whole sweep's tables go to files "
                            "with `python -m orchestrator export NAME`, or page with LIMIT and OFFSET in the statement")
        result = run_readonly(Database(db).url, sql, limit)
    if format is Format.table:
        _print_table(result)
    elif format is Format.csv:
        _print_csv(result)
    else:
        _print_json(result)
    if result.truncated:
        more = (f"--limit N shows more (up to {MAX_LIMIT})" if result.limit < MAX_LIMIT else
                "`python -m orchestrator export NAME` writes whole tables to files")
        typer.echo(f"note: output cut at {result.limit} rows; {more}", err=True)


def upgrade(db: Optional[str] = DbOption) -> None:
    """Migrate the database to this resweep's schema (creating it if it is new)."""
    with user_errors():
        database = Database(db)
        before, after = upgrade_schema(database.url)
    where = database.shown
    if before == after:
        typer.echo(f"{where} is already at schema revision {after}")
    elif before is None:
        typer.echo(f"{where}: created the resweep schema at revision {after}")
    else:
        typer.echo(f"{where}: upgraded schema from revision {before} to {after}")


def import_(
    source: Annotated[str, typer.Argument(help="A sweep's results directory (results/NAME) or URI, or a folder of them.")],
    db: Optional[str] = DbOption,
) -> None:
    """Rebuild sweeps in the database from their results (Tune's state, each trial's results).

    Idempotent: what the database already holds is kept, the gaps are filled, nothing is doubled.
    """
    from orchestrator.results.importer import find_sweeps, import_found  # reads Tune's files: imports Ray
    from orchestrator.run.storage import shown

    with user_errors():
        database = Database(db)
        where = database.shown  # a bad --db is told first
        found = find_sweeps(source)  # before the database is opened: a refused import makes none
        engine = database.engine()
        try:
            done = import_found(found, engine)
        finally:
            engine.dispose()
    flag = f" --db {_shell_db(database)}" if db else ""
    for sweep in done:
        counts = ", ".join(f"{n} {status}" for status, n in sorted(sweep.trials.items())) or "no trials"
        typer.echo(f"{sweep.name}: imported from {shown(sweep.source)} into {where}: {counts}; "
                   f"{sweep.epochs} epochs ({sweep.metric_rows} metric rows, {sweep.layer_rows} layer records); "
                   f"sweep {sweep.status}")
        if sweep.skipped:
            typer.echo(f"{sweep.name}: skipped {len(sweep.skipped)} trials whose config lacks resweep's axes "
                       "(dataset, model, depth, block, shortcut, seed)", err=True)
        if sweep.status == "interrupted" and sweep.resumable:
            typer.echo(f"{sweep.name}: continue it with: python -m orchestrator resume {sweep.name}{flag}")


def _bounded(number: int) -> str:
    text = str(number)
    return text if len(text) <= 24 else f"{text[:20]}... ({len(text)} digits)"


def _shell_db(database: Database) -> str:
    """--db as advice: the URL itself without a password, else a placeholder to fill in."""
    return f"'{database.url}'" if database.shown == database.url else "\"$RESWEEP_DB\""


def _print_table(result: QueryResult) -> None:
    table = query_table(result.columns, result.rows)
    # On a terminal Rich fits the table to its width; into a pipe or file nothing is cut.
    width = None if sys.stdout.isatty() else 1_000_000
    Console(width=width, soft_wrap=True).print(table)
    typer.echo(f"({len(result.rows)} row{'s' if len(result.rows) != 1 else ''})", err=True)


def _print_csv(result: QueryResult) -> None:
    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow(result.columns)
    writer.writerows(["" if v is None else v for v in row] for row in result.rows)
    sys.stdout.flush()


# How SQLAlchemy stores a DateTime in SQLite (text, UTC for resweep's columns, no zone): `query
# --format json` writes it as PostgreSQL's timestamptz comes out, ISO-8601 with +00:00.
_SQLITE_TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}(\.\d{1,6})?")


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN/Infinity
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, dt.datetime):  # resweep's timestamps are UTC; SQLite's come back naive
        return (value.replace(tzinfo=dt.timezone.utc) if value.tzinfo is None
                else value.astimezone(dt.timezone.utc)).isoformat()
    if isinstance(value, str) and _SQLITE_TIMESTAMP.fullmatch(value):  # SQLite's text of a DateTime column
        return dt.datetime.fromisoformat(value).replace(tzinfo=dt.timezone.utc).isoformat()
    if isinstance(value, (dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    return value


def _print_json(result: QueryResult) -> None:
    records = [{c: _jsonable(v) for c, v in zip(result.columns, row)} for row in result.rows]
    typer.echo(json.dumps(records, indent=1, default=str))
