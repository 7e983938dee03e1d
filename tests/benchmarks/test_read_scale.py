"""benchmarks/read_scale.py and export_bench.py at tiny sizes: the databases they build hold what
resweep's own writes would (every trial summarised, every grid point pooled), and their rows have
the benchmark shape with a baseline and a ratio. Shapes and sanity only, never timings."""

from __future__ import annotations

import argparse
import importlib.util
import tempfile
from pathlib import Path

import pytest
import sqlalchemy as sa

from benchmarks import db_bench, export_bench, read_scale
from benchmarks.common import KEYS
from db import migrate
from db.engine import get_engine


def _reference(migration: str, view: str) -> str:
    path = migrate.MIGRATIONS_DIR / "versions" / f"{migration}.py"
    spec = importlib.util.spec_from_file_location(f"m{migration}_bench", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, view.upper()).replace(f"CREATE VIEW {view}", f"CREATE VIEW reference_{view}", 1)


def test_the_built_sweep_is_what_the_writes_would_make(engine):
    """Summaries and grid equal the views that aggregated metric_values (0007) and pooled every
    trial (0009) themselves; 8 metrics an epoch; 18 layer records every 10th epoch."""
    _, ids = read_scale.build_sweep(engine, "big", 40, 20)
    with engine.begin() as conn:
        conn.exec_driver_sql(_reference("0007_lean_metrics", "trial_results"))
        conn.exec_driver_sql(_reference("0009_trial_summaries", "grid_results").replace(
            "FROM trial_results AS r", "FROM reference_trial_results AS r"))
    with engine.connect() as conn:
        def read(sql: str) -> list[tuple]:
            return [tuple(r) for r in conn.exec_driver_sql(sql)]

        assert read("SELECT * FROM trial_results ORDER BY trial_id") == read(
            "SELECT * FROM reference_trial_results ORDER BY trial_id")
        got = read("SELECT * FROM grid_results ORDER BY depth, shortcut")
        want = read("SELECT * FROM reference_grid_results ORDER BY depth, shortcut")
        assert [r[:7] for r in got] == [r[:7] for r in want] and len(got) == 20  # 5 depths x 4 shortcuts, 2 seeds
        assert all(g[7:] == pytest.approx(w[7:], rel=1e-12) for g, w in zip(got, want))
        assert read("SELECT count(*) FROM metric_values")[0][0] == 40 * 20 * 8
        assert read("SELECT count(*), count(DISTINCT epoch) FROM layer_stats") == [(40 * 2 * 18, 2)]
        assert read("SELECT DISTINCT status FROM trials") == [("terminated",)]
        config = conn.execute(sa.text("SELECT config FROM trials WHERE id = :i"), {"i": ids[3]}).scalar()
    assert '"depth": 56' in config if isinstance(config, str) else config["depth"] == 56


def _check_rows(rows: list[dict]) -> None:
    for row in rows:
        assert set(KEYS) <= set(row), row
        assert row["value"] is not None and row["value"] > 0, row
        if row["baseline_value"] is not None:
            assert row["ratio"] == pytest.approx(row["value"] / row["baseline_value"]), row


@pytest.mark.slow  # a dozen commands, each a fresh interpreter
@pytest.mark.postgres
def test_read_scale_times_every_figure_on_both_backends_and_beside_other_sweeps():
    sizes = {"trials": 40, "epochs": 10, "base": 20, "others": 2, "other_trials": 20, "other_epochs": 5}
    with tempfile.TemporaryDirectory() as tmp:
        rows = (read_scale.run_backend("sqlite", sizes, False, Path(tmp), quick=True)
                + read_scale.run_backend("postgresql", sizes, True, Path(tmp), quick=True))
    _check_rows(rows)
    names = [r["name"] for r in rows]
    for figure in ("grid(sweep)", "trials(sweep, depth=56, shortcut=A)", "command: status NAME",
                   "command: query on grid_results", "sweeps()", "command: status (the sweeps)"):
        assert sum(n.startswith(figure + ",") for n in names) == 3, figure  # SQLite, PostgreSQL, among others
    assert sum(n.startswith(("command: report NAME", "command: export NAME")) for n in names) == 2  # SQLite
    among = [r for r in rows if "among 4 sweeps" in r["name"]]
    assert among and all(r["baseline"] in (None, "same with the sweep alone (2 sweeps)") for r in among)
    assert all("plans grid: index" in r["note"] for r in among)


def test_db_bench_builds_its_query_database_on_a_fresh_database(tmp_path):
    """The builder dashboard_bench and export_bench once called on a new file made the old layout's
    table itself (it failed: no such table: old_metrics)."""
    args = argparse.Namespace(trials=20, epochs=3, layers=3, probes=1)
    engine, ids, _, sizes = db_bench.build_query_db(f"sqlite:///{tmp_path / 'fresh.db'}", args)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM metrics").scalar() == 20 * 3 * 8
        assert conn.exec_driver_sql("SELECT count(*) FROM old_metrics").scalar() == 20 * 3 * 8
        assert conn.exec_driver_sql("SELECT sum(n_seeds) FROM grid_results").scalar() == 20
    engine.dispose()
    assert len(ids) == 20 and sizes["points"] == 20 * 3 * 8


@pytest.mark.slow  # three exports, each a fresh interpreter
def test_export_bench_exports_every_format_against_reading_alone():
    rows = export_bench.measure(30, epochs=10)
    _check_rows(rows)
    assert [r["name"].split(",")[0] for r in rows] == ["export csv", "export parquet", "export json"]
    assert all("metrics.parquet" in r["note"] or "metrics.csv" in r["note"] or "metrics.json" in r["note"]
               for r in rows)
