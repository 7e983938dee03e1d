"""The benchmark convention, and small helpers every benchmark module may use.

A benchmark module in benchmarks/ exposes

    def run(quick: bool) -> list[dict]

returning one dict per figure it measured, made with `result(...)`:

    name            what was measured, e.g. "recorder: 16 trials, results/s"
    value           the figure (float), or None when it could not be measured (see note)
    unit            its unit: "s", "results/s", "images/s", "ms", "x", ...
    baseline        what it is compared with, measured in the same run, e.g. "bare writer"
    baseline_value  the baseline's figure in the same unit (None when there is none)
    ratio           value / baseline_value (None without a baseline)
    note            optional: one line of context (skipped because ..., sizes, ...)

`quick=True` must finish in well under a minute on two CPU cores; it checks that the benchmark
works and gives rough numbers. `python -m benchmarks` runs every module and prints one table.
"""

from __future__ import annotations

import os
import resource
import subprocess
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

REPO = Path(__file__).resolve().parent.parent
KEYS = ("name", "value", "unit", "baseline", "baseline_value", "ratio")


def result(name: str, value: float | None, unit: str, baseline: str | None = None,
           baseline_value: float | None = None, note: str | None = None) -> dict:
    """One row of the benchmark table; the ratio is value / baseline_value."""
    ratio = (value / baseline_value
             if value is not None and baseline_value not in (None, 0) else None)
    row = {"name": name, "value": value, "unit": unit, "baseline": baseline,
           "baseline_value": baseline_value, "ratio": ratio}
    if note:
        row["note"] = note
    return row


@dataclass
class Clock:
    """Wall and CPU seconds of a block (CPU: this process and its finished children)."""

    wall_s: float = 0.0
    cpu_s: float = 0.0


def _cpu_now() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


@contextmanager
def clock() -> Iterator[Clock]:
    c = Clock()
    w0, c0 = time.perf_counter(), _cpu_now()
    try:
        yield c
    finally:
        c.wall_s, c.cpu_s = time.perf_counter() - w0, _cpu_now() - c0


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, text=True,
                             capture_output=True, timeout=10)
        return out.stdout.strip() or None
    except OSError:
        return None


def env_without_ray_noise() -> dict[str, str]:
    """Environment for child processes that start Ray: no usage stats, no log colours."""
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", PYTHONUNBUFFERED="1")
    env.setdefault("RAY_DEDUP_LOGS", "0")
    return env
