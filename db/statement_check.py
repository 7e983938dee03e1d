"""The read-only door's first, friendly refusal: reading a statement before any database does.

Not the guard (db/readonly.py says what is): a courtesy that refuses, in one line that says which
word and why, anything but one SELECT / WITH / VALUES / TABLE (and EXPLAIN on SQLite) with no
writing keyword or state-changing function outside strings, quoted names and comments. The text
is read as PostgreSQL reads it (nested block comments, $tag$ quotes, E'' strings) and as SQLite
does ([names], `names`); text the two read differently, and unterminated comments or quotes,
are refused too.
"""

from __future__ import annotations

from typing import Iterator

from db.door import WRITING_FUNCTIONS as DOOR_REFUSES
from db.errors import RefusedStatementError

ALLOWED_FIRST = {
    "postgresql": frozenset({"SELECT", "WITH", "VALUES", "TABLE"}),
    "sqlite": frozenset({"SELECT", "WITH", "VALUES", "EXPLAIN"}),
}
WRITING_KEYWORDS = frozenset({
    "INSERT", "UPDATE", "DELETE", "DROP", "CREATE", "ALTER", "TRUNCATE", "REPLACE", "MERGE",
    "UPSERT", "ATTACH", "DETACH", "PRAGMA", "VACUUM", "REINDEX", "GRANT", "REVOKE",
    "COPY", "CALL", "DO", "LOCK", "COMMENT", "REFRESH", "CLUSTER", "INTO", "SET", "RESET",
    "BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE", "PREPARE", "EXECUTE", "DEALLOCATE",
    "LISTEN", "NOTIFY", "DISCARD", "LOAD", "IMPORT", "SECURITY", "ANALYZE", "CHECKPOINT",
})  # fmt: skip
# Functions that change state, read server files or signal other sessions. The database refuses
# them anyway (the door's role may not call them: db.door); naming them here only makes the
# refusal clearer, whatever the spelling (quoted, schema-qualified, any case).
WRITING_FUNCTIONS = frozenset({
    "set_config", "nextval", "setval", "lo_import", "lo_export", "lo_unlink", "lo_create",
    "lo_from_bytea", "lo_put", "pg_terminate_backend", "pg_cancel_backend", "pg_reload_conf",
    "pg_rotate_logfile", "pg_switch_wal", "pg_promote", "pg_advisory_lock",
    "pg_advisory_xact_lock", "pg_try_advisory_lock", "pg_logical_emit_message", "pg_notify",
    "pg_read_file", "pg_read_binary_file", "pg_ls_dir", "pg_stat_file", "pg_stat_reset",
    "pg_stat_reset_shared", "pg_create_physical_replication_slot",
    "pg_create_logical_replication_slot", "pg_drop_replication_slot", "query_to_xml",
    "dblink", "dblink_exec", "load_extension", "writefile", "readfile",
}) | frozenset(DOOR_REFUSES)  # fmt: skip
# Marks a quoted name among the words: "update" is a column, "pg_notify"( still a call.
QUOTED = '"'
# REPLACE is also a string function: a call `replace(` is fine, the statement REPLACE is not.
CALLABLE_KEYWORDS = frozenset({"REPLACE"})


def _tokens(sql: str, dialect: str) -> Iterator[tuple[str, str, int]]:
    """(kind, text, start) for the words, ';' and other characters of `sql`, skipping spaces,
    comments, strings and quoted names as `dialect` reads them (PostgreSQL nests block comments
    and has dollar quotes and E'' strings; SQLite has [names] and `names`)."""
    pg = dialect == "postgresql"
    i, n = 0, len(sql)
    while i < n:
        c = sql[i]
        if c.isspace():
            i += 1
        elif sql.startswith("--", i):
            j = sql.find("\n", i)
            i = n if j < 0 else j + 1
        elif sql.startswith("/*", i):
            depth, i = 1, i + 2
            while i < n and depth:
                if pg and sql.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif sql.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    i += 1
            if depth:
                yield "unterminated", "/* comment", i
        elif c == "'" or (pg and c in "eE" and sql.startswith("'", i + 1)):
            backslash = c != "'"
            i += 1 if c == "'" else 2
            while i < n:
                if backslash and sql[i] == "\\":
                    i += 2
                elif sql.startswith("''", i):
                    i += 2
                elif sql[i] == "'":
                    i += 1
                    break
                else:
                    i += 1
            else:
                yield "unterminated", "string", n
            yield "string", "", i
        elif c == '"' or (not pg and c in "`["):
            close = {"`": "`", "[": "]"}.get(c, '"')
            j = sql.find(close, i + 1)
            while close == '"' and j >= 0 and sql.startswith('""', j):
                j = sql.find('"', j + 2)
            if j < 0:
                yield "unterminated", f"{c} name", n
            name = sql[i + 1 : j].replace('""', '"') if j >= 0 else ""
            i = n if j < 0 else j + 1
            yield "quoted", name, i
        elif pg and c == "$" and (tag := _dollar_tag(sql, i)) is not None:
            j = sql.find(tag, i + len(tag))
            if j < 0:
                yield "unterminated", f"{tag} string", n
            i = n if j < 0 else j + len(tag)
            yield "string", "", i
        elif c.isalpha() or c == "_":
            j = i + 1
            while j < n and (sql[j].isalnum() or sql[j] in "_$"):
                j += 1
            yield "word", sql[i:j].upper(), i
            i = j
        else:
            yield ("semicolon" if c == ";" else "other"), c, i
            i += 1


