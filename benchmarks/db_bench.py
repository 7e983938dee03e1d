"""Benchmark of the result store on SQLite and PostgreSQL, beside a bare baseline and beside
MLflow's SQL tracking store and Optuna's RDB storage holding the same data, in the same run.

    python -m benchmarks.db_bench [--backend sqlite|postgresql|both] [--trials 2000] [--json PATH]
    python -m benchmarks.db_bench --quick          # small sizes, both backends: a couple of minutes

(1) Ingest: metric rows per second written through db/writes.py against a bare DBAPI
    `executemany` of the same rows with the same transaction boundaries in the same run: a plain
    INSERT (the ratio), the same ON CONFLICT upsert SQL (ratio_same_sql: Python overhead only) and
    the upsert into the layout before migration 0007 (names as text). Two granularities:
    `record_results` batches and `record_result` one result per transaction (what the recorder
    does per epoch). Per epoch also: resweep on SQLite with synchronous=FULL (the durability
    MLflow and Optuna have there by default), MLflow's `log_batch` and Optuna's
    `set_trial_intermediate_value` (benchmarks/_rivals.py says how each is driven).
(2) Queries: a database of --trials trials x --epochs epochs x 8 metrics plus layer records
    (--layers layers at --probes epochs per trial), built set-based in the order a 16-slot
    recorder writes, then each db/queries.py function timed (median of --repeat runs) against a
    300 ms budget; the filter (depth=56 and shortcut=A with the final test_err), curve (100
    trials, 2 names) and seed-pooling (grid) queries also by bare SQL on the views, on a copy of
    the points in the layout before 0007 with that schema's views, and through MLflow's and
    Optuna's APIs on the same points in their own databases.
(3) Bytes per stored point (SQLite): the file's growth when the points go in, for resweep (through
    db/writes.py, and set-based), the layout before 0007, MLflow and Optuna.

Every database is new (PostgreSQL: one scratch database per store) and removed afterwards.
Prints the tables and the ratios; --json PATH also writes the figures. Not asserted in CI.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import multiprocessing
import os
import re
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Callable

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import _rivals  # noqa: E402
from db import queries, writes  # noqa: E402
from db.engine import get_engine, redact  # noqa: E402
from db.models import METRIC_IDS  # noqa: E402

PG_ADMIN_URL = os.environ.get("RESWEEP_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
NAMES, DEPTHS, SHORTCUTS = _rivals.NAMES, _rivals.DEPTHS, _rivals.SHORTCUTS  # the same data for every store
BUDGET_MS = 300.0
FILTER, CURVES, GRID = "filter", "curves", "grid"  # the queries compared across stores


# --- databases --------------------------------------------------------------------------------


class Scratch:
    """A fresh, empty database on one backend, removed afterwards."""

    def __init__(self, backend: str, pg_admin_url: str, tag: str = "resweep") -> None:
        self.backend, self.pg_admin_url = backend, pg_admin_url
        if backend == "sqlite":
            self.dir = tempfile.TemporaryDirectory(prefix=f"{tag}-bench-")
            self.url = f"sqlite:///{Path(self.dir.name) / 'bench.db'}"
        else:
            self.name = f"{tag.lower()}_bench_{uuid.uuid4().hex[:10]}"
            self._admin(f'CREATE DATABASE "{self.name}"')
            self.url = sa.make_url(pg_admin_url).set(database=self.name).render_as_string(hide_password=False)

    def _admin(self, sql: str) -> None:
        admin = sa.create_engine(self.pg_admin_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.exec_driver_sql(sql)
        admin.dispose()

    def close(self) -> None:
        if self.backend == "sqlite":
            self.dir.cleanup()
        else:
            self._admin(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


def add_trials(engine: sa.Engine, sweep_id: int, n: int, prefix: str, status: str = "terminated") -> list[int]:
    rows = [
        {"sweep_id": sweep_id, "trial_key": f"{prefix}{i:05d}", "status": status, **_rivals.axes(i),
         "config": {"lr": 0.1, "seed": i // 20}, "params_count": 270_000 + i}
        for i in range(n)
    ]  # fmt: skip
    trials = sa.table(
        "trials", *(sa.column(c) for c in ("sweep_id", "trial_key", "status", "dataset", "model", "depth",
                                           "block", "shortcut", "seed", "params_count")),
        sa.column("config", sa.JSON()),
    )  # fmt: skip
    with engine.begin() as conn:
        conn.execute(sa.insert(trials), rows)
        ids = conn.execute(
            sa.text("SELECT id FROM trials WHERE sweep_id = :s AND trial_key LIKE :p ORDER BY id"),
            {"s": sweep_id, "p": f"{prefix}%"},
        ).scalars()
        return list(ids)


# --- (1) ingest -------------------------------------------------------------------------------


def _results(trial_ids: list[int], epochs: int) -> list[writes.Result]:
    return [
        writes.Result(tid, e, {name: 1.0 / (e + k) + tid * 1e-6 for k, name in enumerate(NAMES)})
        for tid in trial_ids for e in range(1, epochs + 1)
    ]  # fmt: skip


def _bare_rows(results: list[writes.Result], id_map: dict[int, int]) -> list[list[tuple]]:
    """The same metric rows as tuples, on the baseline's own trials, one list per result."""
    return [[(id_map[r.trial_id], METRIC_IDS[name], r.epoch, value) for name, value in r.metrics.items()]
            for r in results]


