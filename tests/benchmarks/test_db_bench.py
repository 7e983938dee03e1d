"""benchmarks/db_bench.py at tiny sizes: every store reports every figure, on the same data, with
its ratio against resweep's; the runner turns them into rows. Shapes only, never timings."""

from __future__ import annotations

import json

import pytest

from benchmarks import db_bench, run_all

pytestmark = pytest.mark.slow  # MLflow's migrations and the three stores, even at 20 trials

TINY = ["--quick", "--backend", "sqlite", "--trials", "20", "--epochs", "3", "--repeat", "1",
        "--rival-results", "4", "--ingest-trials", "2", "--per-result-epochs", "2", "--batch", "2",
        "--bytes-trials", "16", "--bytes-epochs", "2", "--layers", "3", "--probes", "1"]  # fmt: skip


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("db_bench") / "db.json"
    assert db_bench.main([*TINY, "--json", str(out)]) == 0
    return json.loads(out.read_text())["backends"][0]


def test_every_store_answers_the_three_queries_with_the_same_rows(report):
    side = report["side_by_side"]
    assert set(report["rivals"]) == {"MLflow", "Optuna"}
    assert set(side["queries_ms"]) == {"filter", "curves", "grid"}
    for query, row in side["queries_ms"].items():
        assert all(row[store] > 0 for store in ("resweep", "bare", "before_0007", "MLflow", "Optuna")), query
        # The same data in every store: the same number of answers (20 trials: 1 with depth 56
        # and shortcut A, 20 grid points of one seed, 3 epochs x 2 names of the chosen trials).
        assert len(set(row["rows"].values())) == 1, (query, row["rows"])
    assert side["queries_ms"]["filter"]["rows"]["resweep"] == 1
    assert side["queries_ms"]["grid"]["rows"]["resweep"] == 20
    assert side["queries_ms"]["curves"]["rows"]["resweep"] == len(db_bench.some_trials(20)) * 3 * 2


def test_ingest_and_bytes_are_reported_for_every_store(report):
    side = report["side_by_side"]
    assert {"resweep", "resweep, synchronous=FULL", "MLflow", "Optuna",
            "bare upsert, layout before 0007"} <= set(side["per_epoch_points_per_s"])  # fmt: skip
    assert all(rate > 0 for rate in side["per_epoch_points_per_s"].values())
    assert set(side["bytes_per_point"]) == {"resweep", "before_0007", "MLflow", "Optuna"}
    assert all(b > 0 for b in side["bytes_per_point"].values())


def test_the_runner_turns_them_into_rows_with_ratios_against_resweep(report):
    rows = run_all._side_by_side_rows(report)
    names = [r["name"] for r in rows]
    assert "sqlite: filter (20 trials x 3 epochs), MLflow" in names
    assert "sqlite: per-epoch ingest, Optuna" in names
    assert "sqlite: bytes per stored point (20 trials x 3 epochs), before_0007" in names
    assert all(r["ratio"] is not None and r["ratio"] > 0 for r in rows)
    assert {r["baseline"] for r in rows} == {"resweep (db.queries)", "resweep (record_result)",
                                             "resweep (metric_values)"}  # fmt: skip


def test_an_unknown_store_is_refused_in_one_line(capsys):
    with pytest.raises(SystemExit) as exc:
        db_bench.main(["--rivals", "wandb"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["db_bench: --rivals: 'wandb' is not one of MLflow, Optuna or none"]
