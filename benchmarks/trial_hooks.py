"""Observers of a trial's stages, for the benchmarks and the fault tests (never a user's sweep).

A Tune worker calls the function `$RESWEEP_TRIAL_HOOK` names ("module:function") at each stage of
a trial (trainers/trainable.py: entry, data, model, epoch, reported, exit). Set the variable, and
the variables each hook reads, before Ray starts: workers inherit the driver's environment.

- `timeline`: one JSON line per stage into `$RESWEEP_TIMELINE_DIR/worker-PID.jsonl`, the
  timestamps benchmarks/trial_overhead.py reads to say where each slot's time went.
- `crash_if_asked`: a real worker death for the fault tests: the process exits (no exception,
  no cleanup) after reporting epoch N when `$RESWEEP_TEST_FAULT_DIR/crash_at_epoch_N` exists,
  once (the file is claimed atomically, so one process of the cluster wins).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

TIMELINE_ENV = "RESWEEP_TIMELINE_DIR"
FAULT_DIR_ENV = "RESWEEP_TEST_FAULT_DIR"
HOOK_ENV = "RESWEEP_TRIAL_HOOK"  # trainers.trainable.TRIAL_HOOK_ENV
TIMELINE = "benchmarks.trial_hooks:timeline"
CRASH = "benchmarks.trial_hooks:crash_if_asked"

_trial: str | None = None


def timeline(event: str, trial: str | None = None, **fields: Any) -> None:
    global _trial
    directory = os.environ.get(TIMELINE_ENV)
    if not directory:
        return
    if trial is not None:
        _trial = trial
    line = {"t": time.time(), "pid": os.getpid(), "trial": _trial, "event": event, **fields}
    if event == "entry":
        line["process_start"] = _process_start_time()
    with open(Path(directory) / f"worker-{os.getpid()}.jsonl", "a") as f:
        f.write(json.dumps(line) + "\n")


def crash_if_asked(event: str, epoch: int | None = None, **_: Any) -> None:
    fault_dir = os.environ.get(FAULT_DIR_ENV)
    if event != "reported" or not fault_dir:
        return
    marker = Path(fault_dir) / f"crash_at_epoch_{epoch}"
    try:
        os.rename(marker, marker.with_name(marker.name + ".claimed"))  # atomic: one process wins
    except FileNotFoundError:
        return
    os._exit(1)


def _process_start_time() -> float | None:
    try:
        import psutil

        return psutil.Process().create_time()
    except Exception:
        return None
