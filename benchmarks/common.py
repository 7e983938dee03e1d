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


def print_rows(rows: list[dict], digits: int = 3) -> None:
    """A module's rows as its own command line prints them without --json: name, value, its
    baseline and ratio, then the note on a line of its own."""
    for r in rows:
        ratio = f"  ratio {r['ratio']:.3f}" if r["ratio"] is not None else ""
        base = f" vs {r['baseline_value']:.{digits}f} {r['unit']} ({r['baseline']})" if r["baseline"] else ""
        print(f"{r['name']}: {r['value']:.{digits}f} {r['unit']}{base}{ratio}\n    {r.get('note', '')}")


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


# The environment this process started with. Ray's init and an in-process launch set variables
# in os.environ (RAY_AUTH_MODE from a token file, RAY_CLIENT_MODE, PYTHONBREAKPOINT, ...) that
# would change how a child's own Ray and Tune behave; children get the environment as it began.
START_ENV = dict(os.environ)


def env_without_ray_noise() -> dict[str, str]:
    """Environment for child processes that start Ray: this process's environment as it started
    (START_ENV), no usage stats, no log colours."""
    env = dict(START_ENV, RAY_USAGE_STATS_ENABLED="0", PYTHONUNBUFFERED="1")
    env.setdefault("RAY_DEDUP_LOGS", "0")
    return env


def parent_pids() -> dict[int, int]:
    """Every process's parent pid, from /proc (Linux)."""
    parents = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                text = Path(entry.path, "stat").read_text()
            except OSError:  # gone meanwhile
                continue
            parents[int(entry.name)] = int(text[text.rindex(")") + 2:].split()[1])  # after "pid (comm) "
    return parents


def process_tree(roots: list[int], parents: dict[int, int]) -> list[int]:
    """The roots and every process below them (by `parents`: pid -> parent pid), parents first."""
    children: dict[int, list[int]] = {}
    for pid, ppid in parents.items():
        children.setdefault(ppid, []).append(pid)
    tree, frontier = list(dict.fromkeys(roots)), list(dict.fromkeys(roots))
    while frontier:
        for kid in children.get(frontier.pop(0), []):
            if kid not in tree:
                tree.append(kid)
                frontier.append(kid)
    return tree


class TreeCPU:
    """CPU seconds of a process and all its descendants, sampled from /proc (Linux).

    Ray's workers are children of its raylet, not of the process we start, so getrusage cannot see
    them; this samples every process in the tree and keeps each one's last reading. A process's
    last `interval_s` of CPU before it exits can be missed.
    """

    def __init__(self, root_pid: int, interval_s: float = 0.25) -> None:
        import threading

        self.root, self.interval_s = root_pid, interval_s
        self.seen: dict[tuple[int, int], float] = {}  # (pid, start time) -> CPU seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._tick = os.sysconf("SC_CLK_TCK")

    def __enter__(self) -> "TreeCPU":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def cpu_s(self) -> float:
        return sum(self.seen.values())

    def _stat(self, pid: str) -> tuple[int, int, float] | None:
        try:
            text = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return None
        fields = text[text.rindex(")") + 2:].split()  # after "pid (comm) "
        ppid, utime, stime, start = int(fields[1]), int(fields[11]), int(fields[12]), int(fields[19])
        return ppid, start, (utime + stime) / self._tick

    def sample(self) -> None:
        stats = {}
        for entry in os.scandir("/proc"):
            if entry.name.isdigit() and (s := self._stat(entry.name)) is not None:
                stats[int(entry.name)] = s
        for pid in process_tree([self.root], {pid: s[0] for pid, s in stats.items()}):
            if pid in stats:
                _, start, cpu = stats[pid]
                self.seen[pid, start] = cpu

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval_s)
