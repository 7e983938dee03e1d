"""Can the driver keep up? The recorder and the database with 1, 4 and 16 trials reporting.

    python -m benchmarks.recorder_scaling [--quick] [--db URL]

Tune's driver is one thread: trials' results arrive in a queue and each is handed to the
callbacks in turn. This benchmark rebuilds exactly that around the real `orchestrator.run.recorder.
Recorder` and real Tune `Trial` objects: N producer threads (the trials) put one result per
"epoch" into a queue, and one driver thread takes them and calls `Recorder.on_trial_result`,
which writes through db/writes.py. Results look like a ResNet-56 trial's: every metric, and 54
layer records every 10th epoch. Ray's own transport of results is not included.

Two figures per N:
- throughput: every result is waiting in the queue; results/s the driver records. Baseline: a
  bare writer (db.writes.record_result in a loop, no recorder, no queue), same results, same DB.
- lag: producers report every PACE_S seconds each (far faster than any real epoch); lag is the
  time from a result being produced to its rows being committed (p95 and max). Baseline: one
  bare write's median latency.
"""

from __future__ import annotations

import argparse
import json
import queue
import statistics
import tempfile
import threading
import time
import uuid
from pathlib import Path

from ray.tune.experiment import Trial

from benchmarks.common import result
from db import writes
from db.engine import get_engine
from orchestrator.run.recorder import Recorder

TRIALS = (1, 4, 16)
PACE_S = 0.1  # each trial reports 10 epochs a second in the lag runs
LAYERS, PROBE_EVERY = 54, 10  # a ResNet-56: 54 3x3 convs, probed every 10 epochs
# results per N in the saturated runs (split across the trials), epochs per trial in the paced ones
SIZES = {True: dict(results=240, paced_epochs=10, repeats=1),
         False: dict(results=1600, paced_epochs=50, repeats=3)}