# The metrics table as it was before migration 0007 (names as text, a (trial, name, value) index):
# the baseline for bytes per point, ingest and queries "at least as fast as before".
OLD_LAYOUT = [
    "CREATE TABLE IF NOT EXISTS old_metrics (trial_id INTEGER NOT NULL, name VARCHAR(64) NOT NULL, epoch INTEGER NOT NULL, "
    "value DOUBLE PRECISION, PRIMARY KEY (trial_id, name, epoch)){rowid}",
    "CREATE INDEX IF NOT EXISTS ix_old_metrics ON old_metrics (trial_id, name, value)",
]


def _bare(engine: sa.Engine, batches: list[list[tuple]], upsert: bool, old: bool = False) -> float:
    """Seconds for a plain DBAPI executemany + commit per batch (INSERT, or the same upsert SQL),
    into metric_values or (`old`) into the old layout, names as text."""
    ph = "?" if engine.dialect.name == "sqlite" else "%s"
    table, key = ("old_metrics", "name") if old else ("metric_values", "name_id")
    if old:
        names = {v: k for k, v in METRIC_IDS.items()}
        batches = [[(t, names[n], e, v) for t, n, e, v in b] for b in batches]
    sql = f"INSERT INTO {table} (trial_id, {key}, epoch, value) VALUES ({ph}, {ph}, {ph}, {ph})"
    if upsert:
        sql += f" ON CONFLICT (trial_id, {key}, epoch) DO UPDATE SET value = excluded.value"
    raw = engine.raw_connection()  # same connection settings (WAL, sync, FKs) as the writes path
    try:
        start = time.perf_counter()
        for batch in batches:
            cur = raw.cursor()
            cur.executemany(sql, batch)
            cur.close()
            raw.commit()
        return time.perf_counter() - start
    finally:
        raw.close()


def _old_layout(engine: sa.Engine) -> None:
    rowid = " WITHOUT ROWID" if engine.dialect.name == "sqlite" else ""
    with engine.begin() as conn:
        for sql in OLD_LAYOUT:
            conn.exec_driver_sql(sql.format(rowid=rowid))


