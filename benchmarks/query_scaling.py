"""How the dashboard's queries (db/queries.py) grow with the database: 200, 2,000, 20,000 trials.

    python -m benchmarks.query_scaling [--quick] [--db-dir DIR]

Each size is one finished sweep of N trials (the worst case for a sweep's pages: every query
over the sweep touches all N), written through db/writes.py in large batches: 10 epochs x 7
metrics per trial and 18 layer records at 2 probe epochs (a ResNet-20's), i.e. 106 rows per
trial. Each query is timed as the median of a few runs on a warm connection pool; the baseline is
the same query at 200 trials, so the ratio says how much slower it got (a 10x or 100x ratio
means the query grows with the number of trials; near 1x, it does not).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks.common import result
from db import queries, writes
from db.engine import get_engine

SIZES = {False: (200, 2_000, 20_000), True: (200, 2_000)}
EPOCHS, PROBES, LAYERS = 10, (5, 10), 18
METRICS = ("train_loss", "train_err", "test_loss", "test_err", "lr", "epoch_time_s", "images_per_s")
DEPTHS, SHORTCUTS = (20, 32, 44, 56, 110), ("none", "A", "B", "C")
SELECTED = 20  # trials a user picks on the curves and layers pages


def build(url: str, n_trials: int) -> list[int]:
    """A sweep 'big' of n_trials finished trials; returns their ids."""
    engine = get_engine(url)
    sweep_id = writes.create_sweep(engine, name="big", spec="name: big\n", spec_hash="0" * 64)
    ids = []
    for i in range(n_trials):
        config = {"dataset": "cifar10", "model": "cifar", "depth": DEPTHS[i % 5], "block": "basic",
                  "shortcut": SHORTCUTS[(i // 5) % 4], "seed": i // 20, "epochs": EPOCHS}
        ids.append(writes.upsert_trial(engine, sweep_id, f"t{i:05d}", status="terminated",
                                       config=config, params_count=270_000))
    batch = []
    for tid in ids:
        for epoch in range(1, EPOCHS + 1):
            err = 0.9 / epoch + (tid % 7) * 0.001
            metrics = {m: err for m in METRICS}
            layers = ([{"layer": k, "name": f"layer{k}", "stage": k // 6, "std": 1.0 / (k + 1),
                        "mean": 0.0} for k in range(LAYERS)] if epoch in PROBES else None)
            batch.append(writes.Result(tid, epoch, metrics, layers))
        if len(batch) >= 5_000:
            writes.record_results(engine, batch)
            batch = []
    if batch:
        writes.record_results(engine, batch)
    writes.set_sweep_status(engine, sweep_id, "finished", finished=True)
    engine.dispose()
    return ids


def query_set(ids: list[int]) -> dict[str, callable]:
    """The dashboard's queries, named as in the table."""
    some = ids[:: max(1, len(ids) // SELECTED)][:SELECTED]
    return {
        "sweeps()": lambda e: queries.sweeps(e),
        "trials(sweep)": lambda e: queries.trials(e, "big"),
        "grid(sweep)": lambda e: queries.grid(e, "big"),
        f"curves({SELECTED} trials)": lambda e: queries.curves(e, some, ["train_err", "test_err"]),
        "curves(200 trials)": lambda e: queries.curves(e, ids[:200], ["test_err"]),
        f"layer_stats({SELECTED} trials)": lambda e: queries.layer_stats(e, some),
        f"probed_epochs({SELECTED} trials)": lambda e: queries.probed_epochs(e, some),
    }


def time_queries(url: str, ids: list[int], repeats: int) -> dict[str, float]:
    """Median seconds per query."""
    engine = get_engine(url, create=False)
    out = {}
    for name, q in query_set(ids).items():
        q(engine)  # warm: connection, statement cache, page cache
        runs = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            q(engine)
            runs.append(time.perf_counter() - t0)
        out[name] = statistics.median(runs)
    engine.dispose()
    return out


def measure(quick: bool, db_dir: Path) -> tuple[dict[int, dict[str, float]], dict[int, float]]:
    timings, build_s = {}, {}
    for n in SIZES[quick]:
        url = f"sqlite:///{db_dir / f'trials_{n}.db'}"
        t0 = time.perf_counter()
        ids = build(url, n)
        build_s[n] = time.perf_counter() - t0
        timings[n] = time_queries(url, ids, repeats=3 if n >= 20_000 else 5)
    return timings, build_s


def rows(timings: dict[int, dict[str, float]], build_s: dict[int, float]) -> list[dict]:
    base_n = min(timings)
    out = []
    for n, qs in timings.items():
        for name, seconds in qs.items():
            out.append(result(f"{name} at {n:,} trials", 1000 * seconds, "ms",
                              f"same at {base_n:,} trials", 1000 * timings[base_n][name]))
    for n, seconds in build_s.items():
        out.append(result(f"build {n:,} trials (db/writes, SQLite)", n / seconds, "trials/s",
                          note=f"{n * (EPOCHS * len(METRICS) + LAYERS * len(PROBES)):,} "
                               f"result rows in {seconds:.1f} s"))
    return out


def run(quick: bool) -> list[dict]:
    with tempfile.TemporaryDirectory(prefix="resweep-qbench-") as tmp:
        return rows(*measure(quick, Path(tmp)))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="200 and 2,000 trials only")
    p.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = p.parse_args()
    got = run(args.quick)
    if args.json:
        print(json.dumps(got, indent=1))
    else:
        for r in got:
            ratio = f"  {r['ratio']:.2f}x" if r["ratio"] is not None else ""
            print(f"{r['name']:<45} {r['value']:>10.2f} {r['unit']}{ratio}")


if __name__ == "__main__":
    main()
