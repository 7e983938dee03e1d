"""A trial's fixed cost: `launch` against a bare hand-written script training the same grid points.

    python -m benchmarks.trial_overhead [--quick] [--only overhead,quickstart,asha] [--json] [--keep DIR]

Three measurements, each beside its baseline in the same run:
- overhead: 12 trials x 3 epochs of ResNet-20 on digits (plain and A, 6 seeds), two at a time,
  through `python -m orchestrator launch`, against `python -m benchmarks.trial_overhead bare`, a
  plain PyTorch loop training the same 12 grid points in two processes (6 each, one after another,
  the same model code, batch size and learning rate; train and test pass each epoch). Goal: at
  most 1.3x. Also the fixed cost per trial: the wall time a slot spends on a trial (from the slot
  being free, at the previous trial's end or the sweep's registration, to this trial's end) minus
  its epochs' `epoch_time_s`, median over trials (goal: at most 1 s), and a timeline of where
  the rest goes (from benchmarks/trial_hooks.py's timeline of each trial's stages and the recorder's timestamps).
- quickstart: sweeps/quickstart.yaml through `launch` against the bare script on its 8 grid
  points and 15 epochs. Goal: at most 1.25x.
- asha: an Optuna + ASHA search of 32 trials on digits (ResNet-20, grace period 1, at most 4
  epochs): wall time against the sum of the trials' epoch times divided by the slots (goal: at
  most 1.3x).
- warm: the overhead sweep again, joining a local Ray started before it (`ray start --head`;
  `launch --address`), against the bare script: the overhead left when Ray's start and shutdown
  are paid once for many sweeps; asha_warm: the ASHA search the same way.

Every process is started as a user would (its own interpreter, a fresh SQLite database, a local
Ray); wall time is taken around it. The bare script loads digits as a hand-written one would
(scikit-learn's split, in each process); launch's workers read the split that the first sweep on
digits keeps in the data directory (made before the runs if missing). The machine's load
average goes with every figure: on a machine other work loads, both sides slow down, but not
always alike.

`--quick`: 4 trials x 2 epochs, the quickstart at 4 trials x 2 epochs, ASHA with 6 trials; through
`python -m benchmarks --quick` (the runner's `run(quick)`), only overhead and asha_warm.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import datetime, timezone
from pathlib import Path

import yaml

from benchmarks import trial_hooks
from benchmarks.common import (
    REPO,
    env_without_ray_noise,
    parent_pids,
    process_tree,
    result,
)

QUICKSTART = REPO / "sweeps" / "quickstart.yaml"
SLOTS = 2


def overhead_spec(name: str, trials: int, epochs: int) -> dict:
    return {
        "name": name, "dataset": "digits", "model": "cifar",
        "grid": {"depth": [20], "block": ["basic"], "shortcut": ["none", "A"], "seed": list(range(trials // 2))},
        "train": {"epochs": epochs, "batch_size": 128, "lr": 0.05, "momentum": 0.9, "weight_decay": 1.0e-4,
                  "lr_milestones": [], "augment": False},
        "resources": {"cpu": 1, "gpu": 0},
        "fault_tolerance": {"max_failures": 1, "checkpoint_every": 1},
    }  # fmt: skip


def quickstart_spec(quick: bool) -> dict:
    spec = yaml.safe_load(QUICKSTART.read_text())
    if quick:
        spec["grid"].update(depth=[20], seed=[0, 1])
        spec["train"].update(epochs=2, lr_milestones=[])
    return spec


def asha_spec(name: str, trials: int, max_epochs: int) -> dict:
    spec = overhead_spec(name, 2, max_epochs)
    spec["grid"] = {"depth": [20], "block": ["basic"], "shortcut": ["none", "A"], "seed": [0]}
    spec["search"] = {"algorithm": "optuna", "num_samples": trials, "metric": "test_err", "mode": "min",
                      "space": {"lr": {"log_uniform": [0.01, 0.3]}}}
    spec["scheduler"] = {"type": "asha", "grace_period": 1}
    return spec


def grid_points(spec: dict) -> list[dict]:
    """The grid's trial configs, as the bare script needs them (depth, shortcut, seed)."""
    g = spec["grid"]
    return [{"depth": d, "block": b, "shortcut": s, "seed": seed}
            for d in g["depth"] for b in g.get("block", ["basic"]) for s in g["shortcut"] for seed in g["seed"]]


