"""The `python -m orchestrator` command line: one Typer app, thin commands over the modules.

Each command parses its options, calls into the module that does the work, and lets errors a user
can cause (`UserError`, `StoreError`) end as one line on stderr with exit status 2.

`--db` is taken in here only: each command makes one `db.engine.Database` of it (resolved once,
at first use) and passes that, or the engine it opens, inward.
"""

from __future__ import annotations

import gc
from contextlib import contextmanager
from typing import Iterator

import typer

from db.errors import StoreError
from orchestrator import stops
from orchestrator.errors import UserError

app = typer.Typer(
    name="orchestrator",
    help="resweep: residual-network studies as Ray Tune sweeps, results in one SQL database.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Database maintenance.", no_args_is_help=True)
app.add_typer(db_app, name="db")

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


DbOption = typer.Option(
    None,
    "--db",
    help="Database URL (default: $RESWEEP_DB, else sqlite:///resweep.db).",
    show_default=False,
)


def main() -> None:
    try:
        app(prog_name="python -m orchestrator")
    except SystemExit:
        stops.exiting()  # the status is decided: a Ctrl-C from here on changes nothing
        # Python's shutdown would run the cyclic collector over every object the command made or
        # imported (Ray, SQLAlchemy, pandas: ~0.6 s after a launch on 2 cores); frozen objects are
        # left to the process's end. Reference counting still closes files and connections and
        # atexit handlers still run: only garbage in reference cycles goes uncollected at exit.
        gc.freeze()
        raise


# Commands live in these modules; importing them registers them on `app` / `db_app`.
from orchestrator import commands_store  # noqa: E402,F401
from orchestrator import commands_report  # noqa: E402,F401
from orchestrator import commands_cluster  # noqa: E402,F401
from orchestrator import commands_run  # noqa: E402,F401
from orchestrator import commands_dashboard  # noqa: E402,F401
from orchestrator import commands_results  # noqa: E402,F401
