"""Bad sweep files through the real `launch` command: exit 2, one line per problem, no traceback,
the database unchanged and Ray never started."""

from __future__ import annotations

import textwrap
import time

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from db import writes
from db.engine import get_engine
from orchestrator.cli.app import app

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
                   "model, grid, train, probes, resources, search, scheduler, fault_tolerance, synthetic, model_options, loggers)"


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


NAME_RULE = "not a usable sweep name (allowed: letters, digits, '.', '_', '-', not starting with . _ -, at most 100 characters)"


@pytest.mark.parametrize("new_name", ["no spaces please", "x\\", "x\ndataset: digits", "x # comment", "", "-x", "a" * 101])
def test_new_name_must_be_a_usable_name(tmp_path, db, new_name):
    (line,) = launch(tmp_path, db, GOOD.format(name="taken"), "--new-name", new_name)
    assert line.startswith("error: --new-name ") and line.endswith(NAME_RULE) and len(line) < 300


def test_new_name_and_resume_exclude_each_other(tmp_path, db):
    (line,) = launch(tmp_path, db, GOOD.format(name="taken"), "--new-name", "other", "--resume")
    assert line.startswith("error: --resume and --new-name exclude each other")


# --- hostile or broken input (issue 10, section 4) -----------------------------------------------

BOMB = "".join(f"{a}: &{a} [{', '.join([f'*{p}'] * 9) if p else ', '.join(['x'] * 9)}]\n"
               for p, a in zip([None, *"abcdefgh"], "abcdefghi"))  # fmt: skip


@pytest.mark.parametrize("where", ["name", "grid axis"])
def test_an_alias_bomb_is_refused_at_once_in_one_line(tmp_path, db, where):
    """9 lines that expand to 9**9 = 387 million values; before, an error message rendered them."""
    text = BOMB.replace("i: &i", "name: &i") if where == "name" else BOMB + GOOD.format(name="n").replace("[8]", "*i")
    start = time.monotonic()
    (line,) = launch(tmp_path, db, text)
    assert time.monotonic() - start < 20
    assert line.endswith("bad.yaml: expands to more than 100,000 values through its aliases (&anchor / *alias); "
                         "write the values out, without nesting aliases")


def test_values_shown_in_errors_are_bounded(tmp_path, db):
    aliases = "".join(f"{a}: &{a} [{', '.join([f'*{p}'] * 9) if p else ', '.join(['x'] * 9)}]\n"
                      for p, a in zip([None, "a", "b"], "abc"))  # fmt: skip: 729 values, under the cap
    lines = launch(tmp_path, db, aliases + GOOD.format(name="n").replace("name: n", "name: *c"))
    assert any("name: expected a string, got [[[" in line for line in lines)
    assert all(len(line) < 400 for line in lines)


def test_a_grid_above_the_trial_cap_is_refused_before_anything(tmp_path, db):
    seeds = ", ".join(map(str, range(1000)))
    text = GOOD.format(name="n").replace("depth: [8]", f"depth: [8]\n  seed: [{seeds}]") + "search: {num_samples: 1000}\n"
    start = time.monotonic()
    (line,) = launch(tmp_path, db, text)
    assert time.monotonic() - start < 20
    assert line.endswith("bad.yaml: grid: 2,000,000 trials is more than the cap of 100,000 (allowed: a smaller "
                         "grid or num_samples, or --max-trials N to raise the cap)")
    (line,) = launch(tmp_path, db, GOOD.format(name="n"), "--max-trials", "1")
    assert "grid: 2 trials is more than the cap of 1" in line


def test_a_sweep_file_that_is_not_utf8_is_one_line(tmp_path, db):
    path = tmp_path / "latin1.yaml"
    path.write_bytes(GOOD.format(name="caf\xe9").encode("latin-1"))
    before = snapshot(db)
    result = CliRunner().invoke(app, ["launch", str(path), "--db", db])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert result.stderr == f"error: {path}: not UTF-8 text (line 2: byte 10 is b'\\xe9'); save the sweep file as UTF-8 YAML\n"
    assert snapshot(db) == before