# ---- the bare script -----------------------------------------------------------------------------


def _bare_worker(points: list[dict], train: dict) -> list[float]:
    """One process of the bare script: load digits once, train each point with a plain loop."""
    import torch
    import torch.nn.functional as F

    from trainers.data import load_data
    from trainers.models import build_model

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as fresh:  # as a hand-written script: scikit-learn's split, made here
        data = load_data("digits", fresh, augment=False)
    epoch_times = []
    for p in points:
        torch.manual_seed(p["seed"])
        model = build_model("cifar", p["depth"], p["block"], p["shortcut"], 10, in_channels=1)
        opt = torch.optim.SGD(model.parameters(), lr=train["lr"], momentum=train["momentum"],
                              weight_decay=train["weight_decay"])
        x, y, bs = data.train.x, data.train.y, train["batch_size"]
        for _ in range(train["epochs"]):
            t0 = time.perf_counter()
            model.train()
            order = torch.randperm(len(y))
            for i in range(0, len(y), bs):
                idx = order[i:i + bs]
                loss = F.cross_entropy(model(x[idx]), y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            model.eval()
            with torch.no_grad():
                wrong = sum((model(data.test.x[i:i + 512]).argmax(1) != data.test.y[i:i + 512]).sum().item()
                            for i in range(0, len(data.test.y), 512))
            epoch_times.append(time.perf_counter() - t0)
            assert 0 <= wrong <= len(data.test.y)
    return epoch_times


def bare_main(spec_path: Path) -> None:
    import multiprocessing as mp

    spec = yaml.safe_load(spec_path.read_text())
    points = grid_points(spec)
    shares = [points[i::SLOTS] for i in range(SLOTS)]
    with mp.get_context("spawn").Pool(SLOTS) as pool:
        times = pool.starmap(_bare_worker, [(share, spec["train"]) for share in shares])
    print(json.dumps({"epoch_time_s": sum(sum(t) for t in times)}))


# ---- running and reading -------------------------------------------------------------------------


def _load() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def run_bare(work: Path, spec: dict) -> dict:
    path = work / f"bare-{spec['name']}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    load0, t0 = _load(), time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "benchmarks.trial_overhead", "bare", str(path)], cwd=REPO,
                         env=env_without_ray_noise(), check=True, capture_output=True, text=True).stdout
    wall = time.perf_counter() - t0
    return {"wall_s": wall, "load": f"{load0} -> {_load()}", **json.loads(out.strip().splitlines()[-1])}


def run_launch(work: Path, spec: dict, address: str | None = None) -> dict:
    name = spec["name"]
    path, db = work / f"{name}.yaml", work / f"{name}.db"
    timeline = work / f"timeline-{name}"
    timeline.mkdir()
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    env = dict(env_without_ray_noise(), RESWEEP_TIMELINE_DIR=str(timeline), RESWEEP_TRIAL_HOOK=trial_hooks.TIMELINE)
    load0, start, t0 = _load(), time.time(), time.perf_counter()
    joining = ["--address", address] if address else []
    subprocess.run([sys.executable, "-m", "orchestrator", "launch", str(path), "--db", f"sqlite:///{db}",
                    "--results", str(work / "results"), *joining], cwd=REPO, env=env, check=True,
                   stdout=subprocess.DEVNULL)  # fmt: skip
    wall, end = time.perf_counter() - t0, time.time()
    return {"wall_s": wall, "start": start, "end": end, "load": f"{load0} -> {_load()}",
            **read_run(db, timeline)}


def _ts(text: str | None) -> float | None:
    if text is None:
        return None
    t = datetime.fromisoformat(text)
    return (t if t.tzinfo else t.replace(tzinfo=timezone.utc)).timestamp()


