"""End to end: sweeps/quickstart.yaml from `launch` to a finished `report`, and where time goes.

    python -m benchmarks.end_to_end [--quick] [--keep DIR]

Runs `python -m orchestrator launch sweeps/quickstart.yaml` (a fresh SQLite database, a local
Ray) and then `python -m orchestrator report quickstart`, each as its own process, as a user
would. Wall time is measured around them; CPU time is sampled from /proc over each process and
all its descendants (Ray's GCS, raylet and workers included).

Training time comes from the database: the sum of every trial's `epoch_time_s` (train + test
passes of each epoch, wall clock). The trials run `slots` at a time (CPUs / CPUs per trial), so
training alone would take sum(epoch_time_s) / slots of wall time: that is the baseline, and
everything above it is spent outside training: start-up (interpreter, imports, Ray, database,
Tuner, until the first trial starts), between epochs (worker start-up, loading data, probes,
checkpoints, scheduling), shut-down, and reporting. Recording (the driver's writes, timed by the
recorder) overlaps the trials and is shown on its own. On a loaded machine epoch_time_s grows
with the load, so the share outside training is then an underestimate.

`--quick` runs a reduced copy (ResNet-20 plain and residual, one seed, 2 epochs).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import yaml

from benchmarks.common import REPO, TreeCPU, env_without_ray_noise, result

SWEEP = REPO / "sweeps" / "quickstart.yaml"


def quick_copy(dest: Path) -> Path:
    spec = yaml.safe_load(SWEEP.read_text())
    spec["grid"].update(depth=[20], seed=[0])
    spec["train"].update(epochs=2, lr_milestones=[])
    spec["probes"] = {"every": 1}
    spec["fault_tolerance"] = {"max_failures": 0, "checkpoint_every": 2}
    path = dest / "quickstart-quick.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def timed(cmd: list[str], env: dict) -> tuple[float, float, float, float]:
    """Run cmd; (start epoch time, end epoch time, wall s, CPU s of its process tree)."""
    start, t0 = time.time(), time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=2)  # progress to stderr
    with TreeCPU(proc.pid) as cpu:
        code = proc.wait()
    wall = time.perf_counter() - t0
    if code != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited with status {code}")
    return start, time.time(), wall, cpu.cpu_s


def _child_launch(sweep: str, db: str, results: str, stats: str) -> None:
    """In the launch process: run the real launch, then save what only the driver knows."""
    from orchestrator.run import launch

    outcome = launch.launch(sweep, db=db, results=results)
    rec = outcome.recorder
    Path(stats).write_text(json.dumps({
        "status": outcome.status, "trials": outcome.trials,
        "recorder_s": sum(rec.seconds_per_result) if rec else None,
        "results": len(rec.seconds_per_result) if rec else 0,
    }))
    raise SystemExit(outcome.exit_code)


def measure(quick: bool, work: Path) -> dict:
    from db import queries
    from db.engine import get_engine
    from orchestrator.run.spec import load_spec

    sweep = quick_copy(work) if quick else SWEEP
    spec, _ = load_spec(sweep)
    db = f"sqlite:///{work / 'e2e.db'}"
    env = env_without_ray_noise()
    stats = work / "launch.json"
    launch_cmd = [sys.executable, "-m", "benchmarks.end_to_end", "--child-launch", str(sweep),
                  "--db", db, "--results", str(work / "results"), "--stats", str(stats)]
    t_start, t_launched, launch_wall, launch_cpu = timed(launch_cmd, env)
    report_cmd = [sys.executable, "-m", "orchestrator", "report", spec.name, "--db", db,
                  "--out", str(work / "report")]
    _, _, report_wall, report_cpu = timed(report_cmd, env)

    engine = get_engine(db, create=False)
    trials = queries.trials(engine, spec.name)
    times = queries.curves(engine, trials["trial_id"], ["epoch_time_s"])
    engine.dispose()
    first = min(_ts(t) for t in trials["started_at"])
    last = max(_ts(t) for t in trials["ended_at"])
    cpus = os.cpu_count() or 1
    slots = max(1, min(len(trials), int(cpus // spec.resources.cpu)))
    launch_stats = json.loads(stats.read_text())
    return {
        "name": spec.name, "trials": len(trials), "epochs": spec.train.epochs, "slots": slots,
        "cpus": cpus,
        "launch_wall": launch_wall, "report_wall": report_wall,
        "cpu": launch_cpu + report_cpu, "training_trial_s": float(times["value"].sum()),
        "startup": first - t_start, "trials_span": last - first, "shutdown": t_launched - last,
        "recording": launch_stats["recorder_s"], "results": launch_stats["results"],
    }


def _ts(value) -> float:
    return (value if isinstance(value, datetime) else datetime.fromisoformat(str(value))).timestamp()


def rows(m: dict) -> list[dict]:
    total = m["launch_wall"] + m["report_wall"]
    training = m["training_trial_s"] / m["slots"]
    what = f"{m['name']} ({m['trials']} trials x {m['epochs']} epochs, {m['slots']} at a time)"
    out = [
        result(f"{what}: launch to report, wall", total, "s",
               "training alone: sum(epoch_time_s) / slots", training,
               note=f"launch {m['launch_wall']:.1f} s + report {m['report_wall']:.1f} s"),
        result("end to end: CPU time (all processes)", m["cpu"], "s",
               f"wall x {m['cpus']} CPUs (what the machine had)", total * m["cpus"]),
        result("end to end: share outside training", 100 * (1 - training / total), "%"),
    ]
    # The parts add up to the whole run; the middle one is the trials' span less their epochs.
    for part, seconds in (("start-up (to first trial start)", m["startup"]),
                          ("training (sum(epoch_time_s) / slots)", training),
                          ("between epochs: worker start, data, probes, checkpoints, scheduling",
                           m["trials_span"] - training),
                          ("shut-down (last trial end to exit)", m["shutdown"]),
                          ("report command", m["report_wall"])):
        out.append(result(f"end to end: {part}", seconds, "s", "whole run", total))
    if m["recording"] is not None:
        out.append(result(f"end to end: recording ({m['results']} results, driver writes)",
                          m["recording"], "s", "whole run", total))
    return out


def run(quick: bool, keep: Path | None = None) -> list[dict]:
    work = Path(tempfile.mkdtemp(prefix="resweep-e2e-"))
    try:
        return rows(measure(quick, work))
    finally:
        if keep:
            shutil.copytree(work, keep, dirs_exist_ok=True)
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="a reduced quickstart (2 trials x 2 epochs)")
    p.add_argument("--keep", type=Path, help="copy the database, results and report here")
    p.add_argument("--json", action="store_true", help="print the rows as JSON")
    p.add_argument("--child-launch", help=argparse.SUPPRESS)
    p.add_argument("--db", help=argparse.SUPPRESS)
    p.add_argument("--results", help=argparse.SUPPRESS)
    p.add_argument("--stats", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child_launch:
        _child_launch(args.child_launch, args.db, args.results, args.stats)
    got = run(args.quick, args.keep)
    if args.json:
        print(json.dumps(got, indent=1))
        return
    for r in got:
        base = f"  vs {r['baseline']}: {r['baseline_value']:.1f} ({r['ratio']:.2f}x)" if r["baseline"] else ""
        print(f"{r['name']:<70} {r['value']:>8.1f} {r['unit']}{base}")


if __name__ == "__main__":
    main()
