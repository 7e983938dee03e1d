"""Every write to the result store: idempotent upserts on the natural keys.

Called on the driver: by the recorder's outbox (orchestrator/run/outbox.py: every write of a
sweep's run), by `launch` for the sweep's record (`create_sweep`, before the run and its outbox
exist), and by `db import`; and by tests and benchmarks. Writing the same thing
twice leaves one row; a later write of the same key replaces the value, so a replayed result
(a trial restored from a checkpoint reports its epochs again) never makes a duplicate. Each
call is one transaction; the rows of a call go in one batched statement per table (on
PostgreSQL in key order, so concurrent writers lock rows in the same order and cannot deadlock).

Trial status transitions: `terminated` is final. A late or replayed `pending`, `running`,
`error` or `stopped` for a terminated trial is ignored (Ray never re-runs a terminated trial;
a resumed sweep re-runs only errored or unfinished ones). Any other transition is taken as
reported; entering `pending` or `running` clears `error` and `ended_at` (a retry in progress).
"""

from __future__ import annotations

import functools
import numbers
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Iterable, Iterator, Mapping, Sequence

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql.psycopg import PGDialect_psycopg
from sqlalchemy.engine import Connection, Engine

from db.engine import redact, transaction, translate_errors
from db.errors import SweepBusyError, SweepExistsError
from db.models import (
    METRIC_IDS, SWEEP_STATUSES, TRIAL_STATUSES, Base, LayerStat, MetricName, MetricValue, Sweep, Trial,
    TrialAttempt, TrialSummary,
)  # fmt: skip
from resweep.paper import AXES  # the trials' grid axes, each a column of trials

FINAL_STATUS = "terminated"
RETRY_STATUSES = ("pending", "running")
# Keys of a reported result that are not metrics.
NOT_METRICS = frozenset({"epoch", "params_count", "layer_stats"})


