"""Sweep summaries: each sweep's trials counted by status, and the epochs they recorded, in one
row per sweep (sweep_summaries), kept by triggers of the database itself so that every writer
keeps it exact (db.writes, a bulk load, a trial updated or deleted by hand). The sweeps list
reads these rows instead of counting every trial of the database. Existing sweeps are counted
here, from their trials.

The triggers:
- a sweep inserted gets its row, counted from whatever trials name it (none, normally);
- a trial inserted, updated (its status or sweep) or deleted moves its sweep's counts, and
  its summary's epochs with it;
- a trial_summaries row inserted, updated (its epochs or trial) or deleted moves its trial's
  sweep's epochs, while that trial exists.
A trial deleted subtracts its summary's epochs itself, before the delete (the summary is
deleted after it, by the cascade, when the trial is gone and the summary's own trigger finds no
sweep). A sweep deleted takes its row with it; the trials deleted with it count nothing.
Triggers only update rows: a sweep's row is made by its insert, and a load made with triggers
off is recounted by db.writes.refresh_summaries (RECOUNT for its sweeps).

On PostgreSQL each insert and update is counted once per statement, from its transition tables,
so a statement of many rows (a bulk load, a sweep's trials interrupted) updates each sweep's row
once: PostgreSQL makes a row version per update, and one row updated thousands of times in one
transaction grows a chain every later update walks. Sweeps' rows are updated in id order.
SQLite counts per row (its rows are updated in place).

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07

Frozen: never import db.models, db.views or db.writes here.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | tuple[str, ...] | None = None
depends_on: str | tuple[str, ...] | None = None

STATUSES = ("pending", "running", "terminated", "error", "stopped")  # db.models.TRIAL_STATUSES at 0012
COUNTS = ("n_trials", *(f"n_{s}" for s in STATUSES), "epochs")

# db.writes.RECOUNT at 0012: the rows of the sweeps {where} selects, counted from their trials.
RECOUNT = f"""\
INSERT INTO sweep_summaries (sweep_id, {", ".join(COUNTS)})
SELECT s.id, count(t.id), {", ".join(f"count(CASE WHEN t.status = '{s}' THEN 1 END)" for s in STATUSES)},
       coalesce(sum(f.epochs), 0)
FROM sweeps AS s
LEFT JOIN trials AS t ON t.sweep_id = s.id
LEFT JOIN trial_summaries AS f ON f.trial_id = t.id
WHERE {{where}}
GROUP BY s.id
ON CONFLICT (sweep_id) DO UPDATE SET {", ".join(f"{c} = excluded.{c}" for c in COUNTS)}"""
BACKFILL = RECOUNT.format(where="true")

# --- SQLite: one trigger per event, per row ------------------------------------------------------


def _sqlite_move(row: str, sign: str) -> str:
    """Add (sign +) or take away (sign -) the trial `row` (NEW or OLD) in its sweep's row."""
    statuses = ", ".join(f"n_{s} = n_{s} {sign} ({row}.status = '{s}')" for s in STATUSES)
    epochs = f"(SELECT f.epochs FROM trial_summaries AS f WHERE f.trial_id = {row}.id)"
    return (f"UPDATE sweep_summaries SET n_trials = n_trials {sign} 1, {statuses},\n"
            f"    epochs = epochs {sign} coalesce({epochs}, 0)\n"
            f"WHERE sweep_id = {row}.sweep_id;")


def _sqlite_epochs(row: str, sign: str) -> str:
    """Add or take away the summary `row`'s epochs in its trial's sweep's row (none if the trial is gone)."""
    return (f"UPDATE sweep_summaries SET epochs = epochs {sign} {row}.epochs\n"
            f"WHERE sweep_id = (SELECT t.sweep_id FROM trials AS t WHERE t.id = {row}.trial_id);")


SQLITE_TRIGGERS = {
    "sweep_summaries_on_sweep_insert": "AFTER INSERT ON sweeps FOR EACH ROW",
    "sweep_summaries_on_trial_insert": "AFTER INSERT ON trials FOR EACH ROW",
    "sweep_summaries_on_trial_update": ("AFTER UPDATE OF status, sweep_id ON trials FOR EACH ROW "
                                        "WHEN OLD.status IS NOT NEW.status OR OLD.sweep_id IS NOT NEW.sweep_id"),
    "sweep_summaries_on_trial_delete": "BEFORE DELETE ON trials FOR EACH ROW",
    "sweep_summaries_on_summary_insert": "AFTER INSERT ON trial_summaries FOR EACH ROW WHEN NEW.epochs <> 0",
    "sweep_summaries_on_summary_update": ("AFTER UPDATE OF epochs, trial_id ON trial_summaries FOR EACH ROW "
                                          "WHEN OLD.epochs IS NOT NEW.epochs OR OLD.trial_id IS NOT NEW.trial_id"),
    "sweep_summaries_on_summary_delete": "AFTER DELETE ON trial_summaries FOR EACH ROW WHEN OLD.epochs <> 0",
}
SQLITE_BODIES = {
    "sweep_summaries_on_sweep_insert": RECOUNT.format(where="s.id = NEW.id") + ";",
    "sweep_summaries_on_trial_insert": _sqlite_move("NEW", "+"),
    "sweep_summaries_on_trial_update": _sqlite_move("OLD", "-") + "\n" + _sqlite_move("NEW", "+"),
    "sweep_summaries_on_trial_delete": _sqlite_move("OLD", "-"),
    "sweep_summaries_on_summary_insert": _sqlite_epochs("NEW", "+"),
    "sweep_summaries_on_summary_update": _sqlite_epochs("OLD", "-") + "\n" + _sqlite_epochs("NEW", "+"),
    "sweep_summaries_on_summary_delete": _sqlite_epochs("OLD", "-"),
}

