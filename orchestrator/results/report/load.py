"""What a report needs from the database: `load` reads one sweep, through `db.queries`, into a
`ReportData`. Seeds are pooled by `resweep.pooling` (the figures, the findings) or by the
`grid_results` view (the grid table), the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import pandas as pd

from db import queries
from resweep.errors import UserError
from resweep import pooling

CURVE_METRICS = ["train_err", "test_err", "epoch_time_s", "warmup_iterations"]


@dataclass(frozen=True)
class ReportData:
    """One sweep as the report sees it. Frames are long and tidy; errors are fractions."""

    name: str
    status: str
    spec: str  # the sweep YAML, verbatim
    git_commit: str | None
    git_dirty: bool | None
    created_at: datetime | None
    finished_at: datetime | None
    trials: pd.DataFrame  # one row per trial: trial_id, the axes, status, epochs, params_count, ...
    curves: pd.DataFrame  # trial_id, epoch, name, value (CURVE_METRICS only)
    grid: pd.DataFrame  # the grid_results view: GROUP_AXES..., n_seeds, {train,test}_err_{mean,std}
    layers: pd.DataFrame  # trial_id, epoch, layer, name, stage, std, mean (last probed epoch)

    @property
    def run_time_s(self) -> float | None:
        if self.created_at is None or self.finished_at is None:
            return None
        return (self.finished_at - self.created_at).total_seconds()

    @property
    def training_time_s(self) -> float:
        """Seconds the trials spent in their epochs, summed over trials (from epoch_time_s)."""
        return float(self.metric("epoch_time_s")["value"].sum())

    def metric(self, name: str) -> pd.DataFrame:
        """The curves of one metric: trial_id, epoch, name, value."""
        return self.curves[self.curves["name"] == name]


def load(engine, name: str, where: str) -> ReportData:
    """Read sweep `name`; UserError (naming `where`, the database) if unknown or without results."""
    row = queries.sweep_details(engine, name)
    if row.empty:
        names = sorted(queries.sweeps(engine)["name"])
        known = ", ".join(names[:10]) + (", ..." if len(names) > 10 else "") if names else "none"
        raise UserError(f"{where}: no sweep named {name!r} (sweeps there: {known}); "
                        f"`python -m orchestrator status --db URL` lists them")
    sweep = row.iloc[0]
    trials = queries.trials(engine, name)
    ids = [int(i) for i in trials["trial_id"]] if not trials.empty else []
    curves = queries.curves(engine, ids, names=CURVE_METRICS) if ids else _empty_curves()
    if trials.empty or curves.empty:
        raise UserError(f"{where}: sweep {name!r} has no recorded results yet "
                        f"({len(trials)} trials, no metrics); report it once a trial has reported")
    layers = queries.layer_stats(engine, ids)
    return ReportData(
        name=name,
        status=str(sweep["status"]),
        spec=str(sweep["spec"] or ""),
        git_commit=_none(sweep["git_commit"]),
        git_dirty=_none(sweep["git_dirty"]),
        created_at=_time(sweep["created_at"]),
        finished_at=_time(sweep["finished_at"]),
        trials=trials,
        curves=curves[["trial_id", "epoch", "name", "value"]],
        grid=queries.grid(engine, name),
        layers=layers,
    )


def _none(x):
    return None if x is None or (not isinstance(x, str) and pd.isna(x)) else x


def _time(x) -> datetime | None:
    x = _none(x)
    return None if x is None else pd.Timestamp(x).to_pydatetime()


def _empty_curves() -> pd.DataFrame:
    return pd.DataFrame({"trial_id": [], "epoch": [], "name": [], "value": []})


def grid_with_best(data: ReportData) -> pd.DataFrame:
    """The grid with `test_err_best` and `test_err_median`: the best (lowest) and the median final
    test error over each cell's finished seeds, for comparison with a paper's best-of-N and median
    numbers; and `batch_size`, the cell's mini-batch (a reference is compared only with its recipe's)."""
    if data.grid.empty:
        return data.grid.assign(test_err_best=float("nan"), test_err_median=float("nan"), batch_size=None)
    best = pooling.final_errors(data.trials)[[*pooling.GROUP_AXES, "test_err_best", "test_err_median"]]
    batch = data.trials.assign(batch_size=[c.get("batch_size") if isinstance(c, dict) else None
                                           for c in data.trials["config"]]) if "config" in data.trials else None
    grid = data.grid.merge(best, on=pooling.GROUP_AXES, how="left")
    if batch is None:
        return grid.assign(batch_size=None)
    sizes = batch.groupby(pooling.GROUP_AXES, dropna=False)["batch_size"].max().reset_index()
    return grid.merge(sizes, on=pooling.GROUP_AXES, how="left")


def max_epochs(data: ReportData) -> int | None:
    e = data.trials.get("epochs")
    return None if e is None or e.dropna().empty else int(e.max())
