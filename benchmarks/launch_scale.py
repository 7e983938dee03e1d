"""Does anything in a launch grow with the number of trials? Many short trials through `launch`.

    python -m benchmarks.launch_scale [--quick] [--trials N] [--samples N] [--only grid|search] [--json]

Two sweeps of ResNet-14 (`model: cifar`, depth 14) on scikit-learn's digits, two trials at a time
(one CPU each), each through `orchestrator.run.launch.launch` as the command line runs it (its own
local Ray, a new SQLite database, the recorder, the progress line):
- grid: 1,000 one-epoch trials (1,000 seeds). Its floor is what the trials themselves cost: the
  sum of their epochs' own times (`epoch_time_s`: training and evaluation) over the two slots,
  plus Ray's start (`start_ray`, timed in the driver). Expected: wall <= 1.2x the floor.
- search: Optuna (lr, weight decay) + ASHA (grace period 1, up to 4 epochs), 500 samples. The
  searcher's own time per suggestion (`OptunaSearch.suggest`, timed in the driver) is printed at
  trial 50 and at the last trial (the mean over the ten suggestions up to each).
For both, growth: the run is cut where half of its trials have ended (the driver's
`on_trial_complete`); each half's wall time (from the first reported epoch, so Ray's start and
the workers' first imports are in neither) is divided by its own floor (its epochs' own times
over the slots), and the second half's ratio is compared with the first's. Expected: <= 1.2,
i.e. nothing that costs more per trial as the count grows. (Dividing by the half's own epochs
takes out what the machine's load does to the epochs; ASHA's trials, which it stops earlier as
its rungs fill, still pay their fixed cost each, so the search's ratio leans above 1.)
The seconds each half took, and what Tune's experiment-state saves cost in each, are in the note.
The driver's peak memory is this process's peak RSS (ru_maxrss) after the grid: expected <= 1.5 GB.

`--stages` (with the grid): where each trial's cost to its slot goes, stage by stage, median over
the trials: the worker's stages from the trial hook's timeline (benchmarks/trial_hooks.py, which
costs the worker a few file appends a trial) and the driver's from Tune's own methods and the
recorder's callbacks, timed in the driver; each trial is followed by the next one on the same
worker.

`--quick`: 20 grid trials and 20 search samples: checks that it works; the figures are rough.
"""

from __future__ import annotations

import argparse
import io
import itertools
import json
import os
import resource
import statistics
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

from benchmarks.common import print_rows, result

GRID_TRIALS = 1000
SEARCH_SAMPLES = 500
QUICK = 20
SLOTS = 2  # trials at a time: one CPU each on a 2-core machine


def grid_text(name: str, trials: int) -> str:
    return textwrap.dedent(f"""\
        name: {name}
        dataset: digits
        model: cifar
        grid:
          depth: [14]
          block: [basic]
          shortcut: [A]
          seed: {list(range(trials))}
        train:
          epochs: 1
          batch_size: 128
          lr: 0.05
          augment: false
        resources: {{cpu: 1, gpu: 0}}
        """)


def search_text(name: str, samples: int) -> str:
    return textwrap.dedent(f"""\
        name: {name}
        dataset: digits
        model: cifar
        grid:
          depth: [14]
          block: [basic]
          shortcut: [A]
          seed: [0]
        train:
          epochs: 4
          batch_size: 128
          lr: 0.05
          augment: false
        resources: {{cpu: 1, gpu: 0}}
        search:
          algorithm: optuna
          num_samples: {samples}
          metric: test_err
          mode: min
          space:
            lr: {{log_uniform: [0.005, 0.5]}}
            weight_decay: {{log_uniform: [1.0e-5, 1.0e-3]}}
        scheduler: {{type: asha, grace_period: 1}}
        """)


class Watch:
    """What the driver saw, timed in the driver: each reported epoch (when, its epoch_time_s),
    each trial's end, Ray's start, and each suggestion of the searcher."""

    def __init__(self) -> None:
        self.results: list[tuple[float, float]] = []  # (monotonic time, epoch_time_s)
        self.ends: list[float] = []
        self.ray_start_s = 0.0
        self.suggest_s: list[float] = []  # per suggestion that gave a config
        self.saves: list[tuple[float, float]] = []  # Tune's experiment state saves: (when, seconds)
        self.status_writes: list[float] = []  # seconds of each db.writes.set_trial_status, in order
        self.launched = self.returned = 0.0  # when launch() was called and when it returned