@dataclass(frozen=True)
class Result:
    """One reported result of one trial: metrics by name, and layer records on probe epochs."""

    trial_id: int
    epoch: int
    metrics: Mapping[str, Any]
    layer_stats: Sequence[Mapping[str, Any]] | None = None


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _insert(conn: Connection, table: sa.Table) -> Any:
    """The dialect's INSERT, which has ON CONFLICT."""
    return (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(table)


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _check(status: str, allowed: tuple[str, ...], what: str) -> None:
    if status not in allowed:
        raise ValueError(f"{what} status {status!r} is not one of {', '.join(allowed)}")


# --- sweeps -----------------------------------------------------------------------------------


@contextmanager
def durable_transaction(engine: Engine) -> Iterator[Connection]:
    """`transaction`, but on SQLite fsynced at its commit (synchronous=FULL for this commit only).

    Results are written with WAL and synchronous=NORMAL: a power cut can lose the last commits
    (never corrupt the file), and those results can be replayed from Ray Tune's own files
    (`db import`). A sweep's registration and status changes are few and not replayable that
    way, so they (and every commit before them, which share the log) reach the disk before the
    call returns. PostgreSQL commits durably by default (synchronous_commit on).
    """
    if engine.dialect.name != "sqlite":
        with transaction(engine) as conn:
            yield conn
        return
    with translate_errors(engine), engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA synchronous=FULL")
        conn.commit()
        try:
            with conn.begin():
                yield conn
        finally:
            conn.exec_driver_sql("PRAGMA synchronous=NORMAL")  # the pooled connection goes back as it came
            conn.commit()


def create_sweep(
    engine: Engine,
    *,
    name: str,
    spec: str,
    spec_hash: str,
    git_commit: str | None = None,
    git_dirty: bool | None = None,
    storage_path: str | None = None,
) -> int:
    """Register a new sweep (status running) and return its id.

    Raises SweepExistsError when a sweep of that name is already in the database.
    """
    table = Sweep.__table__
    with durable_transaction(engine) as conn:
        stmt = _insert(conn, table).values(
            name=name, spec=spec, spec_hash=spec_hash, git_commit=git_commit,
            git_dirty=git_dirty, storage_path=storage_path, status="running", created_at=_now(),
        )  # fmt: skip
        sweep_id = conn.scalar(stmt.on_conflict_do_nothing(index_elements=["name"]).returning(table.c.id))
    if sweep_id is None:
        raise SweepExistsError(
            f"a sweep named {name!r} already exists in {redact(engine)}: "
            "resume it with --resume or launch under another name with --new-name"
        )
    return sweep_id


def set_sweep_status(engine: Engine, sweep_id: int, status: str, *, finished: bool = False) -> None:
    """Set a sweep's status; `finished` stamps finished_at, going back to running clears it."""
    _check(status, SWEEP_STATUSES, "sweep")
    table = Sweep.__table__
    values: dict[str, Any] = {"status": status}
    if finished:
        values["finished_at"] = _now()
    elif status == "running":
        values["finished_at"] = None
    with durable_transaction(engine) as conn:
        conn.execute(table.update().where(table.c.id == sweep_id).values(**values))


# Advisory lock keys of a sweep's claim: this first one is resweep's (b"rswp"), the second the sweep's id.
SWEEP_LOCK_SPACE = 0x72737770


@contextmanager
def claim_sweep(engine: Engine, sweep_id: int, name: str) -> Iterator[None]:
    """For the block, this process is the only one running sweep `sweep_id`; SweepBusyError at
    once (one line) if another holds the claim.

    On PostgreSQL the claim is a session advisory lock, held on a connection of its own (in
    autocommit, so no transaction stays open for the run's days): the server refuses it to every
    other session and drops it when that session ends, so a driver that crashed or was killed
    leaves no stale claim to clear. A server restart drops it too (the run goes on unguarded by
    the database; a local results directory's lock still holds, orchestrator.run.stops.claimed).
    On SQLite, whose file only this machine writes, the results directory's lock is the guard.
    """
    if engine.dialect.name != "postgresql":
        yield
        return
    keys = {"space": SWEEP_LOCK_SPACE, "id": int(sweep_id)}
    with translate_errors(engine):
        conn = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        try:
            held = conn.scalar(sa.text("SELECT pg_try_advisory_lock(:space, :id)"), keys)
        except BaseException:
            conn.invalidate()
            conn.close()
            raise
    if not held:
        conn.close()
        raise SweepBusyError(f"sweep {name!r} is being run by another resweep command now (it holds the sweep's "
                             f"lock in {redact(engine)}); wait for it to end, or stop it (Ctrl-C there) and "
                             "resume then")
    try:
        yield
    finally:
        try:
            conn.scalar(sa.text("SELECT pg_advisory_unlock(:space, :id)"), keys)
            conn.close()
        except sa.exc.DBAPIError:  # the server went away: so did the lock, with the session
            conn.invalidate()
            conn.close()


# --- trials -----------------------------------------------------------------------------------


def find_trial(engine: Engine, sweep_id: int, trial_key: str) -> int | None:
    """The id of the sweep's trial `trial_key`, or None: for a writer that knows a trial by its
    key only (an outbox writing back what a stopped run registered)."""
    table = Trial.__table__
    with transaction(engine) as conn:
        return conn.scalar(sa.select(table.c.id).where(table.c.sweep_id == sweep_id, table.c.trial_key == trial_key))


def interrupt_sweep(engine: Engine, sweep_id: int, *, epochs: int) -> None:
    """The sweep's driver stopped before its experiment ended: every trial of it that is running
    goes back to pending (a resume continues it), or to terminated (ended now) when its `epochs`
    are all recorded (its last report came before the stop), and the sweep is interrupted. One
    durable transaction, from the database's own rows: a replay of it does the same."""
    trials, summaries, sweeps = Trial.__table__, TrialSummary.__table__, Sweep.__table__
    recorded = sa.select(summaries.c.epochs).where(summaries.c.trial_id == trials.c.id).scalar_subquery()
    done = sa.func.coalesce(recorded, 0) >= epochs
    with durable_transaction(engine) as conn:
        conn.execute(
            trials.update()
            .where(trials.c.sweep_id == sweep_id, trials.c.status == "running")
            .values(status=sa.case((done, FINAL_STATUS), else_="pending"),
                    ended_at=sa.case((done, _now()), else_=sa.null()), error=sa.null())
        )
        refresh_grid(conn, [sweep_id])  # the trials that ended here join their grid points
        conn.execute(sweeps.update().where(sweeps.c.id == sweep_id).values(status="interrupted"))


def _axes(config: Mapping[str, Any]) -> dict[str, Any]:
    missing = [axis for axis in AXES if config.get(axis) is None]
    if missing:
        raise ValueError(f"trial config lacks {', '.join(missing)}")
    axes = {axis: config[axis] for axis in AXES}
    axes["depth"], axes["seed"] = int(axes["depth"]), int(axes["seed"])
    return axes


def upsert_trial(
    engine: Engine,
    sweep_id: int,
    trial_key: str,
    *,
    status: str,
    config: Mapping[str, Any],
    params_count: int | None = None,
    started_at: datetime | None = None,
) -> int:
    """Insert or update the trial `trial_key` of a sweep and return its id.

    The axes (dataset, model, depth, block, shortcut, seed) come from `config`. started_at
    defaults to now for a running trial and keeps its first value; a terminated trial keeps its
    status (see the module docstring).
    """
    _check(status, TRIAL_STATUSES, "trial")
    if started_at is None and status == "running":
        started_at = _now()
    table = Trial.__table__
    with transaction(engine) as conn:
        before = conn.execute(
            sa.select(table.c.status, *(table.c[a] for a in POINT_AXES))
            .where(table.c.sweep_id == sweep_id, table.c.trial_key == trial_key).with_for_update()
        ).first()
        axes = _axes(config)
        stmt = _insert(conn, table).values(
            sweep_id=sweep_id, trial_key=trial_key, status=status, config=dict(config),
            params_count=params_count, started_at=started_at, **axes,
        )  # fmt: skip
        new, old = stmt.excluded, table.c
        final = old.status == FINAL_STATUS
        retry = sa.and_(sa.not_(final), new.status.in_(RETRY_STATUSES))
        stmt = stmt.on_conflict_do_update(
            index_elements=["sweep_id", "trial_key"],
            set_={
                "status": sa.case((final, old.status), else_=new.status),
                "error": sa.case((retry, sa.null()), else_=old.error),
                "ended_at": sa.case((retry, sa.null()), else_=old.ended_at),
                "config": new.config,
                **{axis: getattr(new, axis) for axis in AXES},
                "params_count": sa.func.coalesce(new.params_count, old.params_count),
                "started_at": sa.func.coalesce(old.started_at, new.started_at),
            },
        )
        trial_id = conn.scalar(stmt.returning(table.c.id))
        # A finished trial joins its grid point; one that was finished moves if its axes changed.
        was_final = before is not None and before.status == FINAL_STATUS
        point = {a: axes[a] for a in POINT_AXES}
        if was_final and dict(zip(POINT_AXES, before[1:])) != point:
            _pool_points(conn, "point", [{"sweep_id": sweep_id, **dict(zip(POINT_AXES, before[1:]))}])
            _pool_points(conn, "trial", [{"trial_id": trial_id}])
        elif status == FINAL_STATUS and not was_final:
            _pool_points(conn, "trial", [{"trial_id": trial_id}])
        return trial_id


def set_trial_status(
    engine: Engine,
    trial_id: int,
    status: str,
    *,
    error: str | None = None,
    ended: bool = False,
    params_count: int | None = None,
    ended_at: datetime | None = None,
) -> str:
    """Move a trial to `status` (ended stamps ended_at: now, or `ended_at` when given, as an
    import does) and return the status it now has, which stays `terminated` if it already was."""
    _check(status, TRIAL_STATUSES, "trial")
    table = Trial.__table__
    with transaction(engine) as conn:
        current = conn.scalar(
            sa.select(table.c.status).where(table.c.id == trial_id).with_for_update()
        )
        if current is None:
            raise ValueError(f"no trial with id {trial_id}")
        values: dict[str, Any] = {}
        if params_count is not None:
            values["params_count"] = params_count
        if current != FINAL_STATUS or status == FINAL_STATUS:
            values["status"] = status
            if status in RETRY_STATUSES:
                values.update(error=None, ended_at=None)
            if error is not None:
                values["error"] = error
            if ended:
                values["ended_at"] = ended_at or _now()
        if values:
            conn.execute(table.update().where(table.c.id == trial_id).values(**values))
        if values.get("status", current) == FINAL_STATUS != current:  # it joins its grid point's finished trials
            _pool_points(conn, "trial", [{"trial_id": trial_id}])
        return values.get("status", current)


def set_checkpoint_uri(engine: Engine, trial_id: int, uri: str) -> None:
    """Record where the trial's latest checkpoint lies (a local path or an object-store URI);
    each checkpoint replaces the one before, so a retried trial ends with its last."""
    table = Trial.__table__
    with transaction(engine) as conn:
        conn.execute(table.update().where(table.c.id == trial_id).values(checkpoint_uri=str(uri)))


# --- results ----------------------------------------------------------------------------------


def _number(value: Any) -> float | None:
    """A float fit for a DOUBLE column: NaN becomes NULL (SQLite would store NaN as NULL anyway,
    PostgreSQL as NaN; NULL is the same on both)."""
    value = float(value)
    return None if value != value else value


def _rows(results: Iterable[Result], ordered: bool) -> tuple[list[tuple], list[tuple], dict[int, int]]:
    """Metric rows, layer rows (tuples in column order) and params counts of a batch. A key
    given twice keeps the later value. `ordered` sorts rows by key: concurrent PostgreSQL
    writers then lock rows in the same order and cannot deadlock (SQLite locks the whole
    database, so there order does not matter and sorting would only cost time)."""
    metrics: dict[tuple[int, str, int], float | None] = {}
    layers: dict[tuple[int, int, int], tuple] = {}
    params: dict[int, int] = {}
    for r in results:
        trial_id, epoch = int(r.trial_id), int(r.epoch)
        for name, value in r.metrics.items():
            if name in NOT_METRICS:
                if name == "params_count" and value is not None:
                    params[trial_id] = int(value)
            elif type(value) is float:  # the common case: no conversion
                metrics[trial_id, name, epoch] = None if value != value else value
            elif _is_number(value):
                metrics[trial_id, name, epoch] = _number(value)
        for s in r.layer_stats or ():
            layer = int(s["layer"])
            layers[trial_id, epoch, layer] = (
                trial_id, epoch, layer, str(s["name"]), int(s["stage"]), _number(s["std"]), _number(s["mean"]),
            )  # fmt: skip
    order = sorted if ordered else list
    metric_rows = [(*key, metrics[key]) for key in order(metrics)]
    layer_rows = [layers[key] for key in order(layers)]
    return metric_rows, layer_rows, params


def _with_name_ids(conn: Connection, rows: list[tuple]) -> list[tuple]:
    """Metric rows (trial_id, name, epoch, value) as metric_values rows (trial_id, name_id, epoch,
    value). METRIC_NAMES have fixed ids (seeded by the migration); another name is looked up, and
    added (next free id) the first time it is reported."""
    ids = METRIC_IDS
    other = {r[1] for r in rows} - ids.keys()
    if other:
        ids = {**ids, **_name_ids(conn, other)}
    out = [(t, ids[name], e, v) for t, name, e, v in rows]
    # PostgreSQL writers lock rows in key order (see _rows), the key being (trial, name_id, epoch).
    return sorted(out) if conn.dialect.name == "postgresql" else out


def _name_ids(conn: Connection, names: set[str]) -> dict[str, int]:
    table = MetricName.__table__
    found = dict(conn.execute(sa.select(table.c.name, table.c.id).where(table.c.name.in_(names))).all())
    for name in sorted(names - found.keys()):
        next_id = sa.select(sa.func.coalesce(sa.func.max(table.c.id), 0) + 1).scalar_subquery()
        conn.execute(_insert(conn, table).values(id=next_id, name=name).on_conflict_do_nothing(index_elements=["name"]))
        found[name] = conn.scalar(sa.select(table.c.id).where(table.c.name == name))
    return found


@functools.cache
def _upsert_sql(dialect: str, table_name: str) -> str:
    """The dialect's INSERT ... ON CONFLICT (natural key) DO UPDATE for a table, compiled once
    with positional parameters, so a batch goes to the driver's executemany as plain tuples."""
    table = Base.metadata.tables[table_name]
    key = [c.name for c in table.primary_key.columns]
    if dialect == "postgresql":
        stmt, compile_for = postgresql.insert(table), PGDialect_psycopg(paramstyle="format")
    else:
        stmt, compile_for = sqlite.insert(table), sqlite.dialect(paramstyle="qmark")
    replace = {c.name: stmt.excluded[c.name] for c in table.columns if c.name not in key}
    stmt = stmt.on_conflict_do_update(index_elements=key, set_=replace)
    return str(stmt.compile(dialect=compile_for))


# --- trial summaries ------------------------------------------------------------------------
#
# trial_summaries holds what `trial_results` shows of a trial's curve (db.views): the recorded
# epochs (its train_err rows), the final train_err and test_err (at the last of them) and the
# best test_err, plus last_epoch, the latest epoch with either. record_results keeps it in the
# transaction that writes the values, with one statement per batch (one row per trial):
# - a trial seen for the first time gets the batch's own summary;
# - a batch that only appends (every train_err/test_err epoch it wrote is after last_epoch, so
#   nothing it wrote was there before) updates the stored row from the new values;
# - any other write (a replayed epoch, a trial restored from a checkpoint, a late test_err for
#   the last epoch) recomputes the row from metric_values, each value a range of its key.
# The recorder's results only append, so the common case reads no curve. Whatever writes
# metric_values around record_results (a bulk load) calls refresh_summaries after. (Migration
# 0009 summarises the trials stored before it with a frozen copy of the same definitions.)

# A trial's own rows, by a subquery on metric_values' key (trial, name_id, epoch).
_OWN = "FROM metric_values AS v WHERE v.trial_id = trial_summaries.trial_id AND v.name_id"
_LAST_TRAIN = f"(SELECT max(v.epoch) {_OWN} = {{train}})"
SUMMARY_UPSERT = f"""\
INSERT INTO trial_summaries
    (trial_id, epochs, final_epoch, final_train_err, final_test_err, best_test_err, last_epoch)
{{rows}}
ON CONFLICT (trial_id) DO UPDATE SET
    epochs = CASE WHEN {{appends}} THEN trial_summaries.epochs + excluded.epochs
                  ELSE (SELECT count(*) {_OWN} = {{train}}) END,
    final_epoch = CASE WHEN {{appends}} THEN coalesce(excluded.final_epoch, trial_summaries.final_epoch)
                       ELSE {_LAST_TRAIN} END,
    final_train_err = CASE WHEN {{appends}} AND excluded.final_epoch IS NULL THEN trial_summaries.final_train_err
                           WHEN {{appends}} THEN excluded.final_train_err
                           ELSE (SELECT v.value {_OWN} = {{train}} AND v.epoch = {_LAST_TRAIN}) END,
    final_test_err = CASE WHEN {{appends}} AND excluded.final_epoch IS NULL THEN trial_summaries.final_test_err
                          WHEN {{appends}} THEN excluded.final_test_err
                          ELSE (SELECT v.value {_OWN} = {{test}} AND v.epoch = {_LAST_TRAIN}) END,
    best_test_err = CASE WHEN {{appends}} AND (trial_summaries.best_test_err IS NULL
                                               OR excluded.best_test_err < trial_summaries.best_test_err)
                              THEN coalesce(excluded.best_test_err, trial_summaries.best_test_err)
                         WHEN {{appends}} THEN trial_summaries.best_test_err
                         ELSE (SELECT min(v.value) {_OWN} = {{test}}) END,
    last_epoch = CASE WHEN {{appends}} THEN excluded.last_epoch
                      ELSE (SELECT max(v.epoch) {_OWN} IN ({{train}}, {{test}})) END"""


@functools.cache
def _summary_upsert(dialect: str) -> str:
    """SUMMARY_UPSERT with named parameters in the driver's style (each row a dict)."""
    style = "%({})s" if dialect == "postgresql" else ":{}"
    names = ("trial_id", "epochs", "final_epoch", "final_train_err", "final_test_err", "best_test_err", "last_epoch")
    return SUMMARY_UPSERT.format(
        rows=f"VALUES ({', '.join(style.format(n) for n in names)})",
        appends=f"trial_summaries.last_epoch IS NOT NULL AND {style.format('first_epoch')} > trial_summaries.last_epoch",
        train=METRIC_IDS["train_err"], test=METRIC_IDS["test_err"],
    )


# refresh_summaries on PostgreSQL: every trial of the array %(ids)s recomputed in one statement, so
# that the sweep_summaries trigger counts the statement once and not once per trial (see RECOUNT).
_IDS = "unnest(CAST(%(ids)s AS INTEGER[])) AS u(trial_id)"
_PG_SUMMARY_ROWS = (f"INSERT INTO trial_summaries (trial_id, epochs) SELECT u.trial_id, 0 FROM {_IDS} "
                    "ON CONFLICT (trial_id) DO NOTHING")  # fmt: skip
_PG_SUMMARY_RECOMPUTE = SUMMARY_UPSERT.format(
    rows=f"SELECT u.trial_id, 0, NULL, NULL, NULL, NULL, NULL FROM {_IDS}", appends="false",
    train=METRIC_IDS["train_err"], test=METRIC_IDS["test_err"],
)


def _summary_rows(metric_rows: list[tuple]) -> list[dict[str, Any]]:
    """The SUMMARY_UPSERT rows of a batch (metric_rows: (trial_id, name, epoch, value)): one per
    trial whose train_err or test_err it writes, in trial order (PostgreSQL writers lock rows
    alike), each the batch's own summary of that trial and its first epoch."""
    new: dict[int, tuple[dict[int, float | None], dict[int, float | None]]] = {}
    for trial_id, name, epoch, value in metric_rows:
        if name == "train_err" or name == "test_err":
            new.setdefault(trial_id, ({}, {}))[name == "test_err"][epoch] = value
    rows = []
    for trial_id in sorted(new):
        train, test = new[trial_id]
        final_epoch = max(train, default=None)
        rows.append({
            "trial_id": trial_id, "epochs": len(train), "final_epoch": final_epoch,
            "final_train_err": train.get(final_epoch), "final_test_err": test.get(final_epoch),
            "best_test_err": min((v for v in test.values() if v is not None), default=None),
            "first_epoch": min((*train, *test)), "last_epoch": max((*train, *test)),
        })  # fmt: skip
    return rows


def refresh_summaries(conn: Connection, trial_ids: Iterable[int]) -> None:
    """Recompute the trial_summaries rows of these trials from their metric_values, for whatever
    writes metric_values or trials around `record_results` (a bulk load): call it after. Each
    trial gets a row first if it has none; SUMMARY_UPSERT then takes its recomputing branch (a
    first epoch of 0 is never after last_epoch). The trials' sweeps are pooled (refresh_grid)
    and recounted (refresh_sweep_counts) too, so a load made with triggers off is counted."""
    ids = sorted({int(t) for t in trial_ids})
    if not ids:
        return
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(_PG_SUMMARY_ROWS, {"ids": ids})
        conn.exec_driver_sql(_PG_SUMMARY_RECOMPUTE, {"ids": ids})
    else:
        conn.exec_driver_sql("INSERT INTO trial_summaries (trial_id, epochs) VALUES (?, 0) "
                             "ON CONFLICT (trial_id) DO NOTHING", [(t,) for t in ids])  # fmt: skip
        none = dict.fromkeys(("final_epoch", "final_train_err", "final_test_err", "best_test_err", "last_epoch"))
        conn.exec_driver_sql(_summary_upsert("sqlite"),
                             [{**none, "trial_id": t, "epochs": 0, "first_epoch": 0} for t in ids])  # fmt: skip
    sweeps = [s for (s,) in conn.exec_driver_sql(
        f"SELECT DISTINCT sweep_id FROM trials WHERE id IN ({', '.join(map(str, ids))})")]  # fmt: skip
    refresh_grid(conn, sweeps)
    refresh_sweep_counts(conn, sweeps)


# --- grid summaries -------------------------------------------------------------------------
#
# grid_summaries holds what `grid_results` shows (db.views): per sweep and grid point (the
# trials' axes without the seed), the count, mean and sample std of the finished trials' final
# errors. A point's row is recomputed from that point's trials alone (GRID_POOLING, by the index
# ix_trials_grid_point) in the transaction of any write that can change them: record_results for
# the finished trials whose summaries it wrote, set_trial_status when a trial becomes terminated,
# upsert_trial for a finished trial (both its points, if its axes changed), interrupt_sweep
# and refresh_summaries for whole sweeps (refresh_grid). A trial deleted by hand updates its
# point through the trigger migration 0011 made. A point whose finished trials are gone keeps a
# row with n_seeds 0, which grid_results leaves out. Each recomputation reads one point's
# trials, never the sweep's: a grid reads one row per point, and a write costs what its point
# holds.

POINT_AXES = ("dataset", "model", "depth", "block", "shortcut")  # a grid point: the axes without the seed
_POINT = "sweep_id, dataset, model, depth, block, shortcut"
_ON_POINT = " AND ".join(f"{{a}}.{c} = {{b}}.{c}" for c in _POINT.split(", "))


def _std(column: str) -> str:
    """The sample standard deviation of a column (two passes: its mean is `mean_<column>`)."""
    return (f"CASE WHEN count(m.{column}) > 1 THEN sqrt(sum((m.{column} - m.mean_{column}) * "
            f"(m.{column} - m.mean_{column})) / (count(m.{column}) - 1)) END")


# The points to pool, each once: {points} is a query of (sweep_id, dataset, model, depth, block,
# shortcut); their finished trials' finals, with each point's mean beside them, are pooled.
GRID_POOLING = f"""INSERT INTO grid_summaries
    ({_POINT}, n_seeds, train_err_mean, train_err_std, test_err_mean, test_err_std)
SELECT p.sweep_id, p.dataset, p.model, p.depth, p.block, p.shortcut,
       count(m.trial_id), avg(m.final_train_err), {_std("final_train_err")},
       avg(m.final_test_err), {_std("final_test_err")}
FROM ({{points}}) AS p
LEFT JOIN (
    SELECT t.id AS trial_id, {", ".join(f"t.{c}" for c in _POINT.split(", "))},
           f.final_train_err, f.final_test_err,
           avg(f.final_train_err) OVER (PARTITION BY {", ".join(f"t.{c}" for c in _POINT.split(", "))}) AS mean_final_train_err,
           avg(f.final_test_err) OVER (PARTITION BY {", ".join(f"t.{c}" for c in _POINT.split(", "))}) AS mean_final_test_err
    FROM ({{points}}) AS q
    JOIN trials AS t ON {_ON_POINT.format(a="t", b="q")}
    LEFT JOIN trial_summaries AS f ON f.trial_id = t.id
    WHERE t.status = '{FINAL_STATUS}'
) AS m ON {_ON_POINT.format(a="m", b="p")}
WHERE true
GROUP BY p.sweep_id, p.dataset, p.model, p.depth, p.block, p.shortcut
ON CONFLICT ({_POINT}) DO UPDATE SET
    n_seeds = excluded.n_seeds, train_err_mean = excluded.train_err_mean, train_err_std = excluded.train_err_std,
    test_err_mean = excluded.test_err_mean, test_err_std = excluded.test_err_std"""

# What a point query may be, by its parameters (in the driver's style: {p} is replaced).
POINTS = {
    # the point of one trial, if it is finished (record_results: a running trial's point is untouched)
    "trial": f"SELECT {_POINT} FROM trials WHERE id = {{p[trial_id]}} AND status = '{FINAL_STATUS}'",
    # one point by its values (a trial's point before its axes changed)
    "point": "SELECT " + ", ".join(f"CAST({{p[{c}]}} AS {t}) AS {c}" for c, t in (
        ("sweep_id", "INTEGER"), ("dataset", "VARCHAR(32)"), ("model", "VARCHAR(32)"), ("depth", "INTEGER"),
        ("block", "VARCHAR(32)"), ("shortcut", "VARCHAR(8)"))),
    # every point of a sweep: its trials' and those it had (whose trials may be gone)
    "sweep": (f"SELECT {_POINT} FROM trials WHERE sweep_id = {{p[sweep_id]}} "
              f"UNION SELECT {_POINT} FROM grid_summaries WHERE sweep_id = {{p[sweep_id]}}"),
}


class _Style(dict):
    def __init__(self, style: str) -> None:
        super().__init__()
        self.style = style

    def __missing__(self, key: str) -> str:
        return self.style.format(key)


@functools.cache
def _grid_pooling(dialect: str, points: str) -> str:
    """GRID_POOLING for a kind of POINTS, with named parameters in the driver's style."""
    style = "%({})s" if dialect == "postgresql" else ":{}"
    query = POINTS[points].format(p=_Style(style))
    if points != "sweep":
        query = f"SELECT DISTINCT {_POINT} FROM ({query}) AS d"
    return GRID_POOLING.format(points=query)


# Advisory lock keys that serialise pooling a sweep's grid points on PostgreSQL (b"rsgp", sweep id).
GRID_LOCK_SPACE = 0x72736770


def _pool_points(conn: Connection, points: str, rows: list[dict[str, Any]]) -> None:
    """Recompute the grid_summaries rows of these points (POINTS[points], one per row of parameters)."""
    if rows:
        _lock_grid(conn, points, rows)
        conn.exec_driver_sql(_grid_pooling(conn.dialect.name, points), rows)


def _lock_grid(conn: Connection, points: str, rows: list[dict[str, Any]]) -> None:
    """On PostgreSQL, hold the sweeps' grid lock until this transaction ends before pooling.

    Two transactions pooling one point at once (two trials of it ending on two connections)
    would each read the point's trials without the other's uncommitted change, and the later
    upsert would overwrite the earlier row with a count missing a trial. Under the lock, the
    second waits for the first to commit; READ COMMITTED then gives its pooling statement a
    snapshot taken after the wait, which sees the first's trial. Sweeps are locked in id order,
    so two writers of several sweeps cannot wait on each other. SQLite has one writer at a time
    (its database lock) and needs none.
    """
    if conn.dialect.name != "postgresql":
        return
    if points == "trial":
        ids = sorted({int(r["trial_id"]) for r in rows})
        sweep_ids = conn.execute(sa.text("SELECT DISTINCT sweep_id FROM trials WHERE id IN :ids")
                                 .bindparams(sa.bindparam("ids", expanding=True)), {"ids": ids}).scalars().all()
    else:
        sweep_ids = {int(r["sweep_id"]) for r in rows}
    for sweep_id in sorted(sweep_ids):
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:space, :id)"),
                     {"space": GRID_LOCK_SPACE, "id": sweep_id})