def _dollar_tag(sql: str, i: int) -> str | None:
    """The dollar-quote opener at sql[i] (`$$` or `$tag$`), or None ($1 is a parameter)."""
    j = i + 1
    while j < len(sql) and (sql[j].isalnum() or sql[j] == "_"):
        j += 1
    if j < len(sql) and sql[j] == "$" and not sql[i + 1 : j][:1].isdigit():
        return sql[i : j + 1]
    return None


def _statements(sql: str, dialect: str) -> list[list[tuple[str, bool]]]:
    """The statements of `sql`, each as its words (upper-cased) outside strings, quoted names
    and comments, with whether the word is called like a function (`word(`)."""
    statements: list[list[tuple[str, bool]]] = [[]]
    pending: str | None = None  # the last word, until we know whether '(' follows it
    for kind, text, _ in _tokens(sql, dialect):
        if kind == "unterminated":
            raise RefusedStatementError(f"refused: an unterminated {text}; close it, or the database may read the rest differently")
        if pending is not None:
            statements[-1].append((pending, text == "("))
            pending = None
        if kind == "word":
            pending = text
        elif kind == "quoted":  # a quoted name: never a keyword, but maybe a function's name
            pending = QUOTED + text.lower()
        elif kind == "semicolon":
            statements.append([])
        elif kind == "string":
            statements[-1].append(("", False))
    if pending is not None:
        statements[-1].append((pending, False))
    return [s for s in statements if s]


def check_statement(sql: str, dialect: str = "sqlite") -> None:
    """Refuse anything but one reading statement, with a one-line RefusedStatementError.

    The text is read the way `dialect` reads it and then the way the other backend does: text
    that the two read differently (a `;` inside $$...$$ or `...`, say) is refused too, as
    hiding a statement behind a quoting rule is how a door like this one used to be opened.
    """
    for reading in (dialect, *(d for d in ALLOWED_FIRST if d != dialect)):
        _check_reading(sql, reading, ALLOWED_FIRST[dialect])


def _check_reading(sql: str, reading: str, allowed: frozenset[str]) -> None:
    statements = _statements(sql, reading)
    if not statements:
        raise RefusedStatementError("refused: no SQL statement given")
    if len(statements) > 1:
        raise RefusedStatementError(
            f"refused: {len(statements)} statements given; the query command runs exactly one "
            "read-only statement (SELECT ...), without ';' between statements (a ';' inside a "
            "string belongs in '...')"
        )
    words = statements[0]
    first = "" if words[0][0].startswith(QUOTED) else words[0][0]
    if first not in allowed:
        raise RefusedStatementError(
            f"refused: {(first or 'a quoted')[:40]} statements are not allowed; the query command "
            f"is read-only and runs only {', '.join(sorted(allowed))} statements"
        )
    for word, called in words:
        if word in WRITING_KEYWORDS and not (called and word in CALLABLE_KEYWORDS):
            raise RefusedStatementError(
                f"refused: the statement contains {word[:40]}; the query command is read-only "
                f"(if {word[:40]} is a column or table name, put it in double quotes)"
            )
        if called and word.removeprefix(QUOTED).lower() in WRITING_FUNCTIONS:
            raise RefusedStatementError(
                f"refused: {word.removeprefix(QUOTED).lower()[:40]}() changes state or reaches outside the database; "
                "the query command is read-only"
            )


def without_final_semicolon(sql: str, dialect: str) -> str:
    """`sql` cut before a ';' that only spaces and comments follow (it cannot stand in a
    subquery); anything else is left for the database to judge."""
    last = None
    for kind, _, start in _tokens(sql, dialect):
        last = (kind, start)
    return sql[: last[1]] if last and last[0] == "semicolon" else sql
