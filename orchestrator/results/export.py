"""Export one sweep's results as files a spreadsheet or pandas opens: CSV, Parquet or JSON.

Files written into the output directory (`EXT` = csv | parquet | json):
- `trials.EXT`: one row per trial (db.queries.TRIAL_COLUMNS; `config` as JSON text in CSV and
  Parquet, an object in JSON);
- `metrics.EXT`: every per-epoch value, long (trial_id, epoch, name, value);
- `metrics_wide.EXT`: one row per trial and epoch, the trial's axes, one column per metric;
- `layer_stats.EXT`: every probed layer record (trial_id, epoch, layer, name, stage, std, mean);
- `sweep.json`: the spec (as launched, and parsed), provenance (git commit, dirty flag, times,
  results directory) and what was exported.

Everything is read through `db.queries`. Files are written into a temporary directory inside the
target and moved into place only when all are complete, so a failed export leaves nothing
half-written: no file, and no directory it made itself (an --out below a file, under /proc or
/sys, or on a full disk is one line).
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from sqlalchemy.engine import Engine

from db import queries
from db.engine import redact
from resweep.errors import UserError
from resweep.paper import AXES

FORMATS = ("csv", "parquet", "json")
METRICS_LONG = ["trial_id", "epoch", "name", "value"]
# Columns of text in the exported tables (trials, metrics, layer_stats), typed string in Parquet.
TEXT_COLUMNS = {"trial_key", "dataset", "model", "block", "shortcut", "status", "error", "node_ip", "hostname",
                "config", "name", "stage"}


@dataclass(frozen=True)
class Exported:
    directory: Path
    files: dict[str, int]  # file name -> bytes
    rows: dict[str, int]  # table -> rows


def export_sweep(engine: Engine, sweep: str, fmt: str, out: str | os.PathLike) -> Exported:
    """Write the sweep's trials, metrics (long and wide), layer stats and sweep.json into `out`."""
    if fmt not in FORMATS:
        raise UserError(f"--format {fmt}: not an export format (allowed: {', '.join(FORMATS)})")
    details = queries.sweep_details(engine, sweep)
    if details.empty:
        raise UserError(f"export: no sweep named {sweep!r} in {redact(engine)} "
                        "(`python -m orchestrator status` lists the sweeps)")
    out = Path(out).expanduser()
    previous = _previous_export(out)  # replaced whole: no file of another format is left beside
    made = _make_dirs(out)
    try:
        trials = queries.trials(engine, sweep)
        ids = trials["trial_id"].tolist()
        staging = Path(tempfile.mkdtemp(prefix=".export-", dir=out))
        try:
            rows = _write_tables(engine, trials, ids, staging, fmt)
            sweep_info = _sweep_json(details.iloc[0].to_dict(), fmt, rows)
            (staging / "sweep.json").write_text(json.dumps(sweep_info, indent=2, default=str) + "\n")
            files = {}
            for path in sorted(staging.iterdir()):
                files[path.name] = path.stat().st_size
                os.replace(path, out / path.name)
            for stale in previous - set(files):
                (out / stale).unlink(missing_ok=True)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    except BaseException as exc:
        if made:  # what this export made (each directory inside the one before), nothing else
            shutil.rmtree(made[0], ignore_errors=True)
        if isinstance(exc, OSError):  # a read-only or full filesystem, no permission
            raise UserError(f"--out {out}: cannot write there ({_reason(exc)}); give a directory you can "
                            "write, new or existing") from None
        raise
    return Exported(out, files, rows)


# Trials read and written at a time: a block's metrics (x epochs x metrics) are what the export
# holds in memory, so a sweep of any size is written in the memory of one block.
BLOCK_TRIALS = 500


def _write_tables(engine: Engine, trials: pd.DataFrame, ids: list[int], staging: Path, fmt: str) -> dict[str, int]:
    """trials, metrics, metrics_wide and layer_stats into `staging`, the per-epoch tables a
    block of trials at a time, in trial order; returns each table's rows."""
    writers = {name: _Writer(staging / f"{name}.{fmt}", fmt) for name in ("trials", "metrics", "metrics_wide", "layer_stats")}
    try:
        writers["trials"].write(trials)
        names = queries.metric_names(engine, ids)  # every block's wide table has the same columns
        for start in range(0, len(ids), BLOCK_TRIALS):
            block = ids[start:start + BLOCK_TRIALS]
            metrics = queries.curves(engine, block)
            metrics["value"] = metrics["value"].astype(float)
            writers["metrics"].write(metrics)
            writers["metrics_wide"].write(_wide(metrics, trials[trials["trial_id"].isin(block)], names))
            writers["layer_stats"].write(_layer_stats(engine, block, queries.probed_epochs(engine, block)))
        if not ids:
            writers["metrics"].write(pd.DataFrame(columns=METRICS_LONG))
            writers["metrics_wide"].write(_wide(pd.DataFrame(columns=METRICS_LONG), trials, names))
            writers["layer_stats"].write(pd.DataFrame(columns=queries.LAYER_COLUMNS))
    finally:
        for writer in writers.values():
            writer.close()
    return {name: writer.rows for name, writer in writers.items()}


def _make_dirs(out: Path) -> list[Path]:
    """Make `out` and its missing parents; the directories made, outermost first. UserError (and
    nothing left made) where a parent is a file or a directory cannot be made (/proc, /sys, no
    permission)."""
    made: list[Path] = []
    for directory in [*reversed(out.parents), out]:
        if directory.is_dir():
            continue
        problem = f"{directory} is a file" if directory.exists() or directory.is_symlink() else None
        if problem is None:
            try:
                directory.mkdir()
                made.append(directory)
                continue
            except OSError as exc:
                problem = f"cannot make {directory} ({_reason(exc)})"
        for done in reversed(made):
            done.rmdir()
        raise UserError(f"--out {out}: {problem}; give a directory you can write, new or existing")
    return made


