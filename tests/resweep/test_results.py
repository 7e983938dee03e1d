"""The notebook API (`resweep.open(URL)`) on real databases, SQLite and PostgreSQL: the frames are
db.queries' frames, selected by axis, with the axes beside per-epoch rows."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pytest

import resweep
from db import queries, writes
from db.engine import get_engine
from resweep.results import CURVE_COLUMNS, LAYER_COLUMNS, NotFound

EPOCHS = 3


@pytest.fixture
def url(db_url):
    """A sweep `s` of plain and residual nets at depths 20 and 56, two seeds, 3 epochs each."""
    engine = get_engine(db_url)
    sweep_id = writes.create_sweep(engine, name="s", spec="name: s\n", spec_hash="0" * 64)
    writes.create_sweep(engine, name="other", spec="name: other\n", spec_hash="1" * 64)
    for depth in (20, 56):
        for shortcut in ("none", "A"):
            for seed in (0, 1):
                config = {"dataset": "digits", "model": "cifar", "depth": depth, "block": "basic",
                          "shortcut": shortcut, "seed": seed}
                trial_id = writes.upsert_trial(engine, sweep_id, f"{depth}{shortcut}{seed}", status="running",
                                               config=config)
                for epoch in range(1, EPOCHS + 1):
                    err = depth / 100 / epoch + (0.2 if shortcut == "none" else 0) + seed / 1000
                    layers = [{"layer": k, "name": f"layer{k}", "stage": 1, "std": 1.0 + k, "mean": 0.0}
                              for k in range(3)] if epoch in (2, 3) else None
                    writes.record_result(engine, trial_id, epoch, {"train_err": err, "test_err": err + 0.05,
                                                                   "lr": 0.1}, layers)
                writes.set_trial_status(engine, trial_id, "terminated", ended=True)
    engine.dispose()
    return db_url


def test_import_resweep_loads_no_torch_ray_streamlit_or_sqlalchemy():
    code = ("import sys, resweep; heavy = [m for m in ('torch', 'ray', 'streamlit', 'sqlalchemy', 'db') "
            "if m in sys.modules]; print(heavy)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_frames_are_db_queries_frames(url):
    engine = get_engine(url, create=False)
    with resweep.open(url) as db:
        pd.testing.assert_frame_equal(db.sweeps(), queries.sweeps(engine))
        pd.testing.assert_frame_equal(db.trials("s"), queries.trials(engine, "s"))
        pd.testing.assert_frame_equal(db.grid("s"), queries.grid(engine, "s"))
        assert list(db.trials("s").columns) == queries.TRIAL_COLUMNS
        assert list(db.grid("s").columns) == queries.GRID_COLUMNS
    engine.dispose()


def test_filters_select_trials_by_axis_and_lists_mean_any_of(url):
    with resweep.open(url) as db:
        plain56 = db.trials("s", depth=56, shortcut="none")
        assert len(plain56) == 2 and set(plain56["seed"]) == {0, 1}
        assert len(db.trials("s", shortcut=["none", "A"], seed=0)) == 4
        assert len(db.trials("s", status="terminated")) == 8
        table6 = db.grid("s", shortcut="A")
        assert list(table6["depth"]) == [20, 56] and list(table6["n_seeds"]) == [2, 2]
        assert table6["test_err_mean"].tolist() == pytest.approx([0.2 / 3 + 0.05 + 0.0005, 0.56 / 3 + 0.0505])
        with pytest.raises(TypeError, match="unknown filter width .allowed: dataset, model, depth"):
            db.trials("s", width=16)


def test_curves_are_long_with_the_axes_beside(url):
    with resweep.open(url) as db:
        curves = db.curves("s", "train_err", depth=20)
        assert list(curves.columns) == CURVE_COLUMNS
        assert len(curves) == 4 * EPOCHS and set(curves["name"]) == {"train_err"}
        assert set(curves["depth"]) == {20} and set(curves["shortcut"]) == {"none", "A"}
        one = curves[(curves["shortcut"] == "A") & (curves["seed"] == 1)].sort_values("epoch")
        assert one["value"].tolist() == pytest.approx([0.2 / e + 0.001 for e in range(1, EPOCHS + 1)])
        both = db.curves("s", ["train_err", "test_err"], depth=56, shortcut="A", seed=0)
        assert sorted(set(both["name"])) == ["test_err", "train_err"] and len(both) == 2 * EPOCHS
        assert len(db.curves("s", None, depth=56, seed=0)) == 2 * EPOCHS * 3
        assert list(db.curves("s", "train_err", depth=32).columns) == CURVE_COLUMNS  # none: empty, same columns


def test_layer_stats_at_the_last_probe_or_a_given_epoch(url):
    with resweep.open(url) as db:
        last = db.layer_stats("s", shortcut="none")
        assert list(last.columns) == LAYER_COLUMNS
        assert len(last) == 4 * 3 and set(last["epoch"]) == {3}
        assert set(db.layer_stats("s", epoch=2, depth=20)["epoch"]) == {2}
        assert db.layer_stats("s", epoch=1).empty


def test_unknown_sweep_or_trial_is_one_clear_error(url):
    with resweep.open(url) as db:
        assert db.trials("other").empty  # a sweep with no trials yet is no error
        with pytest.raises(NotFound, match=r"no sweep 'nope' in .* \(db.sweeps\(\) lists them\)"):
            db.trials("nope")
        with pytest.raises(NotFound, match="no sweep"):
            db.grid("nope")
        trial_id = int(db.trials("s")["trial_id"].iloc[0])
        with pytest.raises(NotFound, match=f"trial {trial_id} .s.: no checkpoint recorded"):
            db.model(trial_id)
        with pytest.raises(NotFound, match="trial 999999: no such trial"):
            db.checkpoint(999999)


def test_open_never_creates_a_database(tmp_path):
    from db.errors import NoDatabaseError

    with pytest.raises(NoDatabaseError):
        resweep.open(f"sqlite:///{tmp_path / 'missing.db'}")
    assert not (tmp_path / "missing.db").exists()
