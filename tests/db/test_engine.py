"""Opening the database: URL resolution, connection settings, errors, password redaction."""

from __future__ import annotations

import logging

import pytest
import sqlalchemy as sa

from db import readonly
from db.engine import get_engine, redact, resolve_url, transaction, upgrade
from db.errors import BadUrlError, IntegrityStoreError, NoDatabaseError, UnreachableError

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
    ("postgresql://u:p@w@h/db", "holds more than one '@'; write an '@' in the user, password"),
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


# A password whose every piece says SECRET, joined by each character that ends a URL's parts.
HOSTILE_PASSWORDS = [
    "SECRET1/SECRET2",
    "SECRET1@SECRET2",
    "SECRET1/SECRET2@SECRET3",
    "SECRET1%2FSECRET2",
    "SECRET1:SECRET2",
    "SECRET1?SECRET2=SECRET3",
    "SECRET1#SECRET2",
    "SECRET1&SECRET2",
    "SECRET1/SECRET2?SECRET3#SECRET4@SECRET5:SECRET6%40SECRET7",
    "/SECRET1@",
    "SECRET1@127.0.0.1/SECRET2",
]
URL_SHAPES = [
    "postgresql://u:{pw}@127.0.0.1/x",
    "postgresql://u:{pw}@127.0.0.1:5432/x",
    "postgresql://u:{pw}@127.0.0.1:99x/x",  # a bad port: the refusal prints the URL
    "postgresql://u:{pw}@127.0.0.1:1/x?sslmode=disable",
    "postgres://u:{pw}@[::1]:1/x",
    "mysql://u:{pw}@127.0.0.1/x",  # an unsupported backend: refused, URL printed
    "postgresql://u@127.0.0.1:1/x?password={pw}",
    "postgresql://u@127.0.0.1:1/x?sslmode=disable&sslpassword={pw}&application_name=a",
    "sqlite:///x.db?password={pw}",
    "u:{pw}@127.0.0.1/x",  # no scheme: taken for a SQLite path, still hidden
]


@pytest.mark.parametrize("password", HOSTILE_PASSWORDS)
@pytest.mark.parametrize("shape", URL_SHAPES)
def test_redact_hides_a_password_of_any_shape_and_resolution_never_echoes_it(shape, password):
    url = shape.format(pw=password)
    assert "SECRET" not in redact(url) and "\n" not in redact(url)
    try:
        resolved = resolve_url(url)
    except BadUrlError as err:  # refused: the line names the URL, password hidden
        assert "SECRET" not in str(err) and "\n" not in str(err)
    else:
        assert "SECRET" not in redact(resolved)


@pytest.mark.parametrize("password", ["SECRET1/SECRET2", "SECRET1%2FSECRET2", "SECRET1?SECRET2#SECRET3:SECRET4"])
def test_a_password_holding_url_delimiters_reaches_the_server_whole_and_errors_hide_it(password):
    url = f"postgresql://u:{password}@127.0.0.1:1/x"  # port 1: refused at once
    assert sa.make_url(resolve_url(url)).password == sa.make_url(url).password  # not cut, not moved to the host
    with pytest.raises(UnreachableError) as err:
        get_engine(url)
    assert "SECRET" not in str(err.value) and "u:***@127.0.0.1:1/x" in str(err.value)


def test_a_second_at_sign_is_refused_before_the_driver_sees_a_piece_of_the_password():
    # SQLAlchemy would end the password at the first '@' and ask DNS for the host 'PW1@host'.
    for url in ("postgresql://u:Se/cret@PW1@host/x", "postgresql://u:Se@cret/PW1@host/x",
                "postgresql://u:Se@cret?x=PW1@host/x"):  # fmt: skip
        with pytest.raises(BadUrlError) as err:
            resolve_url(url)
        assert "cret" not in str(err.value) and "PW1" not in str(err.value) and "%40" in str(err.value)


def test_redact_escapes_control_characters_so_the_line_stays_one():
    assert redact("sqlite:///a\nb.db") == "sqlite:///a\\x0ab.db"


def test_redact_hides_object_store_and_libpq_keyword_secrets():
    assert redact("s3://b/p?region=x&secret_key=SECRET&access_key=AKIA") == "s3://b/p?region=x&secret_key=***&access_key=***"
    assert redact("host=h password=SECRET dbname=d") == "host=h password=*** dbname=d"
    assert redact("postgresql://u@h/d?sslkey=/home/u/.pg/client.key") == "postgresql://u@h/d?sslkey=/home/u/.pg/client.key"


def test_a_file_that_is_not_a_database_is_one_line_naming_it(tmp_path):
    path = tmp_path / "notes.db"
    path.write_text("this is a text file, not a SQLite database\n" * 10)
    for opening in (lambda: get_engine(f"sqlite:///{path}", create=False), lambda: get_engine(f"sqlite:///{path}"),
                    lambda: upgrade(f"sqlite:///{path}")):  # fmt: skip
        with pytest.raises(UnreachableError) as err:
            opening()
        assert str(path) in str(err.value) and "file is not a database" in str(err.value)
        assert "\n" not in str(err.value)
    assert path.read_text().startswith("this is a text file")  # untouched
    with pytest.raises(NoDatabaseError):
        get_engine(f"sqlite:///{tmp_path / 'new.db'}", create=False)
    assert not (tmp_path / "new.db").exists()
