"""The read-only query path refuses every way to write, and the data stays as it was."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from db import readonly
from db.engine import resolve_url
from db.errors import QueryError, RefusedStatementError, StoreError
from tests.db.known import make_sweep

REFUSED = [
    "INSERT INTO sweeps (name, spec, spec_hash, status, created_at) VALUES ('x', '', '', 'running', '2024-01-01')",
    "UPDATE metrics SET value = 0",
    "DELETE FROM metrics",
    "DROP TABLE metrics",
    "DROP VIEW grid_results",
    "CREATE TABLE evil (x INTEGER)",
    "CREATE INDEX evil ON metrics (value)",
    "ALTER TABLE trials ADD COLUMN evil INTEGER",
    "SELECT 1; DROP TABLE metrics",
    "SELECT 1;DELETE FROM metrics;",
    "select 1 ; /* hi */ update trials set status = 'error'",
    "WITH gone AS (DELETE FROM metrics RETURNING *) SELECT count(*) FROM gone",
    "SELECT * INTO evil FROM metrics",
    "REPLACE INTO metrics (trial_id, name, epoch, value) VALUES (1, 'lr', 1, 0)",
    "PRAGMA query_only = OFF",
    "ATTACH DATABASE 'evil.db' AS evil",
    "VACUUM",
    "TRUNCATE metrics",
    "BEGIN; DELETE FROM metrics; COMMIT",
    "SET default_transaction_read_only = off",
    "SELECT set_config('default_transaction_read_only', 'off', false)",
    "SELECT nextval('trials_id_seq')",
    "COPY metrics TO '/tmp/evil.csv'",
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
    for sql in CORE_WRITES + ["SELECT 1; DROP TABLE metrics", "WITH t AS (SELECT 1) DELETE FROM metrics"]:
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
    "EXPLAIN SELECT * FROM metrics",
]


def test_writing_words_inside_strings_comments_and_names_are_fine(db_url, known):
    for sql in HARMLESS:
        readonly.run_readonly(db_url, sql)


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