def make_result(epoch: int) -> dict:
    """A result as a trial reports it (see the trainable's contract)."""
    r = {"epoch": epoch, "train_loss": 0.5, "train_err": 0.1 + 1 / epoch, "test_loss": 0.6,
         "test_err": 0.12 + 1 / epoch, "lr": 0.1, "epoch_time_s": 12.5, "images_per_s": 4000.0,
         "params_count": 853_018, "time_this_iter_s": 12.5, "training_iteration": epoch}
    if epoch % PROBE_EVERY == 0:
        r["layer_stats"] = [{"layer": k, "name": f"layer{k // 18 + 1}.{k % 18 // 2}.conv{k % 2 + 1}",
                             "stage": k // 18 + 1, "std": 1.0 / (1 + k), "mean": 0.0}
                            for k in range(LAYERS)]
    return r


def new_sweep(engine, n_trials: int, epochs: int) -> tuple[Recorder, list[Trial]]:
    sweep_id = writes.create_sweep(engine, name=f"bench-{uuid.uuid4().hex[:8]}",
                                   spec="name: bench\n", spec_hash="0" * 64)
    recorder = Recorder(engine, sweep_id, epochs=epochs, expected_trials=n_trials)
    trials = []
    for i in range(n_trials):
        config = {"dataset": "cifar10", "model": "cifar", "depth": 56, "block": "basic",
                  "shortcut": "A", "seed": i, "epochs": epochs}
        trial = Trial("train_trial", config=config, trial_id=f"bench_{i:05d}", stub=True)
        recorder.on_trial_start(0, trials, trial)
        trials.append(trial)
    return recorder, trials


def drive(engine, n_trials: int, epochs: int, pace_s: float) -> tuple[float, list[float]]:
    """Run N trials' results through one driver; (results per second, lag of each result in s).

    pace_s = 0: every result is queued before the driver starts (interleaved across trials as
    concurrent trials' results arrive), so the rate is the driver's capacity, free of producer
    threads competing for the GIL. pace_s > 0: one producer thread per trial reports every pace_s
    seconds, the trials' clocks staggered across the period as real trials' are.
    """
    recorder, trials = new_sweep(engine, n_trials, epochs)
    inbox: queue.SimpleQueue = queue.SimpleQueue()

    def produce(i: int, trial: Trial) -> None:
        start = time.perf_counter() + pace_s * i / n_trials
        for epoch in range(1, epochs + 1):
            time.sleep(max(0.0, start + epoch * pace_s - time.perf_counter()))
            inbox.put((trial, make_result(epoch), time.perf_counter()))

    producers = [threading.Thread(target=produce, args=(i, t)) for i, t in enumerate(trials)]
    if pace_s:
        for p in producers:
            p.start()
    else:
        for epoch in range(1, epochs + 1):
            for trial in trials:
                inbox.put((trial, make_result(epoch), 0.0))
    lags, total = [], n_trials * epochs
    t0 = time.perf_counter()
    for _ in range(total):  # the driver: one result at a time, as Tune's loop does
        trial, res, produced = inbox.get()
        recorder.on_trial_result(0, trials, trial, res)
        lags.append(time.perf_counter() - max(produced, t0))
    elapsed = time.perf_counter() - t0
    if pace_s:
        for p in producers:
            p.join()
    return total / elapsed, lags


def bare_writer(engine, n_trials: int, epochs: int) -> tuple[float, float]:
    """The same results written straight through db.writes: (results/s, median seconds a write)."""
    recorder, trials = new_sweep(engine, n_trials, epochs)
    ids = [recorder.trial_ids[t.trial_id] for t in trials]
    times = []
    t0 = time.perf_counter()
    for epoch in range(1, epochs + 1):
        res = make_result(epoch)
        metrics = {k: v for k, v in res.items() if k not in ("epoch", "layer_stats")}
        for tid in ids:
            w0 = time.perf_counter()
            writes.record_result(engine, tid, epoch, metrics, res.get("layer_stats"))
            times.append(time.perf_counter() - w0)
    return n_trials * epochs / (time.perf_counter() - t0), statistics.median(times)


def pct(values: list[float], q: float) -> float:
    return sorted(values)[min(len(values) - 1, int(q * len(values)))]


def measure(url: str, label: str, quick: bool) -> list[dict]:
    sizes = SIZES[quick]
    engine = get_engine(url)
    out = []
    try:
        for n in TRIALS:
            epochs = sizes["results"] // n  # the same number of results for every N
            # Medians of a few repeats: the machine's other load moves single runs a lot.
            bare = [bare_writer(engine, n, epochs) for _ in range(sizes["repeats"])]
            bare_rate = statistics.median(b[0] for b in bare)
            bare_latency = statistics.median(b[1] for b in bare)
            rate = statistics.median(drive(engine, n, epochs, pace_s=0.0)[0]
                                     for _ in range(sizes["repeats"]))
            out.append(result(f"{label}: {n} trial{'s' * (n > 1)}, results/s recorded (saturated)", rate,
                              "results/s", "bare writer", bare_rate,
                              note=f"{n} x {epochs} results, median of {sizes['repeats']}"))
            offered = n / PACE_S
            paced_rate, lags = drive(engine, n, sizes["paced_epochs"], pace_s=PACE_S)
            out.append(result(f"{label}: {n} trial{'s' * (n > 1)} at {offered:.0f} results/s offered, "
                              "lag p95", 1000 * pct(lags, 0.95), "ms", "one bare write",
                              1000 * bare_latency))
            out.append(result(f"{label}: {n} trial{'s' * (n > 1)} at {offered:.0f} results/s offered, "
                              "lag max", 1000 * max(lags), "ms", "one bare write",
                              1000 * bare_latency))
    finally:
        engine.dispose()
    return out


def run(quick: bool, pg_url: str | None = None) -> list[dict]:
    with tempfile.TemporaryDirectory(prefix="resweep-recbench-") as tmp:
        rows = measure(f"sqlite:///{Path(tmp) / 'bench.db'}", "SQLite", quick)
    if pg_url:
        rows += measure(pg_url, "PostgreSQL", quick)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer epochs")
    p.add_argument("--db", help="also measure this PostgreSQL database (sweeps are added to it)")
    p.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = p.parse_args()
    got = run(args.quick, args.db)
    if args.json:
        print(json.dumps(got, indent=1))
        return
    for r in got:
        print(f"{r['name']:<62} {r['value']:>9.1f} {r['unit']:<10} "
              f"{r['baseline']}: {r['baseline_value']:.1f}  ({r['ratio']:.2f}x)")


if __name__ == "__main__":
    main()