# --- PostgreSQL: inserts and updates per statement, from their transition tables ----------------

# Each change is (sweep_id, status, trials, epochs): a trial counted in (+1) or out (-1) with its
# summary's epochs, or a summary's epochs in or out (status NULL, trials 0) in its trial's sweep
# (NULL: the trial is gone). The other table is read by a subquery per row, a lookup of its key:
# a function's plan is kept for the session, and a join planned for one statement's thousands of
# rows (a bulk load) would read the whole table for every later statement of one row.
_SUMMARY_EPOCHS = "coalesce((SELECT f.epochs FROM trial_summaries AS f WHERE f.trial_id = {}.id), 0)"
_TRIALS_IN = f"SELECT n.sweep_id, n.status, 1, {_SUMMARY_EPOCHS.format('n')} FROM new_rows AS n"
_TRIALS_OUT = f"SELECT o.sweep_id, o.status, -1, -{_SUMMARY_EPOCHS.format('o')} FROM old_rows AS o"
_SWEEP = "(SELECT t.sweep_id FROM trials AS t WHERE t.id = {}.trial_id)"
_EPOCHS_IN = f"SELECT {_SWEEP.format('n')}, NULL, 0, n.epochs FROM new_rows AS n"
_EPOCHS_OUT = f"SELECT {_SWEEP.format('o')}, NULL, 0, -o.epochs FROM old_rows AS o"
_DELTAS = [("n_trials", "c.n"), *((f"n_{s}", f"CASE WHEN c.status = '{s}' THEN c.n ELSE 0 END") for s in STATUSES),
           ("epochs", "c.epochs")]  # fmt: skip


def _pg_apply(changes: str) -> str:
    """A trigger function's body: the changes summed per sweep, each sweep's row updated once,
    in sweep id order (two statements of several sweeps lock their rows in one order)."""
    sums = ", ".join(f"sum({term}) AS {column}" for column, term in _DELTAS)
    moved = " OR ".join(f"g.{column} <> 0" for column, _ in _DELTAS)
    sets = ", ".join(f"{column} = {column} + d.{column}" for column, _ in _DELTAS)
    return f"""\
DECLARE d record;
BEGIN
FOR d IN SELECT * FROM (SELECT c.sweep_id, {sums}
                        FROM ({changes}) AS c(sweep_id, status, n, epochs) GROUP BY c.sweep_id) AS g
         WHERE g.sweep_id IS NOT NULL AND ({moved}) ORDER BY g.sweep_id
LOOP
    UPDATE sweep_summaries SET {sets} WHERE sweep_id = d.sweep_id;
END LOOP;
RETURN NULL;
END"""


# A trial deleted, before it goes: its summary's epochs are read (and locked, so that a writer of
# them waits) while it is there. The trials of a sweep being deleted (by its cascade, the sweep
# already gone) are skipped: the sweep's row goes with it, and an update of it would name a sweep
# that is no more (a foreign key error).
_PG_TRIAL_DELETE = f"""\
DECLARE e bigint;
BEGIN
IF EXISTS (SELECT 1 FROM sweeps WHERE id = OLD.sweep_id) THEN
    SELECT f.epochs INTO e FROM trial_summaries AS f WHERE f.trial_id = OLD.id FOR UPDATE;
    UPDATE sweep_summaries SET n_trials = n_trials - 1,
        {", ".join(f"n_{s} = n_{s} - CASE WHEN OLD.status = '{s}' THEN 1 ELSE 0 END" for s in STATUSES)},
        epochs = epochs - coalesce(e, 0)
    WHERE sweep_id = OLD.sweep_id;
END IF;
RETURN OLD;
END"""

