"""The advice lines a run ends with repeat its --db so that they work when pasted, and never show
the password (the flag is db.engine.Database's, made once at the command line's edge)."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from db.engine import Database
from orchestrator.run import outcome as summary

SECRET = "s3cr3t-pw"
URL = f"postgresql://alice:{SECRET}@db.example/results"
SHOWN = "'postgresql+psycopg://alice:PASSWORD@db.example/results'  # PASSWORD: the database password"


def test_the_store_stop_line_names_the_resume_and_import_commands_without_the_password(monkeypatch):
    monkeypatch.delenv("RESWEEP_DB", raising=False)
    flag = Database(URL).flag
    line = summary.store_stop_line("n", "the database file was deleted", Path("/r/n"), flag)
    assert SECRET not in line
    assert f"`python -m orchestrator db import /r/n --db {SHOWN}`" in line
    assert f"`python -m orchestrator resume n --db {SHOWN}`" in line
    assert summary.store_stop_line("n", "the server went away", Path("/r/n"), Database(None).flag) == (
        "Stopped: the server went away; Tune's state is saved: when it is fixed, `python -m orchestrator resume n`")


def test_the_commands_after_a_run_repeat_the_db_as_given(monkeypatch):
    monkeypatch.setenv("RESWEEP_DB", URL)
    console = Console(record=True, width=300)
    summary.print_commands(console, "n", Database(URL).flag)
    text = console.export_text()
    assert SECRET not in text
    assert '  python -m orchestrator status n --db "$RESWEEP_DB"' in text.splitlines()
    assert '  python -m orchestrator dashboard --db "$RESWEEP_DB"' in text.splitlines()
