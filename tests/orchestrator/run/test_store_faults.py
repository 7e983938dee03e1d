"""Sweeps through real database faults: a PostgreSQL restart, a server down past --db-wait, a
SQLite file locked by another process for a minute, the SQLite file deleted mid-sweep.

The PostgreSQL faults happen to a private server of this module's own (initdb into a temp dir,
its own port), never to the shared one. Drivers are real `python -m orchestrator` processes on
the session's Ray cluster; trials are tiny nets on synthetic data.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time

import pytest

from tests.orchestrator.conftest import run_cli, start_cli, wait_for
from tests.orchestrator.private_pg import PrivatePostgres
import sqlalchemy as sa

from tests.orchestrator.run.test_sweeps_e2e import assert_every_epoch_once, rows, sweep_file

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.postgres]

PASSWORD = "s3cret-pw"  # trust auth ignores it; it must never be printed


@pytest.fixture(scope="module")
def server():
    pg = PrivatePostgres()
    try:
        yield pg
    finally:
        pg.close()


def slow_sweep(tmp_path, name: str, epochs: int = 8):
    """Two trials of `epochs` short epochs (about half a second each on a busy machine)."""
    return sweep_file(tmp_path, name, epochs=epochs, image=16, num_train=512)


def count(url: str, sql: str) -> int:
    """A number from the database, 0 while it is not there yet (or down)."""
    try:
        return rows(url, sql)[0][0] or 0
    except sa.exc.DBAPIError:
        return 0


def finish(driver, timeout: float = 300) -> str:
    out, _ = driver.communicate(timeout=timeout)
    return out


def test_a_postgres_restart_mid_sweep_loses_and_duplicates_nothing(tmp_path, ray_cluster, server):
    url = server.url(server.new_database(), password=PASSWORD)
    path = slow_sweep(tmp_path, "restart", epochs=10)
    driver = start_cli("launch", str(path), "--db", url, "--address", ray_cluster.address, cwd=tmp_path)
    wait_for(lambda: count(url, "SELECT max(epoch) FROM metrics") >= 2, timeout=180,
             what="a trial's second epoch", proc=driver)
    server.restart(down_s=2)
    out = finish(driver)
    assert driver.returncode == 0, out
    assert "Traceback" not in out and PASSWORD not in out
    assert "database unreachable" in out  # the progress line said so while results waited
    assert "Sweep restart finished" in out
    assert rows(url, "SELECT status FROM sweeps") == [("finished",)]
    assert rows(url, "SELECT status FROM trials") == [("terminated",)] * 2
    assert_every_epoch_once(url, "restart", epochs=10)


def test_a_server_down_past_db_wait_stops_cleanly_and_resume_finishes(tmp_path, ray_cluster, server):
    url = server.url(server.new_database(), password=PASSWORD)
    path = slow_sweep(tmp_path, "down", epochs=10)
    driver = start_cli("launch", str(path), "--db", url, "--address", ray_cluster.address, "--db-wait", "4s",
                       cwd=tmp_path)
    wait_for(lambda: count(url, "SELECT max(epoch) FROM metrics") >= 2, timeout=180,
             what="a trial's second epoch", proc=driver)
    server.stop()
    try:
        out = finish(driver, timeout=180)
    finally:
        server.start()
    assert driver.returncode == 130, out
    assert "Traceback" not in out and PASSWORD not in out
    (line,) = [line for line in out.splitlines() if line.startswith("Stopped:")]
    assert "stayed unreachable" in line and f"127.0.0.1:{server.port}" in line and "***" in line
    assert "python -m orchestrator resume down" in line
    assert (tmp_path / "results" / "down" / "resweep-pending.jsonl").exists()  # what waited is kept

    done = run_cli("resume", "down", "--db", url, "--address", ray_cluster.address, cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert rows(url, "SELECT status FROM sweeps") == [("finished",)]
    assert rows(url, "SELECT status FROM trials") == [("terminated",)] * 2
    assert_every_epoch_once(url, "down", epochs=10)
    assert not (tmp_path / "results" / "down" / "resweep-pending.jsonl").exists()


HOLD_LOCK = textwrap.dedent("""\
    import sqlite3, sys, time
    conn = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=60)
    conn.execute("BEGIN EXCLUSIVE")
    print("locked", flush=True)
    time.sleep(float(sys.argv[2]))
    conn.execute("COMMIT")
    """)


def test_a_sqlite_write_lock_held_a_minute_delays_but_loses_nothing(tmp_path, ray_cluster):
    db = tmp_path / "resweep.db"
    url = f"sqlite:///{db}"
    path = slow_sweep(tmp_path, "locked", epochs=8)
    driver = start_cli("launch", str(path), "--db", url, "--address", ray_cluster.address, cwd=tmp_path)
    wait_for(lambda: count(url, "SELECT max(epoch) FROM metrics") >= 1, timeout=180,
             what="a trial's first epoch", proc=driver)
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(db), "60"], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    locked_at = time.monotonic()
    out = finish(driver, timeout=400)
    holder.wait(timeout=120)
    assert driver.returncode == 0, out
    assert time.monotonic() - locked_at >= 55  # the sweep waited the lock out
    assert "database unreachable" in out and "Traceback" not in out
    assert rows(url, "SELECT status FROM sweeps") == [("finished",)]
    assert rows(url, "SELECT status FROM trials") == [("terminated",)] * 2
    assert_every_epoch_once(url, "locked", epochs=8)


def test_a_deleted_sqlite_file_stops_the_sweep_cleanly(tmp_path, ray_cluster):
    db = tmp_path / "resweep.db"
    url = f"sqlite:///{db}"
    path = slow_sweep(tmp_path, "deleted", epochs=10)
    driver = start_cli("launch", str(path), "--db", url, "--address", ray_cluster.address, cwd=tmp_path)
    wait_for(lambda: count(url, "SELECT max(epoch) FROM metrics") >= 2, timeout=180,
             what="a trial's second epoch", proc=driver)
    for suffix in ("", "-wal", "-shm"):
        (tmp_path / f"resweep.db{suffix}").unlink(missing_ok=True)
    out = finish(driver)
    assert driver.returncode == 130, out
    assert "Traceback" not in out and "finished" not in out
    (line,) = [line for line in out.splitlines() if line.startswith("Stopped:")]
    assert f"the database file {db} was deleted" in line and "db import" in line
    assert not db.exists()  # nothing wrote a new, empty database in its place

    # Rebuilt from the results directory alone, then continued.
    results = tmp_path / "results" / "deleted"
    imported = run_cli("db", "import", str(results), "--db", url, cwd=tmp_path)
    assert imported.returncode == 0, imported.stdout + imported.stderr
    assert "deleted: imported from" in imported.stdout and "sweep interrupted" in imported.stdout
    assert "python -m orchestrator resume deleted" in imported.stdout
    ((status, spec, storage),) = rows(url, "SELECT status, spec, storage_path FROM sweeps")
    assert status == "interrupted" and spec == path.read_text() and storage == str(results)
    before = snapshot(url)
    assert before["metrics"] and before["layer_stats"]
    again = run_cli("db", "import", str(results), "--db", url, cwd=tmp_path)
    assert again.returncode == 0 and snapshot(url) == before  # idempotent

    done = run_cli("resume", "deleted", "--db", url, "--address", ray_cluster.address, cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert rows(url, "SELECT status FROM sweeps") == [("finished",)]
    assert rows(url, "SELECT status FROM trials") == [("terminated",)] * 2
    assert_every_epoch_once(url, "deleted", epochs=10)


def snapshot(url: str) -> dict[str, list]:
    """Every row of the result tables, keyed by natural keys (ids may differ between databases;
    a config is JSON text on SQLite, a JSON value on PostgreSQL)."""
    trials = rows(url, "SELECT trial_key, status, depth, shortcut, seed, config, params_count, error "
                       "FROM trials ORDER BY trial_key")
    return {
        "trials": [(*t[:5], json.loads(t[5]) if isinstance(t[5], str) else t[5], *t[6:]) for t in trials],
        "metrics": rows(url, "SELECT t.trial_key, m.name, m.epoch, m.value FROM metrics m "
                             "JOIN trials t ON t.id = m.trial_id ORDER BY 1, 2, 3"),
        "layer_stats": rows(url, "SELECT t.trial_key, l.epoch, l.layer, l.name, l.stage, l.std, l.mean "
                                 "FROM layer_stats l JOIN trials t ON t.id = l.trial_id ORDER BY 1, 2, 3"),
    }


def test_a_postgres_database_dropped_mid_sweep_stops_it_and_import_then_resume_rebuild_it(tmp_path, ray_cluster,
                                                                                          server):
    name = server.new_database()
    url = server.url(name, password=PASSWORD)
    path = slow_sweep(tmp_path, "dropped", epochs=10)
    driver = start_cli("launch", str(path), "--db", url, "--address", ray_cluster.address, cwd=tmp_path)
    wait_for(lambda: count(url, "SELECT max(epoch) FROM metrics") >= 2, timeout=180,
             what="a trial's second epoch", proc=driver)
    server.admin(f'DROP DATABASE "{name}" WITH (FORCE)')  # the driver's connections too
    started = time.monotonic()
    out = finish(driver)
    seconds = time.monotonic() - started
    assert driver.returncode == 130, out
    assert "Traceback" not in out and "finished" not in out and PASSWORD not in out
    (line,) = [line for line in out.splitlines() if line.startswith("Stopped:")]
    assert "is gone" in line and "does not exist" in line and "db import" in line and "***" in line, line
    assert seconds < 120  # at once, not after --db-wait's 10 minutes: a dropped database does not come back
    server.admin(f'CREATE DATABASE "{name}"')  # empty, under the same name

    results = tmp_path / "results" / "dropped"
    imported = run_cli("db", "import", str(results), "--db", url, cwd=tmp_path)
    assert imported.returncode == 0, imported.stdout + imported.stderr
    assert PASSWORD not in imported.stdout + imported.stderr
    assert "dropped: imported from" in imported.stdout and "python -m orchestrator resume dropped" in imported.stdout
    assert rows(url, "SELECT status, storage_path FROM sweeps") == [("interrupted", str(results))]
    assert snapshot(url)["metrics"]
    done = run_cli("resume", "dropped", "--db", url, "--address", ray_cluster.address, cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert rows(url, "SELECT status FROM sweeps") == [("finished",)]
    assert rows(url, "SELECT status FROM trials") == [("terminated",)] * 2
    assert_every_epoch_once(url, "dropped", epochs=10)
