"""Bad sweep files through the real `launch` command: exit 2, one line per problem, no traceback,
the database unchanged and Ray never started."""

from __future__ import annotations

import textwrap

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from db import writes
from db.engine import get_engine
from orchestrator.cli import app

GOOD = """
name: {name}
dataset: synthetic
model: cifar
synthetic: {{num_train: 64, num_test: 32, image_size: 8}}
grid:
  depth: [8]
  shortcut: [none, A]
train:
  epochs: 2
"""


@pytest.fixture
def db(tmp_path, monkeypatch):
    """A database that already holds a sweep named `taken`; Ray must not be started."""
    url = f"sqlite:///{tmp_path / 'resweep.db'}"
    engine = get_engine(url)
    writes.create_sweep(engine, name="taken", spec=GOOD.format(name="taken"), spec_hash="0" * 64)
    engine.dispose()

    def no_ray(*args, **kwargs):
        raise AssertionError("Ray was started for a bad sweep file")

    monkeypatch.setattr("ray.init", no_ray)
    monkeypatch.chdir(tmp_path)
    return url


def snapshot(url: str) -> dict:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        tables = sa.inspect(conn).get_table_names()
        out = {t: conn.execute(sa.text(f"SELECT * FROM {t}")).all() for t in tables}
    engine.dispose()
    return out


def launch(tmp_path, url: str, text: str, *args: str):
    path = tmp_path / "bad.yaml"
    path.write_text(textwrap.dedent(text))
    before = snapshot(url)
    result = CliRunner().invoke(app, ["launch", str(path), "--db", url, *args])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert snapshot(url) == before
    assert not (tmp_path / "results").exists()
    return [line for line in result.stderr.splitlines() if line]


def test_unknown_key(tmp_path, db):
    (line,) = launch(tmp_path, db, GOOD.format(name="n") + "colour: red\n")
    assert line == f"error: {tmp_path / 'bad.yaml'}: colour: unknown key (allowed: name, dataset, data_dir, " \
                   "model, grid, train, probes, resources, search, scheduler, fault_tolerance, synthetic, model_options)"


def test_wrong_type(tmp_path, db):
    (line,) = launch(tmp_path, db, GOOD.format(name="n").replace("epochs: 2", "epochs: two"))
    assert line.endswith("bad.yaml: train.epochs: expected a whole number, got 'two'")


def test_depth_the_model_cannot_have(tmp_path, db):
    (line,) = launch(tmp_path, db, GOOD.format(name="n").replace("depth: [8]", "depth: [8, 10]"))
    assert line.endswith("bad.yaml: grid.depth: 10 is not a depth of cifar nets with basic blocks "
                         "(allowed: 6n+2 = 8, 14, 20, 26, 32, 38, 44, 50, ...)")


def test_dataset_model_pair_that_cannot_work(tmp_path, db):
    text = GOOD.format(name="n").replace("dataset: synthetic", "dataset: digits").replace("model: cifar", "model: imagenet")
    text = text.replace("synthetic: {num_train: 64, num_test: 32, image_size: 8}\n", "").replace("[8]", "[18]")
    (line,) = launch(tmp_path, db, text)
    assert "bad.yaml: model: imagenet's stem and stages shrink images 32-fold; digits's 8x8 images are too small" in line


def test_probes_every_below_one(tmp_path, db):
    (line,) = launch(tmp_path, db, GOOD.format(name="n") + "probes: {every: 0}\n")
    assert line.endswith("bad.yaml: probes.every: 0 is out of range (allowed: >= 1)")


def test_empty_grid_axis(tmp_path, db):
    (line,) = launch(tmp_path, db, GOOD.format(name="n").replace("shortcut: [none, A]", "shortcut: []"))
    assert line.endswith("bad.yaml: grid.shortcut: empty (allowed: a list of at least one value)")


def test_reversed_search_bounds(tmp_path, db):
    text = GOOD.format(name="n") + "search:\n  space:\n    weight_decay: {log_uniform: [1.0e-3, 1.0e-5]}\n"
    (line,) = launch(tmp_path, db, text)
    assert line.endswith("bad.yaml: search.space.weight_decay.log_uniform: bounds [0.001, 1e-05] are reversed "
                         "or equal (allowed: [low, high], low < high)")


def test_name_already_in_the_database(tmp_path, db):
    (line,) = launch(tmp_path, db, GOOD.format(name="taken"))
    assert line.endswith(f"bad.yaml: name: 'taken' already exists in {db} (allowed: --resume to continue it, "
                         "--new-name NAME to run it again)")


def test_several_problems_one_line_each(tmp_path, db):
    text = GOOD.format(name="taken").replace("depth: [8]", "depth: [9]") + "probes: {every: 0}\nsearch: {mode: up}\n"
    lines = launch(tmp_path, db, text)
    assert [line.split(": ")[2] for line in lines] == ["probes.every", "search.mode", "grid.depth"]
    assert all(line.startswith("error: ") for line in lines)


def test_resume_of_a_sweep_that_is_not_there(tmp_path, db):
    (line,) = launch(tmp_path, db, GOOD.format(name="nobody"), "--resume")
    assert line.endswith("bad.yaml: name: no sweep 'nobody' in " + db + " to resume (launch it without --resume)")


def test_missing_file(tmp_path, db):
    result = CliRunner().invoke(app, ["launch", str(tmp_path / "nope.yaml"), "--db", db])
    assert result.exit_code == 2
    assert result.stderr.strip() == f"error: {tmp_path / 'nope.yaml'}: no such file (give the path of a sweep YAML file)"


def test_status_of_an_unknown_sweep(tmp_path, db):
    result = CliRunner().invoke(app, ["status", "nobody", "--db", db])
    assert result.exit_code == 2
    assert result.stderr.strip() == f"error: status: no sweep named 'nobody' in {db} " \
                                    "(`python -m orchestrator status` lists the sweeps)"


def test_unreachable_ray_address(tmp_path, db):
    (line,) = launch(tmp_path, db, GOOD.format(name="n"), "--address", "127.0.0.1:1")
    assert line.startswith("error: --address 127.0.0.1:1: nothing answers there (Connection refused); "
                           "start the head with `ray start --head`")


def test_new_name_must_be_a_usable_name(tmp_path, db):
    (line,) = launch(tmp_path, db, GOOD.format(name="taken"), "--new-name", "no spaces please")
    assert line == ("error: --new-name 'no spaces please': 'no spaces please' is not a usable name "
                    "(allowed: letters, digits, '.', '_', '-'; not starting with . _ -)")


def test_new_name_and_resume_exclude_each_other(tmp_path, db):
    (line,) = launch(tmp_path, db, GOOD.format(name="taken"), "--new-name", "other", "--resume")
    assert line.startswith("error: --resume and --new-name exclude each other")
