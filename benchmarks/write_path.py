"""One result's write, as the recorder makes it: `db.writes.record_result` per call, side by side.

    python -m benchmarks.write_path [--backend sqlite|postgresql|both] [--calls N] [--against REV]
                                    [--no-params] [--quick]

A trial reports one result an epoch (8 metrics and its parameter count); the recorder writes each
in its own transaction. This times that call, median over N calls, interleaved call by call with
a baseline in the same process and database, so the machine's drift (large on a shared 2-core
machine: the same call moves 1.0-2.2 ms on PostgreSQL within minutes) falls on both alike:
- by default the baseline is a bare writer: one DBAPI executemany of the same metric rows, in
  its own transaction (the floor: no layer records, no params, no summaries);
- `--against REV` makes it `db/writes.py` as it was at that git revision (read with `git show`,
  imported beside today's), on trials of its own: a before/after of a change to the write path.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from collections.abc import Callable
from typing import Any

from benchmarks.common import REPO, result
from benchmarks.db_bench import PG_ADMIN_URL, Scratch, add_trials
from db import writes
from db.engine import get_engine
from db.models import METRIC_IDS

NAMES = ("train_loss", "train_err", "test_loss", "test_err", "lr", "epoch_time_s", "images_per_s", "val_err")


def writes_at(rev: str) -> ModuleType:
    """db/writes.py as it was at git revision `rev`, imported as a module of its own."""
    text = subprocess.run(["git", "show", f"{rev}:db/writes.py"], cwd=REPO, capture_output=True, text=True,
                          check=True).stdout  # fmt: skip
    path = Path(tempfile.mkdtemp(prefix="writes-at-")) / "writes_at.py"
    path.write_text(text)
    spec = importlib.util.spec_from_file_location(f"writes_at_{rev.replace('~', '_')}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def metrics(trial: int, epoch: int, params: bool) -> dict[str, Any]:
    out: dict[str, Any] = {name: 1.0 / (epoch + k + trial % 7 + 1) for k, name in enumerate(NAMES)}
    if params:
        out["params_count"] = 270_000
    return out


def bare_writer(engine: Any) -> Callable[[int, int, dict], None]:
    """The same metric rows in one executemany of a plain upsert, in its own transaction."""
    sql = writes._upsert_sql(engine.dialect.name, "metric_values")

    def write(trial: int, epoch: int, values: dict) -> None:
        rows = sorted((trial, METRIC_IDS[n], epoch, v) for n, v in values.items() if n in METRIC_IDS)
        with engine.begin() as conn:
            conn.exec_driver_sql(sql, rows)

    return write


def measure(backend: str, calls: int, params: bool, against: str | None) -> dict[str, float]:
    """Median ms of a result's write now and of the baseline, interleaved call by call."""
    scratch = Scratch(backend, PG_ADMIN_URL, tag="writepath")
    engine = get_engine(scratch.url)
    try:
        sweep_id = writes.create_sweep(engine, name="write-path", spec="", spec_hash="")
        trials = add_trials(engine, sweep_id, 40, "t", status="running")
        base = writes_at(against) if against else None
        ways: dict[str, Callable[[int, int, dict], Any]] = {
            "now": lambda t, e, m: writes.record_result(engine, t, e, m),
            "baseline": (lambda t, e, m: base.record_result(engine, t, e, m)) if base else bare_writer(engine),
        }
        times: dict[str, list[float]] = {"now": [], "baseline": []}
        epochs = max(1, calls * 2 // len(trials))
        for epoch in range(1, epochs + 1):
            for i, trial in enumerate(trials):  # even trials the baseline, odd ones today's code
                way = "now" if i % 2 else "baseline"
                start = time.perf_counter()
                ways[way](trial, epoch, metrics(i, epoch, params))
                times[way].append(time.perf_counter() - start)
        return {way: statistics.median(t) * 1000 for way, t in times.items()} | {"calls": epochs * len(trials) // 2}
    finally:
        engine.dispose()
        scratch.close()


def run(quick: bool, against: str | None = None, params: bool = True, backends: tuple[str, ...] = ("sqlite",
        "postgresql"), calls: int | None = None) -> list[dict]:  # fmt: skip
    calls = calls or (200 if quick else 2000)
    baseline = f"db/writes.py at {against}" if against else "bare DBAPI upsert of the same metric rows"
    rows = []
    for backend in backends:
        got = measure(backend, calls, params, against)
        what = "a result (8 metrics" + (" + params_count)" if params else ")")
        rows.append(result(f"{backend}: record_result, {what}, median of {got['calls']}", got["now"], "ms",
                           baseline, got["baseline"], note="interleaved call by call"))  # fmt: skip
    return rows


def main() -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.write_path", description=__doc__.split("\n")[0])
    p.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    p.add_argument("--calls", type=int, default=None, help="calls of each (default 2,000; 200 with --quick)")
    p.add_argument("--against", default=None, help="a git revision: its db/writes.py is the baseline")
    p.add_argument("--no-params", action="store_true", help="results without params_count")
    p.add_argument("--quick", action="store_true")
    args = p.parse_args()
    backends = ("sqlite", "postgresql") if args.backend == "both" else (args.backend,)
    for row in run(args.quick, args.against, not args.no_params, backends, args.calls):
        print(f"{row['name']}: {row['value']:.3f} ms vs {row['baseline_value']:.3f} ({row['baseline']}): "
              f"{row['ratio']:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