@contextmanager
def watched() -> Iterator[Watch]:
    """Wrap the driver's hooks (the recorder's, Ray's start, Optuna's suggest) to time them."""
    from ray.tune.execution.tune_controller import TuneController
    from ray.tune.search.optuna import OptunaSearch

    from db import writes
    from orchestrator.run import ray_session
    from orchestrator.run.recorder import Recorder

    w = Watch()
    saved = (Recorder.on_trial_result, Recorder.on_trial_complete, ray_session.start_ray, OptunaSearch.suggest,
             TuneController.save_to_dir, writes.set_trial_status)
    on_result, on_complete, start_ray, suggest, save, set_status = saved

    def result_hook(self, iteration, trials, trial, result, **info):
        w.results.append((time.monotonic(), float(result.get("epoch_time_s", 0.0))))
        return on_result(self, iteration, trials, trial, result, **info)

    def complete_hook(self, iteration, trials, trial, **info):
        w.ends.append(time.monotonic())
        return on_complete(self, iteration, trials, trial, **info)

    def start_hook(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return start_ray(*args, **kwargs)
        finally:
            w.ray_start_s += time.perf_counter() - t0

    def suggest_hook(self, trial_id):
        t0 = time.perf_counter()
        config = suggest(self, trial_id)
        if isinstance(config, dict):
            w.suggest_s.append(time.perf_counter() - t0)
        return config

    def save_hook(self, *args, **kwargs):
        t0 = time.perf_counter()
        try:
            return save(self, *args, **kwargs)
        finally:
            w.saves.append((time.monotonic(), time.perf_counter() - t0))

    def status_hook(*args, **kwargs):  # the outbox's write of a trial's status (its end among them)
        t0 = time.perf_counter()
        try:
            return set_status(*args, **kwargs)
        finally:
            w.status_writes.append(time.perf_counter() - t0)

    Recorder.on_trial_result, Recorder.on_trial_complete = result_hook, complete_hook
    ray_session.start_ray, OptunaSearch.suggest, TuneController.save_to_dir = start_hook, suggest_hook, save_hook
    writes.set_trial_status = status_hook
    try:
        yield w
    finally:
        (Recorder.on_trial_result, Recorder.on_trial_complete, ray_session.start_ray, OptunaSearch.suggest,
         TuneController.save_to_dir, writes.set_trial_status) = saved


# Tune's methods a trial goes through in the driver (Ray 2.60's TuneController), and the
# recorder's callbacks; each is stamped when it is called and when it returns.
TUNE_STAGES = ("_schedule_trial_reset", "_on_trial_reset", "_schedule_trial_train", "_on_training_result",
               "_schedule_trial_save", "_on_saving_result", "stop_trial")
RECORDER_STAGES = ("on_trial_start", "on_trial_result", "on_checkpoint", "on_trial_complete")


@contextmanager
def staged(timeline: Path) -> Iterator[list[tuple[float, str, str]]]:
    """For the block: the trial hook's timeline on (into `timeline`, for the workers Ray starts in
    it), and (time, trial id, "method>" or "method<") of each call of TUNE_STAGES and
    RECORDER_STAGES ("recorder.<callback>") in the driver."""
    import ray
    from ray.tune.execution.tune_controller import TuneController

    from benchmarks import trial_hooks
    from orchestrator.run.recorder import Recorder

    if ray.is_initialized():  # launch would join it, and its workers lack the hook's variables
        raise RuntimeError("stages need the local Ray that launch starts; Ray already runs in this process")
    stamps: list[tuple[float, str, str]] = []

    def stamped(method, label: str, trial_at: int):
        def call(self, *args, **kwargs):
            trial = kwargs.get("trial", args[trial_at] if len(args) > trial_at else None)
            key = getattr(trial, "trial_id", "")
            stamps.append((time.time(), key, label + ">"))
            try:
                return method(self, *args, **kwargs)
            finally:
                stamps.append((time.time(), key, label + "<"))

        return call

    saved = [(TuneController, name, getattr(TuneController, name)) for name in TUNE_STAGES]
    saved += [(Recorder, name, getattr(Recorder, name)) for name in RECORDER_STAGES]
    env = {trial_hooks.HOOK_ENV: trial_hooks.TIMELINE, trial_hooks.TIMELINE_ENV: str(timeline)}
    before = {name: os.environ.get(name) for name in env}
    for cls, name, method in saved:
        # Tune's take the trial first; a callback's is its third argument (iteration, trials, trial).
        setattr(cls, name, stamped(method, name if cls is TuneController else f"recorder.{name}",
                                   0 if cls is TuneController else 2))
    os.environ.update(env)
    try:
        yield stamps
    finally:
        for cls, name, method in saved:
            setattr(cls, name, method)
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


# Each stage of a trial's cost to its slot: (name, from, to). A mark is a worker's trial hook
# event ("entry", "data", "model", "epoch") or a driver stamp; "next:" is the next trial on the
# same worker; "-epoch" takes the trial's epoch_time_s off.
STAGES = (
    ("worker: trial entered -> its data ready (threads, seeds, the cached dataset)", "entry", "data"),
    ("worker: model, optimizer and loop built", "data", "model"),
    ("worker: after the epoch, its result and checkpoint state", "model", "epoch-epoch"),
    ("worker -> driver: checkpoint written and persisted, result sent", "epoch", "_on_training_result>"),
    ("driver: result recorded (recorder, Tune's files) -> checkpoint asked", "_on_training_result>",
     "_schedule_trial_save>"),
    ("Tune's save of the checkpoint (a round trip to the worker)", "_schedule_trial_save>", "_on_saving_result>"),
    ("driver: checkpoint registered -> trial ended", "_on_saving_result>", "stop_trial>"),
    ("driver: trial ended (scheduler, searcher, recorder)", "stop_trial>", "stop_trial<"),
    ("driver: -> next trial's reset asked", "stop_trial<", "next:_schedule_trial_reset>"),
    ("Tune's reset of the reused worker (a round trip)", "next:_schedule_trial_reset>", "next:_on_trial_reset>"),
    ("driver: next trial started (recorder, Tune's files) -> its training asked", "next:_on_trial_reset>",
     "next:_schedule_trial_train>"),
    ("train asked -> next trial entered in the worker", "next:_schedule_trial_train>", "next:entry"),
    ("in all: trial entered -> next trial entered, less the epoch", "entry", "next:entry-epoch"),
)


def stage_times(stamps: list[tuple[float, str, str]], timeline: Path) -> dict[str, float]:
    """Median seconds of each of STAGES over the trials followed by another on their worker, and
    of the recorder's callbacks together ("driver: of which the recorder's callbacks")."""
    marks: dict[str, dict[str, float]] = {}
    pids: dict[str, int] = {}
    for f in timeline.glob("*.jsonl"):
        for line in f.read_text().splitlines():
            m = json.loads(line)
            at = marks.setdefault(m["trial"], {})
            at.setdefault(m["event"], m["t"])
            if m["event"] == "epoch":
                at["epoch_time_s"] = m["epoch_time_s"]
            pids[m["trial"]] = m["pid"]
    recorder: dict[str, float] = {}
    for t, key, label in stamps:
        at = marks.setdefault(key, {})
        at.setdefault(label, t)
        if label.startswith("recorder.") and label.endswith("<"):
            recorder[key] = recorder.get(key, 0.0) + t - at[label[:-1] + ">"]
            del at[label[:-1] + ">"], at[label]  # a callback may run again (a trial's restart)
    by_worker: dict[int, list[str]] = {}
    for key in sorted((k for k in pids if "entry" in marks[k]), key=lambda k: marks[k]["entry"]):
        by_worker.setdefault(pids[key], []).append(key)
    spans: dict[str, list[float]] = {name: [] for name, _, _ in STAGES}
    spans["driver: of which the recorder's callbacks"] = []
    for keys in by_worker.values():
        for key, following in itertools.pairwise(keys):
            for name, start, end in STAGES:
                a, b = _when(marks[key], marks[following], start), _when(marks[key], marks[following], end)
                if a is not None and b is not None:
                    spans[name].append(b - a)
            if key in recorder:
                spans["driver: of which the recorder's callbacks"].append(recorder[key])
    return {name: statistics.median(v) for name, v in spans.items() if v}


def _when(at: dict[str, float], after: dict[str, float], mark: str) -> float | None:
    """The time of one of STAGES' marks of a trial (`at`) and the next on its worker (`after`)."""
    source = after if mark.startswith("next:") else at
    mark = mark.removeprefix("next:")
    less = at.get("epoch_time_s", 0.0) if mark.endswith("-epoch") else 0.0
    value = source.get(mark.removesuffix("-epoch"))
    return None if value is None else value - less


def run_launch(work: Path, name: str, text: str) -> tuple[float, Watch, object]:
    from rich.console import Console

    from orchestrator.run.launch import launch

    path = work / f"{name}.yaml"
    path.write_text(text)
    with watched() as w:
        w.launched = time.monotonic()
        outcome = launch(path, db=f"sqlite:///{work / (name + '.db')}", results=work / "results",
                         console=Console(file=io.StringIO()))
        w.returned = time.monotonic()
        wall = w.returned - w.launched
    assert outcome.status == "finished", outcome
    return wall, w, outcome


def growth(w: Watch) -> dict:
    """Each half of the run (cut where half the trials had ended, from the first reported epoch,
    so Ray's start and the workers' first imports are in neither) against its own floor: the
    half's wall time over its epochs' own times / slots. A ratio of the two that stays near 1
    means nothing costs more per trial as the count grows; a change in the machine's load slows
    the epochs too, so it cancels out, and so does ASHA stopping more trials early later on."""
    results = sorted(w.results)
    ends = sorted(w.ends)
    cut = ends[len(ends) // 2 - 1]
    t0, t1 = results[0][0], results[-1][0]
    first = [e for t, e in results[1:] if t <= cut]  # the first epoch only marks the start
    second = [e for t, e in results if t > cut]
    halves = {}
    for half, span, epochs in (("first", cut - t0, first), ("second", t1 - cut, second)):
        halves[f"{half}_s"] = span
        halves[f"{half}_epochs"] = len(epochs)
        halves[f"{half}_floor_s"] = sum(epochs) / SLOTS
        halves[f"{half}_over_floor"] = span / max(1e-9, sum(epochs) / SLOTS)
        halves[f"per_epoch_{half}_s"] = span / max(1, len(epochs))
    saves = [(t, s) for t, s in w.saves if t0 <= t <= t1]
    halves.update(saves=len(saves), saves_first_s=sum(s for t, s in saves if t <= cut),
                  saves_second_s=sum(s for t, s in saves if t > cut),
                  last_save_ms=saves[-1][1] * 1000 if saves else None)
    return halves


def phases(w: Watch) -> dict:
    """Where the wall time went beside the trials' own epochs: the start (launch called -> the
    first reported epoch, less Ray's start and that epoch's own time: the spec, the database,
    Tune, the slots' first workers and their imports), the trials (the first reported epoch -> the
    last trial's end), and the end (-> launch returned: Tune's results, the checkpoints' pruning,
    the sweep's verdict). `fixed_per_trial_s`: the trials' span over the slots' share of their
    epochs, per trial in a slot: what each trial costs its slot beside its epochs."""
    results = sorted(w.results)
    first_t, first_epoch = results[0]
    last_end = max(w.ends)
    span = last_end - first_t
    # Each epoch's time within the span (an epoch ends when its result is reported).
    rest = sum(max(0.0, min(t, last_end) - max(t - e, first_t)) for t, e in results) / SLOTS
    return {"start_s": first_t - w.launched - w.ray_start_s - first_epoch, "trials_s": span,
            "end_s": w.returned - last_end,
            "fixed_per_trial_s": (span - rest) / max(1, (len(w.ends) - 1) / SLOTS)}


def measure_grid(work: Path, trials: int, stages: bool = False) -> dict:
    timeline = work / "timeline"
    timeline.mkdir(exist_ok=True)
    with staged(timeline) if stages else nullcontext([]) as stamps:
        wall, w, outcome = run_launch(work, f"grid-{trials}", grid_text(f"grid-{trials}", trials))
    epochs_s = sum(e for _, e in w.results)
    return {"trials": trials, "wall_s": wall, "ray_start_s": w.ray_start_s, "epochs_s": epochs_s,
            "stages_ms": {k: v * 1000 for k, v in stage_times(stamps, timeline).items()} if stages else None,
            "floor_s": w.ray_start_s + epochs_s / SLOTS, "growth": growth(w), "phases": phases(w),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "status_first_ms": _median_ms(w.status_writes[: max(1, len(w.status_writes) // 10)]),
            "status_last_ms": _median_ms(w.status_writes[-max(1, len(w.status_writes) // 10):]),
            "recorder_ms": statistics.median(outcome.recorder.seconds_per_result) * 1000}


def _median_ms(seconds: list[float]) -> float | None:
    return statistics.median(seconds) * 1000 if seconds else None


def measure_search(work: Path, samples: int) -> dict:
    wall, w, _ = run_launch(work, f"search-{samples}", search_text(f"search-{samples}", samples))
    s = w.suggest_s
    early = min(50, len(s))
    return {"samples": samples, "wall_s": wall, "epochs": len(w.results), "growth": growth(w),
            "suggestions": len(s), "early_at": early,
            "suggest_early_ms": statistics.mean(s[max(0, early - 10):early]) * 1000,
            "suggest_last_ms": statistics.mean(s[-10:]) * 1000}


def measure(trials: int, samples: int, only: str | None = None, stages: bool = False) -> dict:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    out: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        if only in (None, "grid"):
            out["grid"] = measure_grid(Path(tmp), trials, stages)
            print(f"grid: {json.dumps(out['grid'])}", file=sys.stderr)
        if only in (None, "search"):
            out["search"] = measure_search(Path(tmp), samples)
            print(f"search: {json.dumps(out['search'])}", file=sys.stderr)
    return out


def rows(m: dict) -> list[dict]:
    out = []
    if "grid" in m:
        g, n = m["grid"], m["grid"]["trials"]
        gr = g["growth"]
        out += [
            result(f"launch: {n} one-epoch trials (digits, ResNet-14, 2 slots), wall time", g["wall_s"], "s",
                   "floor: epoch times / 2 slots + Ray's start", g["floor_s"],
                   note=f"epochs {g['epochs_s']:.1f} s in all, Ray's start {g['ray_start_s']:.1f} s; "
                        "expected ratio <= 1.2"),
            result(f"launch: {n} trials, second half's wall time over its floor", gr["second_over_floor"], "x",
                   "the first half's", gr["first_over_floor"], note=_halves(gr, "trials")),
            result(f"launch: {n} trials, each trial's cost to its slot beside its epochs (mean)",
                   g["phases"]["fixed_per_trial_s"] * 1000, "ms",
                   note=f"from the first reported epoch to the last trial's end ({g['phases']['trials_s']:.1f} s), "
                        "less the epochs' own times over the slots, per trial in a slot; outside it: the start "
                        f"{g['phases']['start_s']:.1f} s beside Ray's (the slots' first workers), the end "
                        f"{g['phases']['end_s']:.1f} s (Tune's results, pruning, the verdict)"),
            *[result(f"launch: {n} trials, per trial (median): {stage}", ms, "ms",
                     note="with the trial hook's timeline on (--stages)")
              for stage, ms in (g.get("stages_ms") or {}).items()],
            result(f"launch: {n} trials, driver peak RSS", g["peak_rss_mb"], "MB",
                   note="this process's ru_maxrss after the grid; expected <= 1536 MB"),
            result(f"launch: {n} trials, recorder time per result (median)", g["recorder_ms"], "ms"),
            result(f"launch: {n} trials, a trial's status write, last tenth of the run (median)", g["status_last_ms"],
                   "ms", "the first tenth", g["status_first_ms"],
                   note="db.writes.set_trial_status as the recorder's outbox calls it at each trial's end (which "
                        "re-pools the trial's grid point from all its finished trials: here every trial is a "
                        "seed of one point)"),
        ]
    if "search" in m:
        s, n = m["search"], m["search"]["samples"]
        gr = s["growth"]
        out += [
            result(f"launch: Optuna + ASHA, {n} samples, second half's wall time over its floor",
                   gr["second_over_floor"], "x", "the first half's", gr["first_over_floor"],
                   note=f"{s['epochs']} epochs in {s['wall_s']:.1f} s; " + _halves(gr, "epochs")),
            result(f"launch: Optuna searcher, time per suggestion at trial {s['suggestions']}",
                   s["suggest_last_ms"], "ms", f"at trial {s['early_at']}", s["suggest_early_ms"],
                   note="OptunaSearch.suggest timed in the driver, mean of the ten suggestions up to each"),
        ]
    return out


def _halves(gr: dict, what: str) -> str:
    return (f"first half {gr['first_s']:.1f} s for {gr['first_epochs']} {what} ({gr['per_epoch_first_s']:.3f} s "
            f"each), second {gr['second_s']:.1f} s for {gr['second_epochs']} ({gr['per_epoch_second_s']:.3f} s each); "
            f"Tune's state saved {gr['saves']} times, {gr['saves_first_s']:.2f} s then {gr['saves_second_s']:.2f} s; "
            "expected ratio <= 1.2")


def run(quick: bool) -> list[dict]:
    return rows(measure(QUICK if quick else GRID_TRIALS, QUICK if quick else SEARCH_SAMPLES))


def main() -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.launch_scale", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help=f"{QUICK} grid trials and {QUICK} search samples")
    p.add_argument("--trials", type=int, default=None, help=f"grid trials (default {GRID_TRIALS})")
    p.add_argument("--samples", type=int, default=None, help=f"search samples (default {SEARCH_SAMPLES})")
    p.add_argument("--only", choices=("grid", "search"), default=None, help="run one of the two sweeps")
    p.add_argument("--stages", action="store_true", help="the grid's trials' cost to their slots, stage by stage")
    p.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = p.parse_args()
    size = QUICK if args.quick else None
    m = measure(args.trials or size or GRID_TRIALS, args.samples or size or SEARCH_SAMPLES, args.only, args.stages)
    out = rows(m)
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print_rows(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
