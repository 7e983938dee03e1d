"""Rebuild sweeps in the database from their results: `python -m orchestrator db import`.

A sweep's results directory (`<results>/<name>/`, local or a URI such as s3://bucket/prefix/name)
holds all a sweep needs to be rebuilt: Ray Tune's experiment state (every trial's id, config and
status), each trial's `result.json` (every reported result, in order, layer records included) and
checkpoints, and `resweep-sweep.json`, which launch writes there (the sweep file's text, its hash
and the git state). The import writes the sweep row, its trials with their configs and statuses,
and every epoch's metrics and layer records, all through db.writes' upserts: importing into a
database that already holds part of the sweep fills the gaps and duplicates nothing, and
importing twice changes nothing. An unfinished sweep (trials Tune had not finished) is left
`interrupted`, so `resume NAME` continues it from its checkpoints.

A Ray Tune experiment that resweep did not launch (no resweep-sweep.json) is imported as far as
its results carry resweep's names: each trial's config needs `dataset`, `model`, `depth`,
`block`, `shortcut` and `seed` (trials without them are skipped and counted); each result's
`epoch` (else Tune's `training_iteration`) and any of the metric names (train_loss, train_err,
test_loss, test_err, val_loss, val_err, lr, epoch_time_s, images_per_s), `params_count` and
`layer_stats` (a list of {layer, name, stage, std, mean}) are taken, anything else is ignored.
Its sweep is named after the experiment directory, with a placeholder for the spec; it can be
looked at and compared but not resumed by resweep (its trainable is not resweep's).

Tune's files are read with Tune's own loaders and pyarrow filesystems, so URIs work as paths do.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import PurePosixPath
from typing import Any, Iterator

import pyarrow.fs as pafs
from sqlalchemy.engine import Engine

from db import queries, writes
from db.models import METRIC_NAMES
from resweep.errors import UserError
from orchestrator.run import alias_moved_modules, ray_compat
from orchestrator.run.storage import SWEEP_RECORD, checkpoint_uri, newest_checkpoint, first_line, join, refuse_credentials, shown

BATCH = 500  # results per transaction
ERROR_CHARS = 4000


@dataclass
class Imported:
    """What one sweep's import did."""

    name: str
    source: str
    status: str
    resumable: bool
    created: bool = False
    trials: dict[str, int] = field(default_factory=dict)  # by status
    epochs: int = 0  # results (trial x epoch) read
    metric_rows: int = 0
    layer_rows: int = 0
    skipped: list[str] = field(default_factory=list)  # trial ids without resweep's axes


def import_results(source: str, engine: Engine) -> list[Imported]:
    """Import the sweep at `source` (its experiment directory), or every sweep directly under it."""
    return import_found(find_sweeps(source), engine)


@dataclass(frozen=True)
class Found:
    """A sweep's results directory: the filesystem, the path on it, and its location as given."""

    fs: Any
    path: str
    source: str


def find_sweeps(source: str) -> list[Found]:
    """The sweep at `source`, or every sweep directly under it; UserError where there is none.
    Reads only `source`: a command refused here has opened no database."""
    refuse_credentials(source, "db import")  # it would be stored as the sweep's results location
    if "://" not in source:
        source = os.path.abspath(os.path.expanduser(source))
    try:
        fs, path = ray_compat.fs_and_path(source)
    except Exception as exc:  # an unknown scheme, a missing library, a malformed bucket name
        raise UserError(f"db import {shown(source)}: cannot open it ({first_line(exc)}); give a sweep's results "
                        "directory, a path or a URI such as s3://BUCKET/PREFIX/NAME") from None
    if _state_file(fs, path) is not None:
        return [Found(fs, path, source)]
    found = []
    for info in _listing(fs, path, source):
        if info.type == pafs.FileType.Directory and _state_file(fs, info.path) is not None:
            found.append(info.path)
    if not found:
        raise UserError(f"{shown(source)}: no Ray Tune experiment state here or in its subdirectories "
                        "(experiment_state-*.json); give a sweep's results directory, e.g. results/NAME")
    return [Found(fs, p, join(source, PurePosixPath(p).name)) for p in sorted(found)]


