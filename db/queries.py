"""The read API the dashboard, the report and the CLI share: pandas DataFrames.

Every function is one or a few set-based queries, never one query per trial, so each stays
well under a second on thousands of trials (benchmarks/db_bench.py times them).
"""

from __future__ import annotations

import functools
import json
import numbers
from dataclasses import astuple, dataclass, fields
from datetime import datetime
from typing import Any, Iterable, Sequence

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from db.engine import one_read, transaction
from db.models import TRIAL_STATUSES, Sweep, SweepSummary, Trial, TrialAttempt
from resweep.paper import AXES  # the trials' grid axes

SWEEP_COLUMNS = [
    "id", "name", "status", "created_at", "finished_at", "git_commit", "git_dirty",
    "storage_path", "spec_hash", "n_trials", "n_pending", "n_running", "n_terminated",
    "n_error", "n_stopped", "n_epochs",
]  # fmt: skip
TRIAL_COLUMNS = [
    "trial_id", "trial_key", "dataset", "model", "depth", "block", "shortcut", "seed", "status",
    "epochs", "final_train_err", "final_test_err", "best_test_err", "params_count",
    "started_at", "ended_at", "error", "node_ip", "hostname", "attempts", "config",
]  # fmt: skip
GRID_COLUMNS = [
    "sweep", "dataset", "model", "depth", "block", "shortcut", "n_seeds",
    "train_err_mean", "train_err_std", "test_err_mean", "test_err_std",
]  # fmt: skip
CURVE_COLUMNS = ["trial_id", "epoch", "name", "value"]
LAYER_COLUMNS = ["trial_id", "epoch", "layer", "name", "stage", "std", "mean"]


def _frame(
    engine: Engine, stmt: sa.Executable, columns: list[str], *, raw: bool = False, **params: Any
) -> pd.DataFrame:
    """Run one query into a DataFrame. `raw` takes the driver's plain tuples (no per-row type
    processing: only for numbers and strings), which is several times faster on big results."""
    with one_read(engine) as conn:
        result = conn.execute(stmt, params)
        rows = result.cursor.fetchall() if raw else [tuple(r) for r in result]
        result.close()
    return pd.DataFrame.from_records(rows, columns=columns)


def _sweep_key(sweep: str | int) -> str | int:
    """A sweep is named by its name (str) or id (any integer, numpy's too)."""
    return int(sweep) if isinstance(sweep, numbers.Integral) else str(sweep)


def _sweep_filter(sweep: str | int) -> sa.ColumnElement[bool]:
    sweeps, key = Sweep.__table__, _sweep_key(sweep)
    return sweeps.c.id == key if isinstance(key, int) else sweeps.c.name == key


def sweeps(engine: Engine) -> pd.DataFrame:
    """One row per sweep, newest first, with trial counts by status and the epochs its trials
    recorded in all (n_epochs: it grows with every result, so a reader can tell that a sweep
    moved without reading its trials) (columns SWEEP_COLUMNS).

    One query of the sweeps and their sweep_summaries rows, which the database's triggers keep
    (db.models.SweepSummary): it reads one row per sweep, whatever the number of trials in the
    database (docs/performance.md). A sweep without a row counts as no trials."""
    s, c = Sweep.__table__, SweepSummary.__table__
    counts = [sa.func.coalesce(c.c[n], 0) for n in ("n_trials", *(f"n_{k}" for k in TRIAL_STATUSES), "epochs")]
    stmt = (
        sa.select(s.c.id, s.c.name, s.c.status, s.c.created_at, s.c.finished_at, s.c.git_commit, s.c.git_dirty,
                  s.c.storage_path, s.c.spec_hash, *counts)
        .outerjoin(c, c.c.sweep_id == s.c.id)
        .order_by(s.c.created_at.desc(), s.c.id.desc())
    )  # fmt: skip
    with one_read(engine) as conn:
        records = [(*r[:-len(counts)], *(int(n) for n in r[-len(counts):])) for r in conn.execute(stmt)]
    return pd.DataFrame.from_records(records, columns=SWEEP_COLUMNS)


