"""A filesystem filling up mid-sweep (the database's, or the results directory's): a clean stop as
interrupted with one line naming that filesystem, and a resume that finishes with nothing lost.

The small filesystem is a real tmpfs mounted for the test (needs root, as the CI container runs);
it is filled with a real file, not simulated.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from orchestrator.run.outbox import MIN_FREE_BYTES
from tests.orchestrator.conftest import run_cli, start_cli, wait_for
from tests.orchestrator.run.test_store_faults import PASSWORD, count, server  # noqa: F401 (server: a fixture)
from tests.orchestrator.run.test_sweeps_e2e import assert_every_epoch_once, rows, sweep_file

pytestmark = [pytest.mark.ray, pytest.mark.slow]


@contextmanager
def tmpfs(mount: Path, options: str) -> Iterator[Path]:
    """A real tmpfs mounted at the directory `mount` for the block (`options`: mount's -o)."""
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mount)], capture_output=True,
                          text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (root with CAP_SYS_ADMIN needed): {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.fixture
def small_fs(tmp_path):
    mount = tmp_path / "small"
    mount.mkdir()
    with tmpfs(mount, "size=160m") as mounted:
        yield mounted


def fill(mount, leave: int) -> os.PathLike:
    """Fill the filesystem at `mount` until `leave` bytes are free; returns the filler file."""
    filler = mount / "filler"
    size = shutil.disk_usage(mount).free - leave
    with open(filler, "wb") as f:
        os.posix_fallocate(f.fileno(), 0, size)
    return filler


@pytest.mark.parametrize("full", ["database", "results"])
def test_a_full_filesystem_stops_the_sweep_cleanly_and_resume_finishes(tmp_path, ray_cluster, small_fs, full):
    db_dir = small_fs if full == "database" else tmp_path
    results = small_fs / "results" if full == "results" else tmp_path / "results"
    url = f"sqlite:///{db_dir / 'resweep.db'}"
    path = sweep_file(tmp_path, "full", epochs=40, image=16, num_train=512)
    driver = start_cli("launch", str(path), "--db", url, "--address", ray_cluster.address, "--results", str(results),
                       cwd=tmp_path)
    wait_for(lambda: count(url, "SELECT max(epoch) FROM metrics") >= 2, timeout=180,
             what="a trial's second epoch", proc=driver)
    filler = fill(small_fs, leave=MIN_FREE_BYTES // 2)
    out, _ = driver.communicate(timeout=300)
    assert driver.returncode == 130, out
    assert "Traceback" not in out
    (line,) = [line for line in out.splitlines() if line.startswith("Stopped:")]
    assert f"the filesystem {small_fs} (of the {'database' if full == 'database' else 'results directory'}" in line
    assert "is full" in line and "python -m orchestrator resume full" in line
    assert rows(url, "SELECT status FROM sweeps") == [("interrupted",)]  # low space, not none: the last word went in
    assert {s for (s,) in rows(url, "SELECT status FROM trials")} <= {"pending", "terminated"}

    free_and_resume(filler, "full", url, ray_cluster.address, tmp_path, epochs=40)


def free_and_resume(filler: Path, sweep: str, url: str, address: str, cwd: Path, epochs: int) -> None:
    """Space freed (the filler removed), `resume` finishes the stopped sweep: both trials
    terminated, every one of their epochs recorded once."""
    os.unlink(filler)
    done = run_cli("resume", sweep, "--db", url, "--address", address, cwd=cwd, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert rows(url, "SELECT status FROM sweeps") == [("finished",)]
    assert rows(url, "SELECT status FROM trials") == [("terminated",)] * 2
    assert_every_epoch_once(url, sweep, epochs=epochs)


@pytest.fixture
def small_fs_for_postgres():
    """`small_fs` where the postgres user can reach it (pytest's tmp_path is root's alone)."""
    mount = Path(tempfile.mkdtemp(prefix="rs-small-", dir="/tmp"))
    mount.chmod(0o755)
    try:
        with tmpfs(mount, "size=64m,mode=755") as mounted:
            yield mounted
    finally:
        shutil.rmtree(mount, ignore_errors=True)


@pytest.mark.postgres
def test_a_full_postgresql_tablespace_stops_the_sweep_cleanly_and_resume_finishes(tmp_path, ray_cluster,
                                                                                  small_fs_for_postgres, server):  # noqa: F811
    """The database's files on a tablespace that fills up (a real tmpfs, on the module's private
    server): PostgreSQL refuses to extend a table (SQLSTATE 53100), and the sweep stops as it does
    for SQLite, with one line saying the database's filesystem is full."""
    small_fs = small_fs_for_postgres
    location = small_fs / "tablespace"
    location.mkdir()
    postgres = pwd.getpwnam("postgres")
    os.chown(location, postgres.pw_uid, postgres.pw_gid)
    name = f"full_{os.getpid()}"
    server.admin(f"CREATE TABLESPACE {name} LOCATION '{location}'", f'CREATE DATABASE "{name}" TABLESPACE {name}')
    try:
        url = server.url(name, password=PASSWORD)
        path = sweep_file(tmp_path, "pgfull", epochs=40, image=16, num_train=512)
        driver = start_cli("launch", str(path), "--db", url, "--address", ray_cluster.address, cwd=tmp_path)
        wait_for(lambda: count(url, "SELECT max(epoch) FROM metrics") >= 2, timeout=180,
                 what="a trial's second epoch", proc=driver)
        filler = fill(small_fs, leave=0)
        out, _ = driver.communicate(timeout=300)
        assert driver.returncode == 130, out
        assert "Traceback" not in out and PASSWORD not in out
        (line,) = [line for line in out.splitlines() if line.startswith("Stopped:")]
        assert "of the database postgresql+psycopg://postgres:***@" in line and "is full" in line, line
        assert "No space left on device" in line and "python -m orchestrator resume pgfull" in line, line
        print(f"\n[postgresql tablespace full] {line}")

        free_and_resume(filler, "pgfull", url, ray_cluster.address, tmp_path, epochs=40)
    finally:
        server.admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', f"DROP TABLESPACE IF EXISTS {name}")
