"""`status` at 80 and 100 columns, and `model` given either a trial's integer id or Tune's key,
through the real command line over the dashboard's fixture database (no Ray: the checkpoint-less
fixture trials show which trial an id or key resolved to; tests/orchestrator/results/test_results.py
writes a real model file by key)."""

from __future__ import annotations

import re

import pytest

from db import writes
from db.engine import get_engine
from tests.dashboard.conftest import DEPTH_SWEEP, build, config
from tests.orchestrator.conftest import run_cli


@pytest.fixture(scope="module")
def db(tmp_path_factory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('status') / 'resweep.db'}"
    build(url)
    return url


@pytest.mark.parametrize("columns", [80, 100])
def test_status_fits_the_terminal_with_integer_ids_and_errors_in_percent(db, tmp_path, columns):
    done = run_cli("status", DEPTH_SWEEP, "--db", db, cwd=tmp_path, env={"COLUMNS": str(columns)})
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert max(map(len, lines)) <= columns, done.stdout
    assert "…" not in done.stdout  # nothing cut short
    header = next(line for line in lines if line.startswith("trial"))
    assert re.findall(r"\S+(?: %)?", header)[:2] == ["trial", "depth"]
    assert "test %" in header and "best %" in header
    assert "host" not in header and "attempts" not in header  # no host recorded, no retried trial
    # trial 3 is ResNet-20 (A) seed 0: final test error 0.09 -> 9.00 %
    row = next(line for line in lines if re.match(r"\s*3\s+20\s+A\s+0\s", line))
    assert row.split()[4:8] == ["terminated", "3", "6.00", "9.00"]

    sweeps = run_cli("status", "--db", db, cwd=tmp_path, env={"COLUMNS": str(columns)})
    assert sweeps.returncode == 0 and max(map(len, sweeps.stdout.splitlines())) <= columns, sweeps.stdout
    assert DEPTH_SWEEP in sweeps.stdout and "…" not in sweeps.stdout


def test_status_shows_tunes_key_where_there_is_room(db, tmp_path):
    done = run_cli("status", DEPTH_SWEEP, "--db", db, cwd=tmp_path, env={"COLUMNS": "140"})
    assert done.returncode == 0
    assert re.search(r"^\s*3\s+t_20_A_0\s+20\s", done.stdout, re.M), done.stdout


def test_status_without_a_database_names_the_directory_and_suggests_launch(tmp_path):
    done = run_cli("status", cwd=tmp_path)
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert f"no resweep database at {tmp_path.resolve() / 'resweep.db'} (looked in {tmp_path.resolve()})" in line
    assert "python -m orchestrator launch" in line
    assert not (tmp_path / "resweep.db").exists()


@pytest.mark.parametrize("reference", ["3", "t_20_A_0"])
def test_model_takes_the_integer_id_or_tunes_key(db, tmp_path, reference):
    done = run_cli("model", reference, "--db", db, "--out", str(tmp_path / "m.pt"), cwd=tmp_path)
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("error: trial 3 (cifar10-depth): no checkpoint recorded"), line  # the same trial
    assert not (tmp_path / "m.pt").exists()


def test_model_refuses_an_unknown_or_ambiguous_key_in_one_line(db, tmp_path):
    done = run_cli("model", "nope_00001", "--db", db, "--out", str(tmp_path / "m.pt"), cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip() == (f"error: model: no trial with id or Tune key 'nope_00001' in {db} "
                                   "(`python -m orchestrator status NAME` lists a sweep's trials with both)")
    engine = get_engine(db)  # the same key in a second sweep
    other = writes.create_sweep(engine, name="again", spec="name: again\n", spec_hash="2" * 64)
    writes.upsert_trial(engine, other, "t_20_A_0", status="pending", config=config(20, "A", 0))
    engine.dispose()
    done = run_cli("model", "t_20_A_0", "--db", db, "--out", str(tmp_path / "m.pt"), cwd=tmp_path)
    assert done.returncode == 2
    assert "names trials 3, 12 (one per sweep)" in done.stderr and "give the trial's id instead" in done.stderr


def test_model_help_says_either_id_works(tmp_path):
    done = run_cli("model", "--help", cwd=tmp_path, env={"COLUMNS": "200"})
    assert "Tune's trial key" in done.stdout and "`trial` column of `status NAME`" in done.stdout
