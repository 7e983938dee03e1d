"""The read-only query path refuses every way to write, and the data stays as it was."""

from __future__ import annotations

import time

import pytest
import sqlalchemy as sa

from db import readonly
from db.engine import get_engine, resolve_url
from db.errors import QueryError, RefusedStatementError, StoreError
from tests.db.known import make_sweep

REFUSED = [
    "INSERT INTO sweeps (name, spec, spec_hash, status, created_at) VALUES ('x', '', '', 'running', '2024-01-01')",
    "UPDATE metric_values SET value = 0",
    "DELETE FROM metric_values",
    "DROP TABLE metric_values",
    "DROP VIEW grid_results",
    "CREATE TABLE evil (x INTEGER)",
    "CREATE INDEX evil ON metric_values (value)",
    "ALTER TABLE trials ADD COLUMN evil INTEGER",
    "SELECT 1; DROP TABLE metric_values",
    "SELECT 1;DELETE FROM metric_values;",
    "select 1 ; /* hi */ update trials set status = 'error'",
    "WITH gone AS (DELETE FROM metric_values RETURNING *) SELECT count(*) FROM gone",
    "SELECT * INTO evil FROM metric_values",
    "REPLACE INTO metric_values (trial_id, name_id, epoch, value) VALUES (1, 3, 1, 0)",
    "PRAGMA query_only = OFF",
    "ATTACH DATABASE 'evil.db' AS evil",
    "VACUUM",
    "TRUNCATE metric_values",
    "BEGIN; DELETE FROM metric_values; COMMIT",
    "SET default_transaction_read_only = off",
    "SELECT set_config('default_transaction_read_only', 'off', false)",
    "SELECT nextval('trials_id_seq')",
    "COPY metric_values TO '/tmp/evil.csv'",
    "  ",
    "-- only a comment",
]


def snapshot(engine) -> dict:
    """Everything a refused statement could have touched."""
    with engine.connect() as conn:
        tables = {t: conn.execute(sa.text(f"SELECT * FROM {t} ORDER BY 1, 2, 3")).all()
                  for t in ("sweeps", "trials", "metrics", "layer_stats")}  # fmt: skip
        inspector = sa.inspect(conn)
        return {**tables, "names": (sorted(inspector.get_table_names()), sorted(inspector.get_view_names()))}


@pytest.fixture
def known(engine):
    make_sweep(engine)
    return snapshot(engine)


def test_every_writing_statement_is_refused_and_the_data_is_untouched(db_url, engine, known):
    for sql in REFUSED:
        with pytest.raises(RefusedStatementError) as err:
            readonly.run_readonly(db_url, sql)
        message = str(err.value)
        assert message.startswith("refused") and "\n" not in message, sql
        assert snapshot(engine) == known, sql


CORE_WRITES = [s for s in REFUSED if s.split()[:1] in (["INSERT"], ["UPDATE"], ["DELETE"], ["DROP"], ["CREATE"], ["ALTER"])]  # fmt: skip


def test_the_connection_itself_refuses_writes_that_get_past_the_check(db_url, engine, known, tmp_path, monkeypatch):
    """Skip the statement check: the read-only connection is the second lock."""
    monkeypatch.chdir(tmp_path)
    url = resolve_url(db_url)
    for sql in CORE_WRITES + ["SELECT 1; DROP TABLE metric_values", "WITH t AS (SELECT 1) DELETE FROM metric_values"]:
        with pytest.raises(RefusedStatementError):
            readonly._execute(url, sql, 10, 5.0)
        assert snapshot(engine) == known, sql
    for sql in REFUSED:  # the rest fail or do nothing lasting; the data is the same either way
        try:
            readonly._execute(url, sql, 10, 5.0)
        except StoreError:
            pass
        assert snapshot(engine) == known, sql
    assert not (tmp_path / "evil.db").exists()


def test_reading_statements_run_and_return_rows(db_url, known):
    result = readonly.run_readonly(db_url, "SELECT shortcut, n_seeds FROM grid_results ORDER BY shortcut")
    assert result.columns == ["shortcut", "n_seeds"] and result.rows == [("A", 3), ("none", 3)]
    assert not result.truncated
    frame = result.to_frame()
    assert list(frame.shortcut) == ["A", "none"]


HARMLESS = [
    "SELECT 'DROP TABLE metrics; DELETE' AS s",
    "SELECT name AS \"update\" FROM metrics -- DELETE everything\n LIMIT 1",
    "/* INSERT */ SELECT replace(name, '_', ' ') FROM metrics LIMIT 1",
    "with x as (select 1 as a) select a from x;",
    "SELECT 'it''s; DROP TABLE x' AS s",
    "VALUES (1)",
    "SELECT 1;  -- a final semicolon and comment",
]


def test_writing_words_inside_strings_comments_and_names_are_fine(db_url, known):
    for sql in HARMLESS:
        readonly.run_readonly(db_url, sql)


def test_explain_runs_on_sqlite_and_is_refused_in_one_line_on_postgresql(db_url, known):
    if db_url.startswith("sqlite"):
        assert readonly.run_readonly(db_url, "EXPLAIN SELECT * FROM metrics").rows
    else:
        with pytest.raises(RefusedStatementError, match="^refused: EXPLAIN statements are not allowed"):
            readonly.run_readonly(db_url, "EXPLAIN SELECT * FROM metrics")


