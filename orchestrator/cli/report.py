"""`python -m orchestrator report NAME [--out DIR] [--db URL]`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from db.engine import Database
from orchestrator.cli.options import DbOption, user_errors


def report(
    name: Annotated[str, typer.Argument(help="The sweep's name, as in its YAML file.")],
    out: Annotated[Optional[Path], typer.Option(
        "--out", help="Folder to write into (default: reports/NAME/).", show_default=False)] = None,
    db: Optional[str] = DbOption,
) -> None:
    """Figures, tables and the paper's findings for one sweep: curves.png, responses.png,
    grid.md, report.md."""
    with user_errors():
        from orchestrator.results.report import write_report  # matplotlib: import only when reporting

        database = Database(db)
        engine = database.engine(create=False)  # a report never creates a database
        try:
            paths = write_report(engine, name, out or Path("reports") / name,
                                 database=database.shown)
        finally:
            engine.dispose()
    for p in paths:
        typer.echo(str(p))
