"""Every table the command line prints: the sweeps and one sweep's trials (`status`), a finished
sweep's grid (the end-of-run summary), a query's rows (`query`) and a cluster's jobs (`jobs`).

Rich tables for the first four; `jobs` is plain aligned text. Cells share one formatting rule
(`cell`): "-" for a missing value, 4 decimals for a float, minutes for a time; `status`'s tables
fit 80 columns and write errors in % (`percent`).
"""

from __future__ import annotations

import math
import os
from typing import Any, Sequence

from rich import box
from rich.console import Console
from rich.table import Table

from resweep.stats import mean_std


def console() -> Console:
    """Rich's console: a terminal's width, or $COLUMNS where set; other piped output gets a wide
    one, so tables are not squeezed to 80 columns."""
    wide = Console()
    return wide if wide.is_terminal or os.environ.get("COLUMNS", "").isdigit() else Console(width=200)


def cell(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    if hasattr(value, "strftime"):
        return value.strftime("%Y-%m-%d %H:%M")
    return str(value)


# --- status ---


def sweeps_table(frame: Any, width: int = 100) -> Table:
    """db.queries.sweeps: one row per sweep, fitting `width` columns (80 and up; the commit at 100)."""
    committed = width >= 100 and bool(frame["git_commit"].map(_present).any())
    table = Table("sweep", "status", "trials", "done", "running", "failed", "started", "ended",
                  *(["commit"] if committed else []), box=box.SIMPLE_HEAD, show_edge=False, padding=_gap(width))
    for column in table.columns[1:]:
        column.no_wrap = True
    for row in frame.itertuples(index=False):
        commit = (row.git_commit if _present(row.git_commit) else "")[:8] + ("+dirty" if row.git_dirty is True else "")
        table.add_row(row.name, row.status, str(row.n_trials), str(row.n_terminated + row.n_stopped),
                      str(row.n_running), str(row.n_error), _when(row.created_at), _when(row.finished_at),
                      *([commit] if committed else []))
    return table


def _gap(width: int) -> tuple[int, int, int, int]:
    """Cell padding: two spaces between columns from 100 columns up, one below."""
    return (0, 1, 0, 0) if width >= 100 else (0, 0, 0, 0)


def _when(value: Any) -> str:
    """A time as MM-DD HH:MM: the year is rarely news, and the table must fit 80 columns."""
    return value.strftime("%m-%d %H:%M") if hasattr(value, "strftime") and not _missing(value) else "-"


def _missing(value: Any) -> bool:
    try:
        return value is None or bool(value != value)  # None, NaN, NaT
    except (TypeError, ValueError):
        return False


def percent(value: Any) -> str:
    """An error (a fraction) as a percentage with two decimals; '-' when missing."""
    return "-" if not _present(value) else f"{100 * float(value):.2f}"


def trials_table(frame: Any, width: int = 100) -> Table:
    """db.queries.trials: one row per trial, its integer id first (what `model` and the dashboard
    take), errors in %, fitting `width` columns (80 and up). Tune's trial key when there is room;
    the block, host and attempts only when they say something (a block that varies, more than one
    host, a retried trial); a column per searched hyperparameter that varies."""
    blocks = frame["block"].nunique(dropna=False) > 1
    hosts = {_host(h, ip) for h, ip in zip(frame["hostname"], frame["node_ip"])} - {"-"}
    retried = bool((frame["attempts"].fillna(0).astype(int) > 1).any())
    searched = [k for k in ("lr", "weight_decay", "momentum", "batch_size") if _varies(frame, k)]
    keyed = width >= 110 + 10 * len(searched)
    columns = [("trial", "right"), *([("key", "left")] if keyed else []), ("depth", "right"),
               *([("block", "left")] if blocks else []), ("shortcut", "left"), ("seed", "right"), ("status", "left"),
               ("epochs", "right"), ("train %", "right"), ("test %", "right"), ("best %", "right"), ("params", "right"),
               *([("host", "left")] if len(hosts) > 1 else []), *([("attempts", "right")] if retried else []),
               *[(k, "right") for k in searched]]  # fmt: skip
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, padding=_gap(width),
                  caption="errors in % at the last epoch; best: the lowest test error of any epoch"
                          + ("; host of the latest attempt" if len(hosts) > 1 else ""))
    for name, justify in columns:
        table.add_column(name, justify=justify, no_wrap=name not in ("host", "key"), overflow="fold")
    frame = frame.sort_values(["depth", "block", "shortcut", "seed", "trial_id"], kind="stable")
    for row in frame.itertuples(index=False):
        cells = {"trial": str(row.trial_id), "key": str(row.trial_key), "depth": str(row.depth), "block": row.block,
                 "shortcut": row.shortcut, "seed": str(row.seed), "status": row.status, "epochs": cell(row.epochs),
                 "train %": percent(row.final_train_err), "test %": percent(row.final_test_err),
                 "best %": percent(row.best_test_err),
                 "params": f"{int(row.params_count):,}" if _present(row.params_count) else "-",
                 "host": _host(row.hostname, row.node_ip), "attempts": cell(row.attempts)}  # fmt: skip
        cells |= {k: f"{v:.3g}" if isinstance(v := (row.config or {}).get(k), float) else cell(v) for k in searched}
        table.add_row(*(cells[name] for name, _ in columns))
    return table


# `status NAME` lists every trial of a sweep up to this many; past it, the trials not finished
# (at most this many) and the grid: 20,000 rows help no one in a terminal, and cost seconds.
TRIALS_LISTED = 200


def big_sweep_note(name: str, listed: int, finished: int, db_flag: str) -> str:
    """What `status` says under a big sweep's table: what it left out and where to find it."""
    shown = (f"the first {TRIALS_LISTED} of {listed:,} unfinished trials listed" if listed > TRIALS_LISTED
             else "every unfinished trial listed" if listed else "no unfinished trial")
    return (f"{shown}; the {finished:,} finished trials are pooled in the grid below. Every trial:\n"
            f"  python -m orchestrator query \"SELECT * FROM trial_results WHERE sweep = '{name}'\"{db_flag}\n"
            f"  python -m orchestrator export {name} --out DIR{db_flag}")


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
