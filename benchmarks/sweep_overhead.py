"""What does resweep add to a Ray Tune run? The same trials through `launch` and through a bare Tuner.

    python -m benchmarks.sweep_overhead [--quick] [--rounds N] [--json]

16 one-epoch trials of a tiny net (synthetic 8x8 images, ResNet-8 and plain-8, 8 seeds) run twice
on the same local Ray, in one process:
- launch: `orchestrator.run.launch.launch` on a sweep file - spec validation, a new SQLite database,
  the sweep's record, the recorder writing every result, the progress line, the summary;
- baseline: a bare `tune.Tuner` with the same trainable, param_space, resources and TuneConfig,
  no callbacks of ours.
Rounds alternate (bare, launch, bare, launch, ...) so drift in the machine's load hits both; the
figure is the ratio of the median wall times (expected <= 1.15). On a machine other work also
loads, wall times swing by tens of percent; the driver's CPU time (launch vs bare) is the steadier
view of what launch adds. The recorder's own cost is the median time `Recorder.on_trial_result`
takes per reported result (expected < 5 ms).

`--quick`: 2 trials, one round, no warm-up: checks that it works; the figures are rough.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import statistics
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from benchmarks.common import print_rows, result

TRIALS = 16


def sweep_text(name: str, trials: int) -> str:
    seeds = list(range(max(1, trials // 2)))
    return textwrap.dedent(f"""\
        name: {name}
        dataset: synthetic
        model: cifar
        synthetic: {{num_train: 256, num_test: 128, image_size: 8, channels: 3, num_classes: 4}}
        grid:
          depth: [8]
          shortcut: [none, A]
          seed: {seeds}
        train:
          epochs: 1
          batch_size: 64
          augment: false
        probes: {{every: 1}}
        resources: {{cpu: 1}}
        fault_tolerance: {{max_failures: 0, checkpoint_every: 1}}
        """)


def driver_cpu_s() -> float:
    """CPU seconds of this process (the driver: Tune's loop, our callbacks); the trials' workers
    are Ray's processes and not counted, so this is steady when other work loads the machine."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_launch(work: Path, name: str, trials: int) -> tuple[float, float, list[float]]:
    from rich.console import Console

    from orchestrator.run.launch import launch

    path = work / f"{name}.yaml"
    path.write_text(sweep_text(name, trials))
    t0, c0 = time.perf_counter(), driver_cpu_s()
    outcome = launch(path, db=f"sqlite:///{work / 'resweep.db'}", results=work / "results",
                     console=Console(file=io.StringIO()))
    seconds, cpu = time.perf_counter() - t0, driver_cpu_s() - c0
    assert outcome.status == "finished", outcome
    return seconds, cpu, outcome.recorder.seconds_per_result


def run_bare(work: Path, name: str, trials: int) -> tuple[float, float]:
    from ray import tune

    from orchestrator.run.launch import trainable
    from orchestrator.run.space import tune_space
    from orchestrator.run.spec import parse_spec

    t0, c0 = time.perf_counter(), driver_cpu_s()
    spec = parse_spec(sweep_text(name, trials))
    space = tune_space(spec)
    tuner = tune.Tuner(
        trainable(spec),
        param_space=space.param_space,
        tune_config=tune.TuneConfig(num_samples=space.num_samples, search_alg=space.search_alg,
                                    metric=space.metric, mode=space.mode, reuse_actors=False),
        run_config=tune.RunConfig(name=name, storage_path=str(work / "bare"), verbose=0,
                                  failure_config=tune.FailureConfig(max_failures=0),
                                  checkpoint_config=tune.CheckpointConfig(num_to_keep=2)),
    )
    grid = tuner.fit()
    seconds, cpu = time.perf_counter() - t0, driver_cpu_s() - c0
    assert len(grid) == trials and not grid.errors, grid.errors
    return seconds, cpu


def measure(trials: int, rounds: int) -> dict:
    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
    ray.init(include_dashboard=False, log_to_driver=False)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            launch_s, bare_s, launch_cpu, bare_cpu, per_result = [], [], [], [], []
            if rounds > 1:  # warm-up, not counted: the first Tune run in a process pays its imports
                run_bare(work, "warm-up", 2)
            for r in range(rounds):
                seconds, cpu = run_bare(work, f"bare-{r}", trials)
                bare_s.append(seconds)
                bare_cpu.append(cpu)
                seconds, cpu, recorded = run_launch(work, f"launch-{r}", trials)
                launch_s.append(seconds)
                launch_cpu.append(cpu)
                per_result += recorded
                print(f"round {r + 1}/{rounds}: bare {bare_s[-1]:.1f} s, launch {seconds:.1f} s", file=sys.stderr)
    finally:
        ray.shutdown()
    return {"trials": trials, "rounds": rounds, "launch_s": launch_s, "bare_s": bare_s,
            "launch_cpu_s": launch_cpu, "bare_cpu_s": bare_cpu, "recorder_ms": [s * 1000 for s in per_result]}


def rows(m: dict) -> list[dict]:
    launch_s, bare_s = statistics.median(m["launch_s"]), statistics.median(m["bare_s"])
    ms = sorted(m["recorder_ms"])
    p95 = ms[min(len(ms) - 1, int(0.95 * len(ms)))]
    return [
        result(f"launch: {m['trials']} one-epoch trials, wall time (median of {m['rounds']})", launch_s, "s",
               "bare Tuner, same trials", bare_s,
               note=f"launch {', '.join(f'{s:.1f}' for s in m['launch_s'])} s; "
                    f"bare {', '.join(f'{s:.1f}' for s in m['bare_s'])} s; expected ratio <= 1.15"),
        result("launch: driver CPU time (median)", statistics.median(m["launch_cpu_s"]), "s",
               "bare Tuner, same trials", statistics.median(m["bare_cpu_s"]),
               note="the driver process only (Tune's loop and our callbacks), so other load hardly moves it"),
        result("recorder: time per reported result (median)", statistics.median(ms), "ms",
               note=f"{len(ms)} results, p95 {p95:.2f} ms, max {ms[-1]:.2f} ms; SQLite; expected < 5 ms"),
    ]


def run(quick: bool) -> list[dict]:
    return rows(measure(2 if quick else TRIALS, 1 if quick else 3))


def main() -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.sweep_overhead", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="2 trials, one round")
    p.add_argument("--rounds", type=int, default=None, help="alternating rounds (default 3; quick 1)")
    p.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = p.parse_args()
    m = measure(2 if args.quick else TRIALS, args.rounds or (1 if args.quick else 3))
    out = rows(m)
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print_rows(out, digits=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