def _reason(exc: OSError) -> str:
    lines = str(exc).splitlines()
    return exc.strerror or (lines[0] if lines else type(exc).__name__)


def _previous_export(out: Path) -> set[str]:
    """The files of the export already in `out` (its sweep.json lists them); UserError when `out`
    holds anything else, so an export never mixes with other files."""
    if not out.is_dir():
        return set()
    entries = {p.name for p in out.iterdir() if not p.name.startswith(".export-")}
    if not entries:
        return set()
    try:
        listed = set(json.loads((out / "sweep.json").read_text())["export"]["files"]) | {"sweep.json"}
    except (OSError, ValueError, KeyError, TypeError):
        listed = set()
    if not listed or entries - listed:
        other = sorted(entries - listed)[:3]
        raise UserError(f"--out {out}: holds files that are not an export's ({', '.join(other)}); give a new or "
                        "empty directory, or one an earlier export wrote (its files are all replaced)")
    return entries


def _layer_stats(engine: Engine, ids: list[int], probed: list[int]) -> pd.DataFrame:
    """Every probed epoch's layer records of these trials (db.queries.layer_stats reads one epoch at a time)."""
    frames = [queries.layer_stats(engine, ids, epoch) for epoch in probed]
    frames = [f for f in frames if not f.empty]
    if not frames:
        return pd.DataFrame(columns=queries.LAYER_COLUMNS)
    layers = pd.concat(frames, ignore_index=True).sort_values(["trial_id", "epoch", "layer"], ignore_index=True)
    return layers.astype({"std": float, "mean": float})


def _wide(metrics: pd.DataFrame, trials: pd.DataFrame, names: list[str]) -> pd.DataFrame:
    """One row per (trial, epoch) with the trial's axes and one column per metric (`names`)."""
    if metrics.empty:
        return pd.DataFrame(columns=["trial_id", *AXES, "epoch", *names])
    wide = metrics.pivot(index=["trial_id", "epoch"], columns="name", values="value")
    wide.columns.name = None
    wide = wide.reindex(columns=names).astype(float).reset_index()
    axes = trials[["trial_id", *AXES]]
    return axes.merge(wide, on="trial_id", how="right")[["trial_id", *AXES, "epoch", *names]]


class _Writer:
    """One exported table written a block of rows at a time: CSV with one header, Parquet as
    row groups of one schema, JSON as one array of records."""

    def __init__(self, path: Path, fmt: str) -> None:
        self.path, self.fmt, self.rows = path, fmt, 0
        self._file: Any = None
        self._parquet: Any = None

    def write(self, frame: pd.DataFrame) -> None:
        frame = frame.copy()
        if "config" in frame and self.fmt != "json":
            frame["config"] = [json.dumps(c, sort_keys=True) for c in frame["config"]]
        first = self._file is None and self._parquet is None
        if self.fmt == "csv":
            if first:
                self._file = self.path.open("w", newline="")
            frame.to_csv(self._file, index=False, header=first)
        elif self.fmt == "parquet":
            # A text column stays text when every value is missing (`error` when no trial failed):
            # pyarrow would type it Null, and the file's schema would change with its contents.
            import pyarrow as pa
            import pyarrow.parquet as pq

            for column in TEXT_COLUMNS & set(frame.columns):
                frame[column] = frame[column].astype(pd.ArrowDtype(pa.string()))
            table = pa.Table.from_pandas(frame, preserve_index=False)
            if first:
                self._parquet = pq.ParquetWriter(self.path, table.schema)
            self._parquet.write_table(table.cast(self._parquet.schema))
        else:
            # Python's json writes each float as its shortest exact repr; pandas' to_json rounds to at
            # most 15 digits, so a value read back would differ from the database's.
            if first:
                self._file = self.path.open("w")
                self._file.write("[")
            records = frame.astype(object).where(frame.notna(), None).to_dict("records")
            if records:
                text = json.dumps(records, default=_json_default, allow_nan=False)[1:-1]
                self._file.write(("" if self.rows == 0 else ", ") + text)
        self.rows += len(frame)

    def close(self) -> None:
        if self._parquet is not None:
            self._parquet.close()
        if self._file is not None:
            if self.fmt == "json":
                self._file.write("]")
            self._file.close()


def _sweep_json(row: dict[str, Any], fmt: str, rows: dict[str, int]) -> dict[str, Any]:
    try:
        parsed = yaml.safe_load(row["spec"])
    except yaml.YAMLError:
        parsed = None
    return {
        "name": row["name"],
        "id": int(row["id"]),
        "status": row["status"],
        "created_at": _iso(row["created_at"]),
        "finished_at": _iso(row["finished_at"]),
        "git_commit": row["git_commit"],
        "git_dirty": None if row["git_dirty"] is None else bool(row["git_dirty"]),
        "spec_hash": row["spec_hash"],
        "storage_path": row["storage_path"],
        "spec": row["spec"],
        "spec_parsed": parsed,
        "export": {
            "format": fmt,
            "exported_at": dt.datetime.now(dt.timezone.utc).isoformat(),
            "rows": rows,
            "files": [f"{name}.{fmt}" for name in rows],
        },
    }


def _json_default(value: Any) -> Any:
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if hasattr(value, "item"):  # a numpy scalar
        return value.item()
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def _iso(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NaT:
        return None
    return value.isoformat() if hasattr(value, "isoformat") else str(value)
