"""`python -m orchestrator dashboard`: serves the app over the given database, on localhost by
default, and prints the address; a bad URL is one line and exit status 2."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from typer.testing import CliRunner

from dashboard import serve
from orchestrator.cli.app import app
from orchestrator.cli.dashboard import APP_PATH, start, streamlit_command, wait_until_serving
from tests.dashboard.conftest import free_port


def test_streamlit_command_runs_the_app_headless_on_the_given_address():
    cmd = streamlit_command("127.0.0.1", 8765)
    assert cmd[1:3] == ["-m", "dashboard.serve"] and serve.APP == APP_PATH
    assert cmd[cmd.index("--server.address") + 1] == "127.0.0.1"
    assert cmd[cmd.index("--server.port") + 1] == "8765"
    assert cmd[cmd.index("--server.headless") + 1] == "true"
    assert cmd[cmd.index("--server.fileWatcherType") + 1] == "none"  # no source watching in a served app


def test_the_preload_list_follows_the_pages_imports():
    modules = serve.page_imports()
    # what the pages import at their top (views/search.py: optuna, yaml; the Trial page: tempfile)
    assert {"pandas", "optuna", "plotly.graph_objects", "yaml", "tempfile", "db.readonly"} <= set(modules)
    assert "dashboard.cached" in modules  # listed, but left to the first run (it declares caches)


def _mapped(pid: int) -> str:
    return Path(f"/proc/{pid}/maps").read_text()


def test_the_server_has_the_pages_libraries_loaded_before_anyone_visits(fixture_db, tmp_path):
    """The first visitor after a start does not wait for pandas, SQLAlchemy and the rest to load:
    their compiled modules are mapped into the server before it answers its first request."""
    port = free_port()
    with (tmp_path / "server.log").open("w") as log:
        server = start(fixture_db, "127.0.0.1", port, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until_serving(server, "127.0.0.1", port)
        pids = [server.pid, *map(int, Path(f"/proc/{server.pid}/task/{server.pid}/children").read_text().split())]
        maps = "".join(_mapped(pid) for pid in pids)
        assert "/pandas/_libs/" in maps and "/sqlalchemy/" in maps and "/numpy/" in maps
        assert "No runtime found" not in (tmp_path / "server.log").read_text()  # nothing cached outside Streamlit
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_bad_database_url_is_one_line_and_exit_status_2():
    result = CliRunner().invoke(app, ["dashboard", "--db", "mysql://somewhere/results"])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        "error: mysql://somewhere/results: unsupported database backend 'mysql': "
        "use sqlite:///PATH or postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE"
    ]


def _outside_address() -> str | None:
    """An address of this machine other than loopback, if it has one."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("192.0.2.1", 9))  # TEST-NET-1: no packet is sent for a UDP connect
            address = s.getsockname()[0]
    except OSError:
        return None
    return None if address.startswith("127.") else address


def test_dashboard_command_serves_on_localhost_and_prints_the_address(fixture_db):
    port = free_port()
    cmd = [sys.executable, "-m", "orchestrator", "dashboard", "--db", fixture_db, "--port", str(port)]
    server = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 90
        line = ""
        while time.monotonic() < deadline and not line.startswith("resweep dashboard:"):
            line = server.stdout.readline()
            assert line or server.poll() is None, "the command exited before serving"
        assert line.strip() == f"resweep dashboard: http://127.0.0.1:{port}  (database {fixture_db}; Ctrl+C stops it)"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as reply:
            assert reply.status == 200 and b"<title>" in reply.read()
        outside = _outside_address()
        if outside:
            with socket.socket() as s:
                s.settimeout(2)
                assert s.connect_ex((outside, port)) != 0, "bound beyond localhost"
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
    time.sleep(0.5)
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0, "the Streamlit server outlived the command"
