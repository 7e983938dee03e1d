"""The SQL page is served on the loopback, and beyond it only when asked for (`--sql-page`,
$RESWEEP_SQL_PAGE=on): a visitor's read-only statement can still take the memory of one
PostgreSQL expression, which no server setting bounds (docs/security.md)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

import dashboard
from orchestrator.cli.dashboard import SQL_PAGE_ENV, is_loopback, sql_page_on
from tests.dashboard.conftest import free_port

APP = Path(dashboard.__file__).resolve().parent / "app.py"


def sql_page(url: str, monkeypatch: pytest.MonkeyPatch, address: str | None, setting: str | None) -> AppTest:
    monkeypatch.setenv("RESWEEP_DB", url)
    if setting is None:
        monkeypatch.delenv(SQL_PAGE_ENV, raising=False)
    else:
        monkeypatch.setenv(SQL_PAGE_ENV, setting)
    before = st.get_option("server.address")
    st.config.set_option("server.address", address)
    try:
        at = AppTest.from_file(str(APP), default_timeout=30)
        at.run()
        at.switch_page("views/sql.py").run()
    finally:
        st.config.set_option("server.address", before)
    assert not at.exception, [e.value for e in at.exception]
    return at


@pytest.mark.parametrize(("address", "setting"), [
    (None, None),  # `streamlit run` without --server.address: every interface
    ("0.0.0.0", None),
    ("192.0.2.7", None),
    ("dashboard.example", None),  # a name may resolve to any interface
    ("127.0.0.1", "off"),  # asked off, even on the loopback
])  # fmt: skip
def test_the_sql_page_is_off_beyond_the_loopback_and_runs_nothing(fixture_db, monkeypatch, address, setting):
    at = sql_page(fixture_db, monkeypatch, address, setting)
    assert "The SQL page is off" in at.info[0].value and "--sql-page" in at.info[0].value
    assert not at.dataframe and not at.text_area and not at.expander  # no statement, no schema


@pytest.mark.parametrize(("address", "setting"), [
    ("127.0.0.1", None), ("localhost", None), ("::1", None), ("0.0.0.0", "on"), (None, "on"),
])  # fmt: skip
def test_the_sql_page_is_on_on_the_loopback_or_when_asked_for(fixture_db, monkeypatch, address, setting):
    at = sql_page(fixture_db, monkeypatch, address, setting)
    assert not at.info and len(at.dataframe[0].value) == 4  # the default query ran


def test_loopback_is_told_from_the_bound_address():
    assert is_loopback("127.0.0.1") and is_loopback("127.8.9.1") and is_loopback("[::1]") and is_loopback("LOCALHOST")
    assert not any(is_loopback(h) for h in (None, "", "0.0.0.0", "::", "10.0.0.1", "my-host"))
    assert sql_page_on("0.0.0.0", {SQL_PAGE_ENV: "on"}) and not sql_page_on("127.0.0.1", {SQL_PAGE_ENV: "off"})


def _child_setting(parent: subprocess.Popen, timeout_s: float = 60) -> str:
    """The Streamlit server's $RESWEEP_SQL_PAGE, read from /proc once the command started it."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        children = Path(f"/proc/{parent.pid}/task/{parent.pid}/children").read_text().split()
        for child in children:
            environ = Path(f"/proc/{child}/environ").read_bytes().split(b"\0")
            for entry in environ:
                if entry.startswith(SQL_PAGE_ENV.encode() + b"="):
                    return entry.split(b"=", 1)[1].decode()
        time.sleep(0.2)
    raise AssertionError("the dashboard command started no Streamlit server")


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="reads the server's environment from /proc")
@pytest.mark.parametrize(("args", "expected"), [
    (["--host", "0.0.0.0"], "off"), (["--host", "0.0.0.0", "--sql-page"], "on"), ([], "on"),
])  # fmt: skip
def test_the_dashboard_command_turns_the_page_off_beyond_the_loopback(fixture_db, args, expected):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != SQL_PAGE_ENV}
    command = [sys.executable, "-m", "orchestrator", "dashboard", "--db", fixture_db, "--port", str(port), *args]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        assert _child_setting(server) == expected
        line = ""
        while not line.startswith("resweep dashboard:"):
            line = server.stdout.readline()
            assert line or server.poll() is None, "the command exited before serving"
        assert ("SQL page off" in line) == (expected == "off")
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