# trial_results' columns (db/views.py), read from its tables: joined with `trials` again for the
# other columns, the view made PostgreSQL scan every trial of the database to match the rows.
_TRIALS = """
    SELECT t.id AS trial_id, t.trial_key, t.dataset, t.model, t.depth, t.block, t.shortcut, t.seed,
           t.status, coalesce(f.epochs, 0) AS epochs, f.final_train_err, f.final_test_err, f.best_test_err,
           t.params_count, t.started_at, t.ended_at, t.error, t.node_ip, t.hostname, t.attempts,
           t.config
    FROM trials AS t
    LEFT JOIN trial_summaries AS f ON f.trial_id = t.id
    WHERE t.sweep_id = (SELECT id FROM sweeps WHERE {where}){filters}
    ORDER BY t.id
    """
FILTERS = (*AXES, "status")  # what `trials` can filter on, in SQL


def _filters(filters: dict[str, Any]) -> tuple[str, dict[str, Any], list[str]]:
    """`AND t.axis IN (...)` for each filter given (a value or several), with its parameters."""
    unknown = sorted(set(filters) - set(FILTERS))
    if unknown:
        raise ValueError(f"cannot filter trials on {unknown}; filters: {', '.join(FILTERS)}")
    sql, params, expanding = "", {}, []
    for axis, values in filters.items():
        if values is None:
            continue
        if isinstance(values, (str, numbers.Number)) or not isinstance(values, Iterable):
            values = [values]
        values = [v.item() if hasattr(v, "item") else v for v in values]  # numpy scalars
        if not values:  # none of no values: no trial (PostgreSQL cannot type an empty IN)
            sql += " AND 1 = 0"
            continue
        sql += f" AND t.{axis} IN :f_{axis}"
        params[f"f_{axis}"] = values
        expanding.append(f"f_{axis}")
    return sql, params, expanding


def trials(engine: Engine, sweep: str | int, **filters: Any) -> pd.DataFrame:
    """The trials of a sweep (by name or id) with their axes and results (TRIAL_COLUMNS):
    the `trial_results` view's numbers plus trial_key, times, error, where its latest attempt
    ran (node_ip, hostname), how many attempts it took, and config (a dict).
    `filters` keep only the trials whose axis (or status) is the value or one of the values
    given, e.g. `trials(engine, "depth", depth=56, shortcut="A")` or `shortcut=["A", "B"]`;
    they are applied in SQL, so the finals are computed for the matching trials only.
    """
    sweep = _sweep_key(sweep)
    sql, params, expanding = _filters(filters)
    stmt = _trials_statement(isinstance(sweep, int), sql, tuple(expanding))
    # psycopg already gives what the column types would (aware datetimes, config as a dict), so
    # PostgreSQL's rows are taken as the driver's tuples; SQLite's times need UTCDateTime.
    frame = _frame(engine, stmt, TRIAL_COLUMNS, raw=engine.dialect.name == "postgresql", sweep=sweep, **params)
    frame["config"] = [json.loads(c) if isinstance(c, str) else c for c in frame["config"]]
    return frame


@functools.lru_cache(maxsize=64)
def _trials_statement(by_id: bool, filters: str, expanding: tuple[str, ...]) -> sa.TextClause:
    """The trials query for one shape of filters, built once (SQLAlchemy caches its compiled form)."""
    where = "id = :sweep" if by_id else "name = :sweep"
    stmt = sa.text(_TRIALS.format(where=where, filters=filters)).columns(
        started_at=Trial.started_at.type, ended_at=Trial.ended_at.type, config=sa.JSON()
    )
    return stmt.bindparams(*(sa.bindparam(name, expanding=True) for name in expanding)) if expanding else stmt


def trial_counts(engine: Engine, sweep: str | int) -> dict[str, int]:
    """How many trials of the sweep (by name or id) have each status (only the statuses it has),
    from its sweep_summaries row (see `sweeps`)."""
    c = SweepSummary.__table__
    stmt = sa.select(*(c.c[f"n_{k}"] for k in TRIAL_STATUSES)).where(
        c.c.sweep_id == sa.select(Sweep.__table__.c.id).where(_sweep_filter(sweep)).scalar_subquery()
    )
    with one_read(engine) as conn:
        row = conn.execute(stmt).first()
    return {k: int(n) for k, n in zip(TRIAL_STATUSES, row or ()) if n}


