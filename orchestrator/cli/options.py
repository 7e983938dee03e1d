"""What every command shares: the `--db` option and the one-line handling of a user's mistake.

Kept apart from the Typer app (orchestrator/cli/app.py), which imports every command module to
register it: the commands import this module, never the app, so no import goes in a circle.
"""

from __future__ import annotations

import enum
from contextlib import contextmanager
from typing import Iterator

import typer

from db.errors import StoreError
from resweep.errors import UserError

USER_ERRORS: tuple[type[BaseException], ...] = (UserError, StoreError)


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn a user's mistake into one clear line on stderr and exit status 2 (no traceback).

    An error holding several problems (a sweep file's `SpecError`) gets an `error:` line each.
    """
    try:
        yield
    except USER_ERRORS as exc:
        for line in str(exc).splitlines() or [type(exc).__name__]:
            typer.echo(f"error: {line}", err=True)
        raise typer.Exit(2) from None


# For `Annotated[Optional[Path], TokenFileOption] = None`: launch and resume (joining Ray at
# --address) and the Jobs API commands (submit, jobs, stop) read the same token the same way.
TokenFileOption = typer.Option(
    "--token-file",
    help="File holding the Ray cluster's token (default: $RAY_AUTH_TOKEN, $RAY_AUTH_TOKEN_PATH, ~/.ray/auth_token).",
    show_default=False,
)

class Format(str, enum.Enum):
    """Every output format of the command line: `query` prints table, csv or json; `export`
    writes csv, parquet or json files. Each refuses the others in one line."""

    table = "table"
    csv = "csv"
    json = "json"
    parquet = "parquet"


def refuse_format(format: Format, allowed: tuple[Format, ...], why: str) -> None:
    """One line (exit 2) for a format this command does not write."""
    if format not in allowed:
        raise UserError(f"--format {format.value}: {why} (allowed: {', '.join(f.value for f in allowed)})")


DbOption = typer.Option(
    None,
    "--db",
    help="Database URL (default: $RESWEEP_DB, else sqlite:///resweep.db).",
    show_default=False,
)
