"""`python -m orchestrator dashboard`: serve the Streamlit dashboard over one result database.

The command only resolves the database URL and starts `streamlit run dashboard/app.py`; the
dashboard itself reports an unreachable database or an old schema on its page. The URL travels
to Streamlit in $RESWEEP_DB, not on the command line, so a password never shows in `ps`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import typer

import dashboard
from db.engine import ENV_VAR, redact, resolve_url
from orchestrator.cli import DbOption, app, user_errors

APP_PATH = Path(dashboard.__file__).resolve().parent / "app.py"
LOCALHOST = "127.0.0.1"
DEFAULT_PORT = 8501


def streamlit_command(host: str, port: int) -> list[str]:
    """The `streamlit run` command line serving the dashboard on host:port."""
    return [
        sys.executable, "-m", "streamlit", "run", str(APP_PATH),
        "--server.address", host,
        "--server.port", str(port),
        "--server.headless", "true",  # no browser opened on the server, no e-mail prompt
        "--browser.gatherUsageStats", "false",
    ]  # fmt: skip


@app.command()
def dashboard(
    db: str | None = DbOption,
    port: int = typer.Option(DEFAULT_PORT, "--port", help="TCP port to serve on."),
    host: str = typer.Option(
        LOCALHOST,
        "--host",
        help="Address to bind. The default serves this machine only; 0.0.0.0 serves anyone "
        "who can reach it (the dashboard has no login).",
    ),
) -> None:
    """Serve the dashboard (Streamlit) over the result database; Ctrl+C stops it."""
    with user_errors():
        url = resolve_url(db)
    typer.echo(f"resweep dashboard: http://{host}:{port}  (database {redact(url)})")
    server = subprocess.Popen(streamlit_command(host, port), env={**os.environ, ENV_VAR: url})
    try:
        rc = server.wait()
    except KeyboardInterrupt:  # Streamlit got the same Ctrl+C: let it finish shutting down
        server.wait()
        rc = 0
    raise typer.Exit(rc)
