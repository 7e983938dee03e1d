"""Export of a big sweep: `python -m orchestrator export` on db_bench's 2,000-trial database.

    python -m benchmarks.export_bench [--quick] [--trials N] [--json]

The database is the one benchmarks/db_bench.py builds for its query figures (SQLite, set-based:
2,000 trials x 200 epochs x 8 metrics = 3.2 M metric rows, 56 layer records at 5 probes per
trial = 560 k layer rows). Each format is exported by the real command line in its own process
(start-up included); the baseline is reading the same tables through db.queries alone in this
process, so the ratio is what writing the files adds. Sizes are in each row's note.
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

from benchmarks import db_bench
from benchmarks.common import REPO, result
from db import queries

FORMATS = ("csv", "parquet", "json")


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _read_all(engine) -> tuple[float, float]:
    """(wall, CPU) seconds of reading every exported row through db.queries in this process."""
    start, cpu0 = time.perf_counter(), time.process_time()
    ids = queries.trials(engine, "bench")["trial_id"].tolist()
    queries.curves(engine, ids)
    for epoch in queries.probed_epochs(engine, ids):
        queries.layer_stats(engine, ids, epoch)
    return time.perf_counter() - start, time.process_time() - cpu0


def measure(n_trials: int) -> list[dict]:
    args = argparse.Namespace(trials=n_trials, epochs=200, layers=56, probes=5)
    rows = []
    with tempfile.TemporaryDirectory(prefix="resweep-export-") as tmp:
        url = f"sqlite:///{Path(tmp) / 'bench.db'}"
        engine, _, build_s = db_bench.build_query_db(url, args)
        db_mb = (Path(tmp) / "bench.db").stat().st_size / 1e6
        read_s, read_cpu = _read_all(engine)
        engine.dispose()
        for fmt in FORMATS:
            out = Path(tmp) / f"out-{fmt}"
            start, cpu0 = time.perf_counter(), _children_cpu()
            subprocess.run([sys.executable, "-m", "orchestrator", "export", "bench", "--format", fmt,
                            "--out", str(out), "--db", url], cwd=REPO, check=True, capture_output=True)
            seconds, cpu = time.perf_counter() - start, _children_cpu() - cpu0
            sizes = {p.name: p.stat().st_size for p in sorted(out.iterdir())}
            total = sum(sizes.values()) / 1e6
            note = (f"{cpu:.0f} CPU s; {total:,.1f} MB in all (" + ", ".join(f"{k} {v / 1e6:,.1f} MB" for k, v in sizes.items())
                    + f"); database {db_mb:,.0f} MB, built in {build_s:.0f} s; reading alone {read_cpu:.0f} CPU s")
            rows.append(result(f"export {fmt}, {n_trials:,} trials (command, wall)", seconds, "s",
                               "reading the same rows through db.queries", read_s, note=note))
    return rows


def run(quick: bool) -> list[dict]:
    return measure(200 if quick else 2000)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--trials", type=int)
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    a = parser.parse_args()
    rows = measure(a.trials or (200 if a.quick else 2000))
    if a.json:
        print(json.dumps(rows))
    else:
        for r in rows:
            print(f"{r['name']}: {r['value']:.1f} s (baseline {r['baseline_value']:.1f} s, "
                  f"{r['ratio']:.2f}x); {r['note']}")


if __name__ == "__main__":
    main()
