"""Opening the database: URL resolution, connection settings, errors, password redaction."""

from __future__ import annotations

import logging

import pytest
import sqlalchemy as sa

from db import readonly
from db.engine import get_engine, redact, resolve_url, transaction, upgrade
from db.errors import BadUrlError, IntegrityStoreError, UnreachableError

SECRET_URL = "postgresql://alice:s3cr3t-pw@127.0.0.1:1/results"


def test_url_comes_from_the_option_else_the_environment_else_the_default(monkeypatch):
    monkeypatch.delenv("RESWEEP_DB", raising=False)
    assert resolve_url(None) == "sqlite:///resweep.db"
    monkeypatch.setenv("RESWEEP_DB", "sqlite:///from-env.db")
    assert resolve_url(None) == "sqlite:///from-env.db"
    assert resolve_url("sqlite:///given.db") == "sqlite:///given.db"


def test_postgresql_urls_get_psycopg_3_and_bare_paths_mean_sqlite():
    assert resolve_url("postgresql://u:p@h:5432/d") == "postgresql+psycopg://u:p@h:5432/d"
    assert resolve_url("postgres://u@h/d") == "postgresql+psycopg://u@h/d"
    assert resolve_url("results/run.db") == "sqlite:///results/run.db"


@pytest.mark.parametrize("url", ["mysql://u:pw@h/d", "postgresql+psycopg2://u:pw@h/d", "not a url://u:pw@h/x"])
def test_unsupported_urls_are_refused_in_one_line(url):
    with pytest.raises(BadUrlError) as err:
        resolve_url(url)
    assert "sqlite:///PATH" in str(err.value) and "pw" not in str(err.value)


def test_redact_hides_the_password():
    assert redact(SECRET_URL) == "postgresql://alice:***@127.0.0.1:1/results"
    assert redact("sqlite:///x.db") == "sqlite:///x.db"
    assert "s3cr3t" not in redact("not a url://alice:s3cr3t-pw@host/x")


def test_unreachable_server_is_one_line_without_the_password(caplog):
    caplog.set_level(logging.DEBUG)
    for attempt in (lambda: get_engine(SECRET_URL), lambda: upgrade(SECRET_URL),
                    lambda: readonly.run_readonly(SECRET_URL, "SELECT 1")):  # fmt: skip
        with pytest.raises(UnreachableError) as err:
            attempt()
        message = str(err.value)
        assert "s3cr3t" not in message and "\n" not in message
        assert "alice:***@127.0.0.1:1/results" in message and "Connection refused" in message
    assert "s3cr3t" not in caplog.text


def test_missing_sqlite_directory_is_one_clear_line(tmp_path):
    with pytest.raises(UnreachableError, match="check that the directory exists"):
        get_engine(f"sqlite:///{tmp_path / 'no' / 'such' / 'dir.db'}")


def test_sqlite_connections_use_wal_foreign_keys_and_a_busy_timeout(sqlite_url):
    engine = get_engine(sqlite_url)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30_000
    engine.dispose()


def test_transaction_rolls_back_and_reports_integrity_errors(engine):
    with pytest.raises(IntegrityStoreError) as err:
        with transaction(engine) as conn:
            conn.exec_driver_sql(
                "INSERT INTO sweeps (name, spec, spec_hash, status, created_at) "
                "VALUES ('a', '', '', 'running', CURRENT_TIMESTAMP)"
            )
            conn.exec_driver_sql(  # a metric of a trial that does not exist
                "INSERT INTO metric_values (trial_id, name_id, epoch, value) VALUES (12345, 3, 1, 0.1)"
            )
    assert "write refused" in str(err.value)
    with engine.connect() as conn:
        assert conn.scalar(sa.text("SELECT count(*) FROM sweeps")) == 0  # rolled back


@pytest.mark.parametrize(("url", "shown"), [
    ("postgresql://alice:s3cr3t@h/db?password=s3cr3t", "postgresql://alice:***@h/db?password=***"),
    ("postgresql://alice@h/db?sslmode=require&password=s3cr3t&application_name=x",
     "postgresql://alice@h/db?sslmode=require&password=***&application_name=x"),
    ("postgresql://alice@h/db?sslpassword=s3cr3t", "postgresql://alice@h/db?sslpassword=***"),
    ("postgresql://alice:p@ss@h/db", "postgresql://alice:***@h/db"),  # an unencoded '@' in the password
    ("postgresql://alice:p@ss:w@rd@h/db", "postgresql://alice:***@h/db"),
])  # fmt: skip
def test_every_password_form_is_masked(url, shown):
    assert redact(url) == shown


def test_query_string_passwords_are_masked_in_connection_errors():
    with pytest.raises(UnreachableError) as err:
        get_engine("postgresql://alice@127.0.0.1:1/results?password=s3cr3t-pw")
    assert "s3cr3t" not in str(err.value) and "password=***" in str(err.value)


@pytest.mark.parametrize(("url", "what"), [
    ("postgresql://u:pw@h:5x32/db", "the port '5x32' is not a number"),
    ("postgresql://u:p@w@h/db", "holds an '@'; write it as %40"),
    ("sqlite:///:memory:", "in-memory database"),
    ("sqlite://", "in-memory database"),
    ("sqlite:///file:x?mode=memory&uri=true", "in-memory database"),
])  # fmt: skip
def test_urls_that_cannot_work_are_refused_in_one_line(url, what):
    with pytest.raises(BadUrlError) as err:
        resolve_url(url)
    assert what in str(err.value) and "\n" not in str(err.value) and ":pw@" not in str(err.value)


def db_flag(db):
    from db.engine import Database

    return Database(db).flag


def test_advice_repeats_a_db_option_that_works_when_pasted(monkeypatch):
    monkeypatch.delenv("RESWEEP_DB", raising=False)
    assert db_flag(None) == ""
    assert db_flag("sqlite:///runs/x.db") == " --db 'sqlite:///runs/x.db'"
    with_pw = "postgresql://alice:s3cr3t@h/db"
    assert db_flag(with_pw) == " --db 'postgresql+psycopg://alice:PASSWORD@h/db'  # PASSWORD: the database password"
    monkeypatch.setenv("RESWEEP_DB", with_pw)
    assert db_flag(with_pw) == ' --db "$RESWEEP_DB"'


def test_a_database_named_on_the_command_line_is_resolved_once(monkeypatch, tmp_path):
    import db.engine as engine_module

    calls = []
    real = engine_module.resolve_url
    monkeypatch.setattr(engine_module, "resolve_url", lambda url=None: calls.append(url) or real(url))
    database = engine_module.Database(str(tmp_path / "once.db"))
    assert database.url == f"sqlite:///{tmp_path / 'once.db'}"
    assert database.shown == database.url and database.flag == f" --db '{database.url}'"
    database.engine().dispose()
    database.engine(create=False).dispose()
    assert calls == [str(tmp_path / "once.db")]