def axis_values(engine: Engine, sweep: str | int) -> dict[str, list]:
    """Each grid axis's distinct values among the sweep's trials, sorted (for filter menus)."""
    t = Trial.__table__
    stmt = sa.select(*(t.c[a] for a in AXES)).distinct().where(
        t.c.sweep_id == sa.select(Sweep.__table__.c.id).where(_sweep_filter(sweep)).scalar_subquery()
    )
    with transaction(engine) as conn:
        combos = conn.execute(stmt).all()
    return {a: sorted({c[i] for c in combos if c[i] is not None}) for i, a in enumerate(AXES)}


def _ids(trial_ids: Iterable[int]) -> list[int]:
    return sorted({int(i) for i in trial_ids})


def curves(engine: Engine, trial_ids: Iterable[int], names: Sequence[str] | None = None) -> pd.DataFrame:
    """Metric curves of many trials at once, long format (trial_id, epoch, name, value),
    ordered by trial, name and epoch; `names` limits the metrics (default: all).

    Read from metric_values in its key order (trial, name_id, epoch), which is already name
    order while the names' ids are alphabetical (the known metrics'; see db.models.METRIC_IDS).
    """
    ids = _ids(trial_ids)
    if not ids:
        return pd.DataFrame(columns=CURVE_COLUMNS)
    if isinstance(names, str):
        names = [names]
    where = "v.trial_id IN :ids" + (" AND v.name_id IN (SELECT id FROM metric_names WHERE name IN :names)"
                                    if names else "")
    stmt = sa.text(
        "SELECT v.trial_id, v.epoch, n.name, v.value, v.name_id FROM metric_values AS v "
        f"JOIN metric_names AS n ON n.id = v.name_id WHERE {where} ORDER BY v.trial_id, v.name_id, v.epoch"
    ).bindparams(sa.bindparam("ids", expanding=True))
    params: dict[str, Any] = {"ids": ids}
    if names:
        stmt = stmt.bindparams(sa.bindparam("names", expanding=True))
        params["names"] = list(names)
    frame = _frame(engine, stmt, [*CURVE_COLUMNS, "name_id"], raw=True, **params)
    pairs = frame[["name_id", "name"]].drop_duplicates().sort_values("name_id")
    frame = frame.drop(columns="name_id")
    if not pairs["name"].is_monotonic_increasing:  # a name added later, out of alphabetical id order
        frame = frame.sort_values(["trial_id", "name", "epoch"], kind="stable", ignore_index=True)
    return frame


def metric_names(engine: Engine, trial_ids: Iterable[int]) -> list[str]:
    """The names of the metrics any of the trials reported, sorted (one probe of the key per
    trial and name at most: no curve is read)."""
    ids = _ids(trial_ids)
    if not ids:
        return []
    stmt = sa.text(
        "SELECT n.name FROM metric_names AS n WHERE EXISTS "
        "(SELECT 1 FROM metric_values AS v WHERE v.name_id = n.id AND v.trial_id IN :ids)"
    ).bindparams(sa.bindparam("ids", expanding=True))
    with one_read(engine) as conn:
        return sorted(str(n) for n in conn.scalars(stmt, {"ids": ids}))  # Python's order, as pandas' pivot


def grid(engine: Engine, sweep: str | int) -> pd.DataFrame:
    """The `grid_results` rows of a sweep (by name or id): mean and sample std of the final
    errors over the finished trials of each grid point (GRID_COLUMNS)."""
    name = _sweep_key(sweep)
    if isinstance(name, int):
        with transaction(engine) as conn:
            name = conn.scalar(sa.select(Sweep.__table__.c.name).where(_sweep_filter(name)))
    stmt = sa.text(
        f"SELECT {', '.join(GRID_COLUMNS)} FROM grid_results WHERE sweep = :sweep "
        "ORDER BY dataset, model, block, shortcut, depth"
    )
    return _frame(engine, stmt, GRID_COLUMNS, sweep=name)