def refresh_grid(conn: Connection, sweep_ids: Iterable[int]) -> None:
    """Recompute every grid_summaries row of these sweeps from their trials (a bulk load, an
    interrupted sweep's ended trials)."""
    _pool_points(conn, "sweep", [{"sweep_id": int(s)} for s in sorted(set(sweep_ids))])


# --- sweep summaries ------------------------------------------------------------------------
#
# sweep_summaries holds what db.queries.sweeps lists beside each sweep: its trials counted by
# status, and the epochs they recorded (the sum of their trial_summaries.epochs). Triggers keep
# it (migration 0012), so every writer keeps it exact and nothing here writes it, but for
# refresh_sweep_counts: a load made with triggers off (PostgreSQL's session_replication_role =
# replica, as benchmarks/read_scale.py loads) is recounted from its trials by refresh_summaries.
#
# Locks on PostgreSQL: a trigger updates its sweep's one row, which stays locked until the
# writing transaction ends. Writers of one sweep therefore take turns from the first change that
# moves a count (a trial inserted or changing status, a summary's epochs) to their commit, which
# is the end of a short transaction; writers of different sweeps never wait for each other. Every
# transaction of this module changes the trials of one sweep (the outbox writes one sweep's run,
# `db import` one sweep), so it locks one sweep's row, and it locks its trials before that row:
# upsert_trial and set_trial_status lock their trial first, record_results writes params_count
# (an update of its trials) before the summaries that move the count (its values' foreign key
# check locks the trials against a status change too), and a statement of many trials
# (interrupt_sweep) is counted once, at its end. So two writers never hold a trial and a sweep's
# row in opposite orders, nor two sweeps' rows: they cannot deadlock on them. A statement of
# several sweeps' rows (a bulk load) updates them in sweep id order; a record_results batch that
# mixes sweeps (no caller here makes one) updates them in the order of its trials.

