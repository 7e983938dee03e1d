"""The benchmark runner: discovery, the row convention, one real module end to end.

Benchmarks are run by hand, never asserted against wall-clock numbers; these tests only check
that the suite runs and reports in the agreed shape.
"""

from __future__ import annotations

import json

from benchmarks import run_all
from benchmarks.common import KEYS, result


def test_discover_finds_benchmarks_but_not_the_runner():
    names = run_all.discover()
    assert {"end_to_end", "recorder_scaling", "query_scaling", "gpu_suite"} <= set(names)
    assert not {"run_all", "common", "__main__", "__init__"} & set(names)


def test_rows_are_normalised_and_ratios_computed():
    assert result("x", 3.0, "s", "base", 2.0)["ratio"] == 1.5
    assert result("x", 3.0, "s")["ratio"] is None
    row = run_all._normalise({"name": "y", "value": "4", "unit": "ms", "baseline_value": 8})
    assert set(KEYS) <= set(row) and row["ratio"] == 0.5
    rows = run_all._rows_from_stdout('progress...\n[{"name": "z", "value": 1, "unit": "s"}]\n')
    assert rows == [{"name": "z", "value": 1, "unit": "s"}]


def test_suite_runs_a_module_prints_one_table_and_writes_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert run_all.main(["--quick", "--only", "query_scaling", "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["quick"] and doc["modules"] == [{"module": "query_scaling",
                                                "seconds": doc["modules"][0]["seconds"],
                                                "error": None}]
    rows = doc["results"]
    assert rows and all(set(KEYS) <= set(r) for r in rows)
    grid = next(r for r in rows if r["name"] == "grid(sweep) at 2,000 trials")
    assert grid["unit"] == "ms" and grid["baseline"] == "same at 200 trials" and grid["ratio"] > 0
    printed = capsys.readouterr().out
    assert printed.splitlines()[0].split()[:3] == ["benchmark", "measure", "value"]
    assert "grid(sweep) at 2,000 trials" in printed


def test_unknown_module_is_refused(capsys):
    try:
        run_all.main(["--only", "nope"])
    except SystemExit as exc:
        assert exc.code == 2
    assert "no benchmark module(s) nope" in capsys.readouterr().err
