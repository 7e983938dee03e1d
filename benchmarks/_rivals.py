"""MLflow's SQL tracking store and Optuna's RDB storage holding the same data as db_bench's
resweep database, for a side-by-side comparison in the same run (benchmarks/db_bench.py).

A benchmark only: resweep's product code never imports MLflow or Optuna's storage for this
(both come with the dev extra). Each store is driven through its own Python API, the way a
tracker would use it:

- MLflow (`mlflow.store.tracking.sqlalchemy_store.SqlAlchemyStore`): one run per trial, the axes
  as params, an epoch's 8 metrics as one `log_batch`; filtering is `search_runs` with a filter
  string; a curve is `get_metric_history` per run and name; seed pooling reads every run of the
  experiment (`search_runs`, paged) and groups them in pandas.
- Optuna (`optuna.storages.RDBStorage`): one trial per grid point, the axes as categorical params,
  the final test_err as the trial's value. Optuna has no named per-epoch metrics, only one
  intermediate value per step, so an epoch's 8 metrics are 8 steps (step = 8 * epoch + k); an
  epoch is 8 `set_trial_intermediate_value` calls. It has no filtered read: filtering and seed
  pooling read every trial (`get_all_trials`) and filter in Python; a curve is `get_trial`.

The bulk of the query database (the per-epoch points) is written set-based in SQL straight into
each store's own tables, in the same order as resweep's (16 trials at a time, epoch by epoch:
what a recorder of 16 concurrent trials writes), so that the three hold the same values and the
bytes a point costs compare like for like.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import pandas as pd
import sqlalchemy as sa

NAMES = ["train_loss", "train_err", "test_loss", "test_err", "lr", "epoch_time_s", "images_per_s", "val_err"]
K = {name: k for k, name in enumerate(NAMES)}
DEPTHS = [20, 32, 44, 56, 110]
SHORTCUTS = ["none", "A", "B", "C"]
T0_MS = 1_700_000_000_000


def axes(i: int) -> dict[str, Any]:
    """Trial i's grid point: the same as db_bench.add_trials gives resweep's trial i."""
    return {"dataset": "cifar10", "model": "cifar", "depth": DEPTHS[i % 5], "block": "basic",
            "shortcut": SHORTCUTS[(i // 5) % 4], "seed": i // 20}  # fmt: skip


def value(i: int, epoch: int, k: int) -> float:
    """The value of metric k at `epoch` of trial i (the SQL below computes the same)."""
    return 1.0 / (epoch + k + 1) + (i % 97) * 0.001


def series(n: int) -> str:
    """Rows x = 1..n as a portable recursive CTE body."""
    return f"SELECT 1 AS x UNION ALL SELECT x + 1 FROM s WHERE x < {n}"


def recorder_order(i: str, epoch: str, k: str) -> str:
    """ORDER BY of a 16-slot recorder: blocks of 16 trials, epoch by epoch within a block."""
    return f"ORDER BY {i} / 16, {epoch}, {i}, {k}"


def file_bytes(engine: sa.Engine) -> int:
    """SQLite file size in pages, after a WAL checkpoint (0 elsewhere)."""
    if engine.dialect.name != "sqlite":
        return 0
    with engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        return conn.exec_driver_sql("PRAGMA page_count").scalar() * conn.exec_driver_sql("PRAGMA page_size").scalar()


def _quiet() -> None:
    for name in ("alembic", "mlflow", "optuna"):
        logging.getLogger(name).setLevel(logging.WARNING)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)


def analyze(engine: sa.Engine) -> None:
    """Fresh planner statistics after a bulk load (every store gets them before it is queried)."""
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM ANALYZE")
    else:
        with engine.begin() as conn:
            conn.exec_driver_sql("ANALYZE")


class Rival:
    """One store: trials registered through its API, points in bulk, queries through its API."""

    label = ""

    def __init__(self, url: str) -> None:
        _quiet()
        self.url = url
        self.engine = sa.create_engine(url)  # for the bulk load and the file size only
        self.ids: list[Any] = []  # the store's trial handles, trial i at position i

    def add_trials(self, n: int, finished: bool = True) -> list[Any]:
        raise NotImplementedError

    def bulk_points(self, epochs: int) -> None:
        raise NotImplementedError

    def log_epoch(self, handle: Any, epoch: int, metrics: dict[str, float]) -> None:
        raise NotImplementedError

    def build(self, n_trials: int, epochs: int) -> dict[str, Any]:
        """The query database: n_trials finished trials x epochs x 8 metrics."""
        start = time.perf_counter()
        self.ids = self.add_trials(n_trials)
        registered = time.perf_counter() - start
        size0 = file_bytes(self.engine)
        self.bulk_points(epochs)
        grown = file_bytes(self.engine) - size0
        analyze(self.engine)
        points = n_trials * epochs * len(NAMES)
        return {"register_trials_s": registered, "build_s": time.perf_counter() - start, "points": points,
                "bytes_per_point": grown / points if self.engine.dialect.name == "sqlite" else None}

    def queries(self, some: list[int]) -> list[tuple[str, Callable[[], Any]]]:
        """The three queries, named, each through the store's own API (the subclass's methods)."""
        return [("filter", self._filtered), ("curves", lambda: self._curves(some)), ("grid", self._grid)]

    def _filtered(self) -> list[tuple]:
        raise NotImplementedError

    def _curves(self, some: list[int]) -> list[tuple]:
        raise NotImplementedError

    def _grid(self) -> pd.DataFrame:
        raise NotImplementedError

    def engines(self) -> list[sa.Engine]:
        return [self.engine]

    def close(self) -> None:
        self.engine.dispose()


class Mlflow(Rival):
    label = "MLflow"

    def __init__(self, url: str) -> None:
        super().__init__(url)
        from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

        self._artifacts = tempfile.TemporaryDirectory(prefix="resweep-bench-mlflow-")
        self.store = SqlAlchemyStore(url, Path(self._artifacts.name).as_uri())
        self.experiment = self.store.create_experiment(f"bench-{os.getpid()}-{time.monotonic_ns()}")

    def add_trials(self, n: int, finished: bool = True, prefix: str = "q") -> list[str]:
        from mlflow.entities import Param, RunStatus

        ids = []
        for i in range(n):
            run = self.store.create_run(self.experiment, "bench", T0_MS, [], f"{prefix}{i:05d}")
            rid = run.info.run_id
            self.store.log_batch(rid, metrics=[], params=[Param(k, str(v)) for k, v in axes(i).items()], tags=[])
            if finished:
                self.store.update_run_info(rid, RunStatus.FINISHED, T0_MS + 1, None)
            ids.append(rid)
        return ids

    def bulk_points(self, epochs: int) -> None:
        keys = " UNION ALL ".join(f"SELECT '{name}' AS key, {k} AS k" for k, name in enumerate(NAMES))
        with self.engine.begin() as conn:
            conn.execute(sa.text(
                f"""
                INSERT INTO metrics (key, value, timestamp, step, is_nan, run_uuid)
                WITH RECURSIVE s(x) AS ({series(epochs)}), n AS ({keys}),
                     r AS (SELECT run_uuid, CAST(substr(name, 2) AS INTEGER) AS i FROM runs
                           WHERE experiment_id = {int(self.experiment)})
                SELECT n.key, 1.0 / (s.x + n.k + 1) + (r.i % 97) * 0.001, {T0_MS} + s.x, s.x, false, r.run_uuid
                FROM r CROSS JOIN n CROSS JOIN s
                {recorder_order("r.i", "s.x", "n.k")}
                """
            ))  # fmt: skip
            # What log_batch keeps beside the history: each run's latest value per key.
            conn.execute(sa.text(
                f"""
                INSERT INTO latest_metrics (key, value, timestamp, step, is_nan, run_uuid)
                SELECT m.key, m.value, m.timestamp, m.step, m.is_nan, m.run_uuid FROM metrics AS m
                JOIN runs AS r ON r.run_uuid = m.run_uuid AND r.experiment_id = {int(self.experiment)}
                WHERE m.step = {epochs}
                """
            ))  # fmt: skip

    def log_epoch(self, handle: str, epoch: int, metrics: dict[str, float]) -> None:
        from mlflow.entities import Metric

        self.store.log_batch(handle, metrics=[Metric(k, v, T0_MS + epoch, epoch) for k, v in metrics.items()],
                             params=[], tags=[])  # fmt: skip

    def _all_runs(self) -> list:
        from mlflow.entities import ViewType

        runs, token = [], None
        while True:
            page = self.store.search_runs([self.experiment], "", ViewType.ACTIVE_ONLY, max_results=1000,
                                          page_token=token)  # fmt: skip
            runs.extend(page)
            token = page.token
            if not token:
                return runs

    def _filtered(self) -> list[tuple[str, float]]:
        from mlflow.entities import ViewType

        runs = self.store.search_runs([self.experiment], "params.depth = '56' and params.shortcut = 'A'",
                                      ViewType.ACTIVE_ONLY, max_results=1000)  # fmt: skip
        return [(r.info.run_id, r.data.metrics["test_err"]) for r in runs]

    def _curves(self, some: list[int]) -> list[tuple]:
        return [(i, name, m.step, m.value) for i in some for name in ("train_err", "test_err")
                for m in self.store.get_metric_history(self.ids[i], name)]  # fmt: skip

    def _grid(self) -> pd.DataFrame:
        rows = [{**r.data.params, "train_err": r.data.metrics["train_err"], "test_err": r.data.metrics["test_err"]}
                for r in self._all_runs()]  # fmt: skip
        return _pool(pd.DataFrame(rows))

    def engines(self) -> list[sa.Engine]:
        return [self.engine, self.store.engine]

    def close(self) -> None:
        self.store.engine.dispose()
        self._artifacts.cleanup()
        super().close()


class Optuna(Rival):
    label = "Optuna"

    def __init__(self, url: str) -> None:
        super().__init__(url)
        import optuna

        self.optuna = optuna
        self.storage = optuna.storages.RDBStorage(url)
        self.study = self.storage.create_new_study([optuna.study.StudyDirection.MINIMIZE],
                                                   f"bench-{os.getpid()}-{time.monotonic_ns()}")  # fmt: skip
        self._epochs = 0

    def add_trials(self, n: int, finished: bool = True) -> list[int]:
        from optuna.distributions import CategoricalDistribution
        from optuna.trial import TrialState, create_trial

        choices = {"dataset": ["cifar10"], "model": ["cifar"], "depth": DEPTHS, "block": ["basic"],
                   "shortcut": SHORTCUTS, "seed": list(range(1000))}  # fmt: skip
        dists = {k: CategoricalDistribution(v) for k, v in choices.items()}
        ids = []
        for i in range(n):
            template = create_trial(
                state=TrialState.COMPLETE if finished else TrialState.RUNNING,
                value=value(i, self._epochs, K["test_err"]) if finished else None,
                params=axes(i), distributions=dists,
            )
            ids.append(self.storage.create_new_trial(self.study, template_trial=template))
        return ids

    def build(self, n_trials: int, epochs: int) -> dict[str, Any]:
        self._epochs = epochs  # the trials' value is the final test_err
        return super().build(n_trials, epochs)

    def bulk_points(self, epochs: int) -> None:
        ks = " UNION ALL ".join(f"SELECT {k} AS k" for k in range(len(NAMES)))
        finite = "'FINITE'" + ("::trialintermediatevaluetype" if self.engine.dialect.name == "postgresql" else "")
        with self.engine.begin() as conn:
            conn.execute(sa.text(
                f"""
                INSERT INTO trial_intermediate_values (trial_id, step, intermediate_value, intermediate_value_type)
                WITH RECURSIVE s(x) AS ({series(epochs)}), n AS ({ks})
                SELECT t.trial_id, {len(NAMES)} * s.x + n.k, 1.0 / (s.x + n.k + 1) + (t.number % 97) * 0.001, {finite}
                FROM trials AS t CROSS JOIN n CROSS JOIN s
                WHERE t.study_id = {self.study}
                {recorder_order("t.number", "s.x", "n.k")}
                """
            ))  # fmt: skip

    def log_epoch(self, handle: int, epoch: int, metrics: dict[str, float]) -> None:
        for name, v in metrics.items():
            self.storage.set_trial_intermediate_value(handle, len(NAMES) * epoch + K[name], v)

    def _all(self) -> list:
        return self.storage.get_all_trials(self.study, deepcopy=False,
                                           states=(self.optuna.trial.TrialState.COMPLETE,))  # fmt: skip

    def _filtered(self) -> list[tuple[int, float]]:
        return [(t.number, t.value) for t in self._all() if t.params["depth"] == 56 and t.params["shortcut"] == "A"]

    def _curves(self, some: list[int]) -> list[tuple]:
        out = []
        for i in some:
            steps = self.storage.get_trial(self.ids[i]).intermediate_values
            for name in ("train_err", "test_err"):
                out += [(i, name, s // len(NAMES), v) for s, v in sorted(steps.items()) if s % len(NAMES) == K[name]]
        return out

    def _grid(self) -> pd.DataFrame:
        last = len(NAMES) * self._epochs
        rows = [{**t.params, "train_err": t.intermediate_values.get(last + K["train_err"]), "test_err": t.value}
                for t in self._all()]  # fmt: skip
        return _pool(pd.DataFrame(rows))

    def engines(self) -> list[sa.Engine]:
        return [self.engine, self.storage.engine]

    def close(self) -> None:
        self.storage.engine.dispose()
        super().close()


def _pool(frame: pd.DataFrame) -> pd.DataFrame:
    """Mean and sample std over seeds of the final errors per grid point (grid_results' rows)."""
    cell = ["dataset", "model", "depth", "block", "shortcut"]
    return frame.groupby(cell).agg(n_seeds=("test_err", "size"), train_err_mean=("train_err", "mean"),
                                   train_err_std=("train_err", "std"), test_err_mean=("test_err", "mean"),
                                   test_err_std=("test_err", "std")).reset_index()  # fmt: skip


RIVALS: dict[str, type[Rival]] = {"MLflow": Mlflow, "Optuna": Optuna}