def test_the_row_cap_says_when_it_cut(db_url, known):
    result = readonly.run_readonly(db_url, "SELECT * FROM metrics", limit=5)
    assert len(result.rows) == 5 and result.truncated and result.limit == 5
    assert not readonly.run_readonly(db_url, "SELECT * FROM sweeps", limit=1).truncated
    assert len(readonly.run_readonly(db_url, "SELECT * FROM metrics", limit=0).rows) == len(known["metrics"])


def test_a_bad_query_is_one_line_naming_the_database(db_url, known):
    with pytest.raises(QueryError) as err:
        readonly.run_readonly(db_url, "SELECT * FROM no_such_table")
    assert "no_such_table" in str(err.value) and "\n" not in str(err.value)


def test_a_runaway_query_stops_at_the_timeout(db_url, known):
    endless = (
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) SELECT count(*) FROM n"
    )
    with pytest.raises(QueryError, match="timeout"):
        readonly.run_readonly(db_url, endless, timeout_s=0.5)


def test_a_missing_sqlite_file_is_not_created(tmp_path):
    path = tmp_path / "missing.db"
    with pytest.raises(StoreError, match="no SQLite database at"):
        readonly.run_readonly(f"sqlite:///{path}", "SELECT 1")
    assert not path.exists()


@pytest.fixture
def sqlite_db(sqlite_url):
    get_engine(sqlite_url).dispose()
    return sqlite_url


@pytest.fixture
def pg_known(pg_url):
    engine = get_engine(pg_url)
    make_sweep(engine)
    engine.dispose()
    return pg_url


@pytest.mark.parametrize(("sql", "refusal"), [
    ("SELECT randomblob(1000000000)", "a value larger than 4 MiB"),  # SQLite's length limit
    ("SELECT zeroblob(500000000)", "a value larger than 4 MiB"),
    ("SELECT randomblob(4000000) FROM generate_series(1, 3)", "is larger than 10 MiB"),  # the byte cap
])  # fmt: skip
def test_a_result_that_would_exhaust_memory_on_sqlite_is_one_line(sqlite_db, sql, refusal):
    if "generate_series" in sql:
        sql = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n LIMIT 3) SELECT randomblob(4000000) FROM n"
    with pytest.raises(QueryError) as err:
        readonly.run_readonly(sqlite_db, sql, max_bytes=10 * 2**20)
    assert "\n" not in str(err.value) and refusal in str(err.value)


def test_huge_printf_padding_on_sqlite_never_builds_the_string(sqlite_db):
    """SQLite's printf stops at the length limit the door sets (the byte cap): no MemoryError."""
    try:
        result = readonly.run_readonly(sqlite_db, "SELECT printf('%.*c', 100000000, 'x') AS s", max_bytes=10 * 2**20)
    except QueryError as err:
        assert "\n" not in str(err)
    else:
        assert len(result.rows[0][0] or "") <= 10 * 2**20


def test_the_byte_cap_bounds_the_sum_of_the_rows(db_url, known):
    sql = "SELECT * FROM metrics CROSS JOIN metrics AS m2"  # some 20,000 rows of a few hundred bytes
    with pytest.raises(QueryError, match="larger than 64 KiB"):
        readonly.run_readonly(db_url, sql, limit=0, max_bytes=2**16)
    assert len(readonly.run_readonly(db_url, sql, limit=10, max_bytes=2**16).rows) == 10


@pytest.mark.postgres
def test_postgresql_streams_so_the_row_cap_bounds_what_is_read(pg_known):
    pg_url = pg_known
    """50 million rows asked for, 5 read: the function behind the door stops at the cap."""
    start = time.monotonic()
    result = readonly.run_readonly(pg_url, "SELECT generate_series(1, 50000000) AS n", limit=5)
    assert result.rows == [(1,), (2,), (3,), (4,), (5,)] and result.truncated
    assert time.monotonic() - start < 10
    with pytest.raises(QueryError, match="larger than 1 MiB"):
        readonly.run_readonly(pg_url, "SELECT repeat('x', 5000000)", max_bytes=2**20)


@pytest.mark.postgres
def test_postgresql_keeps_the_timeout_when_the_statement_clears_it(pg_known):
    """set_config is refused by the database itself (the door's role may not call it); a
    statement that only sleeps stops at the timeout."""
    pg_url = pg_known
    with pytest.raises(RefusedStatementError, match="permission denied for function set_config"):
        readonly._execute(resolve_url(pg_url), "SELECT set_config('statement_timeout', '0', false), pg_sleep(30)::text", 10, 1.0)
    start = time.monotonic()
    with pytest.raises(QueryError, match="timeout"):
        readonly._execute(resolve_url(pg_url), "SELECT pg_sleep(30)::text", 10, 1.0)
    assert time.monotonic() - start < 8


@pytest.mark.postgres
def test_postgresql_types_come_back_as_psycopg_gives_them(pg_known):
    pg_url = pg_known
    import datetime as dt
    import decimal

    sql = ("SELECT created_at, true AS ok, 1.5::numeric AS n, ARRAY[1, 2] AS a, NULL::text AS nothing, "
           "'{\"k\": 1}'::jsonb AS j, 1 AS same, 2 AS same FROM sweeps")  # fmt: skip
    result = readonly.run_readonly(pg_url, sql)
    assert result.columns == ["created_at", "ok", "n", "a", "nothing", "j", "same", "same"]
    (row,) = result.rows
    assert isinstance(row[0], dt.datetime) and row[1:] == (True, decimal.Decimal("1.5"), [1, 2], None, {"k": 1}, 1, 2)
