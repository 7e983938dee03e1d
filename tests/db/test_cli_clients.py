"""The real `sqlite3` and `psql` shells query both views of a database the tests made."""

from __future__ import annotations

import csv
import io
import shutil
import subprocess

import pytest
import sqlalchemy as sa

from db.engine import get_engine, resolve_url, sqlite_path
from tests.db.known import errs, make_sweep, sample_std

TRIAL_SQL = "SELECT trial_id, shortcut, seed, status, epochs, final_test_err FROM trial_results ORDER BY trial_id"
GRID_SQL = "SELECT shortcut, n_seeds, test_err_mean, test_err_std FROM grid_results ORDER BY shortcut"


def shell(db_url: str, sql: str) -> list[dict[str, str]]:
    """Run `sql` in the backend's own command-line client; rows as CSV dicts."""
    url = resolve_url(db_url)
    if url.startswith("sqlite"):
        if not shutil.which("sqlite3"):
            pytest.skip("the sqlite3 shell is not installed")
        cmd = ["sqlite3", "-readonly", "-csv", "-header", str(sqlite_path(url)), sql]
    else:
        if not shutil.which("psql"):
            pytest.skip("psql is not installed")
        libpq_url = sa.make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
        cmd = ["psql", libpq_url, "--csv", "--no-psqlrc", "-v", "ON_ERROR_STOP=1", "-c", sql]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=True).stdout
    return list(csv.DictReader(io.StringIO(out)))


def test_command_line_clients_query_both_views(db_url):
    engine = get_engine(db_url)
    sweep = make_sweep(engine)
    engine.dispose()

    trials = shell(db_url, TRIAL_SQL)
    assert len(trials) == len(sweep.trials)
    first = trials[0]
    assert (first["shortcut"], first["seed"], first["status"], first["epochs"]) == ("none", "0", "terminated", "3")
    assert float(first["final_test_err"]) == pytest.approx(errs(0, 3)["test_err"])

    grid = shell(db_url, GRID_SQL)
    assert [(r["shortcut"], r["n_seeds"]) for r in grid] == [("A", "3"), ("none", "3")]
    test_errs = [errs(n, 3)["test_err"] for n in (3, 4, 5)]
    assert float(grid[0]["test_err_mean"]) == pytest.approx(sum(test_errs) / 3)
    assert float(grid[0]["test_err_std"]) == pytest.approx(sample_std(test_errs))  # sqrt in the shell too