def read_run(db: Path, timeline: Path) -> dict:
    """Per trial: driver start/end, epoch times; and the workers' marks."""
    con = sqlite3.connect(db)
    created = _ts(con.execute("SELECT created_at FROM sweeps").fetchone()[0])
    trials = {key: {"start": _ts(s), "end": _ts(e), "epochs": []}
              for key, s, e in con.execute("SELECT trial_key, started_at, ended_at FROM trials")}
    keys = dict(con.execute("SELECT id, trial_key FROM trials"))
    for tid, value in con.execute("SELECT trial_id, value FROM metrics WHERE name = 'epoch_time_s' ORDER BY epoch"):
        trials[keys[tid]]["epochs"].append(value)
    con.close()
    marks: dict[str, list[dict]] = {}
    for f in timeline.glob("*.jsonl"):
        for line in f.read_text().splitlines():
            m = json.loads(line)
            marks.setdefault(m["trial"], []).append(m)
    return {"created": created, "trials": trials, "marks": marks}


def slot_costs(run: dict) -> list[dict]:
    """Each trial's slot time (slot free -> trial end) and its phases, slots assigned greedily."""
    trials = sorted(run["trials"].items(), key=lambda kv: kv[1]["start"])
    free = [run["created"]] * SLOTS
    out = []
    for key, t in trials:
        slot = min(range(SLOTS), key=lambda i: free[i])
        slot_free = min(free[slot], t["start"])
        m = sorted(run["marks"].get(key, []), key=lambda m: m["t"])
        at = {e["event"]: e["t"] for e in m if e["event"] not in ("epoch", "reported")}
        epochs = [e for e in m if e["event"] == "epoch"]
        reported = [e for e in m if e["event"] == "reported"]
        train = sum(t["epochs"])
        row = {"trial": key, "slot_s": t["end"] - slot_free, "train_s": train,
               "fixed_s": t["end"] - slot_free - train,
               "new_process": any(e.get("process_start") and e["process_start"] > slot_free - 0.5
                                  for e in m if e["event"] == "entry")}
        if "entry" in at and "model" in at and epochs:
            # Under Tune the last epoch's report never returns (trainers.trainable.TuneReporter):
            # it lasts until Tune ends the trial.
            report_end = {r["epoch"]: r["t"] for r in reported}
            reports = sum(report_end.get(e["epoch"], t["end"]) - e["t"] for e in epochs)
            last_end = report_end.get(epochs[-1]["epoch"], t["end"])
            row["phases"] = {
                "slot free -> trial started (actor, Tune)": t["start"] - slot_free,
                "started -> trainable entered (imports)": at["entry"] - t["start"],
                "data loaded": at["data"] - at["entry"],
                "model, loop, checkpoint restore": at["model"] - at["data"],
                "reports and checkpoints (the last: until Tune ends the trial)": reports,
                "between epochs (not training)": (last_end - at["model"]) - train - reports,
                "last result -> trial ended (Tune)": t["end"] - last_end,
            }
        out.append(row)
        free[slot] = t["end"]
    return out


def phase_medians(costs: list[dict]) -> dict[str, float]:
    phased = [c["phases"] for c in costs if "phases" in c]
    return {k: statistics.median(p[k] for p in phased) for k in (phased[0] if phased else {})}


# ---- the three measurements ----------------------------------------------------------------------


