"""Export of a big sweep: `python -m orchestrator export` on a finished sweep of 2,000 and 20,000 trials.

    python -m benchmarks.export_bench [--quick] [--trials N] [--epochs E] [--formats csv,parquet,json] [--json]

The database (SQLite) is built as benchmarks/read_scale.py builds its sweeps: what resweep's own
writes produce (trials, trial and grid summaries), set-based: 8 metrics an epoch, 18 layer
records every 10th epoch. Each format is exported by the real command line in its own process
(start-up included); the baseline is reading the same rows through db.queries alone in this
process, so the ratio is what writing the files adds. The full run: every format at 2,000
trials x 100 epochs (1.6 M metric values), and Parquet at 20,000 trials x 100 epochs (16 M;
target 90 s). Sizes are in each row's note.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import read_scale
from benchmarks.common import REPO, result
from db import queries
from db.engine import get_engine

FORMATS = ("csv", "parquet", "json")
TARGET_S = 90.0  # a 20,000-trial sweep to Parquet (issue "Scale")


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _read_all(engine) -> tuple[float, float]:
    """(wall, CPU) seconds of reading every exported row through db.queries in this process."""
    start, cpu0 = time.perf_counter(), time.process_time()
    ids = queries.trials(engine, "bench")["trial_id"].tolist()
    for first in range(0, len(ids), 500):  # in blocks, as the export reads them
        block = ids[first:first + 500]
        queries.curves(engine, block)
        for epoch in queries.probed_epochs(engine, block):
            queries.layer_stats(engine, block, epoch)
    return time.perf_counter() - start, time.process_time() - cpu0


def measure(n_trials: int, epochs: int = 100, formats: tuple[str, ...] = FORMATS) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="resweep-export-") as tmp:
        url = f"sqlite:///{Path(tmp) / 'bench.db'}"
        engine = get_engine(url)
        start = time.perf_counter()
        read_scale.build_sweep(engine, "bench", n_trials, epochs)
        read_scale.analyze(engine)
        build_s = time.perf_counter() - start
        db_mb = (Path(tmp) / "bench.db").stat().st_size / 1e6
        read_s, read_cpu = _read_all(engine)
        engine.dispose()
        for fmt in formats:
            out = Path(tmp) / f"out-{fmt}"
            start, cpu0 = time.perf_counter(), _children_cpu()
            subprocess.run([sys.executable, "-m", "orchestrator", "export", "bench", "--format", fmt,
                            "--out", str(out), "--db", url], cwd=REPO, check=True, capture_output=True)
            seconds, cpu = time.perf_counter() - start, _children_cpu() - cpu0
            sizes = {p.name: p.stat().st_size for p in sorted(out.iterdir())}
            total = sum(sizes.values()) / 1e6
            target = f"target {TARGET_S:g} s: {'met' if seconds <= TARGET_S else 'MISSED'}; " if n_trials >= 20_000 else ""
            note = (f"{target}{cpu:.0f} CPU s; {total:,.1f} MB in all ("
                    + ", ".join(f"{k} {v / 1e6:,.1f} MB" for k, v in sizes.items())
                    + f"); database {db_mb:,.0f} MB ({n_trials:,} trials x {epochs} epochs), built in {build_s:.0f} s; "
                    f"reading alone {read_cpu:.0f} CPU s")
            rows.append(result(f"export {fmt}, {n_trials:,} trials x {epochs} epochs (command, wall)", seconds, "s",
                               "reading the same rows through db.queries", read_s, note=note))
    return rows


def run(quick: bool) -> list[dict]:
    if quick:
        return measure(200, epochs=10)
    return measure(2_000) + measure(20_000, formats=("parquet",))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="200 trials x 10 epochs")
    parser.add_argument("--trials", type=int, help="one size only: this many trials")
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--formats", default=",".join(FORMATS))
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    a = parser.parse_args()
    if a.trials:
        rows = measure(a.trials, a.epochs, tuple(a.formats.split(",")))
    else:
        rows = run(a.quick)
    if a.json:
        print(json.dumps(rows))
    else:
        for r in rows:
            print(f"{r['name']}: {r['value']:.1f} s (baseline {r['baseline_value']:.1f} s, "
                  f"{r['ratio']:.2f}x); {r['note']}")


if __name__ == "__main__":
    main()
