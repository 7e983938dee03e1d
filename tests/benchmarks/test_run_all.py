"""The benchmark runner: discovery, the row convention, failures named, GPU modules without a GPU,
and `python -m benchmarks --quick` over every module, so that no benchmark rots unnoticed.

Benchmarks are run by hand, never asserted against wall-clock numbers; these tests only check
that every module runs and reports in the agreed shape.
"""

from __future__ import annotations

import json

import pytest

from benchmarks import run_all
from benchmarks.common import KEYS, result


def test_discover_finds_benchmarks_but_not_the_runner_or_the_trial_hooks():
    names = run_all.discover()
    assert {"end_to_end", "recorder_scaling", "query_scaling", "gpu_suite"} <= set(names)
    assert not {"run_all", "common", "__main__", "__init__", "trial_hooks"} & set(names)
    assert set(run_all.NEEDS_CUDA) <= set(names)  # a renamed GPU module cannot drop out of the list


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
                                                "error": None, "not_measured": None}]
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


def test_the_exception_a_module_ended_with_is_found_in_its_output():
    out = """progress...
Traceback (most recent call last):
  File "x.py", line 1, in <module>
    build()
sqlite3.OperationalError: no such table: old_metrics

The above exception was the direct cause of the following exception:

Traceback (most recent call last):
  File "y.py", line 2, in <module>
sqlalchemy.exc.OperationalError: (sqlite3.OperationalError) no such table: old_metrics
[SQL: SELECT 1]
""".splitlines()
    assert run_all.error_line(out) == ("sqlite3.OperationalError: no such table: old_metrics -> "
                                       "sqlalchemy.exc.OperationalError: (sqlite3.OperationalError) "
                                       "no such table: old_metrics")
    assert run_all.error_line(["starting", "killed by the OOM killer", ""]) == "killed by the OOM killer"
    assert run_all.error_line([]) == "no output"


def test_a_module_that_fails_is_named_with_its_error_in_the_json_the_table_and_the_exit_status(
        tmp_path, capsys, monkeypatch):
    # A module that cannot even be imported: the real child process, the real failure.
    monkeypatch.setattr(run_all, "discover", lambda: ["no_such_benchmark"])
    out = tmp_path / "bench.json"
    assert run_all.main(["--quick", "--out", str(out)]) == 1
    (module,) = json.loads(out.read_text())["modules"]
    assert module["module"] == "no_such_benchmark"
    assert module["error"].startswith("exit status 1: ModuleNotFoundError: No module named "
                                      "'benchmarks.no_such_benchmark'"), module["error"]
    printed = capsys.readouterr().out
    assert "(failed)" in printed and "no_such_benchmark" in printed.split("modules (seconds):")[1]
    assert "FAILED: exit status 1: ModuleNotFoundError" in printed


@pytest.mark.parametrize("cuda", [False, True])
def test_a_gpu_module_says_its_gpu_figures_were_not_measured_when_there_is_no_cuda_device(
        tmp_path, capsys, monkeypatch, cuda):
    monkeypatch.setattr(run_all, "cuda_present", lambda: cuda)
    ran = []
    monkeypatch.setattr(run_all, "run_module", lambda name, quick, timeout_s: (
        ran.append(name) or [result("CPU logic check row", 1.0, "images/s")], 0.1, None))
    out = tmp_path / "bench.json"
    assert run_all.main(["--quick", "--only", "gpu_trainers,query_scaling", "--out", str(out)]) == 0
    assert ran == ["gpu_trainers", "query_scaling"]  # the CPU logic check still runs
    doc = json.loads(out.read_text())
    missing = {m["module"]: m["not_measured"] for m in doc["modules"]}
    assert missing["query_scaling"] is None
    marks = [r for r in doc["results"] if r["name"] == "(GPU figures not measured)"]
    printed = capsys.readouterr().out
    if cuda:
        assert missing["gpu_trainers"] is None and not marks
        assert "needs a CUDA device" not in printed
    else:
        assert missing["gpu_trainers"].startswith("needs a CUDA device, none here: ")
        assert [(r["module"], r["note"]) for r in marks] == [("gpu_trainers", missing["gpu_trainers"])]
        assert "GPU figures not measured (needs a CUDA device)" in printed


@pytest.mark.slow
@pytest.mark.timeout(3600)  # each module has the runner's own 600 s limit in quick mode
def test_every_benchmark_module_runs_in_quick_mode(tmp_path, capsys):
    out = tmp_path / "quick.json"
    status = run_all.main(["--quick", "--out", str(out)])
    doc = json.loads(out.read_text())
    modules = {m["module"]: m for m in doc["modules"]}
    failed = [f"{m['module']}: {m['error']}" for m in doc["modules"] if m["error"]]
    assert not failed, "benchmark modules failed in quick mode:\n" + "\n".join(failed)
    assert status == 0
    assert sorted(modules) == run_all.discover()
    rows = {}
    for r in doc["results"]:
        rows.setdefault(r["module"], []).append(r)
    assert not [m for m in modules if not rows.get(m)], "modules that gave no row"
    checks = [f"{r['module']}: {r['name']}: {r['note']}" for r in doc["results"] if r["unit"] == "ok" and r["value"] != 1.0]
    assert not checks, "a benchmark's own check failed:\n" + "\n".join(checks)  # e.g. gpu_trainers' resume
    assert all(set(KEYS) <= set(r) for r in doc["results"])
    cuda = run_all.cuda_present()
    for name in run_all.NEEDS_CUDA:  # without a GPU: said so, in the JSON and in a row
        said = [r["note"] for r in rows[name] if r["name"] == "(GPU figures not measured)"]
        assert said == ([] if cuda else [modules[name]["not_measured"]]), name
        assert len(rows[name]) > len(said), name  # and its CPU logic check's rows are there
    printed = capsys.readouterr().out
    assert "modules (seconds):" in printed
