"""Ways to get a write, a file, a program or an admin function past the read-only door.

Each form hides its payload from a tokenizer that reads SQL differently from PostgreSQL (the
ways the door was opened before: nested comments, tagged dollar quotes, ARRAY[']'], E'' strings)
or asks for the forbidden thing outright. `{m}` is a marker file that must never appear, `{v}`
the pid of a backend that must stay alive. Every form must end in a refusal on both backends.
"""

from __future__ import annotations

HIDDEN = "DELETE FROM metrics"

# The payloads a hidden second statement carries.
PAYLOADS = [
    HIDDEN,
    "UPDATE trials SET status = 'error'",
    "DROP TABLE layer_stats CASCADE",
    "COPY (SELECT 1) TO PROGRAM 'touch {m}'",
    "COMMIT; BEGIN READ WRITE; DELETE FROM metrics",
    "SET statement_timeout = 0",
]

# Wrappers that hide "; PAYLOAD" from a tokenizer that disagrees with PostgreSQL.
HIDING = {
    "nested comment": "SELECT 1 /* /* */ ' */ ; {p}; -- '",
    "nested comment, deeper": "SELECT 1 /* a /* b /* c */ */ ' */ ; {p}; -- '",
    "tagged dollar quote ended by $$": "SELECT $a$ $$ ' $a$ ; {p}; -- '",
    "nested dollar quotes": "SELECT $o$ $i$ ' $i$ $o$ ; {p}; -- '",
    "array brackets": "SELECT ARRAY[']'] ; {p}; -- ']'",
    "E'' backslash quote": "SELECT E'\\'' ; {p}; -- '",
    "U&'' string": "SELECT U&'\\0041' ; {p}; -- '",
    "quoted name with doubled quotes": 'SELECT 1 AS "a"""; {p}; -- "',
    "quoted name with a semicolon": 'SELECT 1 AS "x;y" ; {p}',
    "comment inside dollar quote": "SELECT $$ /* $$ ; {p}; -- */",
    "dollar quote inside comment": "SELECT 1 /* $$ */ ; {p}; -- $$",
    "string inside comment": "SELECT 1 /* ' */ ; {p}; -- '",
    "backtick": "SELECT 1 AS `a ; {p}; -- `",
}

