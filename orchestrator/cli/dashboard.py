"""`python -m orchestrator dashboard`: serve the Streamlit dashboard over one result database.

The command only resolves the database URL and starts `streamlit run dashboard/app.py` (through
`python -m dashboard.serve`, which imports the pages' libraries before the server listens); the
dashboard itself reports an unreachable database or an old schema on its page. The URL travels
to Streamlit in $RESWEEP_DB, not on the command line, so a password never shows in `ps`.
`start` and `wait_until_serving` are also how the browser tests and the benchmark serve it.

The SQL page runs whatever read-only statement a visitor types, and the memory one PostgreSQL
expression may take is bounded by no server setting (docs/security.md). So it is served only
where the dashboard listens on the loopback, or where it is asked for: `--sql-page`, or
$RESWEEP_SQL_PAGE=on for `streamlit run` (`sql_page_on`, which the page itself asks).
"""

from __future__ import annotations

import importlib.util
import ipaddress
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import typer

from db.engine import ENV_VAR, Database, redact
from orchestrator.cli.options import DbOption, user_errors
from resweep.errors import UserError

# Found, not imported: the dashboard runs in Streamlit's own process, and the CLI sits below it.
APP_PATH = Path(importlib.util.find_spec("dashboard").origin).resolve().parent / "app.py"
SERVE_MODULE = "dashboard.serve"  # `streamlit run APP_PATH ...`, the pages' imports loaded first
LOCALHOST = "127.0.0.1"
DEFAULT_PORT = 8501
SQL_PAGE_ENV = "RESWEEP_SQL_PAGE"  # on | off: whether the dashboard serves its SQL page


def is_loopback(host: str | None) -> bool:
    """Whether a server bound to `host` serves this machine only (None or "": every interface)."""
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name: it may resolve to any interface
        return False


def sql_page_on(address: str | None, environ: dict[str, str] | None = None) -> bool:
    """Whether the dashboard serving on `address` (Streamlit's server.address) shows its SQL page:
    $RESWEEP_SQL_PAGE on or off where set, else only on the loopback."""
    setting = (os.environ if environ is None else environ).get(SQL_PAGE_ENV, "").strip().lower()
    if setting in ("on", "1", "true", "yes"):
        return True
    if setting in ("off", "0", "false", "no"):
        return False
    return is_loopback(address)


def streamlit_command(host: str, port: int) -> list[str]:
    """The command line serving the dashboard on host:port: `streamlit run` of the app through
    dashboard.serve, with these options."""
    return [
        sys.executable, "-m", SERVE_MODULE,
        "--server.address", host,
        "--server.port", str(port),
        "--server.headless", "true",  # no browser opened on the server, no e-mail prompt
        # No watching of the app's sources for edits (a development aid): after every script run
        # it walked every loaded module, and its polling threads took a core-second a page.
        "--server.fileWatcherType", "none",
        "--browser.gatherUsageStats", "false",
        "--client.toolbarMode", "viewer",  # no Deploy button or source-editing options
    ]  # fmt: skip


def start(url: str, host: str = LOCALHOST, port: int = DEFAULT_PORT, *, sql_page: bool = False,
          **popen: object) -> subprocess.Popen:
    """Start the dashboard server over the (resolved) database `url`; returns at once. Its SQL
    page is on where `host` is the loopback or `sql_page` asks for it, off otherwise."""
    env = {**os.environ, ENV_VAR: url, SQL_PAGE_ENV: "on" if sql_page or is_loopback(host) else "off"}
    return subprocess.Popen(streamlit_command(host, port), env=env, **popen)


def wait_until_serving(server: subprocess.Popen, host: str, port: int, timeout_s: float = 60) -> None:
    """Block until the server answers its health check; UserError if it exits or stays silent."""
    health = f"http://{host}:{port}/_stcore/health"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise UserError(f"the dashboard server on {host}:{port} exited with status {server.returncode}: "
                            "is the port already in use? try another --port")  # fmt: skip
        try:
            with urllib.request.urlopen(health, timeout=2) as reply:
                if reply.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise UserError(f"the dashboard server on {host}:{port} did not answer within {timeout_s:g} s")


def dashboard(
    db: str | None = DbOption,
    port: int = typer.Option(DEFAULT_PORT, "--port", help="TCP port to serve on."),
    host: str = typer.Option(
        LOCALHOST,
        "--host",
        help="Address to bind. The default serves this machine only; 0.0.0.0 serves anyone "
        "who can reach it (the dashboard has no login).",
    ),
    sql_page: bool = typer.Option(
        False,
        "--sql-page",
        help="Serve the SQL page (anyone's read-only SQL) even with --host beyond this machine; "
        "on the loopback it is always served.",
    ),
) -> None:
    """Serve the dashboard (Streamlit) over the result database; Ctrl+C stops it."""
    with user_errors():
        url = Database(db).url
    server = start(url, host, port, sql_page=sql_page)
    signal.signal(signal.SIGTERM, lambda *_: server.terminate())  # stop it with us, never orphan it
    try:
        with user_errors():
            try:
                wait_until_serving(server, host, port)
            except UserError:
                server.terminate()
                raise
        off = "" if sql_page or is_loopback(host) else "; SQL page off beyond the loopback, --sql-page serves it"
        typer.echo(f"resweep dashboard: http://{host}:{port}  (database {redact(url)}{off}; Ctrl+C stops it)")
        rc = server.wait()
    except KeyboardInterrupt:  # Streamlit got the same Ctrl+C: let it finish shutting down
        server.wait()
        rc = 0
    raise typer.Exit(rc)