def bench_ingest(url: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    engine = get_engine(url)
    _old_layout(engine)
    sweep_id = writes.create_sweep(engine, name="ingest", spec="", spec_hash="")
    n = args.ingest_trials
    out = []
    for mode, per_tx, epochs in (("batched", args.batch, args.epochs), ("per result", 1, args.per_result_epochs)):
        ours = add_trials(engine, sweep_id, n, f"{mode[0]}w", status="running")
        results = _results(ours, epochs)
        chunks = [results[i : i + per_tx] for i in range(0, len(results), per_tx)]
        bare = {}
        for upsert in (False, True, "old"):
            theirs = add_trials(engine, sweep_id, n, f"{mode[0]}b{upsert}", status="running")
            id_map = dict(zip(ours, theirs))
            batches = [[row for rows in _bare_rows(chunk, id_map) for row in rows] for chunk in chunks]
            bare[upsert] = _bare(engine, batches, bool(upsert), old=upsert == "old")
        rows = len(results) * len(NAMES)

        start = time.perf_counter()
        if per_tx == 1:
            for r in results:
                writes.record_result(engine, r.trial_id, r.epoch, r.metrics)
        else:
            for chunk in chunks:
                writes.record_results(engine, chunk)
        t_writes = time.perf_counter() - start
        out.append({
            "mode": mode, "results_per_transaction": per_tx, "rows": rows,
            "writes_rows_per_s": rows / t_writes, "bare_insert_rows_per_s": rows / bare[False],
            "bare_upsert_rows_per_s": rows / bare[True],
            "bare_upsert_old_layout_rows_per_s": rows / bare["old"],
            "ratio": bare[False] / t_writes, "ratio_same_sql": bare[True] / t_writes,
        })  # fmt: skip
    engine.dispose()
    return out


# --- (2) queries ------------------------------------------------------------------------------


def _series(n: int) -> str:
    """Rows x = 1..n as a portable recursive CTE body."""
    return f"SELECT 1 AS x UNION ALL SELECT x + 1 FROM s WHERE x < {n}"


def build_query_db(url: str, args: argparse.Namespace) -> tuple[sa.Engine, list[int], float, dict[str, float]]:
    """2,000 trials x 200 epochs x 8 metrics (by default) and the layer records, set-based, the
    points in a 16-slot recorder's order; then the same points copied into the layout before
    migration 0007 with that schema's views (old_metrics, old_trial_results, old_grid_results).
    Returns the engine, the trial ids, the seconds it took, and (SQLite) the bytes per point of
    both layouts (file growth as the points went in)."""
    start = time.perf_counter()
    engine = get_engine(url)
    _old_layout(engine)  # on a fresh database too (it is made IF NOT EXISTS): the copy below goes there
    sweep_id = writes.create_sweep(engine, name="bench", spec="", spec_hash="")
    ids = add_trials(engine, sweep_id, args.trials, "q")
    first = ids[0]  # trial i is id first + i: the values are those the other stores get (_rivals.value)
    names = " UNION ALL ".join(f"SELECT {METRIC_IDS[n]} AS name_id, {k} AS k" for k, n in enumerate(NAMES))
    probe_every = max(1, args.epochs // args.probes)
    points = len(ids) * args.epochs * len(NAMES)
    size0 = _rivals.file_bytes(engine)
    with engine.begin() as conn:  # text(): escapes '%' for psycopg
        conn.execute(sa.text(
            f"""
            INSERT INTO metric_values (trial_id, name_id, epoch, value)
            WITH RECURSIVE s(x) AS ({_series(args.epochs)}), n AS ({names})
            SELECT t.id, n.name_id, s.x, 1.0 / (s.x + n.k + 1) + ((t.id - {first}) % 97) * 0.001
            FROM trials AS t CROSS JOIN n CROSS JOIN s
            WHERE t.sweep_id = {sweep_id}
            {_rivals.recorder_order(f"(t.id - {first})", "s.x", "n.k")}
            """
        ))  # fmt: skip
    size1 = _rivals.file_bytes(engine)
    with engine.begin() as conn:
        conn.execute(sa.text(
            f"""
            INSERT INTO old_metrics (trial_id, name, epoch, value)
            SELECT m.trial_id, m.name, m.epoch, m.value FROM metrics AS m
            WHERE m.trial_id BETWEEN {ids[0]} AND {ids[-1]}
            {_rivals.recorder_order(f"(m.trial_id - {first})", "m.epoch", "m.name")}
            """
        ))  # fmt: skip
        for sql in _old_views():
            conn.exec_driver_sql(sql)
    size2 = _rivals.file_bytes(engine)
    sizes = {"metric_values": (size1 - size0) / points, "old_metrics": (size2 - size1) / points, "points": points}
    with engine.begin() as conn:  # the bulk load went around db.writes: summarise as it would have
        writes.refresh_summaries(conn, ids)
    with engine.begin() as conn:
        conn.execute(sa.text(
            f"""
            INSERT INTO layer_stats (trial_id, epoch, layer, name, stage, std, mean)
            WITH RECURSIVE s(x) AS ({_series(args.layers)}),
                 p(e) AS (SELECT {probe_every} UNION ALL SELECT e + {probe_every} FROM p
                          WHERE e + {probe_every} <= {probe_every * args.probes})
            SELECT t.id, p.e, s.x - 1, 'layer' || (s.x - 1), 1 + (s.x - 1) * 3 / {args.layers},
                   1.0 + (s.x - 7 * (s.x / 7)) * 0.1, 0.0
            FROM trials AS t CROSS JOIN p CROSS JOIN s
            WHERE t.sweep_id = {sweep_id}
            ORDER BY t.id, p.e, s.x
            """
        ))
    _rivals.analyze(engine)
    return engine, ids, time.perf_counter() - start, sizes


def _old_views() -> list[str]:
    """The views of the schema before migration 0007 (migration 0001's frozen text), over
    old_metrics, named old_trial_results and old_grid_results."""
    path = Path(__file__).resolve().parents[1] / "db" / "migrations" / "versions" / "0001_initial.py"
    spec = importlib.util.spec_from_file_location("resweep_migration_0001_bench", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return [re.sub(r"\b(metrics|trial_results|grid_results)\b", r"old_\1", sql) for sql in module.VIEWS.values()]


def _median_ms(
    fn: Callable[[], Any], repeat: int, budget_s: float = float("inf"), settle_s: float = 0.0
) -> tuple[float, float, int]:
    """Median wall time and median CPU time of this process (ms), and the rows returned. The CPU
    time shows the cost on a shared machine: on SQLite it is the whole query, on PostgreSQL the
    client's share (the server's work is not in it). Runs `repeat` times, and more (up to 100)
    while the runs have taken less than settle_s, so a query of a few ms has its median from
    dozens of runs, not five. Stops early (after one run at least) once the runs have taken
    budget_s: some stores' reads take seconds."""
    wall, cpu, rows = [], [], 0
    while True:
        start, start_cpu = time.perf_counter(), time.process_time()
        rows = len(fn())
        wall.append((time.perf_counter() - start) * 1000)
        cpu.append((time.process_time() - start_cpu) * 1000)
        spent = sum(wall) / 1000
        if spent > budget_s or (len(wall) >= repeat and (spent >= settle_s or len(wall) >= 100)):
            break
    return statistics.median(wall), statistics.median(cpu), rows


def _bare_select(engine: sa.Engine, sql: str) -> list:
    raw = engine.raw_connection()
    try:
        cur = raw.cursor()
        cur.execute(sql)
        return cur.fetchall()
    finally:
        raw.close()


def bytes_per_point(url: str, args: argparse.Namespace) -> dict[str, Any]:
    """SQLite file bytes per stored point, through db/writes.py, against the old layout holding the
    same points in the same run (each in its own new file, WAL checkpointed, then measured)."""
    out: dict[str, Any] = {}
    base = Path(sa.make_url(url).database).parent
    n_trials, epochs = args.bytes_trials, args.bytes_epochs
    for layout in ("metric_values", "old_metrics"):
        engine = get_engine(f"sqlite:///{base / f'bytes-{layout}.db'}")
        sweep_id = writes.create_sweep(engine, name="bytes", spec="", spec_hash="")
        ids = add_trials(engine, sweep_id, n_trials, "y", status="running")
        if layout == "old_metrics":
            _old_layout(engine)
        with engine.begin() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        size0 = _file_bytes(engine)
        points = 0
        for block in range(0, n_trials, 16):  # 16 trials at a time, epoch by epoch: the recorder's order
            results = _results(ids[block:block + 16], epochs)
            results.sort(key=lambda r: (r.epoch, r.trial_id))
            for i in range(0, len(results), 250):
                chunk = results[i:i + 250]
                if layout == "metric_values":
                    writes.record_results(engine, chunk)
                else:
                    _bare(engine, [[row for rows in _bare_rows(chunk, {t: t for t in ids}) for row in rows]],
                          True, old=True)
            points += len(results) * len(NAMES)
        with engine.begin() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        out[layout] = (_file_bytes(engine) - size0) / points
        out["points"] = points
        engine.dispose()
    return out


def _file_bytes(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return conn.exec_driver_sql("PRAGMA page_count").scalar() * conn.exec_driver_sql("PRAGMA page_size").scalar()


def some_trials(n: int) -> list[int]:
    """The indexes of the ~100 trials whose curves are read, spread over the sweep."""
    return list(range(0, n, max(1, n // 100)))[:100]


# The three queries compared across stores and layouts, as bare SQL: on the views of today's
# schema, and on the layout before migration 0007 with its views (build_query_db).
BARE_SQL = {
    FILTER: "SELECT trial_id, final_test_err FROM {p}trial_results WHERE sweep = 'bench' AND depth = 56 AND shortcut = 'A'",
    CURVES: {"": "SELECT v.trial_id, v.epoch, n.name, v.value FROM metric_values AS v JOIN metric_names AS n "
                 "ON n.id = v.name_id WHERE v.trial_id IN ({ids}) AND v.name_id IN "
                 "(SELECT id FROM metric_names WHERE name IN ('train_err', 'test_err')) "
                 "ORDER BY v.trial_id, v.name_id, v.epoch",
             "old_": "SELECT trial_id, epoch, name, value FROM old_metrics WHERE trial_id IN ({ids}) "
                     "AND name IN ('train_err', 'test_err') ORDER BY trial_id, name, epoch"},
    GRID: "SELECT * FROM {p}grid_results WHERE sweep = 'bench' ORDER BY dataset, model, block, shortcut, depth",
}


def _bare_sql(query: str, prefix: str, ids: list[int]) -> str:
    sql = BARE_SQL[query]
    return (sql[prefix] if isinstance(sql, dict) else sql).format(p=prefix, ids=", ".join(map(str, ids)))


def bench_queries(engine: sa.Engine, ids: list[int], repeat: int) -> list[dict[str, Any]]:
    some = [ids[i] for i in some_trials(len(ids))]
    cases: list[tuple[str, Callable[[], Any]]] = [
        ("sweeps()", lambda: queries.sweeps(engine)),
        ("trials(sweep)", lambda: queries.trials(engine, "bench")),
        ("grid(sweep)", lambda: queries.grid(engine, "bench")),
        ("trials(sweep, depth=56, shortcut=A)", lambda: queries.trials(engine, "bench", depth=56, shortcut="A")),
        *((f"{label}: {query}", lambda q=query, p=prefix: _bare_select(engine, _bare_sql(q, p, some)))
          for query in (FILTER, CURVES, GRID) for label, prefix in (("bare", ""), ("before 0007", "old_"))),
        (f"curves({len(some)} trials, 2 names)", lambda: queries.curves(engine, some, ["train_err", "test_err"])),
        (f"curves({len(some)} trials, all names)", lambda: queries.curves(engine, some)),
        (f"curves({len(ids)} trials, test_err)", lambda: queries.curves(engine, ids, ["test_err"])),
        (f"layer_stats({len(some)} trials, last probe)", lambda: queries.layer_stats(engine, some)),
        (f"layer_stats({len(ids)} trials, last probe)", lambda: queries.layer_stats(engine, ids)),
    ]
    out = []
    for name, fn in cases:
        ms, cpu_ms, rows = _median_ms(fn, repeat, settle_s=0.5)
        out.append({"query": name, "rows": rows, "median_ms": ms, "median_cpu_ms": cpu_ms,
                    "within_budget": ms < BUDGET_MS})  # fmt: skip
    return out


# --- (4) side by side with MLflow and Optuna -------------------------------------------------


def _epoch_plan(args: argparse.Namespace) -> tuple[int, int]:
    """Trials and epochs of the per-epoch ingest comparison: --rival-results results in all."""
    n = max(1, min(args.ingest_trials, args.rival_results))
    return n, max(1, args.rival_results // n)


def _per_epoch(log: Callable[[Any, int, dict[str, float]], None], handles: list[Any], epochs: int) -> float:
    """Points per second for one result (8 metrics) a call, epoch by epoch over the trials."""
    start = time.perf_counter()
    for epoch in range(1, epochs + 1):
        for i, handle in enumerate(handles):
            log(handle, epoch, {name: _rivals.value(i, epoch, k) for k, name in enumerate(NAMES)})
    return len(handles) * epochs * len(NAMES) / (time.perf_counter() - start)


def resweep_per_epoch(url: str, args: argparse.Namespace, synchronous: str | None = None) -> float:
    """resweep's per-epoch ingest (record_result), on SQLite optionally with another synchronous."""
    engine = get_engine(url)
    if synchronous:
        engine.dispose()  # new connections from here on, with the pragma after resweep's own

        @sa.event.listens_for(engine, "connect")
        def _sync(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.execute(f"PRAGMA synchronous={synchronous}")

        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == {"FULL": 2, "NORMAL": 1}[synchronous]
    n, epochs = _epoch_plan(args)
    sweep_id = writes.create_sweep(engine, name=f"epoch-{synchronous or 'default'}", spec="", spec_hash="")
    handles = add_trials(engine, sweep_id, n, f"e{synchronous or ''}", status="running")
    rate = _per_epoch(lambda t, e, m: writes.record_result(engine, t, e, m), handles, epochs)
    engine.dispose()
    return rate


def bench_rival(name: str, backend: str, args: argparse.Namespace, some: list[int]) -> dict[str, Any]:
    """One rival store in its own new database: the query database's data through its API and in
    bulk, its three queries, then its per-epoch ingest."""
    scratch = Scratch(backend, args.pg_url, tag=name)
    rival = None
    try:
        rival = _rivals.RIVALS[name](scratch.url)
        out: dict[str, Any] = rival.build(args.trials, args.epochs)
        out["queries"] = {}
        for query, fn in rival.queries(some):
            timed = _timed_in_child(rival, fn, args)
            out["queries"][query] = (
                {"median_ms": None, "median_cpu_ms": None, "rows": None, "timeout_s": args.rival_timeout_s}
                if timed is None else dict(zip(("median_ms", "median_cpu_ms", "rows"), timed))
            )
        n, epochs = _epoch_plan(args)
        out["per_epoch_points_per_s"] = _per_epoch(rival.log_epoch, rival.add_trials(n, finished=False), epochs)
        return out
    finally:
        if rival is not None:
            rival.close()
        scratch.close()


def _timed_in_child(rival: _rivals.Rival, fn: Callable[[], Any], args: argparse.Namespace) -> tuple | None:
    """_median_ms of fn in a forked child, given up after --rival-timeout-s (None): some stores'
    reads of every trial take minutes at 2,000 trials, and a thread could not be stopped."""
    ctx = multiprocessing.get_context("fork")
    parent, child = ctx.Pipe(duplex=False)

    def work() -> None:
        for engine in rival.engines():
            engine.dispose(close=False)  # the parent's pooled connections are not the child's
        child.send(_median_ms(fn, args.repeat, args.query_budget_s))

    proc = ctx.Process(target=work, daemon=True)
    proc.start()
    try:
        if parent.poll(args.rival_timeout_s):
            return parent.recv()
        return None
    finally:
        proc.kill()
        proc.join()


def side_by_side(report: dict[str, Any]) -> dict[str, Any]:
    """The figures of every store on one backend, and each one's ratio against resweep's."""
    q = {r["query"]: r for r in report["queries"]}
    n_some = len(some_trials(report["trials"]))
    resweep_q = {FILTER: q["trials(sweep, depth=56, shortcut=A)"], CURVES: q[f"curves({n_some} trials, 2 names)"],
                 GRID: q["grid(sweep)"]}  # fmt: skip
    rows: dict[str, Any] = {}
    for query in (FILTER, CURVES, GRID):
        row = {"resweep": resweep_q[query]["median_ms"], "bare": q[f"bare: {query}"]["median_ms"],
               "before_0007": q[f"before 0007: {query}"]["median_ms"]}  # fmt: skip
        row.update({name: r["queries"][query]["median_ms"] for name, r in report["rivals"].items()})
        row["rows"] = {"resweep": resweep_q[query]["rows"],
                       **{name: r["queries"][query]["rows"] for name, r in report["rivals"].items()}}
        rows[query] = row
    ingest = {"resweep": report["per_epoch"]["resweep"], **report["per_epoch"].get("extra", {}),
              **{name: r["per_epoch_points_per_s"] for name, r in report["rivals"].items()}}
    old = next(r for r in report["ingest"] if r["mode"] == "per result")
    ingest["bare upsert, layout before 0007"] = old["bare_upsert_old_layout_rows_per_s"]
    out: dict[str, Any] = {"queries_ms": rows, "per_epoch_points_per_s": ingest}
    if report["backend"] == "sqlite":
        b = report["query_db_bytes_per_point"]
        out["bytes_per_point"] = {"resweep": b["metric_values"], "before_0007": b["old_metrics"],
                                  **{name: r["bytes_per_point"] for name, r in report["rivals"].items()}}
    return out


# --- main -------------------------------------------------------------------------------------


def run_backend(backend: str, args: argparse.Namespace) -> dict[str, Any]:
    report: dict[str, Any] = {"backend": backend, "load_average_before": os.getloadavg(), "cpus": os.cpu_count()}
    scratch = Scratch(backend, args.pg_url)
    try:
        report["database"] = redact(scratch.url)
        report["ingest"] = bench_ingest(scratch.url, args)
        if backend == "sqlite":
            report["bytes_per_point"] = bytes_per_point(scratch.url, args)
        engine, ids, build_s, report["query_db_bytes_per_point"] = build_query_db(scratch.url, args)
        with engine.connect() as conn:
            of_bench = (
                "WHERE trial_id IN (SELECT t.id FROM trials t JOIN sweeps s ON s.id = t.sweep_id "
                "AND s.name = 'bench')"
            )
            report["metric_rows"] = conn.scalar(sa.text(f"SELECT count(*) FROM metrics {of_bench}"))
            report["layer_rows"] = conn.scalar(sa.text(f"SELECT count(*) FROM layer_stats {of_bench}"))
        report["build_s"], report["trials"], report["epochs"] = build_s, len(ids), args.epochs
        report["queries"] = bench_queries(engine, ids, args.repeat)
        engine.dispose()
        report["per_epoch"] = {"resweep": resweep_per_epoch(scratch.url, args)}
        if backend == "sqlite":
            report["per_epoch"]["extra"] = {"resweep, synchronous=FULL": resweep_per_epoch(scratch.url, args, "FULL")}
    finally:
        scratch.close()
    report["rivals"] = {}
    for name in args.rivals:
        report["rivals"][name] = bench_rival(name, backend, args, some_trials(args.trials))
    report["rival_timeout_s"] = args.rival_timeout_s
    for name, r in report["rivals"].items():
        print(f"({name} on {backend}: {r['register_trials_s']:.0f} s to register {args.trials} trials through its API, "
              f"{r['build_s']:.0f} s in all)", file=sys.stderr, flush=True)  # fmt: skip
    report["side_by_side"] = side_by_side(report)
    report["load_average_after"] = os.getloadavg()
    return report


def print_report(report: dict[str, Any]) -> None:
    load = ", ".join(f"{x:.1f}" for x in report["load_average_before"])
    print(f"\n== {report['backend']} ({report['database']}); load average {load} on {report['cpus']} CPUs")
    print(f"{'ingest':<11} {'rows':>7} {'writes.py/s':>12} {'bare INSERT/s':>14} {'ratio':>6} "
          f"{'bare upsert/s':>14} {'ratio':>6}")  # fmt: skip
    for r in report["ingest"]:
        print(f"{r['mode']:<11} {r['rows']:>7} {r['writes_rows_per_s']:>12,.0f} {r['bare_insert_rows_per_s']:>14,.0f} "
              f"{r['ratio']:>6.2f} {r['bare_upsert_rows_per_s']:>14,.0f} {r['ratio_same_sql']:>6.2f}")  # fmt: skip
    if "bytes_per_point" in report:
        b = report["bytes_per_point"]
        print(f"\nbytes per point ({b['points']:,} points): {b['metric_values']:.1f} B (metric_values) vs "
              f"{b['old_metrics']:.1f} B (the layout before migration 0007)")
    print(f"\nquery database: {report['metric_rows']:,} metric rows, {report['layer_rows']:,} layer rows "
          f"(built in {report['build_s']:.1f} s)")  # fmt: skip
    print(f"{'query':<38} {'rows':>8} {'median ms':>10} {'/300 ms':>8} {'cpu ms':>8}")
    for q in report["queries"]:
        print(f"{q['query']:<38} {q['rows']:>8} {q['median_ms']:>10.1f} {q['median_ms'] / BUDGET_MS:>8.2f} "
              f"{q['median_cpu_ms']:>8.1f}")  # fmt: skip
    print_side_by_side(report)


QUERY_LABELS = {FILTER: "filter: depth=56, shortcut=A, final test_err", CURVES: "curves: ~100 trials x 2 names",
                GRID: "seed pooling: grid (mean, std over seeds)"}  # fmt: skip


def _x(a: float | None, b: float | None, over: float | None = None) -> str:
    """a / b; with a missing (a query given up) and `over` its timeout in ms: more than over / b."""
    if a is None and over and b:
        return f">{over / b:.0f}x"
    return f"{a / b:.2f}x" if a and b else "-"


def _ms(value: float | None, report: dict[str, Any]) -> str:
    return f"{value:>12.1f}" if value is not None else f"{'>' + format(report['rival_timeout_s'], '.0f') + ' s':>12}"


def print_side_by_side(report: dict[str, Any]) -> None:
    """The stores side by side on this backend; ratios > 1 mean resweep is ahead."""
    side, rivals = report["side_by_side"], list(report["rivals"])
    print(f"\nside by side, {report['backend']}: the same {report['trials']:,} trials x {report['epochs']} epochs "
          "x 8 metrics in each store (ms, median; ratios: the other's time / resweep's)")  # fmt: skip
    head = ["resweep", "bare SQL", "before 0007", *rivals]
    print(f"{'query':<46}" + "".join(f"{h:>12}" for h in head) + f"{'resweep/bare':>13}{'before/bare':>12}"
          + "".join(f"{h + '/resw':>12}" for h in rivals))  # fmt: skip
    for query, row in side["queries_ms"].items():
        vals = [row["resweep"], row["bare"], row["before_0007"], *(row[r] for r in rivals)]
        print(f"{QUERY_LABELS[query]:<46}" + "".join(_ms(v, report) for v in vals)
              + f"{_x(row['resweep'], row['bare']):>13}{_x(row['before_0007'], row['bare']):>12}"
              + "".join(f"{_x(row[r], row['resweep'], report['rival_timeout_s'] * 1000):>12}" for r in rivals))  # fmt: skip
    ingest = side["per_epoch_points_per_s"]
    print("per-epoch ingest, points/s (one result of 8 metrics a call; ratio: resweep's / the other's)")
    for store, rate in ingest.items():
        print(f"  {store:<44}{rate:>12,.0f}{_x(ingest['resweep'], rate):>12}")
    if "bytes_per_point" in side:
        b = side["bytes_per_point"]
        print("bytes per stored point, SQLite (file growth; ratio: the other's / resweep's)")
        for store, size in b.items():
            print(f"  {store:<44}{size:>12.1f}{_x(size, b['resweep']):>12}")


QUICK = {"trials": 200, "epochs": 10, "repeat": 3, "ingest_trials": 10, "per_result_epochs": 5,
         "bytes_trials": 48, "bytes_epochs": 20, "rival_results": 40, "query_budget_s": 5.0,
         "rival_timeout_s": 20.0}  # fmt: skip


def _rival_name(text: str) -> str:
    names = {name.lower(): name for name in _rivals.RIVALS}
    if text.strip().lower() not in names:
        print(f"db_bench: --rivals: {text!r} is not one of {', '.join(_rivals.RIVALS)} or none", file=sys.stderr)
        raise SystemExit(2)
    return names[text.strip().lower()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--trials", type=int, default=2000, help="trials in the query database")
    parser.add_argument("--epochs", type=int, default=200, help="epochs per trial (x 8 metrics)")
    parser.add_argument("--layers", type=int, default=56, help="layer records per probe")
    parser.add_argument("--probes", type=int, default=5, help="probed epochs per trial")
    parser.add_argument("--repeat", type=int, default=5, help="runs per query (median)")
    parser.add_argument("--ingest-trials", type=int, default=50, help="trials written in the ingest test")
    parser.add_argument("--batch", type=int, default=250, help="results per transaction, batched ingest")
    parser.add_argument("--per-result-epochs", type=int, default=20, help="epochs per trial, per-result ingest")
    parser.add_argument("--bytes-trials", type=int, default=400, help="trials in the bytes-per-point test")
    parser.add_argument("--bytes-epochs", type=int, default=100, help="epochs per trial, bytes-per-point test")
    parser.add_argument("--rivals", default="MLflow,Optuna",
                        help="stores compared side by side: MLflow, Optuna, both (default) or none")
    parser.add_argument("--rival-results", type=int, default=400,
                        help="results (8 metrics each) written per store in the per-epoch ingest comparison")
    parser.add_argument("--query-budget-s", type=float, default=30.0,
                        help="stop repeating a query once its runs have taken this long (after one run)")
    parser.add_argument("--rival-timeout-s", type=float, default=60.0,
                        help="give up one of MLflow's or Optuna's queries after this long (reported as over it)")
    parser.add_argument("--quick", action="store_true",
                        help="small sizes (200 trials x 10 epochs, ...) on both backends: a couple of minutes")
    parser.add_argument("--pg-url", default=PG_ADMIN_URL, help="PostgreSQL server to create a scratch DB on")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    if args.quick:  # sizes not given on the command line become the quick ones
        given = {a.split("=")[0] for a in (argv if argv is not None else sys.argv[1:]) if a.startswith("--")}
        for option, small in QUICK.items():
            if f"--{option.replace('_', '-')}" not in given:
                setattr(args, option, small)
    args.rivals = [] if args.rivals.lower() == "none" else [_rival_name(r) for r in args.rivals.split(",")]

    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    reports = []
    for backend in backends:  # each backend's figures printed and saved as soon as they are in
        reports.append(run_backend(backend, args))
        print_report(reports[-1])
        sys.stdout.flush()
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            figures = {"args": {k: str(v) for k, v in vars(args).items()}, "backends": reports}
            args.json.write_text(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