# Forms that need no hiding: the door itself must refuse them.
DIRECT = [
    # writes
    "DELETE FROM metrics",
    "WITH gone AS (DELETE FROM metrics RETURNING *) SELECT count(*) FROM gone",
    "SELECT * INTO evil FROM metrics",
    "SELECT * FROM metrics FOR UPDATE",
    "EXPLAIN ANALYZE DELETE FROM metrics",
    "DO $$ BEGIN DELETE FROM metrics; END $$",
    "CREATE TEMP TABLE evil AS SELECT 1",
    "SELECT nextval('metrics_id_seq')",
    "SELECT setval('metrics_id_seq', 1)",
    "SELECT lo_from_bytea(0, 'evil')",
    "LOCK TABLE metrics",
    # role and session: taking back the login's rights
    "SET ROLE postgres",
    "RESET ROLE",
    "SET SESSION AUTHORIZATION postgres",
    "SELECT set_config('role', 'none', true), query_to_xml('SELECT pg_read_file(''/etc/passwd'')', true, false, '')",
    "SELECT set_config('session_authorization', 'postgres', true), query_to_xml('DELETE FROM metrics', true, false, '')",
    "SELECT set_config('transaction_read_only', 'off', true)",
    # files and programs
    "SELECT pg_read_file('/etc/passwd')",
    "SELECT pg_read_binary_file('/etc/passwd')",
    "SELECT pg_ls_dir('/')",
    "SELECT pg_stat_file('/etc/passwd')",
    "SELECT * FROM pg_ls_waldir()",
    "SELECT query_to_xml('SELECT pg_ls_dir(''/'')', true, false, '')",
    "SELECT lo_import('/etc/passwd')",
    "SELECT lo_export(1, '{m}')",
    "SELECT current_setting('data_directory')",
    "COPY metrics TO '{m}'",
    "COPY metrics TO PROGRAM 'touch {m}'",
    "COPY (SELECT 1) TO PROGRAM 'touch {m}'",
    "COPY (SELECT 1) TO STDOUT",
    "COPY metrics FROM '/etc/passwd'",
    "COPY metrics FROM PROGRAM 'touch {m}'",
    "COPY metrics FROM STDIN",
    "\\copy metrics to '{m}'",
    # admin functions (several are not transactional: they would take effect despite ROLLBACK)
    "SELECT pg_create_physical_replication_slot('resweep_evil')",
    "SELECT pg_create_logical_replication_slot('resweep_evil', 'test_decoding')",
    "SELECT pg_stat_reset()",
    "SELECT pg_terminate_backend({v})",
    "SELECT pg_cancel_backend({v})",
    "SELECT pg_reload_conf()",
    "SELECT pg_switch_wal()",
    "SELECT pg_rotate_logfile()",
    # the statement timeout
    "SELECT set_config('statement_timeout', '0', false), pg_sleep(600)::text",
    "SELECT set_config('statement_timeout', '0', false), pg_sleep(600)",
    "SET statement_timeout = 0",
    # SQLite's own ways out
    "ATTACH DATABASE '{m}' AS evil",
    "VACUUM INTO '{m}'",
    "PRAGMA query_only = OFF",
    "SELECT load_extension('{m}')",
    "SELECT writefile('{m}', 'x')",
    # several statements, and no statement at all
    "SELECT 1; DELETE FROM metrics",
    "TABLE metrics; DELETE FROM metrics",
    "VALUES (1); DELETE FROM metrics",
    "SELECT 1; DELETE FROM metrics /* unterminated",
    "SELECT 1 /* unterminated",
    "SELECT 'unterminated",
    "-- only a comment",
]


# Every function the door's database refuses the door's role (db.door.WRITING_FUNCTIONS), one
# call per overload, cast to text so nothing but PostgreSQL's own EXECUTE check can stop it.
REFUSED_CALLS = [
    ("pg_logical_emit_message", "false, 'resweep', 'x'"),
    ("pg_logical_emit_message", "true, 'resweep', '\\x00'::bytea"),
    ("lo_create", "0"), ("lo_creat", "-1"), ("lo_from_bytea", "0, 'x'"), ("lo_put", "1, 0, 'x'"),
    ("lo_open", "1, 131072"), ("lowrite", "0, 'x'"), ("lo_truncate", "0, 0"), ("lo_truncate64", "0, 0"),
    ("lo_unlink", "1"),
    *((f"pg{t}_advisory{x}_lock{s}", a) for t in ("", "_try") for x in ("", "_xact") for s in ("", "_shared")
      for a in ("1", "1, 2")),
    ("pg_notify", "'resweep', 'x'"),
    ("set_config", "'work_mem', '64GB', true"),
]  # fmt: skip


def spellings(name: str) -> list[str]:
    """The ways PostgreSQL reads as the same function: plain, quoted, schema-qualified (each part
    quoted or not), upper case."""
    return [name, f'"{name}"', f"pg_catalog.{name}", f'"pg_catalog"."{name}"', f'pg_catalog."{name}"',
            name.upper(), f"PG_CATALOG.{name.upper()}", f"pg_catalog . {name}"]  # fmt: skip


def refused_calls() -> list[str]:
    """Every spelling of every refused call, as one statement each."""
    return [f"SELECT {spelled}({args})::text" for name, args in REFUSED_CALLS for spelled in spellings(name)]


def corpus() -> list[tuple[str, str]]:
    """(label, SQL template) for every form: each hiding wrapper with each payload, then the rest."""
    forms = [(f"{name}: {p.split()[0]} {p.split()[1]}", hide.replace("{p}", p))
             for name, hide in HIDING.items() for p in PAYLOADS]  # fmt: skip
    return forms + [(sql, sql) for sql in DIRECT]


def render(template: str, marker: str, victim: int) -> str:
    return template.replace("{m}", marker).replace("{v}", str(victim))
