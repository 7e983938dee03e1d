"""Commands on the result store: `query` (read-only SQL from the shell) and `db upgrade`."""

from __future__ import annotations

import csv
import datetime as dt
import decimal
import enum
import json
import math
import sys
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from db import migrate
from db.engine import redact, resolve_url
from db.readonly import DEFAULT_LIMIT, QueryResult, run_readonly
from orchestrator.cli import DbOption, app, db_app, user_errors


class Format(str, enum.Enum):
    table = "table"
    csv = "csv"
    json = "json"


@app.command()
def query(
    sql: Annotated[str, typer.Argument(help="One read-only SQL statement, e.g. \"SELECT * FROM grid_results\".")],
    db: Optional[str] = DbOption,
    format: Annotated[Format, typer.Option("--format", "-f", help="Output format.")] = Format.table,
    limit: Annotated[
        int, typer.Option("--limit", "-n", min=0, help="Print at most this many rows (0: all).")
    ] = DEFAULT_LIMIT,
) -> None:
    """Run one read-only SQL statement on the result database and print the rows.

    Anything that could write (INSERT, UPDATE, DELETE, DROP, CREATE, several statements) is
    refused with exit status 2, and the database is opened read-only in any case.
    """
    with user_errors():
        result = run_readonly(db, sql, limit)
    if format is Format.table:
        _print_table(result)
    elif format is Format.csv:
        _print_csv(result)
    else:
        _print_json(result)
    if result.truncated:
        typer.echo(
            f"note: output cut at {result.limit} rows; --limit N shows more (0: all)", err=True
        )


@db_app.command()
def upgrade(db: Optional[str] = DbOption) -> None:
    """Migrate the database to this resweep's schema (creating it if it is new)."""
    with user_errors():
        url = resolve_url(db)
        before, after = migrate.upgrade(url)
    where = redact(url)
    if before == after:
        typer.echo(f"{where} is already at schema revision {after}")
    elif before is None:
        typer.echo(f"{where}: created the resweep schema at revision {after}")
    else:
        typer.echo(f"{where}: upgraded schema from revision {before} to {after}")


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _print_table(result: QueryResult) -> None:
    table = Table(header_style="bold")
    for column in result.columns:
        table.add_column(column, overflow="fold")
    for row in result.rows:
        table.add_row(*(_text(v) for v in row))
    # On a terminal Rich fits the table to its width; into a pipe or file nothing is cut.
    width = None if sys.stdout.isatty() else 1_000_000
    Console(width=width, soft_wrap=True).print(table)
    typer.echo(f"({len(result.rows)} row{'s' if len(result.rows) != 1 else ''})", err=True)


def _print_csv(result: QueryResult) -> None:
    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow(result.columns)
    writer.writerows(["" if v is None else v for v in row] for row in result.rows)
    sys.stdout.flush()


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN/Infinity
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    return value


def _print_json(result: QueryResult) -> None:
    records = [{c: _jsonable(v) for c, v in zip(result.columns, row)} for row in result.rows]
    typer.echo(json.dumps(records, indent=1, default=str))
