"""Benchmark of the result store on SQLite and PostgreSQL: ingest speed and read API latency.

    python benchmarks/db_bench.py [--backend sqlite|postgresql|both] [--trials 2000] [--json PATH]

(1) Ingest: metric rows per second written through db/writes.py against a bare DBAPI
    `executemany` of the same rows with the same transaction boundaries in the same run: a plain
    INSERT (the ratio) and the same ON CONFLICT upsert SQL (ratio_same_sql: Python overhead only).
    Two granularities: `record_results` batches (how a recorder flushing many results writes)
    and `record_result` one result per transaction (what the recorder does per epoch).
(2) Queries: a database of --trials trials x --epochs epochs x 8 metrics plus layer records
    (--layers layers at --probes epochs per trial), built with set-based INSERT ... SELECT,
    then each db/queries.py function timed (median of --repeat runs) against a 300 ms budget.

Prints two tables with the ratios; --json PATH also writes the figures. Not asserted in CI.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Callable

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from db import queries, writes  # noqa: E402
from db.engine import get_engine, redact  # noqa: E402

PG_ADMIN_URL = os.environ.get("RESWEEP_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
NAMES = ["train_loss", "train_err", "test_loss", "test_err", "lr", "epoch_time_s", "images_per_s", "val_err"]
BUDGET_MS = 300.0
DEPTHS = [20, 32, 44, 56, 110]
SHORTCUTS = ["none", "A", "B", "C"]


# --- databases --------------------------------------------------------------------------------


class Scratch:
    """A fresh, empty database on one backend, removed afterwards."""

    def __init__(self, backend: str, pg_admin_url: str) -> None:
        self.backend, self.pg_admin_url = backend, pg_admin_url
        if backend == "sqlite":
            self.dir = tempfile.TemporaryDirectory(prefix="resweep-bench-")
            self.url = f"sqlite:///{Path(self.dir.name) / 'bench.db'}"
        else:
            self.name = f"resweep_bench_{uuid.uuid4().hex[:10]}"
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
        {"sweep_id": sweep_id, "trial_key": f"{prefix}{i:05d}", "status": status, "dataset": "cifar10",
         "model": "cifar", "depth": DEPTHS[i % 5], "block": "basic", "shortcut": SHORTCUTS[(i // 5) % 4],
         "seed": i // 20, "config": {"lr": 0.1, "seed": i // 20}, "params_count": 270_000 + i}
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
    return [[(id_map[r.trial_id], name, r.epoch, value) for name, value in r.metrics.items()] for r in results]


def _bare(engine: sa.Engine, batches: list[list[tuple]], upsert: bool) -> float:
    """Seconds for a plain DBAPI executemany + commit per batch (INSERT, or the same upsert SQL)."""
    ph = "?" if engine.dialect.name == "sqlite" else "%s"
    sql = f"INSERT INTO metrics (trial_id, name, epoch, value) VALUES ({ph}, {ph}, {ph}, {ph})"
    if upsert:
        sql += " ON CONFLICT (trial_id, name, epoch) DO UPDATE SET value = excluded.value"
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


def bench_ingest(url: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    engine = get_engine(url)
    sweep_id = writes.create_sweep(engine, name="ingest", spec="", spec_hash="")
    n = args.ingest_trials
    out = []
    for mode, per_tx, epochs in (("batched", args.batch, args.epochs), ("per result", 1, args.per_result_epochs)):
        ours = add_trials(engine, sweep_id, n, f"{mode[0]}w", status="running")
        results = _results(ours, epochs)
        chunks = [results[i : i + per_tx] for i in range(0, len(results), per_tx)]
        bare = {}
        for upsert in (False, True):
            theirs = add_trials(engine, sweep_id, n, f"{mode[0]}b{int(upsert)}", status="running")
            id_map = dict(zip(ours, theirs))
            batches = [[row for rows in _bare_rows(chunk, id_map) for row in rows] for chunk in chunks]
            bare[upsert] = _bare(engine, batches, upsert)
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
            "ratio": bare[False] / t_writes, "ratio_same_sql": bare[True] / t_writes,
        })  # fmt: skip
    engine.dispose()
    return out


# --- (2) queries ------------------------------------------------------------------------------


def _series(n: int) -> str:
    """Rows x = 1..n as a portable recursive CTE body."""
    return f"SELECT 1 AS x UNION ALL SELECT x + 1 FROM s WHERE x < {n}"


def build_query_db(url: str, args: argparse.Namespace) -> tuple[sa.Engine, list[int], float]:
    """2,000 trials x 200 epochs x 8 metrics (by default) and the layer records, set-based."""
    start = time.perf_counter()
    engine = get_engine(url)
    sweep_id = writes.create_sweep(engine, name="bench", spec="", spec_hash="")
    ids = add_trials(engine, sweep_id, args.trials, "q")
    names = " UNION ALL ".join(f"SELECT '{n}' AS name, {k} AS k" for k, n in enumerate(NAMES))
    probe_every = max(1, args.epochs // args.probes)
    with engine.begin() as conn:  # text(): escapes '%' for psycopg
        conn.execute(sa.text(
            f"""
            INSERT INTO metrics (trial_id, name, epoch, value)
            WITH RECURSIVE s(x) AS ({_series(args.epochs)}), n AS ({names})
            SELECT t.id, n.name, s.x, 1.0 / (s.x + n.k + 1) + (t.id - 97 * (t.id / 97)) * 0.001
            FROM trials AS t CROSS JOIN n CROSS JOIN s
            WHERE t.sweep_id = {sweep_id}
            ORDER BY t.id, n.name, s.x
            """
        ))
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
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM ANALYZE")
    else:
        with engine.begin() as conn:
            conn.exec_driver_sql("ANALYZE")
    return engine, ids, time.perf_counter() - start


def _median_ms(fn: Callable[[], Any], repeat: int) -> tuple[float, float, int]:
    """Median wall time and median CPU time of this process (ms), and the rows returned. The CPU
    time shows the cost on a shared machine: on SQLite it is the whole query, on PostgreSQL the
    client's share (the server's work is not in it)."""
    wall, cpu, rows = [], [], 0
    for _ in range(repeat):
        start, start_cpu = time.perf_counter(), time.process_time()
        rows = len(fn())
        wall.append((time.perf_counter() - start) * 1000)
        cpu.append((time.process_time() - start_cpu) * 1000)
    return statistics.median(wall), statistics.median(cpu), rows


def bench_queries(engine: sa.Engine, ids: list[int], repeat: int) -> list[dict[str, Any]]:
    some = ids[:: max(1, len(ids) // 100)][:100]
    cases: list[tuple[str, Callable[[], Any]]] = [
        ("sweeps()", lambda: queries.sweeps(engine)),
        ("trials(sweep)", lambda: queries.trials(engine, "bench")),
        ("grid(sweep)", lambda: queries.grid(engine, "bench")),
        (f"curves({len(some)} trials, 2 names)", lambda: queries.curves(engine, some, ["train_err", "test_err"])),
        (f"curves({len(some)} trials, all names)", lambda: queries.curves(engine, some)),
        (f"curves({len(ids)} trials, test_err)", lambda: queries.curves(engine, ids, ["test_err"])),
        (f"layer_stats({len(some)} trials, last probe)", lambda: queries.layer_stats(engine, some)),
        (f"layer_stats({len(ids)} trials, last probe)", lambda: queries.layer_stats(engine, ids)),
    ]
    out = []
    for name, fn in cases:
        ms, cpu_ms, rows = _median_ms(fn, repeat)
        out.append({"query": name, "rows": rows, "median_ms": ms, "median_cpu_ms": cpu_ms,
                    "within_budget": ms < BUDGET_MS})  # fmt: skip
    return out


# --- main -------------------------------------------------------------------------------------


def run_backend(backend: str, args: argparse.Namespace) -> dict[str, Any]:
    report: dict[str, Any] = {"backend": backend, "load_average_before": os.getloadavg(), "cpus": os.cpu_count()}
    scratch = Scratch(backend, args.pg_url)
    try:
        report["database"] = redact(scratch.url)
        report["ingest"] = bench_ingest(scratch.url, args)
        engine, ids, build_s = build_query_db(scratch.url, args)
        with engine.connect() as conn:
            of_bench = (
                "WHERE trial_id IN (SELECT t.id FROM trials t JOIN sweeps s ON s.id = t.sweep_id "
                "AND s.name = 'bench')"
            )
            report["metric_rows"] = conn.scalar(sa.text(f"SELECT count(*) FROM metrics {of_bench}"))
            report["layer_rows"] = conn.scalar(sa.text(f"SELECT count(*) FROM layer_stats {of_bench}"))
        report["build_s"] = build_s
        report["queries"] = bench_queries(engine, ids, args.repeat)
        report["load_average_after"] = os.getloadavg()
        engine.dispose()
    finally:
        scratch.close()
    return report


def print_report(report: dict[str, Any]) -> None:
    load = ", ".join(f"{x:.1f}" for x in report["load_average_before"])
    print(f"\n== {report['backend']} ({report['database']}); load average {load} on {report['cpus']} CPUs")
    print(f"{'ingest':<11} {'rows':>7} {'writes.py/s':>12} {'bare INSERT/s':>14} {'ratio':>6} "
          f"{'bare upsert/s':>14} {'ratio':>6}")  # fmt: skip
    for r in report["ingest"]:
        print(f"{r['mode']:<11} {r['rows']:>7} {r['writes_rows_per_s']:>12,.0f} {r['bare_insert_rows_per_s']:>14,.0f} "
              f"{r['ratio']:>6.2f} {r['bare_upsert_rows_per_s']:>14,.0f} {r['ratio_same_sql']:>6.2f}")  # fmt: skip
    print(f"\nquery database: {report['metric_rows']:,} metric rows, {report['layer_rows']:,} layer rows "
          f"(built in {report['build_s']:.1f} s)")  # fmt: skip
    print(f"{'query':<38} {'rows':>8} {'median ms':>10} {'/300 ms':>8} {'cpu ms':>8}")
    for q in report["queries"]:
        print(f"{q['query']:<38} {q['rows']:>8} {q['median_ms']:>10.1f} {q['median_ms'] / BUDGET_MS:>8.2f} "
              f"{q['median_cpu_ms']:>8.1f}")  # fmt: skip


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
    parser.add_argument("--pg-url", default=PG_ADMIN_URL, help="PostgreSQL server to create a scratch DB on")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)

    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    reports = [run_backend(b, args) for b in backends]
    for report in reports:
        print_report(report)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        figures = {"args": {k: str(v) for k, v in vars(args).items()}, "backends": reports}
        args.json.write_text(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
