"""The Optuna journal in the database: ordering, concurrency, a real study, pickling."""

from __future__ import annotations

import multiprocessing
import pickle

import optuna
import pytest
import sqlalchemy as sa
from optuna.storages import JournalStorage

from db import writes
from db.engine import get_engine
from db.optuna_journal import DetachedJournalError, SqlJournalBackend, attach

PASSWORD = "s3cret-Pw-9f"
WORKERS, APPENDS = 4, 25


def new_sweep(engine, name: str = "searched") -> int:
    return writes.create_sweep(engine, name=name, spec=f"name: {name}\n", spec_hash="abc")


def seqs(engine, sweep_id: int) -> list[int]:
    with engine.connect() as conn:
        return list(conn.scalars(sa.text("SELECT seq FROM optuna_journal WHERE sweep_id = :s ORDER BY seq"),
                                 {"s": sweep_id}))


def test_appended_logs_read_back_in_order_and_from_an_offset(engine):
    backend = SqlJournalBackend(engine, new_sweep(engine))
    other = SqlJournalBackend(engine, new_sweep(engine, "other"))
    assert backend.read_logs(0) == []
    backend.append_logs([{"op_code": 0, "n": 0}])
    other.append_logs([{"op_code": 9}])
    backend.append_logs([{"op_code": 1, "n": 1}, {"op_code": 2, "n": 2, "v": [1.5, None]}])
    backend.append_logs([])
    assert [log["n"] for log in backend.read_logs(0)] == [0, 1, 2]
    assert backend.read_logs(2) == [{"op_code": 2, "n": 2, "v": [1.5, None]}]
    assert backend.read_logs(3) == []
    assert other.read_logs(0) == [{"op_code": 9}]  # each sweep numbers its own logs from 0
    assert seqs(engine, backend.sweep_id) == [0, 1, 2] and seqs(engine, other.sweep_id) == [0]


def test_deleting_the_sweep_deletes_its_journal(engine):
    backend = SqlJournalBackend(engine, new_sweep(engine))
    backend.append_logs([{"op_code": 0}])
    with engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM sweeps")
        assert conn.exec_driver_sql("SELECT count(*) FROM optuna_journal").scalar() == 0


def append_many(url: str, sweep_id: int, worker: int) -> None:
    engine = get_engine(url)
    backend = SqlJournalBackend(engine, sweep_id)
    for i in range(APPENDS):
        backend.append_logs([{"w": worker, "i": i, "part": 0}, {"w": worker, "i": i, "part": 1}])
    engine.dispose()


def test_processes_appending_at_once_get_consecutive_unique_numbers(db_url, engine):
    sweep_id = new_sweep(engine)
    engine.dispose()  # no connections shared with the forked children
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=append_many, args=(db_url, sweep_id, w)) for w in range(WORKERS)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0] * WORKERS
    assert seqs(engine, sweep_id) == list(range(WORKERS * APPENDS * 2))
    logs = SqlJournalBackend(engine, sweep_id).read_logs(0)
    for w in range(WORKERS):
        mine = [(log["i"], log["part"]) for log in logs if log["w"] == w]
        assert mine == [(i, part) for i in range(APPENDS) for part in (0, 1)]
    for first, second in zip(logs[::2], logs[1::2]):  # one append's logs stay together
        assert (first["w"], first["i"], first["part"]) == (second["w"], second["i"], 0) and second["part"] == 1


def objective(trial: optuna.Trial) -> float:
    return (trial.suggest_float("x", -3, 3) - 1) ** 2


def test_an_optuna_study_survives_a_new_backend(db_url, engine):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sweep_id = new_sweep(engine)
    study = optuna.create_study(study_name="s", storage=JournalStorage(SqlJournalBackend(engine, sweep_id)),
                                sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(objective, n_trials=5)
    other = get_engine(db_url)
    again = optuna.load_study(study_name="s", storage=JournalStorage(SqlJournalBackend(other, sweep_id)))
    assert [t.params for t in again.trials] == [t.params for t in study.trials]
    assert [t.value for t in again.trials] == [t.value for t in study.trials]
    again.optimize(objective, n_trials=2)  # and goes on where it was
    assert len(optuna.load_study(study_name="s", storage=JournalStorage(SqlJournalBackend(engine, sweep_id))).trials) == 7
    other.dispose()


def test_a_pickled_backend_without_password_reopens_its_database(sqlite_url):
    engine = get_engine(sqlite_url)
    backend = SqlJournalBackend(engine, new_sweep(engine))
    storage = JournalStorage(backend)  # as Tune pickles it, inside the searcher
    backend.append_logs([{"op_code": 0}])
    restored = pickle.loads(pickle.dumps(storage))._backend
    assert restored._engine is None
    assert restored.read_logs(0) == [{"op_code": 0}]
    restored.engine.dispose()
    engine.dispose()


@pytest.mark.postgres
def test_pickling_leaks_no_password_and_restores_through_attach(pg_url):
    url = sa.make_url(pg_url).set(password=PASSWORD).render_as_string(hide_password=False)
    engine = get_engine(url)  # the test server trusts local connections: the password is ignored
    backend = SqlJournalBackend(engine, new_sweep(engine))
    storage = JournalStorage(backend)
    backend.append_logs([{"op_code": 0}])
    blob = pickle.dumps(storage)
    assert PASSWORD.encode() not in blob
    assert PASSWORD not in repr(backend)
    restored = pickle.loads(blob)._backend
    with pytest.raises(DetachedJournalError, match=r"\*\*\*") as err:
        restored.read_logs(0)
    assert PASSWORD not in str(err.value)
    with attach(engine):
        assert pickle.loads(blob)._backend.read_logs(0) == [{"op_code": 0}]
    engine.dispose()


def test_a_database_at_0001_upgrades_to_one_with_the_journal(db_url):
    from alembic import command

    from db import migrate
    from db.engine import create_store_engine, resolve_url, upgrade

    engine = create_store_engine(resolve_url(db_url))
    with engine.begin() as conn:
        command.upgrade(migrate.alembic_config(connection=conn), "0001")
        sweep_id = conn.exec_driver_sql(
            "INSERT INTO sweeps (name, spec, spec_hash, created_at, status) "
            "VALUES ('old', 'name: old', 'abc', CURRENT_TIMESTAMP, 'finished') RETURNING id"
        ).scalar()
    engine.dispose()
    assert upgrade(db_url) == ("0001", migrate.head_revision())
    engine = get_engine(db_url)
    backend = SqlJournalBackend(engine, sweep_id)
    backend.append_logs([{"op_code": 0}])
    assert backend.read_logs(0) == [{"op_code": 0}]
    engine.dispose()
