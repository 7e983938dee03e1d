"""Every table the command line prints: the sweeps and one sweep's trials (`status`), a finished
sweep's grid (the end-of-run summary), a query's rows (`query`) and a cluster's jobs (`jobs`).

Rich tables for the first four; `jobs` is plain aligned text. Cells share one formatting rule
(`cell`): "-" for a missing value, 4 decimals for a float, minutes for a time.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

from rich.console import Console
from rich.table import Table

from resweep.stats import mean_std


def console() -> Console:
    """Rich's console; piped output gets a wide one, so tables are not squeezed to 80 columns."""
    wide = Console()
    return wide if wide.is_terminal else Console(width=200)


def cell(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    if hasattr(value, "strftime"):
        return value.strftime("%Y-%m-%d %H:%M")
    return str(value)


# --- status ---


def sweeps_table(frame: Any) -> Table:
    """db.queries.sweeps: one row per sweep."""
    table = Table("sweep", "status", "trials", "done", "running", "failed", "created", "finished", "commit")
    for row in frame.itertuples(index=False):
        commit = (row.git_commit or "")[:8] + ("+dirty" if row.git_dirty else "")
        table.add_row(row.name, row.status, str(row.n_trials), str(row.n_terminated + row.n_stopped),
                      str(row.n_running), str(row.n_error), cell(row.created_at), cell(row.finished_at), commit)
    return table


def trials_table(frame: Any) -> Table:
    """db.queries.trials: one row per trial, with a column per searched hyperparameter that varies."""
    table = Table("trial", "depth", "block", "shortcut", "seed", "status", "epochs",
                  "train_err", "test_err", "best test_err", "params", "host", "attempts",
                  caption="errors at the last epoch, and the lowest test_err of any epoch; host of the latest attempt")
    searched = [k for k in ("lr", "weight_decay", "momentum", "batch_size") if _varies(frame, k)]
    for key in searched:
        table.add_column(key)
    frame = frame.sort_values(["depth", "block", "shortcut", "seed", "trial_key"], kind="stable")
    for row in frame.itertuples(index=False):
        cells = [str(row.trial_key), str(row.depth), row.block, row.shortcut, str(row.seed), row.status,
                 cell(row.epochs), cell(row.final_train_err), cell(row.final_test_err),
                 cell(row.best_test_err), f"{int(row.params_count):,}" if _present(row.params_count) else "-",
                 _host(row.hostname, row.node_ip), cell(row.attempts)]
        cells += [cell((row.config or {}).get(k), 5) for k in searched]
        table.add_row(*cells)
    return table


def _host(hostname: Any, node_ip: Any) -> str:
    """hostname (ip), or whichever of the two is known."""
    name, ip = (v if _present(v) else None for v in (hostname, node_ip))
    if name and ip:
        return f"{name} ({ip})"
    return name or ip or "-"


def _present(value: Any) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def _varies(frame: Any, key: str) -> bool:
    values = {(c or {}).get(key) for c in frame["config"]}
    return len(values) > 1


# --- the end-of-run summary ---

GRID_ROWS_SHOWN = 40  # a longer grid is left to `status`, `query` and the dashboard


def grid_table(frame: Any) -> Table | None:
    """db.queries.grid (mean and std over seeds of the final errors); None when empty or long."""
    if frame.empty or len(frame) > GRID_ROWS_SHOWN:
        return None
    table = Table("depth", "block", "shortcut", "seeds", "train_err", "test_err",
                  title="final errors, mean ± std over seeds (finished trials)", title_justify="left")
    for row in frame.itertuples(index=False):
        table.add_row(str(row.depth), row.block, row.shortcut, str(row.n_seeds),
                      mean_std(row.train_err_mean, row.train_err_std, digits=4, missing="-"),
                      mean_std(row.test_err_mean, row.test_err_std, digits=4, missing="-"))
    return table


# --- query ---


def _query_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def query_table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> Table:
    """A read-only query's rows, every value shown in full (long ones fold)."""
    table = Table(header_style="bold")
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*(_query_cell(v) for v in row))
    return table


# --- jobs ---


def jobs_lines(rows: Sequence[Sequence[str]]) -> list[str]:
    """Rows of text (a header first) as aligned lines; the last column, the entrypoint, unpadded."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1] for r in rows]