# The counted columns, and the rows of the sweeps {where} selects, counted from their trials
# (migration 0012's RECOUNT, which its triggers run for a sweep inserted).
SWEEP_COUNTS = ("n_trials", *(f"n_{s}" for s in TRIAL_STATUSES), "epochs")
RECOUNT = f"""\
INSERT INTO sweep_summaries (sweep_id, {", ".join(SWEEP_COUNTS)})
SELECT s.id, count(t.id), {", ".join(f"count(CASE WHEN t.status = '{s}' THEN 1 END)" for s in TRIAL_STATUSES)},
       coalesce(sum(f.epochs), 0)
FROM sweeps AS s
LEFT JOIN trials AS t ON t.sweep_id = s.id
LEFT JOIN trial_summaries AS f ON f.trial_id = t.id
WHERE {{where}}
GROUP BY s.id
ON CONFLICT (sweep_id) DO UPDATE SET {", ".join(f"{c} = excluded.{c}" for c in SWEEP_COUNTS)}"""


def refresh_sweep_counts(conn: Connection, sweep_ids: Iterable[int]) -> None:
    """Recount the sweep_summaries rows of these sweeps from their trials (a load made with
    triggers off). On PostgreSQL the rows are locked first, in id order, and counted by the next
    statement, whose snapshot then holds every change a writer of those sweeps committed; a
    writer that commits later adds its own change to the recounted row by its trigger."""
    ids = sorted({int(s) for s in sweep_ids})
    if not ids:
        return
    listed = ", ".join(map(str, ids))
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(f"SELECT sweep_id FROM sweep_summaries WHERE sweep_id IN ({listed}) "
                             "ORDER BY sweep_id FOR UPDATE").all()  # fmt: skip
    conn.exec_driver_sql(RECOUNT.format(where=f"s.id IN ({listed})"))