def measure_overhead(work: Path, quick: bool) -> tuple[list[dict], dict]:
    trials, epochs = (4, 2) if quick else (12, 3)
    spec = overhead_spec("overhead", trials, epochs)
    bare = run_bare(work, spec)
    launched = run_launch(work, spec)
    costs = slot_costs(launched)
    fixed = statistics.median(c["fixed_s"] for c in costs)
    train = sum(c["train_s"] for c in costs)
    phases = phase_medians(costs)
    rows = [
        result(f"overhead: {trials} trials x {epochs} epochs (digits, ResNet-20, 2 at a time): launch, wall",
               launched["wall_s"], "s", "bare script, same grid points in 2 processes", bare["wall_s"],
               note=f"goal <= 1.3x; load average {launched['load']} (launch), {bare['load']} (bare)"),
        result("overhead: fixed cost per trial (slot time minus epoch times), median", fixed, "s",
               "its epochs' time, median", statistics.median(c["train_s"] for c in costs),
               note=f"goal <= 1 s; max {max(c['fixed_s'] for c in costs):.2f} s; "
                    f"{sum(c['new_process'] for c in costs)} of {len(costs)} trials started a new worker"),
        result("overhead: training, sum(epoch_time_s) / slots", train / SLOTS, "s",
               "bare script's own epochs / slots", bare["epoch_time_s"] / SLOTS),
    ]
    rows += [result(f"overhead timeline (median per trial): {k}", v, "s") for k, v in phases.items()]
    return rows, {"bare": bare, "launch": {k: v for k, v in launched.items() if k != "marks"}, "costs": costs}


def measure_quickstart(work: Path, quick: bool) -> tuple[list[dict], dict]:
    spec = quickstart_spec(quick)
    bare = run_bare(work, spec)
    launched = run_launch(work, spec)
    costs = slot_costs(launched)
    n = len(costs)
    return [
        result(f"quickstart ({n} trials x {spec['train']['epochs']} epochs): launch, wall", launched["wall_s"], "s",
               "bare script, same grid points in 2 processes", bare["wall_s"],
               note=f"goal <= 1.25x; load average {launched['load']} (launch), {bare['load']} (bare)"),
        result("quickstart: fixed cost per trial, median", statistics.median(c["fixed_s"] for c in costs), "s"),
    ], {"bare": bare, "costs": costs}


def measure_asha(work: Path, quick: bool) -> tuple[list[dict], dict]:
    trials = 6 if quick else 32
    spec = asha_spec("asha", trials, 4)
    launched = run_launch(work, spec)
    costs = slot_costs(launched)
    train = sum(c["train_s"] for c in costs)
    epochs = sum(len(t["epochs"]) for t in launched["trials"].values())
    return [
        result(f"asha: Optuna + ASHA, {trials} trials (grace 1, <= 4 epochs): launch, wall", launched["wall_s"], "s",
               "sum(epoch_time_s) / slots", train / SLOTS,
               note=f"goal <= 1.3x; {epochs} epochs in all; load average {launched['load']}"),
        result("asha: fixed cost per trial, median", statistics.median(c["fixed_s"] for c in costs), "s"),
    ], {"costs": costs}


@contextmanager
def running_ray() -> Iterator[str]:
    """A local Ray started before the sweep (`ray start --head`, 2 CPUs, its own temp dir and port,
    no token: nothing else can reach this machine), as a user keeps one for many sweeps; its
    address. Ended by killing its processes (never `ray stop`, which ends every Ray here)."""
    temp = Path(tempfile.mkdtemp(prefix="rwwarm", dir="/tmp"))  # short: Ray's socket paths are capped
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = dict(env_without_ray_noise(), RAY_AUTH_MODE="disabled")
    subprocess.run(["ray", "start", "--head", "--num-cpus", str(SLOTS), "--port", str(port), "--temp-dir", str(temp),
                    "--include-dashboard", "false", "--disable-usage-stats"], env=env, check=True,
                   capture_output=True)  # fmt: skip
    try:
        yield f"127.0.0.1:{port}"
    finally:
        # with their children: the raylet's dashboard and runtime-env agents rename themselves
        # (ray::DashboardAgent), so no mark is left in their command lines to find them by
        for pid in process_tree(_processes_naming(str(temp), f":{port}"), parent_pids()):
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(temp, ignore_errors=True)