_OLD_AND_NEW = "OLD TABLE AS old_rows NEW TABLE AS new_rows"
_ON_TRIALS_UPDATE = f"AFTER UPDATE ON trials REFERENCING {_OLD_AND_NEW} FOR EACH STATEMENT"
_ON_SUMMARIES = "ON trial_summaries REFERENCING {} FOR EACH STATEMENT"
PG_TRIGGERS = {  # name: (when, body)
    "sweep_summaries_on_sweep_insert": ("AFTER INSERT ON sweeps FOR EACH ROW",
                                        f"BEGIN\n{RECOUNT.format(where='s.id = NEW.id')};\nRETURN NULL;\nEND"),
    "sweep_summaries_on_trial_insert": ("AFTER INSERT ON trials REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT",
                                        _pg_apply(_TRIALS_IN)),
    "sweep_summaries_on_trial_update": (_ON_TRIALS_UPDATE, _pg_apply(f"{_TRIALS_OUT} UNION ALL {_TRIALS_IN}")),
    "sweep_summaries_on_trial_delete": ("BEFORE DELETE ON trials FOR EACH ROW", _PG_TRIAL_DELETE),
    "sweep_summaries_on_summary_insert": ("AFTER INSERT " + _ON_SUMMARIES.format("NEW TABLE AS new_rows"),
                                          _pg_apply(_EPOCHS_IN)),
    "sweep_summaries_on_summary_update": ("AFTER UPDATE " + _ON_SUMMARIES.format(_OLD_AND_NEW),
                                          _pg_apply(f"{_EPOCHS_OUT} UNION ALL {_EPOCHS_IN}")),
    "sweep_summaries_on_summary_delete": ("AFTER DELETE " + _ON_SUMMARIES.format("OLD TABLE AS old_rows"),
                                          _pg_apply(_EPOCHS_OUT)),
}  # fmt: skip
TABLES = {  # the table each trigger is on (PostgreSQL's DROP TRIGGER names it)
    "sweep_summaries_on_sweep_insert": "sweeps", "sweep_summaries_on_trial_insert": "trials",
    "sweep_summaries_on_trial_update": "trials", "sweep_summaries_on_trial_delete": "trials",
    "sweep_summaries_on_summary_insert": "trial_summaries", "sweep_summaries_on_summary_update": "trial_summaries",
    "sweep_summaries_on_summary_delete": "trial_summaries",
}  # fmt: skip


def create_triggers(dialect: str) -> list[str]:
    """The statements that make the triggers (and on PostgreSQL their functions)."""
    if dialect == "postgresql":
        return [sql for name, (when, body) in PG_TRIGGERS.items() for sql in (
            f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $f$\n{body}\n$f$",
            f"CREATE TRIGGER {name} {when} EXECUTE FUNCTION {name}()")]  # fmt: skip
    return [f"CREATE TRIGGER {name} {when}\nBEGIN\n{SQLITE_BODIES[name]}\nEND"
            for name, when in SQLITE_TRIGGERS.items()]  # fmt: skip


def drop_triggers(dialect: str) -> list[str]:
    if dialect == "postgresql":
        return [sql for name, table in TABLES.items()
                for sql in (f"DROP TRIGGER IF EXISTS {name} ON {table}", f"DROP FUNCTION IF EXISTS {name}()")]
    return [f"DROP TRIGGER IF EXISTS {name}" for name in SQLITE_TRIGGERS]


def upgrade() -> None:
    op.create_table(
        "sweep_summaries",
        sa.Column("sweep_id", sa.Integer(), autoincrement=False, nullable=False, comment="The sweep counted."),
        sa.Column("n_trials", sa.Integer(), nullable=False, comment="Its trials."),
        sa.Column("n_pending", sa.Integer(), nullable=False,
                  comment="Those pending (not started, or waiting for a retry)."),
        sa.Column("n_running", sa.Integer(), nullable=False, comment="Those running."),
        sa.Column("n_terminated", sa.Integer(), nullable=False, comment="Those finished (terminated)."),
        sa.Column("n_error", sa.Integer(), nullable=False, comment="Those failed (error)."),
        sa.Column("n_stopped", sa.Integer(), nullable=False, comment="Those stopped by the scheduler (stopped)."),
        sa.Column("epochs", sa.BigInteger(), nullable=False,
                  comment="The epochs its trials recorded in all: the sum of their trial_summaries.epochs."),
        sa.ForeignKeyConstraint(["sweep_id"], ["sweeps.id"], name=op.f("fk_sweep_summaries_sweep_id_sweeps"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("sweep_id", name=op.f("pk_sweep_summaries")),
        comment="Per sweep: its trials counted by status and the epochs they recorded, kept by triggers.",
    )
    op.execute(BACKFILL)
    for sql in create_triggers(op.get_bind().dialect.name):
        op.execute(sql)


def downgrade() -> None:
    for sql in drop_triggers(op.get_bind().dialect.name):
        op.execute(sql)
    op.drop_table("sweep_summaries")