def layer_stats(engine: Engine, trial_ids: Iterable[int], epoch: int | None = None) -> pd.DataFrame:
    """Layer records of many trials at one epoch (LAYER_COLUMNS), ordered by trial and layer.

    With `epoch=None` each trial contributes its last probed epoch (trials probed at different
    epochs are compared at their own last probe).
    """
    ids = _ids(trial_ids)
    if not ids:
        return pd.DataFrame(columns=LAYER_COLUMNS)
    at = (
        ":epoch"
        if epoch is not None
        else "(SELECT max(p.epoch) FROM layer_stats AS p WHERE p.trial_id = t.id)"
    )
    stmt = sa.text(
        f"""
        SELECT l.trial_id, l.epoch, l.layer, l.name, l.stage, l.std, l.mean
        FROM trials AS t
        JOIN layer_stats AS l ON l.trial_id = t.id AND l.epoch = {at}
        WHERE t.id IN :ids
        ORDER BY l.trial_id, l.layer
        """
    ).bindparams(sa.bindparam("ids", expanding=True))
    params: dict[str, Any] = {"ids": ids}
    if epoch is not None:
        params["epoch"] = int(epoch)
    return _frame(engine, stmt, LAYER_COLUMNS, raw=True, **params)


@dataclass(frozen=True)
class SweepRow:
    """One row of `sweeps`: everything about a sweep, including its spec (the YAML as launched)."""

    id: int
    name: str
    status: str
    spec: str
    spec_hash: str
    git_commit: str | None
    git_dirty: bool | None
    created_at: datetime
    finished_at: datetime | None
    storage_path: str | None


SWEEP_DETAIL_COLUMNS = [f.name for f in fields(SweepRow)]


def sweep(engine: Engine, sweep: str | int) -> SweepRow | None:
    """The sweep of that name (str) or id (int), or None when there is none."""
    s = Sweep.__table__
    stmt = sa.select(*(s.c[c] for c in SWEEP_DETAIL_COLUMNS)).where(_sweep_filter(sweep))
    with transaction(engine) as conn:
        row = conn.execute(stmt).first()
    return None if row is None else SweepRow(*row)


def sweep_details(engine: Engine, sweep_key: str | int) -> pd.DataFrame:
    """`sweep` as a one-row DataFrame (columns SWEEP_DETAIL_COLUMNS); no rows when there is none."""
    row = sweep(engine, sweep_key)
    records = [] if row is None else [astuple(row)]
    return pd.DataFrame.from_records(records, columns=SWEEP_DETAIL_COLUMNS)


def probed_epochs(engine: Engine, trial_ids: Iterable[int]) -> list[int]:
    """The epochs at which any of the trials recorded layer statistics, ascending."""
    ids = _ids(trial_ids)
    if not ids:
        return []
    stmt = sa.text(
        "SELECT DISTINCT epoch FROM layer_stats WHERE trial_id IN :ids ORDER BY epoch"
    ).bindparams(sa.bindparam("ids", expanding=True))
    with transaction(engine) as conn:
        return [int(e) for e in conn.scalars(stmt, {"ids": ids})]


RELATION_COLUMNS = ["relation", "kind", "column", "type"]
# Alembic's version and Optuna's journal are bookkeeping; metric_values and metric_names are the
# storage behind the `metrics` view, trial_summaries behind `trial_results` and grid_summaries
# behind `grid_results`, sweep_summaries behind `sweeps()`: the views are what users query.
BOOKKEEPING_TABLES = frozenset(
    {"alembic_version", "optuna_journal", "metric_values", "metric_names", "trial_summaries", "grid_summaries",
     "sweep_summaries"}
)  # fmt: skip


def relations(engine: Engine) -> pd.DataFrame:
    """The tables and views users query, one row per column (RELATION_COLUMNS): views first,
    in column order; bookkeeping tables (Alembic's version, Optuna's journal) are left out."""
    rows: list[tuple[str, str, str, str]] = []
    with transaction(engine) as conn:
        inspector = sa.inspect(conn)
        for kind, names in (("view", inspector.get_view_names()), ("table", inspector.get_table_names())):
            for name in sorted(n for n in names if n not in BOOKKEEPING_TABLES):
                rows += [(name, kind, c["name"], _type_name(c["type"])) for c in inspector.get_columns(name)]
    return pd.DataFrame.from_records(rows, columns=RELATION_COLUMNS)