def _processes_naming(*marks: str) -> list[int]:
    """Pids whose command line has an argument containing (or ending in, for ':PORT') a mark."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            args = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:  # gone meanwhile
            continue
        if any(m in a if not m.startswith(":") else a.endswith(m) for a in args for m in marks):
            found.append(int(entry.name))
    return found


def measure_warm(work: Path, quick: bool) -> tuple[list[dict], dict]:
    """The overhead sweep joining a Ray that is already running (`launch --address`): what is left
    of the overhead once Ray's own start and shutdown are paid once for many sweeps."""
    trials, epochs = (4, 2) if quick else (12, 3)
    spec = overhead_spec("overhead_warm", trials, epochs)
    bare = run_bare(work, spec)
    with running_ray() as address:
        launched = run_launch(work, spec, address=address)
    costs = slot_costs(launched)
    return [
        result("warm: the overhead sweep joining a running Ray (launch --address): launch, wall", launched["wall_s"],
               "s", "bare script, same grid points in 2 processes", bare["wall_s"],
               note=f"goal (overhead's) <= 1.3x; load average {launched['load']} (launch), {bare['load']} (bare)"),
        result("warm: fixed cost per trial, median", statistics.median(c["fixed_s"] for c in costs), "s"),
    ], {"bare": bare, "launch": {k: v for k, v in launched.items() if k != "marks"}, "costs": costs}


def measure_asha_warm(work: Path, quick: bool) -> tuple[list[dict], dict]:
    """The Optuna + ASHA search joining a Ray that is already running (`launch --address`)."""
    trials = 6 if quick else 32
    with running_ray() as address:
        launched = run_launch(work, asha_spec("asha_warm", trials, 4), address=address)
    costs = slot_costs(launched)
    return [
        result(f"asha_warm: Optuna + ASHA, {trials} trials, joining a running Ray: launch, wall", launched["wall_s"],
               "s", "sum(epoch_time_s) / slots", sum(c["train_s"] for c in costs) / SLOTS,
               note=f"goal (asha's) <= 1.3x; load average {launched['load']}"),
        result("asha_warm: fixed cost per trial, median", statistics.median(c["fixed_s"] for c in costs), "s"),
    ], {"costs": costs}


MEASURES = {"overhead": measure_overhead, "quickstart": measure_quickstart, "asha": measure_asha, "warm": measure_warm,
            "asha_warm": measure_asha_warm}


def keep_digits_split() -> None:
    """The digits split kept in the default data_dir, as after a user's first sweep on digits
    (trainers.data._load_digits): launch's workers read it; the bare script makes its own."""
    from trainers.data import load_data

    load_data("digits", augment=False)


def measure(quick: bool, only: list[str], keep: Path | None = None) -> tuple[list[dict], dict]:
    rows, detail = [], {}
    keep_digits_split()
    with tempfile.TemporaryDirectory() as tmp:
        work = keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        for name in only:
            print(f"trial_overhead: {name} (load average {_load()})", file=sys.stderr, flush=True)
            got, detail[name] = MEASURES[name](work, quick)
            rows += got
            for r in got:
                print(f"  {r['name']}: {r['value']:.3f} {r['unit']}"
                      + (f" vs {r['baseline_value']:.3f} ({r['baseline']}): {r['ratio']:.2f}x" if r["ratio"] else ""),
                      file=sys.stderr, flush=True)
    return rows, detail


# --quick (the suite's check that the benchmark still runs): the plain launch beside the bare
# script, and the ASHA search joining a running Ray. quickstart, warm and asha are the same code
# with another sweep file or without `--address`; the full run measures all five.
QUICK_MEASURES = ("overhead", "asha_warm")


def run(quick: bool) -> list[dict]:
    return measure(quick, list(QUICK_MEASURES if quick else MEASURES))[0]


def main() -> int:
    if len(sys.argv) == 3 and sys.argv[1] == "bare":
        bare_main(Path(sys.argv[2]))
        return 0
    p = argparse.ArgumentParser(prog="python -m benchmarks.trial_overhead", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--only", default=",".join(MEASURES))
    p.add_argument("--json", action="store_true", help="print the rows as JSON")
    p.add_argument("--detail", type=Path, default=None, help="write per-trial figures and timelines here")
    p.add_argument("--keep", type=Path, default=None, help="keep the databases and results in DIR")
    args = p.parse_args()
    rows, detail = measure(args.quick, [n for n in args.only.split(",") if n], args.keep)
    if args.detail:
        args.detail.write_text(json.dumps(detail, indent=1, default=str))
    if args.json:
        print(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
