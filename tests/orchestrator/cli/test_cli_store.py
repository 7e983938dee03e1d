"""`python -m orchestrator query` and `db upgrade`, driven through the real Typer app."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from db.engine import get_engine
from orchestrator.cli.app import app
from tests.db.known import make_sweep
from tests.orchestrator.conftest import cli_env

runner = CliRunner()


@pytest.fixture
def known(db_url):
    engine = get_engine(db_url)
    make_sweep(engine)
    engine.dispose()
    return db_url


def query(*args: str):
    return runner.invoke(app, ["query", *args])


def test_query_prints_a_table_csv_or_json(known):
    table = query("SELECT shortcut, n_seeds FROM grid_results ORDER BY shortcut", "--db", known)
    assert table.exit_code == 0, table.output
    assert "shortcut" in table.stdout and "none" in table.stdout and "(2 rows)" in table.stderr

    out = query("SELECT shortcut, n_seeds FROM grid_results ORDER BY shortcut", "--db", known, "--format", "csv")
    assert list(csv.reader(io.StringIO(out.stdout))) == [["shortcut", "n_seeds"], ["A", "3"], ["none", "3"]]

    out = query("SELECT sweep, test_err_mean, test_err_std FROM grid_results", "--db", known, "-f", "json")
    records = json.loads(out.stdout)
    assert len(records) == 2 and records[0]["sweep"] == "known" and isinstance(records[0]["test_err_std"], float)


def test_query_uses_the_environment_variable(known, monkeypatch):
    monkeypatch.setenv("RESWEEP_DB", known)
    out = query("SELECT count(*) AS n FROM trials", "-f", "csv")
    assert out.exit_code == 0 and out.stdout.splitlines() == ["n", "8"]


def test_the_row_cap_says_it_cut_the_output(known):
    out = query("SELECT * FROM metrics", "--db", known, "--limit", "3", "-f", "csv")
    assert out.exit_code == 0
    assert len(out.stdout.splitlines()) == 1 + 3
    assert "output cut at 3 rows" in out.stderr


WRITES = [
    "DELETE FROM metrics", "DROP TABLE trials", "SELECT 1; DROP TABLE metrics",
    "INSERT INTO sweeps (name) VALUES ('x')", "UPDATE trials SET seed = 0", "CREATE TABLE t (x INT)",
]  # fmt: skip


def test_writing_statements_exit_2_with_one_line_and_touch_nothing(known):
    engine = get_engine(known)
    for sql in WRITES:
        out = query(sql, "--db", known)
        assert out.exit_code == 2, sql
        assert out.stderr.startswith("error: refused") and out.stderr.count("\n") == 1
        with engine.connect() as conn:
            assert conn.scalar(sa.text("SELECT count(*) FROM metrics")) == (6 * 3 + 2) * 7  # as written
            assert conn.scalar(sa.text("SELECT count(*) FROM trials")) == 8
    engine.dispose()


def test_unreachable_database_hides_the_password():
    out = query("SELECT 1", "--db", "postgresql://u:secret@127.0.0.1:1/x")
    assert out.exit_code == 2
    assert "secret" not in out.output and "u:***@127.0.0.1:1/x" in out.stderr


def test_db_upgrade_creates_then_reports_current(sqlite_url):
    from db.migrate import head_revision

    head = head_revision()
    first = runner.invoke(app, ["db", "upgrade", "--db", sqlite_url])
    assert first.exit_code == 0 and f"created the resweep schema at revision {head}" in first.stdout
    again = runner.invoke(app, ["db", "upgrade", "--db", sqlite_url])
    assert again.exit_code == 0 and f"already at schema revision {head}" in again.stdout


def test_db_upgrade_refuses_a_database_ahead_of_the_code(sqlite_url):
    runner.invoke(app, ["db", "upgrade", "--db", sqlite_url])
    engine = sa.create_engine(sqlite_url)
    with engine.begin() as conn:
        conn.exec_driver_sql("UPDATE alembic_version SET version_num = '9999'")
    engine.dispose()
    out = runner.invoke(app, ["db", "upgrade", "--db", sqlite_url])
    assert out.exit_code == 2 and "newer than this resweep knows" in out.stderr


def test_python_dash_m_orchestrator_query_end_to_end(sqlite_url):
    get_engine(sqlite_url).dispose()
    ok = subprocess.run([sys.executable, "-m", "orchestrator", "query", "SELECT count(*) AS n FROM sweeps",
                         "--db", sqlite_url, "-f", "csv"], capture_output=True, text=True, timeout=120)  # fmt: skip
    assert ok.returncode == 0 and ok.stdout.splitlines() == ["n", "0"]
    refused = subprocess.run([sys.executable, "-m", "orchestrator", "query", "DROP TABLE sweeps",
                              "--db", sqlite_url], capture_output=True, text=True, timeout=120)  # fmt: skip
    assert refused.returncode == 2 and refused.stderr.startswith("error: refused")


def test_the_command_line_leaves_its_objects_to_the_process_end_with_its_database_closed(tmp_path):
    """cli.main freezes the garbage collector once the status is decided (Python's shutdown would
    otherwise walk every object the command made or imported: ~0.6 s after a launch). What the
    collector used to close must be closed by the command itself: `status` disposes its engine,
    so SQLite's last connection checkpoints and removes the -wal and -shm files as before."""
    url = f"sqlite:///{tmp_path / 'r.db'}"
    get_engine(url).dispose()
    code = f"""\
import atexit, gc, sys
atexit.register(lambda: print("frozen at exit:", gc.get_freeze_count() > 0, flush=True))
sys.argv = ["orchestrator", "status", "--db", {url!r}]
from orchestrator.cli.app import main
main()
"""
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=cli_env(), capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0].startswith("No sweeps in ")
    assert done.stdout.splitlines()[-1] == "frozen at exit: True"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.db"]