# A trial's parameter count, set when a result brings a new one (each result carries it).
_PARAMS_SQL = "UPDATE trials SET params_count = {p} WHERE id = {p} AND (params_count IS NULL OR params_count <> {p})"


def record_results(engine: Engine, results: Iterable[Result]) -> int:
    """Write a batch of results in one transaction; returns the number of metric rows.

    Numeric entries of each result's `metrics` become metric rows (NaN is stored as NULL;
    `epoch` and non-numbers are skipped; `params_count` updates the trial instead). Layer
    records are upserted on (trial, epoch, layer). The summaries of the trials whose train_err
    or test_err were written are brought up to date in the same transaction.
    """
    dialect = engine.dialect.name
    metric_rows, layer_rows, params = _rows(results, ordered=dialect == "postgresql")
    p = "%s" if dialect == "postgresql" else "?"
    with transaction(engine) as conn:
        batch: list[tuple[str, list]] = []
        if params:  # first: trial rows are locked before the sweep's counts (see "sweep summaries")
            batch.append((_PARAMS_SQL.format(p=p), [(n, t, n) for t, n in sorted(params.items())]))
        if metric_rows:
            batch.append((_upsert_sql(dialect, MetricValue.__tablename__), _with_name_ids(conn, metric_rows)))
            summaries = _summary_rows(metric_rows)
            batch.append((_summary_upsert(dialect), summaries))  # after the values it reads
            # then the grid points of the finished trials among them (a running trial's are untouched)
            batch.append((_grid_pooling(dialect, "trial"), [{"trial_id": r["trial_id"]} for r in summaries]))
        if layer_rows:
            batch.append((_upsert_sql(dialect, LayerStat.__tablename__), layer_rows))
        _execute_batch(conn, [(sql, rows) for sql, rows in batch if rows])
    return len(metric_rows)


