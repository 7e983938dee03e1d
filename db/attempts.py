"""Where and how often each trial ran: one `trial_attempts` row per attempt, and the trial's
`node_ip`, `hostname` and `attempts` kept equal to its latest attempt.

Written only by the recorder on the driver. An attempt starts when Ray Tune starts the trial's
actor (the first run, a retry after a failure, a resumed sweep's restart) and ends when the
trial fails, finishes or is stopped. Each call is one transaction and may be repeated: an
attempt's host or end written twice leaves the same row.
"""

from __future__ import annotations

from datetime import datetime, timezone

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from db.engine import transaction
from db.models import Sweep, Trial, TrialAttempt

# An attempt still open when the next one starts was cut off without a word from Tune.
UNENDED_ERROR = "no end was recorded: the driver stopped (killed or interrupted) while this attempt ran"
ATTEMPT_COLUMNS = ["trial_id", "trial_key", "attempt", "node_ip", "hostname", "started_at", "ended_at", "error"]


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _latest(conn: sa.Connection, trial_id: int) -> sa.Row | None:
    a = TrialAttempt.__table__
    return conn.execute(
        sa.select(a).where(a.c.trial_id == trial_id).order_by(a.c.attempt.desc()).limit(1).with_for_update()
    ).first()


def start_attempt(engine: Engine, trial_id: int, *, node_ip: str | None = None, hostname: str | None = None) -> int:
    """Open the trial's next attempt (closing one left open, see UNENDED_ERROR); returns its number."""
    a, t = TrialAttempt.__table__, Trial.__table__
    now = _now()
    with transaction(engine) as conn:
        conn.execute(sa.select(t.c.id).where(t.c.id == trial_id).with_for_update())  # one starter at a time
        latest = _latest(conn, trial_id)
        if latest is not None and latest.ended_at is None:
            conn.execute(a.update().where(a.c.id == latest.id).values(ended_at=now, error=UNENDED_ERROR))
        number = 1 if latest is None else latest.attempt + 1
        conn.execute(a.insert().values(trial_id=trial_id, attempt=number, node_ip=node_ip, hostname=hostname,
                                       started_at=now))
        conn.execute(t.update().where(t.c.id == trial_id).values(attempts=number, node_ip=node_ip, hostname=hostname))
    return number


def set_host(engine: Engine, trial_id: int, node_ip: str | None, hostname: str | None) -> None:
    """The node the trial's latest attempt runs on (from its results or its error)."""
    if not node_ip and not hostname:
        return
    a, t = TrialAttempt.__table__, Trial.__table__
    with transaction(engine) as conn:
        latest = _latest(conn, trial_id)
        if latest is None or (latest.node_ip, latest.hostname) == (node_ip, hostname):
            return
        values = {k: v for k, v in (("node_ip", node_ip), ("hostname", hostname)) if v}
        conn.execute(a.update().where(a.c.id == latest.id).values(**values))
        conn.execute(t.update().where(t.c.id == trial_id).values(**values))


def end_attempt(engine: Engine, trial_id: int, *, error: str | None = None, node_ip: str | None = None,
                hostname: str | None = None) -> None:
    """Close the trial's latest attempt, with its error if it failed; the host fills in what is
    still unknown (a trial that died before its first result names its node only in its error)."""
    a, t = TrialAttempt.__table__, Trial.__table__
    with transaction(engine) as conn:
        latest = _latest(conn, trial_id)
        if latest is None:
            return
        values: dict = {}
        if latest.ended_at is None:
            values["ended_at"] = _now()
        if error is not None:
            values["error"] = error
        host = {}
        if node_ip and not latest.node_ip:
            host["node_ip"] = node_ip
        if hostname and not latest.hostname:
            host["hostname"] = hostname
        if values or host:
            conn.execute(a.update().where(a.c.id == latest.id).values(**values, **host))
        if host:
            conn.execute(t.update().where(t.c.id == trial_id).values(**host))


def attempts(engine: Engine, sweep: str | int) -> pd.DataFrame:
    """Every attempt of a sweep's trials (by sweep name or id), in order (ATTEMPT_COLUMNS)."""
    a, t, s = TrialAttempt.__table__, Trial.__table__, Sweep.__table__
    where = s.c.id == sweep if isinstance(sweep, int) else s.c.name == sweep
    stmt = (
        sa.select(a.c.trial_id, t.c.trial_key, a.c.attempt, a.c.node_ip, a.c.hostname, a.c.started_at,
                  a.c.ended_at, a.c.error)
        .select_from(a.join(t, t.c.id == a.c.trial_id).join(s, s.c.id == t.c.sweep_id))
        .where(where)
        .order_by(a.c.trial_id, a.c.attempt)
    )
    with transaction(engine) as conn:
        rows = [tuple(r) for r in conn.execute(stmt)]
    return pd.DataFrame.from_records(rows, columns=ATTEMPT_COLUMNS)