def test_corrupt_cifar_files_are_found_before_ray_starts(tmp_path, db):
    from trainers.data import cifar_files

    data_dir = tmp_path / "cifar"
    for name in cifar_files("cifar10"):
        (data_dir / name).parent.mkdir(parents=True, exist_ok=True)
        (data_dir / name).write_bytes(b"\x80\x04not a pickle" * 100)
    text = GOOD.format(name="n").replace("dataset: synthetic", f"dataset: cifar10\ndata_dir: {data_dir}")
    text = text.replace("synthetic: {num_train: 64, num_test: 32, image_size: 8}\n", "")
    (line,) = launch(tmp_path, db, text)
    assert line.startswith(f"error: data_dir {data_dir}: cifar10 files under cifar-10-batches-py/ are corrupted (")
    assert "delete that folder so they are downloaded again" in line


@pytest.mark.parametrize(("url", "shown"), [
    ("postgresql://u:pw@h:abc/db", "the port 'abc' is not a number"),
    ("postgresql://u:p@ss@h/db", "holds more than one '@'; write an '@' in the user, password"),
    ("sqlite:///:memory:", "is an in-memory database, whose results are lost when the command ends"),
    ("sqlite://", "is an in-memory database"),
])  # fmt: skip
def test_bad_database_urls_are_one_line_without_the_password(tmp_path, db, url, shown):
    path = tmp_path / "good.yaml"
    path.write_text(textwrap.dedent(GOOD.format(name="n")))
    result = CliRunner().invoke(app, ["launch", str(path), "--db", url])
    assert result.exit_code == 2 and "Traceback" not in result.output
    (line,) = result.stderr.splitlines()
    assert shown in line and "pw" not in line and "ss@" not in line
    assert not (tmp_path / "results").exists()


# --- numbers no study would use: one line at the file's key, exit 2, no database made ------------

BIG = "100000000000000000000"  # 10^20


@pytest.mark.parametrize(("edit", "shown"), [
    (("epochs: 2", "epochs: 2\n  lr: .inf"), "train.lr: expected a finite number, got inf"),
    (("epochs: 2", "epochs: 2\n  warmup: {lr: .inf, until_train_err: 0.8}"),
     "train.warmup.lr: expected a finite number, got inf"),
    (("epochs: 2", f"epochs: {BIG}"), f"train.epochs: {BIG} is out of range (allowed: <= 100000)"),
    (("epochs: 2", f"epochs: 2\n  batch_size: {BIG}"), f"train.batch_size: {BIG} is out of range (allowed: <= 1048576)"),
    (("depth: [8]", "depth: [6000000002]"), "grid.depth[0]: 6000000002 is out of range (allowed: <= 5000)"),
    (("epochs: 2", "epochs: 2\n  momentum: .inf"), "train.momentum: expected a finite number, got inf"),
    (("epochs: 2", "epochs: 2\n  weight_decay: .inf"), "train.weight_decay: expected a finite number, got inf"),
    (("epochs: 2", f"epochs: 2\n  val_size: {BIG}"), f"train.val_size: {BIG} is out of range (allowed: <= 100000000)"),
    (("epochs: 2", f"epochs: 2\n  max_train_samples: {BIG}"),
     f"train.max_train_samples: {BIG} is out of range (allowed: <= 100000000)"),
    (("epochs: 2", "epochs: 2\nprobes: {every: 0}"), "probes.every: 0 is out of range (allowed: >= 1)"),
    (("epochs: 2", "epochs: 2\nresources: {cpu: .inf}"), "resources.cpu: expected a finite number, got inf"),
    (("epochs: 2", "epochs: 2\nresources: {gpu: 1000}"), "resources.gpu: 1000 is out of range (allowed: <= 64.0)"),
    (("epochs: 2", "epochs: 2\n  nesterov: true\n  momentum: 0"),
     "train.nesterov: true needs a momentum above 0 (train.momentum is 0.0; allowed: nesterov false, or momentum > 0)"),
])  # fmt: skip
def test_a_number_no_study_would_use_is_one_line_and_makes_no_database(tmp_path, monkeypatch, edit, shown):
    monkeypatch.setattr("ray.init", lambda *a, **k: pytest.fail("Ray was started for a bad sweep file"))
    monkeypatch.chdir(tmp_path)
    path, db_file = tmp_path / "bad.yaml", tmp_path / "new.db"
    path.write_text(textwrap.dedent(GOOD.format(name="n")).replace(*edit))
    result = CliRunner().invoke(app, ["launch", str(path), "--db", f"sqlite:///{db_file}"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert result.stderr.splitlines() == [f"error: {path}: {shown}"]
    assert not db_file.exists() and not (tmp_path / "results").exists()