def import_found(found: list[Found], engine: Engine) -> list[Imported]:
    """Import the sweeps `find_sweeps` found into the database behind `engine`."""
    return [_import_sweep(f.fs, f.path, f.source, engine) for f in found]


def _listing(fs: pafs.FileSystem, path: str, source: str) -> list[pafs.FileInfo]:
    info = fs.get_file_info(path)
    if info.type != pafs.FileType.Directory:
        raise UserError(f"{shown(source)}: no such directory; give a sweep's results directory, e.g. results/NAME")
    return fs.get_file_info(pafs.FileSelector(path))


def _state_file(fs: pafs.FileSystem, path: str) -> str | None:
    if fs.get_file_info(path).type != pafs.FileType.Directory:
        return None
    return ray_compat.newest_experiment_state(fs, path)


def _load_trials(fs: pafs.FileSystem, path: str) -> list:
    """Tune's trials as its experiment state saved them (as ExperimentAnalysis loads them)."""
    import copy

    from ray.tune.experiment import Trial

    alias_moved_modules()  # a sweep launched before orchestrator/ had rooms
    with fs.open_input_stream(_state_file(fs, path)) as f:
        state = ray_compat.loads_experiment_state(f.readall())
    trials = []
    for trial_json, runtime in state["trial_data"]:
        trial = Trial.from_json_state(trial_json, stub=True)
        trial.restore_run_metadata(runtime)
        storage = copy.copy(trial.storage)
        storage.storage_fs_path = PurePosixPath(path).parent.as_posix()
        storage.storage_filesystem = fs
        storage.experiment_dir_name = PurePosixPath(path).name
        trial.set_storage(storage)
        trials.append(trial)
    return trials


def _read(fs: pafs.FileSystem, path: str) -> bytes | None:
    if fs.get_file_info(path).type != pafs.FileType.File:
        return None
    with fs.open_input_stream(path) as f:
        return f.readall()


def _results(fs: pafs.FileSystem, trial_dir: str) -> Iterator[dict]:
    text = _read(fs, f"{trial_dir}/result.json")
    for line in (text or b"").decode("utf-8", errors="replace").splitlines():
        line = line.strip()
        if line:
            try:
                yield json.loads(line)
            except json.JSONDecodeError:  # a line cut short by a crash
                continue


def _sweep_record(fs: pafs.FileSystem, path: str) -> dict[str, Any]:
    raw = _read(fs, f"{path}/{SWEEP_RECORD}")
    if raw is not None:
        return json.loads(raw)
    name = PurePosixPath(path).name
    spec = (f"# imported by `python -m orchestrator db import` from a Ray Tune experiment resweep did not launch:\n"
            f"# {path}\n")
    return {"name": name, "spec": spec, "spec_hash": hashlib.sha256(spec.encode()).hexdigest(),
            "git_commit": None, "git_dirty": None, "foreign": True}


def _expected_trials(spec_text: str) -> int | None:
    from orchestrator.run.spec import SpecError, parse_spec

    try:
        return parse_spec(spec_text, "the stored sweep file").num_trials
    except SpecError:
        return None


def _trial_status(trial: Any) -> tuple[str, bool]:
    """resweep's status of a trial from Tune's, and whether it has ended."""
    if trial.status == "TERMINATED":
        epochs = trial.config.get("epochs")
        done = (trial.last_result or {}).get("epoch", 0)
        return ("stopped" if epochs is not None and done < epochs else "terminated"), True
    if trial.status == "ERROR":
        return "error", True
    return "pending", False  # Tune had not finished it: a resume continues it


