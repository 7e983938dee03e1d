"""The read API the dashboard, the report and the CLI share: pandas DataFrames.

Every function is one or a few set-based queries, never one query per trial, so each stays
well under a second on thousands of trials (benchmarks/db_bench.py times them).
"""

from __future__ import annotations

import json
import numbers
from typing import Any, Iterable, Sequence

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from db.engine import transaction
from db.models import Sweep, Trial

SWEEP_COLUMNS = [
    "id", "name", "status", "created_at", "finished_at", "git_commit", "git_dirty",
    "storage_path", "spec_hash", "n_trials", "n_pending", "n_running", "n_terminated",
    "n_error", "n_stopped",
]  # fmt: skip
TRIAL_COLUMNS = [
    "trial_id", "trial_key", "dataset", "model", "depth", "block", "shortcut", "seed", "status",
    "epochs", "final_train_err", "final_test_err", "best_test_err", "params_count",
    "started_at", "ended_at", "error", "config",
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
    with transaction(engine) as conn:
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
    """One row per sweep, newest first, with trial counts by status (columns SWEEP_COLUMNS)."""
    s, t = Sweep.__table__, Trial.__table__

    def n(status: str) -> sa.ColumnElement[int]:
        return sa.func.coalesce(sa.func.sum(sa.case((t.c.status == status, 1), else_=0)), 0)

    stmt = (
        sa.select(
            s.c.id, s.c.name, s.c.status, s.c.created_at, s.c.finished_at, s.c.git_commit,
            s.c.git_dirty, s.c.storage_path, s.c.spec_hash, sa.func.count(t.c.id),
            n("pending"), n("running"), n("terminated"), n("error"), n("stopped"),
        )  # fmt: skip
        .select_from(s.outerjoin(t, t.c.sweep_id == s.c.id))
        .group_by(s.c.id)
        .order_by(s.c.created_at.desc(), s.c.id.desc())
    )
    return _frame(engine, stmt, SWEEP_COLUMNS)


_TRIALS = sa.text(
    """
    SELECT r.trial_id, t.trial_key, r.dataset, r.model, r.depth, r.block, r.shortcut, r.seed,
           r.status, r.epochs, r.final_train_err, r.final_test_err, r.best_test_err,
           r.params_count, t.started_at, t.ended_at, t.error, t.config
    FROM trial_results AS r
    JOIN trials AS t ON t.id = r.trial_id
    WHERE t.sweep_id = (SELECT id FROM sweeps WHERE {where})
    ORDER BY r.trial_id
    """
)


def trials(engine: Engine, sweep: str | int) -> pd.DataFrame:
    """The trials of a sweep (by name or id) with their axes and results (TRIAL_COLUMNS):
    the `trial_results` view's numbers plus trial_key, times, error and config (a dict)."""
    sweep = _sweep_key(sweep)
    where = "id = :sweep" if isinstance(sweep, int) else "name = :sweep"
    stmt = sa.text(_TRIALS.text.format(where=where)).columns(
        started_at=Trial.started_at.type, ended_at=Trial.ended_at.type, config=sa.JSON()
    )
    frame = _frame(engine, stmt, TRIAL_COLUMNS, sweep=sweep)
    frame["config"] = [json.loads(c) if isinstance(c, str) else c for c in frame["config"]]
    return frame


def _ids(trial_ids: Iterable[int]) -> list[int]:
    return sorted({int(i) for i in trial_ids})


def curves(engine: Engine, trial_ids: Iterable[int], names: Sequence[str] | None = None) -> pd.DataFrame:
    """Metric curves of many trials at once, long format (trial_id, epoch, name, value),
    ordered by trial, name and epoch; `names` limits the metrics (default: all)."""
    ids = _ids(trial_ids)
    if not ids:
        return pd.DataFrame(columns=CURVE_COLUMNS)
    if isinstance(names, str):
        names = [names]
    where = "trial_id IN :ids" + (" AND name IN :names" if names else "")
    stmt = sa.text(
        f"SELECT trial_id, epoch, name, value FROM metrics WHERE {where} ORDER BY trial_id, name, epoch"
    ).bindparams(sa.bindparam("ids", expanding=True))
    params: dict[str, Any] = {"ids": ids}
    if names:
        stmt = stmt.bindparams(sa.bindparam("names", expanding=True))
        params["names"] = list(names)
    return _frame(engine, stmt, CURVE_COLUMNS, raw=True, **params)


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


SWEEP_DETAIL_COLUMNS = [
    "id", "name", "status", "spec", "spec_hash", "git_commit", "git_dirty", "created_at",
    "finished_at", "storage_path",
]  # fmt: skip


def sweep_details(engine: Engine, sweep: str | int) -> pd.DataFrame:
    """The sweep (by name or id) as one row with everything about it, including its spec
    (the YAML as launched); no rows when there is no such sweep (SWEEP_DETAIL_COLUMNS)."""
    s = Sweep.__table__
    stmt = sa.select(*(s.c[c] for c in SWEEP_DETAIL_COLUMNS)).where(_sweep_filter(sweep))
    return _frame(engine, stmt, SWEEP_DETAIL_COLUMNS)


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
BOOKKEEPING_TABLES = frozenset({"alembic_version", "optuna_journal"})


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
