"""The Optuna study of an optuna sweep, kept in resweep's database as an Optuna journal.

Optuna's relational storage cannot share our database (it too has `trials` and
`alembic_version` tables), but its `JournalStorage` needs only an append-only log, which
`SqlJournalBackend` keeps in the `optuna_journal` table, one row per log, numbered per sweep:

    storage = optuna.storages.JournalStorage(SqlJournalBackend(engine, sweep_id))

So a resumed sweep finds its study (every earlier trial) where its results are, and deleting a
sweep deletes its study with it.

Pickling. Ray Tune pickles the searcher, and with it this backend, into the experiment
directory (tuner.pkl and the searcher checkpoint), in clear. The backend therefore pickles
without its engine and with its URL redacted (`db.engine.redact`): no password is ever written.
Unpickled, it finds its engine on first use:
- the engine a process registered for that database with `attach(engine)` (launch's resume
  does, around Tune's restore and run), else
- when the URL holds no password (SQLite, PostgreSQL with trust or .pgpass), one it opens
  itself from the URL, else
- it raises `DetachedJournalError`, saying so.
"""

from __future__ import annotations

import json
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any, Iterator

import sqlalchemy as sa
from optuna.storages.journal import BaseJournalBackend
from sqlalchemy.engine import Engine

from db.engine import get_engine, redact, transaction
from db.errors import IntegrityStoreError, StoreError
from db.models import OptunaJournal

APPEND_RETRIES = 20  # a retry happens only when another process appended at the same moment
RETRY_SLEEP_S = 0.01

_ATTACHED: dict[str, Engine] = {}  # redacted URL -> the engine a process registered for it


class DetachedJournalError(StoreError):
    """An unpickled backend whose database needs a password that was (rightly) not pickled."""


@contextmanager
def attach(engine: Engine) -> Iterator[None]:
    """Let backends unpickled in this block (by Tune's restore) use `engine` for its database."""
    key = redact(engine)
    previous = _ATTACHED.get(key)
    _ATTACHED[key] = engine
    try:
        yield
    finally:
        if previous is None:
            _ATTACHED.pop(key, None)
        else:
            _ATTACHED[key] = previous


class SqlJournalBackend(BaseJournalBackend):
    """Optuna's journal of sweep `sweep_id`, in the `optuna_journal` table (process-safe).

    Logs are numbered 0, 1, 2, ... per sweep. An append takes the next numbers inside its own
    transaction; two processes appending at once may pick the same number, and the unique
    (sweep_id, seq) constraint makes the later one fail and retry, so the numbers stay
    consecutive and a reader never sees a gap (a number is only taken after the one before it
    was committed).
    """

    def __init__(self, engine: Engine, sweep_id: int):
        self._engine: Engine | None = engine
        self.sweep_id = sweep_id
        self.url = redact(engine)  # never the password: this is what pickles
        self._has_password = engine.url.password is not None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_engine"] = None  # the engine holds the password
        return state

    def __repr__(self) -> str:
        return f"SqlJournalBackend({self.url!r}, sweep_id={self.sweep_id})"

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            attached = _ATTACHED.get(self.url)
            if attached is None and len(_ATTACHED) == 1:  # the same database under another spelling
                attached = next(iter(_ATTACHED.values()))
            if attached is not None:
                self._engine = attached
            elif not self._has_password:
                self._engine = get_engine(self.url, create=False)
            else:
                raise DetachedJournalError(
                    f"the Optuna study of sweep {self.sweep_id} in {self.url} was restored without the "
                    "database's password (it is never pickled); resume the sweep with "
                    "`python -m orchestrator resume NAME --db URL`"
                )
        return self._engine

    def read_logs(self, log_number_from: int) -> list[dict[str, Any]]:
        table = OptunaJournal.__table__
        stmt = (
            sa.select(table.c.log)
            .where(table.c.sweep_id == self.sweep_id, table.c.seq >= log_number_from)
            .order_by(table.c.seq)
        )
        with transaction(self.engine) as conn:
            return [json.loads(text) for text in conn.scalars(stmt)]

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        if not logs:
            return
        texts = [json.dumps(log) for log in logs]
        for attempt in range(APPEND_RETRIES):
            try:
                self._append(texts)
                return
            except IntegrityStoreError:
                if attempt == APPEND_RETRIES - 1:
                    raise
                time.sleep(RETRY_SLEEP_S * (attempt + 1))

    def _append(self, texts: list[str]) -> None:
        """One transaction; each log takes max(seq) + 1 in a single INSERT ... SELECT, so the
        number is read and written at once (SQLite takes its write lock for the statement)."""
        table = OptunaJournal.__table__
        next_seq = (
            sa.select(sa.func.coalesce(sa.func.max(table.c.seq), -1) + 1)
            .where(table.c.sweep_id == self.sweep_id)
            .scalar_subquery()
        )
        now = datetime.now(timezone.utc)
        with transaction(self.engine) as conn:
            for text in texts:
                conn.execute(
                    table.insert().from_select(
                        ["sweep_id", "seq", "log", "created_at"],
                        sa.select(
                            sa.literal(self.sweep_id, sa.Integer),
                            next_seq,
                            sa.literal(text, sa.Text),
                            sa.literal(now, table.c.created_at.type),
                        ),
                    )
                )


def load_study(engine: Engine, sweep_id: int) -> "optuna.Study | None":
    """The Optuna study of sweep `sweep_id` as its searcher left it (read, never written), or None
    when the sweep has none (a grid sweep, or an optuna sweep before its first trial)."""
    import optuna

    table = OptunaJournal.__table__
    with transaction(engine) as conn:
        if conn.scalar(sa.select(table.c.seq).where(table.c.sweep_id == sweep_id).limit(1)) is None:
            return None
    storage = optuna.storages.JournalStorage(SqlJournalBackend(engine, sweep_id))
    names = optuna.get_all_study_names(storage)
    return optuna.load_study(study_name=names[0], storage=storage) if names else None