def _error_text(fs: pafs.FileSystem, trial: Any, trial_dir: str) -> str:
    name = trial.run_metadata.error_filename or "error.txt"
    raw = _read(fs, f"{trial_dir}/{name}") or b""
    text = raw.decode(errors="replace")
    last = text.rfind("Failure # ")
    text = text[last:] if last >= 0 else text
    return text[-ERROR_CHARS:].strip() or "the trial failed (no error text was recorded)"


def _when(seconds: Any) -> datetime | None:
    try:
        return datetime.fromtimestamp(float(seconds), tz=timezone.utc)
    except (TypeError, ValueError, OverflowError, OSError):
        return None


def _import_sweep(fs: pafs.FileSystem, path: str, source: str, engine: Engine) -> Imported:
    record = _sweep_record(fs, path)
    foreign = bool(record.get("foreign"))
    trials = _load_trials(fs, path)
    name = record["name"]
    existing = queries.sweep(engine, name)
    if existing is not None and existing.spec_hash != record["spec_hash"]:
        raise UserError(f"{shown(source)}: the database already holds another sweep named {name!r} (its sweep file differs); "
                        "import into another database with --db")
    storage = source if "://" in source else str(PurePosixPath(path))
    if existing is None:
        sweep_id = writes.create_sweep(engine, name=name, spec=record["spec"], spec_hash=record["spec_hash"],
                                       git_commit=record.get("git_commit"), git_dirty=record.get("git_dirty"),
                                       storage_path=storage)
    else:
        sweep_id = existing.id
    expected = None if foreign else _expected_trials(record["spec"])
    out = Imported(name=name, source=source, status="interrupted", resumable=not foreign, created=existing is None)

    for trial in trials:
        config = dict(trial.config)
        missing = [axis for axis in writes.AXES if config.get(axis) is None]
        if missing:
            out.skipped.append(trial.trial_id)
            continue
        status, ended = _trial_status(trial)
        trial_dir = trial.storage.trial_fs_path
        results = list(_results(fs, trial_dir))
        first = results[0] if results else {}
        started = _when(first.get("timestamp", 0) - first.get("time_this_iter_s", 0)) if first else None
        trial_id = writes.upsert_trial(engine, sweep_id, trial.trial_id, status=status, config=config,
                                       started_at=started)
        batch = []
        for r in results:
            epoch = r.get("epoch", r.get("training_iteration"))
            if epoch is None:
                continue
            metrics = {n: r[n] for n in METRIC_NAMES if n in r}
            if r.get("params_count") is not None:
                metrics["params_count"] = r["params_count"]
            layers = r.get("layer_stats") or None
            batch.append(writes.Result(trial_id, int(epoch), metrics, layers))
            out.layer_rows += len(layers or ())
        out.epochs += len({res.epoch for res in batch})
        for start in range(0, len(batch), BATCH):
            out.metric_rows += writes.record_results(engine, batch[start:start + BATCH])
        # The newest on storage: Tune's state may not hold it yet (a stop between the two, see
        # orchestrator.run.storage.newest_checkpoint).
        checkpoint = getattr(trial, "checkpoint", None)
        newest = newest_checkpoint(fs, trial_dir) or (checkpoint_uri(checkpoint) if checkpoint is not None else None)
        if newest is not None:
            writes.set_checkpoint_uri(engine, trial_id, newest)
        if ended:
            last = results[-1] if results else {}
            writes.set_trial_status(engine, trial_id, status, ended=True, ended_at=_when(last.get("timestamp")),
                                    error=_error_text(fs, trial, trial_dir) if status == "error" else None)
        out.trials[status] = out.trials.get(status, 0) + 1

    n = sum(out.trials.values())
    all_ended = n == len(trials) and all(_trial_status(t)[1] for t in trials)
    if all_ended and (expected is None or n >= expected):
        out.status = "failed" if out.trials.get("error") else "finished"
    current = queries.sweep(engine, name)
    if current.status != "finished" or out.status == "finished":
        writes.set_sweep_status(engine, sweep_id, out.status, finished=out.status in ("finished", "failed"))
    return out
