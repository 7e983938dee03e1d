"""What one statement through the door may cost a PostgreSQL server: temporary files stop at the
door's temp_file_limit, advisory locks are refused, and the memory of one expression (which
PostgreSQL does not bound) ends that one query with "out of memory" on a server whose processes
have an address-space limit. Each case runs through `db.readonly._execute` (the statement check
skipped) on a private server, while another session keeps reading; afterwards the postmaster is
the same process, no backend was killed, and the other session's connection still works.

The figures each case measured are printed (`pytest -s`): docs/security.md quotes them.
"""

from __future__ import annotations

import re
import threading
import time

import psycopg
import pytest

from db import door, readonly
from db.engine import get_engine, resolve_url
from db.errors import QueryError, RefusedStatementError, StoreError
from tests.db.known import make_sweep
from tests.orchestrator.private_pg import PrivatePostgres

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

MEMORY_LIMIT = 2 * 2**30  # address space per server process


@pytest.fixture(scope="module")
def server():
    pg = PrivatePostgres(memory_limit=MEMORY_LIMIT)
    try:
        name = pg.new_database()
        url = pg.url(name)
        engine = get_engine(url)
        make_sweep(engine)
        engine.dispose()
        yield pg, resolve_url(url)
    finally:
        pg.close()


class Bystander:
    """Another session of the same server: reads a table every 50 ms while the case runs."""

    def __init__(self, url: str) -> None:
        self.conn = psycopg.connect(url.replace("+psycopg", ""), autocommit=True)
        self.failures: list[str] = []
        self.reads = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                assert self.conn.execute("SELECT count(*) FROM sweeps").fetchone() == (1,)
                self.reads += 1
            except Exception as exc:  # noqa: BLE001 - any failure of the bystander is the finding
                self.failures.append(f"{type(exc).__name__}: {exc}")
                return
            time.sleep(0.05)

    def __enter__(self) -> Bystander:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)
        self.conn.close()


def _temp_bytes(url: str) -> int:
    with psycopg.connect(url.replace("+psycopg", ""), autocommit=True) as conn:
        conn.execute("SELECT pg_stat_force_next_flush()")
        return conn.execute("SELECT temp_bytes FROM pg_stat_database WHERE datname = current_database()").fetchone()[0]


CASES = {
    # 1e9 rows materialised by the function scan: stops at the door's temp_file_limit.
    "generate_series temp files": (
        "SELECT * FROM generate_series(1, 1000000000) AS n", QueryError, "temp_file_limit", 120.0,
    ),
    # UNION's hash table grows in memory (PostgreSQL does not spill it): stops at the
    # address-space limit (or the timeout).
    "recursive union growth": (
        "WITH RECURSIVE t(x) AS (SELECT 1 UNION SELECT x + 1 FROM t) SELECT count(*) FROM t",
        QueryError, "out of memory|timeout|temp_file_limit", 30.0,
    ),
    # One row of 1.2 GB of values: only the address-space limit stops it.
    "repeat columns": (
        "SELECT repeat('a', 400000000) AS a, repeat('b', 400000000) AS b, repeat('c', 400000000) AS c",
        QueryError, "out of memory|larger than", 120.0,
    ),
    # ~13,000 shared advisory locks filled the shared lock table: refused before the first one.
    "advisory locks": (
        "SELECT count(pg_advisory_lock_shared(i)) FROM generate_series(1, 13000) AS i",
        RefusedStatementError, "permission denied for function pg_advisory_lock_shared", 30.0,
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_one_statement_cannot_take_the_server_or_another_session(server, case):
    pg, url = server
    sql, error, says, timeout_s = CASES[case]  # long enough for a loaded machine to reach the bound
    postmaster = pg.postmaster()
    log_before = (pg.root / "log").read_text()
    temp_before = _temp_bytes(url)
    peak = {"rss": 0}
    sampling = threading.Event()

    def sample() -> None:
        while not sampling.is_set():
            peak["rss"] = max([peak["rss"], *pg.backends_rss().values()])
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    with Bystander(url) as bystander:
        sampler.start()
        start = time.monotonic()
        with pytest.raises(StoreError) as refused:
            readonly._execute(url, sql, 10, timeout_s)
        took = time.monotonic() - start
        sampling.set()
        sampler.join(5)
        time.sleep(0.2)
        reads = bystander.reads
        assert bystander.failures == []
        assert bystander.conn.execute("SELECT count(*) FROM sweeps").fetchone() == (1,)
    assert isinstance(refused.value, error), refused.value
    assert re.search(says, str(refused.value)), str(refused.value)
    assert "\n" not in str(refused.value)
    assert pg.postmaster() == postmaster
    log = (pg.root / "log").read_text()[len(log_before):]
    assert "terminated by signal" not in log and "all server processes terminated" not in log, log[-2000:]
    temp = _temp_bytes(url) - temp_before
    print(f"\n{case}: refused after {took:.1f} s ({str(refused.value)[:160]}); temp files {temp / 2**20:.0f} MiB;"
          f" peak backend RSS {peak['rss'] / 2**20:.0f} MiB; the other session read {reads} times meanwhile")
    assert temp <= 2 * 2**30  # the door's 1 GB limit, and what the bystander and stats add
    # And the server still answers through the door.
    assert readonly._execute(url, "SELECT count(*) FROM sweeps", 10, 30.0).rows == [(1,)]


def test_the_door_refuses_to_run_without_its_limits(server):
    """Called directly (a reader's own session), the function refuses a transaction without a
    statement timeout or a temp_file_limit, or one that is not READ ONLY."""
    pg, url = server
    with psycopg.connect(url.replace("+psycopg", "")) as conn:
        reader = door.door_of(conn).reader
        conn.rollback()
        call = "SELECT * FROM public.resweep_read('SELECT 1', 1, 10, 1000) AS t(c1 integer)"
        for setup, says in (
            ("SET LOCAL statement_timeout = 0", "statement_timeout"),
            ("SET LOCAL statement_timeout = '1h'", "statement_timeout"),
            ("SET LOCAL statement_timeout = '5s'; SET LOCAL temp_file_limit = -1", "temp_file_limit"),
            ("SET LOCAL statement_timeout = '5s'; SET LOCAL temp_file_limit = '10GB'", "temp_file_limit"),
        ):
            conn.read_only = True
            conn.execute(f'SET LOCAL ROLE "{reader}"')
            for statement in setup.split("; "):
                conn.execute(statement)
            with pytest.raises(psycopg.Error, match=says):
                conn.execute(call)
            conn.rollback()
        conn.read_only = False
        conn.execute(f'SET LOCAL ROLE "{reader}"; SET LOCAL statement_timeout = \'5s\'')
        conn.execute(f"SET LOCAL temp_file_limit = '{door.TEMP_FILE_LIMIT}'")
        with pytest.raises(psycopg.Error, match="READ ONLY"):
            conn.execute(call)