def _type_name(type_: sa.types.TypeEngine) -> str:
    # SQLite cannot tell the type of a computed view column (count(*), min(...)).
    return "" if isinstance(type_, sa.types.NullType) else str(type_)


TRIAL_DETAIL_COLUMNS = [
    "trial_id", "sweep", "trial_key", "status", "dataset", "model", "depth", "block", "shortcut",
    "seed", "config", "checkpoint_uri", "storage_path",
]  # fmt: skip


def trial_details(engine: Engine, trial_id: int) -> pd.DataFrame:
    """One trial (by id) as one row: its axes, config (a dict), latest checkpoint and its
    sweep's results directory; no rows when there is no such trial (TRIAL_DETAIL_COLUMNS)."""
    s, t = Sweep.__table__, Trial.__table__
    stmt = (
        sa.select(
            t.c.id, s.c.name, t.c.trial_key, t.c.status, t.c.dataset, t.c.model, t.c.depth, t.c.block,
            t.c.shortcut, t.c.seed, t.c.config, t.c.checkpoint_uri, s.c.storage_path,
        )  # fmt: skip
        .join(s, s.c.id == t.c.sweep_id)
        .where(t.c.id == int(trial_id))
    )
    return _frame(engine, stmt, TRIAL_DETAIL_COLUMNS)


ATTEMPT_COLUMNS = ["attempt", "hostname", "node_ip", "started_at", "ended_at", "error"]


def trial_attempts(engine: Engine, trial_id: int) -> pd.DataFrame:
    """Every attempt of one trial, first first (ATTEMPT_COLUMNS): where it ran and why it failed."""
    a = TrialAttempt.__table__
    stmt = sa.select(*(a.c[c] for c in ATTEMPT_COLUMNS)).where(a.c.trial_id == int(trial_id)).order_by(a.c.attempt)
    return _frame(engine, stmt, ATTEMPT_COLUMNS)


def trial(engine: Engine, trial_id: int) -> pd.DataFrame:
    """One trial (by id) as `trials` gives it, plus its sweep's name, latest checkpoint and the
    sweep's results directory (columns: sweep, TRIAL_COLUMNS, checkpoint_uri, storage_path); no
    rows when there is no such trial."""
    sql = _TRIALS.format(where="id = (SELECT sweep_id FROM trials WHERE id = :trial)", filters=" AND t.id = :trial")
    sql = sql.replace("t.config\n", "t.config, s.name, t.checkpoint_uri, s.storage_path\n", 1).replace(
        "FROM trials AS t\n", "FROM trials AS t JOIN sweeps AS s ON s.id = t.sweep_id\n", 1)
    columns = [*TRIAL_COLUMNS, "sweep", "checkpoint_uri", "storage_path"]
    stmt = sa.text(sql).columns(started_at=Trial.started_at.type, ended_at=Trial.ended_at.type, config=sa.JSON())
    frame = _frame(engine, stmt, columns, trial=int(trial_id))
    frame["config"] = [json.loads(c) if isinstance(c, str) else c for c in frame["config"]]
    return frame[["sweep", *TRIAL_COLUMNS, "checkpoint_uri", "storage_path"]]


def trial_ids(engine: Engine, reference: str | int) -> list[int]:
    """The trials a user's reference names: an integer id (`12`) or Tune's trial key
    (`b68e4_00006`, unique within a sweep; the same key in two sweeps gives both ids)."""
    t = Trial.__table__
    text = str(reference).strip()
    where = t.c.id == int(text) if text.isdigit() else t.c.trial_key == text
    with transaction(engine) as conn:
        return [int(i) for i in conn.scalars(sa.select(t.c.id).where(where).order_by(t.c.id))]


SWEEP_ATTEMPT_COLUMNS = ["trial_id", "trial_key", "attempt", "node_ip", "hostname", "started_at", "ended_at", "error"]


def sweep_attempts(engine: Engine, sweep: str | int) -> pd.DataFrame:
    """Every attempt of a sweep's trials (by sweep name or id), in order (SWEEP_ATTEMPT_COLUMNS)."""
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
    return pd.DataFrame.from_records(rows, columns=SWEEP_ATTEMPT_COLUMNS)
