"""The notebook API: one result database as pandas DataFrames, thin over `db.queries`.

This module is the facade DESIGN.md allows the ground floor: `resweep.open(URL)` imports it inside
the call, so `import resweep` stays light. Every method is one `db.queries` call (the same SQL the
dashboard and the report run; trial filters go into that SQL) plus, at most, selecting grid rows
by axis and adding the axes to per-epoch rows so a frame can be plotted or grouped without a join.

Columns (the database's own names, DESIGN.md):
- `sweeps()`: db.queries.SWEEP_COLUMNS: id, name, status, created_at, finished_at, git_commit,
  git_dirty, storage_path, spec_hash, n_trials, n_pending, n_running, n_terminated, n_error,
  n_stopped.
- `trials(sweep, **filters)`: db.queries.TRIAL_COLUMNS: trial_id, trial_key, dataset, model,
  depth, block, shortcut, seed, status, epochs, final_train_err, final_test_err, best_test_err,
  params_count, started_at, ended_at, error, node_ip, hostname, attempts, config (a dict of every
  hyperparameter).
- `grid(sweep, **filters)`: db.queries.GRID_COLUMNS: sweep, dataset, model, depth, block,
  shortcut, n_seeds, train_err_mean, train_err_std, test_err_mean, test_err_std (finished trials'
  final values; std over seeds, n - 1).
- `curves(sweep, metric, **filters)`: CURVE_COLUMNS: trial_id, dataset, model, depth, block,
  shortcut, seed, epoch, name, value (long: one row per trial, metric and epoch).
- `layer_stats(sweep, epoch=None, **filters)`: LAYER_COLUMNS: trial_id, dataset, model, depth,
  block, shortcut, seed, epoch, layer, name, stage, std, mean (Fig. 7; each trial at its last
  probe unless `epoch` is given).

Filters select trials by axis: `depth=56`, `shortcut=["none", "A"]` (a list: any of them), and
`status="terminated"` for trials and curves.
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

import pandas as pd

from db import queries
from db.engine import get_engine, redact
from resweep.paper import AXES, GROUP_AXES

TRIAL_FILTERS = queries.FILTERS
GRID_FILTERS = GROUP_AXES
CURVE_COLUMNS = ["trial_id", *AXES, "epoch", "name", "value"]
LAYER_COLUMNS = ["trial_id", *AXES, "epoch", "layer", "name", "stage", "std", "mean"]


class NotFound(LookupError):
    """No such sweep or trial in the database, or no checkpoint recorded for a trial."""


class Results:
    """One resweep database, read through `db.queries`. Use `resweep.open(URL)`."""

    def __init__(self, url: str | None = None) -> None:
        self.engine = get_engine(url, create=False)
        self.url = redact(self.engine)

    def __repr__(self) -> str:
        return f"resweep.open({self.url!r})"

    def __enter__(self) -> Results:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        self.engine.dispose()

    def sweeps(self) -> pd.DataFrame:
        """Every sweep, newest first, with its trial counts by status."""
        return queries.sweeps(self.engine)

    def trials(self, sweep: str | int, **filters: Any) -> pd.DataFrame:
        """The sweep's trials (by name or id) with their axes and final and best errors; the
        filters are applied in SQL (db.queries.trials)."""
        _check_filters(filters, TRIAL_FILTERS)
        frame = queries.trials(self.engine, sweep, **filters)
        if frame.empty:
            self._check_sweep(sweep)
        return frame

    def grid(self, sweep: str | int, **filters: Any) -> pd.DataFrame:
        """One row per grid point (Table 6): mean and std over seeds of the final errors."""
        frame = queries.grid(self.engine, sweep)
        if frame.empty:
            self._check_sweep(sweep)
        return _select(frame, filters, GRID_FILTERS).reset_index(drop=True)

    def curves(self, sweep: str | int, metric: str | Sequence[str] | None = None, **filters: Any) -> pd.DataFrame:
        """Per-epoch values (Fig. 6) of `metric` (a name, a list, or None: all) of the selected
        trials, long format, with each trial's axes."""
        trials = self.trials(sweep, **filters)
        names = [metric] if isinstance(metric, str) else metric
        frame = queries.curves(self.engine, trials["trial_id"], names)
        return _with_axes(frame, trials, CURVE_COLUMNS)

    def layer_stats(self, sweep: str | int, epoch: int | None = None, **filters: Any) -> pd.DataFrame:
        """Per-layer response std and mean (Fig. 7) of the selected trials, at `epoch` or at
        each trial's last probe, in forward order, with each trial's axes."""
        trials = self.trials(sweep, **filters)
        frame = queries.layer_stats(self.engine, trials["trial_id"], epoch)
        return _with_axes(frame, trials, LAYER_COLUMNS)

    def trial(self, trial_id: int) -> dict[str, Any]:
        """One trial as a dict: sweep, axes, status, config, checkpoint_uri, storage_path."""
        frame = queries.trial_details(self.engine, int(trial_id))
        if frame.empty:
            raise NotFound(f"trial {trial_id}: no such trial in {self.url} "
                           "(db.trials(SWEEP) or `python -m orchestrator status NAME` list them)")
        return frame.iloc[0].to_dict()

    def checkpoint(self, trial_id: int) -> tuple[str, dict[str, Any]]:
        """Where trial `trial_id`'s latest checkpoint lies and the trial's config."""
        row = self.trial(trial_id)
        if not row["checkpoint_uri"]:
            trials = queries.trials(self.engine, row["sweep"])
            started = trials.loc[trials["trial_id"] == int(trial_id), "started_at"]
            why = "it never started" if started.isna().all() else "it ended before its first checkpoint"
            raise NotFound(f"trial {trial_id} ({row['sweep']}): no checkpoint recorded in {self.url} "
                           f"(status {row['status']}; {why})")
        return str(row["checkpoint_uri"]), dict(row["config"])

    def last_epoch(self, trial_id: int) -> int:
        """The trial's last recorded epoch (0 when none is)."""
        epochs = queries.curves(self.engine, [int(trial_id)])["epoch"]
        return int(epochs.max()) if len(epochs) else 0

    def model(self, trial_id: int) -> Any:
        """The trained network of trial `trial_id`: a torch `nn.Module` in eval mode, on the CPU.

        Inputs are images with the training set's per-pixel mean subtracted, as in training
        (`python -m orchestrator model` saves that mean beside the weights)."""
        from trainers.restore import load_model  # torch: only when a model is asked for

        uri, config = self.checkpoint(trial_id)
        return load_model(uri, config)

    def _check_sweep(self, sweep: str | int) -> None:
        if queries.sweep_details(self.engine, sweep).empty:
            raise NotFound(f"no sweep {sweep!r} in {self.url} (db.sweeps() lists them)")


def _check_filters(filters: dict[str, Any], allowed: Iterable[str]) -> None:
    allowed = tuple(allowed)
    unknown = sorted(set(filters) - set(allowed))
    if unknown:
        raise TypeError(f"unknown filter {', '.join(unknown)} (allowed: {', '.join(allowed)})")


def _select(frame: pd.DataFrame, filters: dict[str, Any], allowed: Iterable[str]) -> pd.DataFrame:
    """The rows whose columns match every filter: a value, or any of a list of values (the grid:
    one row per grid point, already aggregated in SQL)."""
    _check_filters(filters, allowed)
    keep = pd.Series(True, index=frame.index)
    for key, value in filters.items():
        values = list(value) if isinstance(value, (list, tuple, set, frozenset)) else [value]
        keep &= frame[key].isin(values)
    return frame[keep]


def _with_axes(frame: pd.DataFrame, trials: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """Per-trial rows with the trials' axes beside them, in `columns` order."""
    if frame.empty:
        return pd.DataFrame(columns=columns)
    merged = frame.merge(trials[["trial_id", *AXES]], on="trial_id", how="left", sort=False)
    return merged[columns]