def _execute_batch(conn: Connection, statements: list[tuple[str, list]]) -> None:
    """Each (SQL, rows) as one executemany, in order. On PostgreSQL they go out together in one
    psycopg pipeline: one round trip for the whole result instead of one per statement, since a
    round trip costs more than the statement itself. Errors come out as SQLAlchemy's,
    as from any other statement, and a connection the error broke is not given back to the pool."""
    if conn.dialect.name != "postgresql" or len(statements) < 2:
        for sql, rows in statements:
            conn.exec_driver_sql(sql, rows)
        return
    import psycopg

    raw = conn.connection.driver_connection
    sql = statements[0][0]
    try:
        with raw.pipeline(), raw.cursor() as cursor:
            for sql, rows in statements:
                cursor.executemany(sql, rows)
    except psycopg.Error as exc:
        if raw.broken:
            conn.invalidate()
        raise sa.exc.DBAPIError.instance(sql, None, exc, psycopg.Error, dialect=conn.dialect) from exc


def record_result(
    engine: Engine,
    trial_id: int,
    epoch: int,
    metrics: Mapping[str, Any],
    layer_stats: Sequence[Mapping[str, Any]] | None = None,
) -> int:
    """Write one reported result (metrics, and layer records on probe epochs) in one
    transaction; the same result twice leaves one row per key. Returns the metric rows written."""
    return record_results(engine, [Result(trial_id, epoch, metrics, layer_stats)])


# --- attempts: where and how often each trial ran ------------------------------------------------
# One `trial_attempts` row per attempt, and the trial's `node_ip`, `hostname` and `attempts` kept
# equal to its latest attempt. An attempt starts when Ray Tune starts the trial's actor (the first
# run, a retry after a failure, a resumed sweep's restart) and ends when the trial fails, finishes
# or is stopped. Each call is one transaction and may be repeated: an attempt's host or end written
# twice leaves the same row.

# An attempt still open when the next one starts was cut off without a word from Tune.
UNENDED_ERROR = "no end was recorded: the driver stopped (killed or interrupted) while this attempt ran"


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
