"""The recorder's outbox against a real SQLite file: writes wait in order through a real lock
held by another connection, spill to a file past a size and come back from it (as a resumed sweep's
would), end after --db-wait, and never go into a file that replaced the one opened."""

from __future__ import annotations

import sqlite3
import time

import pytest
import sqlalchemy as sa

from db import writes
from db.engine import get_engine
from orchestrator.run.outbox import (
    SPILL_FILE,
    Outbox,
    ResultReported,
    SweepStatus,
    TrialRegistered,
)

CONFIG = {"dataset": "synthetic", "model": "cifar", "depth": 8, "block": "basic", "shortcut": "A", "seed": 0}


def result(epoch: int) -> ResultReported:
    return ResultReported("t1", epoch, {"train_err": 1 / epoch, "test_err": 0.5})


def epochs(engine) -> list:
    with engine.connect() as conn:
        return [e for (e,) in conn.execute(sa.text("SELECT epoch FROM metrics WHERE name = 'train_err' ORDER BY epoch"))]


def lock(path):
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("BEGIN EXCLUSIVE")
    return conn


def test_writes_wait_through_a_lock_in_order_and_land_once(store):
    engine, sweep_id, tmp = store
    box = Outbox(engine, sweep_id, wait_s=60)
    box.put(TrialRegistered("t1", CONFIG, "running"))
    box.put(result(1))
    holder = lock(tmp / "resweep.db")
    start = time.monotonic()
    for e in (2, 3, 4):
        box.put(result(e))
    assert time.monotonic() - start < 10  # a locked file costs about a second, not the 30 s busy timeout
    assert box.waiting == 3 and "database unreachable" in box.note() and "3 results waiting" in box.note()
    box.put(result(2))  # a replayed epoch (a restored trial) while waiting
    holder.execute("COMMIT")
    holder.close()
    assert box.flush(force=True) and box.waiting == 0 and box.note() is None
    assert epochs(engine) == [1, 2, 3, 4]


def test_past_a_size_writes_spill_to_a_file_that_a_later_outbox_writes_back(store):
    engine, sweep_id, tmp = store
    spill = tmp / "results" / SPILL_FILE
    box = Outbox(engine, sweep_id, wait_s=60, spill_path=spill, memory_ops=3)
    holder = lock(tmp / "resweep.db")
    box.put(TrialRegistered("t1", CONFIG, "running"))
    for e in range(1, 9):
        box.put(result(e))
    assert spill.exists() and box.waiting == 9
    assert len(box._memory) <= 3  # memory stays bounded
    box.put(SweepStatus("interrupted", finished=False))
    box.persist()  # the sweep stops while the lock is held
    holder.execute("COMMIT")
    holder.close()
    assert len(spill.read_text().splitlines()) == 10

    again = Outbox(engine, sweep_id, wait_s=60, spill_path=spill)  # the resumed sweep's
    assert again.waiting == 10
    again.put(result(9))
    assert again.waiting == 0 and not spill.exists()
    assert epochs(engine) == list(range(1, 10))
    with engine.connect() as conn:  # a stopped run's sweep status is not replayed over the new run's
        assert conn.execute(sa.text("SELECT status FROM sweeps")).scalar() == "running"


def test_an_outage_past_the_wait_is_fatal_with_one_line(store):
    engine, sweep_id, tmp = store
    said = []
    box = Outbox(engine, sweep_id, wait_s=0.5, on_fatal=said.append)
    holder = lock(tmp / "resweep.db")
    box.put(TrialRegistered("t1", CONFIG, "running"))
    assert not box.wait_until_written()
    holder.execute("COMMIT")
    holder.close()
    (line,) = said
    assert line.startswith(f"the database sqlite:///{tmp / 'resweep.db'} stayed unreachable") and "--db-wait" in line
    assert box.waiting == 1  # kept, not lost


@pytest.mark.parametrize("how", ["deleted", "replaced"])
def test_a_deleted_or_replaced_file_is_noticed_and_never_written(store, how):
    engine, sweep_id, tmp = store
    said = []
    box = Outbox(engine, sweep_id, on_fatal=said.append)
    box.put(TrialRegistered("t1", CONFIG, "running"))
    box.put(result(1))
    for suffix in ("", "-wal", "-shm"):
        (tmp / f"resweep.db{suffix}").unlink(missing_ok=True)
    if how == "replaced":
        sqlite3.connect(tmp / "resweep.db").execute("CREATE TABLE other (x)").connection.commit()
    box.put(result(2))
    assert said == [f"the database file {tmp / 'resweep.db'} was {how}" + (" by another file" if how == "replaced" else "")
                    + " while the sweep ran"]
    if how == "deleted":
        assert not (tmp / "resweep.db").exists()
    else:
        tables = sqlite3.connect(tmp / "resweep.db").execute("SELECT name FROM sqlite_master").fetchall()
        assert tables == [("other",)]


@pytest.mark.postgres
def test_a_dropped_postgres_database_is_gone_for_good_at_once(pg_url):
    from tests.conftest import PG_ADMIN_URL

    engine = get_engine(pg_url)
    sweep_id = writes.create_sweep(engine, name="s", spec="name: s\n", spec_hash="0" * 64)
    said = []
    box = Outbox(engine, sweep_id, wait_s=600, on_fatal=said.append)
    box.put(TrialRegistered("t1", CONFIG, "running"))
    box.put(result(1))
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE "{sa.make_url(pg_url).database}" WITH (FORCE)'))
    admin.dispose()
    start = time.monotonic()
    box.put(result(2))
    box.flush(force=True)
    assert time.monotonic() - start < 30  # not the 10-minute wait: a dropped database does not come back
    (line,) = said
    assert line.startswith("the database postgresql+psycopg://") and "is gone" in line and "does not exist" in line
    engine.dispose()
