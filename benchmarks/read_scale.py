"""Reading big sweeps: one sweep of 20,000 trials x 100 epochs with layer records on SQLite and
PostgreSQL, and the same sweep among 49 others (100,000 trials) in one PostgreSQL database.

    python -m benchmarks.read_scale [--quick] [--trials 20000] [--epochs 100] [--backend sqlite|postgresql|both]
                                    [--no-others] [--json]

Each database is built set-based (INSERT ... SELECT over generated series; trials through one
executemany; on PostgreSQL with triggers off), then summarised as db.writes would have
(`refresh_summaries`, which pools the grid and recounts the sweep too), so it holds what
resweep's own writes produce: 8 metrics an epoch, 18 layer records (a ResNet-20's) every 10th
epoch, every trial finished, 5 depths x 4 shortcuts x trials / 20 seeds.
Timed, each against the same figure on a sweep of BASE trials x the same epochs built beside it
(the baseline: a ratio near 1 means the figure does not grow with the trials):
- in this process, median of several warm runs: `resweep.open(url).grid(name)`, a filtered
  `trials(name, depth=56, shortcut="A")` (1/20 of the sweep) and `sweeps()`;
- whole commands, each a fresh `python -m orchestrator ...` (start-up included): `status NAME`,
  `query` on grid_results, `report NAME`, `export NAME --format parquet`.
PostgreSQL then gets 49 more sweeps (80,000 trials; 10 epochs each to keep the build short: a
sweep's reads touch only its own rows, which the plans check) and the big sweep's reads are timed
again: the ratio is with the others beside it over alone. Targets (issue "Scale"): grid and the
filtered trials 50 ms, status and query 3 s, report 60 s, export 90 s; each row's note says
whether it was met.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Callable

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._rivals import analyze  # noqa: E402
from benchmarks.common import REPO, result  # noqa: E402
from db import writes  # noqa: E402
from db.engine import get_engine  # noqa: E402
from db.models import METRIC_IDS  # noqa: E402

PG_ADMIN_URL = os.environ.get("RESWEEP_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
NAMES = ["train_loss", "train_err", "test_loss", "test_err", "lr", "epoch_time_s", "images_per_s", "val_err"]
DEPTHS, SHORTCUTS = (20, 32, 44, 56, 110), ("none", "A", "B", "C")
LAYERS, PROBE_EVERY = 18, 10
TARGETS_S = {"grid": 0.05, "trials": 0.05, "sweeps": 0.05, "status": 3.0, "query": 3.0, "report": 60.0,
             "export": 90.0, "status (list)": 3.0}  # fmt: skip
SIZES = {False: {"trials": 20_000, "epochs": 100, "base": 200, "others": 49, "other_trials": 80_000, "other_epochs": 10},
         True: {"trials": 400, "epochs": 10, "base": 40, "others": 4, "other_trials": 400, "other_epochs": 5}}  # fmt: skip


# --- building ---------------------------------------------------------------------------------


def _config(i: int, epochs: int) -> dict[str, Any]:
    """Trial i's flat config as TrialConfig.as_dict() stores it (the fields that matter here)."""
    return {"dataset": "cifar10", "data_dir": None, "model": "cifar", "depth": DEPTHS[i % 5], "block": "basic",
            "shortcut": SHORTCUTS[(i // 5) % 4], "seed": i // 20, "epochs": epochs, "batch_size": 128, "lr": 0.1,
            "momentum": 0.9, "nesterov": False, "weight_decay": 1e-4, "lr_milestones": [epochs // 2, 3 * epochs // 4],
            "precision": "fp32", "augment": True, "val_size": 0, "probes_every": PROBE_EVERY}  # fmt: skip


def _series(dialect: str, name: str, n: int, start: int = 1, step: int = 1) -> str:
    """A table expression `name(x)` of start, start + step, ... (n values)."""
    if dialect == "postgresql":
        return f"generate_series({start}, {start + step * (n - 1)}, {step}) AS {name}(x)"
    return (f"(WITH RECURSIVE s(x) AS (SELECT {start} UNION ALL SELECT x + {step} FROM s "
            f"WHERE x < {start + step * (n - 1)}) SELECT x FROM s) AS {name}")


def build_sweep(engine: sa.Engine, name: str, n_trials: int, epochs: int) -> tuple[int, list[int]]:
    """A finished sweep `name` of n_trials x epochs x 8 metrics with layer records; (id, trial ids)."""
    sweep_id = writes.create_sweep(engine, name=name, spec=f"name: {name}\n", spec_hash="0" * 64)
    trials = sa.table("trials", *(sa.column(c) for c in (
        "sweep_id", "trial_key", "status", "dataset", "model", "depth", "block", "shortcut", "seed",
        "params_count", "started_at", "ended_at", "attempts")), sa.column("config", sa.JSON()))  # fmt: skip
    now = writes._now()
    rows = [{"sweep_id": sweep_id, "trial_key": f"{name[:40]}_{i:06d}", "status": "terminated",
             **{k: v for k, v in _config(i, epochs).items() if k in ("dataset", "model", "depth", "block", "shortcut", "seed")},
             "config": _config(i, epochs), "params_count": 270_000 + i, "started_at": now, "ended_at": now,
             "attempts": 1} for i in range(n_trials)]  # fmt: skip
    dialect = engine.dialect.name
    names = " UNION ALL ".join(f"SELECT {METRIC_IDS[n]} AS name_id, {k} AS k" for k, n in enumerate(NAMES))
    probes = epochs // PROBE_EVERY
    with engine.begin() as conn:
        if dialect == "postgresql":  # the rows are valid by construction: skip the per-row foreign key checks
            conn.exec_driver_sql("SET LOCAL session_replication_role = replica")
        conn.execute(sa.insert(trials), rows)
        ids = [i for (i,) in conn.execute(sa.text("SELECT id FROM trials WHERE sweep_id = :s ORDER BY id"), {"s": sweep_id})]
        first = ids[0]
        # the values of trial i at epoch e, metric k: falling with the epoch, distinct per trial
        conn.execute(sa.text(
            f"""INSERT INTO metric_values (trial_id, name_id, epoch, value)
            SELECT t.id, n.name_id, e.x, 1.0 / (e.x + n.k + 1) + ((t.id - {first}) % 97) * 0.001
            FROM trials AS t CROSS JOIN ({names}) AS n CROSS JOIN {_series(dialect, "e", epochs)}
            WHERE t.sweep_id = {sweep_id} ORDER BY t.id, n.name_id, e.x"""))
        if probes:
            conn.execute(sa.text(
                f"""INSERT INTO layer_stats (trial_id, epoch, layer, name, stage, std, mean)
                SELECT t.id, p.x, l.x, 'layer' || (1 + l.x / 6) || '.' || ((l.x % 6) / 2) || '.conv' || (1 + l.x % 2),
                       1 + l.x / 6, 1.0 + (l.x % 7) * 0.1 + ((t.id - {first}) % 13) * 0.01, 0.0
                FROM trials AS t CROSS JOIN {_series(dialect, "p", probes, PROBE_EVERY, PROBE_EVERY)}
                     CROSS JOIN {_series(dialect, "l", LAYERS, 0)}
                WHERE t.sweep_id = {sweep_id} ORDER BY t.id, p.x, l.x"""))
        writes.refresh_summaries(conn, ids)  # what db.writes keeps: summaries, grid, sweep counts
    writes.set_sweep_status(engine, sweep_id, "finished", finished=True)
    return sweep_id, ids


class Scratch:
    """A new database (a SQLite file, or a PostgreSQL database), removed afterwards."""

    def __init__(self, backend: str, tmp: Path) -> None:
        self.backend = backend
        if backend == "sqlite":
            self.url = f"sqlite:///{tmp / f'read-scale-{uuid.uuid4().hex[:6]}.db'}"
        else:
            self.name = f"resweep_read_scale_{uuid.uuid4().hex[:10]}"
            self._admin(f'CREATE DATABASE "{self.name}"')
            self.url = sa.make_url(PG_ADMIN_URL).set(database=self.name).render_as_string(hide_password=False)

    def _admin(self, sql: str) -> None:
        admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(sa.text(sql))
        admin.dispose()

    def close(self) -> None:
        if self.backend == "postgresql":
            from db.door import DROP_ORPHANED_ROLES

            self._admin(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
            self._admin(DROP_ORPHANED_ROLES)


# --- timing -----------------------------------------------------------------------------------


def _median_s(fn: Callable[[], Any], key: str, runs: int = 7) -> float:
    """Median wall seconds of fn; its median CPU seconds in this process go to LAST_IN[key]
    (on SQLite the whole query, on PostgreSQL the client's share)."""
    fn()  # warm: the connection, the statement cache, the page cache
    times, cpu = [], []
    for _ in range(runs):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    LAST_IN[key] = statistics.median(cpu)
    return statistics.median(times)


CPU_S: dict[Any, float] = {}  # each command's CPU seconds (its process): its share of a busy machine
LAST_COMMAND: dict[str, str] = {}  # figure -> the words of the command last run for it
LAST_IN: dict[str, float] = {}  # in-process figure -> its last median CPU seconds
_KEYS = {"status": "status", "query": "query", "report": "report", "export": "export"}


def _command(args: list[str], url: str, tmp: Path) -> float:
    """Wall seconds of one `python -m orchestrator ...` in a fresh interpreter."""
    env = dict(os.environ, COLUMNS="100", PYTHONPATH=str(REPO))
    t0, cpu0 = time.perf_counter(), _children_cpu()
    proc = subprocess.run([sys.executable, "-m", "orchestrator", *args, "--db", url], cwd=tmp, env=env,
                          capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    words = " ".join(args)
    CPU_S[words] = _children_cpu() - cpu0
    LAST_COMMAND[_KEYS.get(args[0], args[0]) if len(args) > 1 or args[0] != "status" else "status (list)"] = words
    print(f"  {words[:60]}: {seconds:.1f} s, {CPU_S[words]:.1f} CPU s", file=sys.stderr, flush=True)
    if proc.returncode != 0:
        raise RuntimeError(f"orchestrator {' '.join(args)} failed: {proc.stderr[-2000:]}")
    return seconds


def _children_cpu() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def in_process(url: str, name: str) -> dict[str, float]:
    import resweep

    with resweep.open(url) as db:
        return {"grid": _median_s(lambda: db.grid(name), "grid"),
                "trials": _median_s(lambda: db.trials(name, depth=56, shortcut="A"), "trials")}


def database_wide(url: str, tmp: Path, n_trials: int) -> dict[str, float]:
    """The sweeps list, in this process and as `status`: the same whichever sweep one looks at.
    It must count the `n_trials` built (the builder writes around db.writes)."""
    import resweep

    with resweep.open(url) as db:
        counted = int(db.sweeps()["n_trials"].sum())
        if counted != n_trials:
            raise RuntimeError(f"sweeps() counts {counted:,} trials of the {n_trials:,} built")
        sweeps = _median_s(db.sweeps, "sweeps")
    return {"sweeps": sweeps, "status (list)": _command(["status"], url, tmp)}


def commands(url: str, name: str, tmp: Path, heavy: bool = True) -> dict[str, float]:
    out = {"status": _command(["status", name], url, tmp),
           "query": _command(["query", f"SELECT * FROM grid_results WHERE sweep = '{name}'"], url, tmp)}
    if heavy:
        out["report"] = _command(["report", name, "--out", str(tmp / f"report-{name}")], url, tmp)
        out["export"] = _command(["export", name, "--format", "parquet", "--out", str(tmp / f"export-{name}")], url, tmp)
    return out


def plans(engine: sa.Engine, name: str) -> str:
    """Whether the big sweep's reads reach trials by an index on sweep_id (PostgreSQL's plans)."""
    if engine.dialect.name != "postgresql":
        return ""
    from db import queries

    found = []
    with engine.connect() as conn:
        sweep_id = conn.execute(sa.text("SELECT id FROM sweeps WHERE name = :n"), {"n": name}).scalar()
        for label, sql in (
            ("grid", f"SELECT * FROM grid_results WHERE sweep = '{name}'"),
            ("trials", queries._TRIALS.format(where=f"id = {sweep_id}", filters=" AND t.depth IN (56) AND t.shortcut IN ('A')")),
            ("all trials", queries._TRIALS.format(where=f"id = {sweep_id}", filters="")),
        ):  # fmt: skip
            plan = "\n".join(r[0] for r in conn.exec_driver_sql("EXPLAIN " + sql))
            found.append(f"{label}: {'seq scan on trials' if 'Seq Scan on trials' in plan else 'index'}")
    return "plans " + ", ".join(found)


# --- the run ----------------------------------------------------------------------------------


def _rows(label: str, figures: dict[str, float], base: dict[str, float], base_label: str, note: str = "") -> list[dict]:
    out = []
    for key, seconds in figures.items():
        target = TARGETS_S.get(key)
        met = (f"target {target * 1000:g} ms: " if target < 1 else f"target {target:g} s: ") + (
            "met" if seconds <= target else "MISSED")
        unit, scale = ("ms", 1000) if key in ("grid", "trials", "sweeps") else ("s", 1)
        what = {"grid": "grid(sweep)", "trials": "trials(sweep, depth=56, shortcut=A)", "sweeps": "sweeps()",
                "status": "command: status NAME", "query": "command: query on grid_results",
                "status (list)": "command: status (the sweeps)", "report": "command: report NAME",
                "export": "command: export NAME --format parquet"}[key]  # fmt: skip
        cpu = "" if (label, key) not in CPU_S else (
            f"{CPU_S[label, key] * scale:.1f} CPU {unit}" + (" (client)" if "postgresql" in label and scale > 1 else ""))
        out.append(result(f"{what}, {label}", seconds * scale, unit, base_label if key in base else None,
                          base[key] * scale if key in base else None, note="; ".join(x for x in (met, cpu, note) if x)))
    return out


def _timed(label: str, figures: dict[str, float]) -> dict[str, float]:
    """Commands' CPU seconds of the last calls filed under `label` (for _rows' notes)."""
    for key, words in LAST_COMMAND.items():
        if key in figures:
            CPU_S[label, key] = CPU_S.pop(words, 0.0)
    for key, cpu in LAST_IN.items():
        if key in figures:
            CPU_S[label, key] = cpu
    return figures


def run_backend(backend: str, sizes: dict[str, int], others: bool, tmp: Path, quick: bool) -> list[dict]:
    scratch = Scratch(backend, tmp)
    rows: list[dict] = []
    try:
        engine = get_engine(scratch.url)
        t0 = time.perf_counter()
        build_sweep(engine, "base", sizes["base"], sizes["epochs"])
        build_sweep(engine, "big", sizes["trials"], sizes["epochs"])
        analyze(engine)
        build_s = time.perf_counter() - t0
        shape = f"{sizes['trials']:,} trials x {sizes['epochs']} epochs, {backend}"
        base_label = f"same on {sizes['base']:,} trials"
        heavy = not quick or backend == "sqlite"  # quick: report and export on SQLite only
        base = {**in_process(scratch.url, "base"), **commands(scratch.url, "base", tmp, heavy)}
        alone = _timed(shape, {**in_process(scratch.url, "big"), **commands(scratch.url, "big", tmp, heavy),
                               **database_wide(scratch.url, tmp, sizes["base"] + sizes["trials"])})
        rows += _rows(shape, alone, base, base_label,
                      " ".join((f"built in {build_s:.0f} s", plans(engine, "big"))).strip())
        if others and backend == "postgresql":
            per = sizes["other_trials"] // sizes["others"]
            t0 = time.perf_counter()
            for k in range(sizes["others"]):
                build_sweep(engine, f"other-{k:02d}", per, sizes["other_epochs"])
            analyze(engine)
            n_all = sizes["trials"] + sizes["base"] + per * sizes["others"]
            label = f"{sizes['trials']:,} trials x {sizes['epochs']} epochs among {sizes['others'] + 2} sweeps ({n_all:,} trials), postgresql"
            beside = _timed(label, {**in_process(scratch.url, "big"), **commands(scratch.url, "big", tmp, heavy=False),
                                    **database_wide(scratch.url, tmp, n_all)})
            rows += _rows(label, beside, alone, "same with the sweep alone (2 sweeps)",
                          f"the other sweeps {per:,} trials x {sizes['other_epochs']} epochs each, built in "
                          f"{time.perf_counter() - t0:.0f} s; {plans(engine, 'big')}")
        engine.dispose()
    finally:
        scratch.close()
    return rows


def run(quick: bool, backends: tuple[str, ...] = ("sqlite", "postgresql"), others: bool = True,
        trials: int | None = None, epochs: int | None = None) -> list[dict]:
    sizes = dict(SIZES[quick])
    sizes["trials"], sizes["epochs"] = trials or sizes["trials"], epochs or sizes["epochs"]
    rows = []
    with tempfile.TemporaryDirectory(prefix="resweep-read-scale-") as tmp:
        for backend in backends:
            rows += run_backend(backend, sizes, others, Path(tmp), quick)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (400 trials x 10 epochs)")
    parser.add_argument("--trials", type=int, default=None)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--no-others", action="store_true", help="skip the 49 other sweeps on PostgreSQL")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = parser.parse_args(argv)
    backends = ("sqlite", "postgresql") if args.backend == "both" else (args.backend,)
    print(f"load average before: {os.getloadavg()}", file=sys.stderr)
    rows = run(args.quick, backends, not args.no_others, args.trials, args.epochs)
    print(f"load average after: {os.getloadavg()}", file=sys.stderr)
    if args.json:
        print(json.dumps(rows, indent=1))
    else:
        for r in rows:
            ratio = f"{r['ratio']:8.2f}x" if r["ratio"] is not None else " " * 9
            print(f"{r['name']:<95} {r['value']:>10.1f} {r['unit']:<3}{ratio}  {r.get('note', '')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
