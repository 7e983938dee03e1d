"""What a report needs from the database, read through `db.queries` and shaped for plotting.

`load` reads one sweep into a `ReportData`; the helpers below aggregate seeds into the mean and
standard deviation that every figure, table and finding uses.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import pandas as pd

from db import queries
from orchestrator.errors import UserError

CONFIG = ["dataset", "model", "depth", "block", "shortcut"]  # one configuration = seeds pooled
CURVE_METRICS = ["train_err", "test_err", "epoch_time_s"]


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
    trials: pd.DataFrame  # one row per trial: trial_id, CONFIG..., seed, status, epochs, params_count
    curves: pd.DataFrame  # trial_id, epoch, name, value (CURVE_METRICS only)
    grid: pd.DataFrame  # the grid_results view: CONFIG..., n_seeds, {train,test}_err_{mean,std}
    layers: pd.DataFrame  # trial_id, epoch, layer, name, stage, std, mean (last probed epoch)

    @property
    def run_time_s(self) -> float | None:
        if self.created_at is None or self.finished_at is None:
            return None
        return (self.finished_at - self.created_at).total_seconds()

    @property
    def training_time_s(self) -> float:
        """Seconds the trials spent in their epochs, summed over trials (from epoch_time_s)."""
        t = self.curves[self.curves["name"] == "epoch_time_s"]["value"]
        return float(t.sum())


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


def curve_bands(data: ReportData, metric: str) -> pd.DataFrame:
    """Per configuration and epoch: mean, std and count over seeds of `metric`."""
    c = data.curves[data.curves["name"] == metric]
    c = c.merge(data.trials[["trial_id", *CONFIG]], on="trial_id")
    return (c.groupby([*CONFIG, "epoch"])["value"]
             .agg(mean="mean", std="std", n="count").reset_index())


def response_profiles(data: ReportData) -> pd.DataFrame:
    """Per configuration and layer: the response std's mean and std over seeds."""
    if data.layers.empty:
        return pd.DataFrame(columns=[*CONFIG, "epoch", "layer", "mean", "std", "n"])
    lay = data.layers.merge(data.trials[["trial_id", *CONFIG]], on="trial_id")
    return (lay.groupby([*CONFIG, "layer"])
               .agg(epoch=("epoch", "max"), mean=("std", "mean"), std=("std", "std"),
                    n=("std", "count"))
               .reset_index())


def response_summary(data: ReportData) -> pd.DataFrame:
    """Per configuration: the layers' mean response std, averaged over seeds (for findings)."""
    if data.layers.empty:
        return pd.DataFrame(columns=[*CONFIG, "std_mean", "std_std", "n_seeds"])
    lay = data.layers.merge(data.trials[["trial_id", *CONFIG]], on="trial_id")
    per_trial = lay.groupby([*CONFIG, "trial_id"])["std"].mean().reset_index()
    return (per_trial.groupby(CONFIG)["std"]
                     .agg(std_mean="mean", std_std="std", n_seeds="count").reset_index())
