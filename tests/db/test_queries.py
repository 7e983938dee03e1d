"""The read API: DataFrames with the documented columns, one query per call (never per trial)."""

from __future__ import annotations

import numpy as np
import pytest
import sqlalchemy as sa

from db import queries, writes
from tests.db.known import errs, make_sweep


@pytest.fixture
def known(engine):
    return make_sweep(engine)


@pytest.fixture
def statements(engine):
    """The SQL statements each call sends (to show the API is set-based)."""
    sent: list[str] = []

    def count(conn, cursor, statement, *args):
        sent.append(statement)

    sa.event.listen(engine, "before_cursor_execute", count)
    yield sent
    sa.event.remove(engine, "before_cursor_execute", count)


def test_sweeps_lists_progress_counts(engine, known):
    writes.create_sweep(engine, name="empty", spec="", spec_hash="")
    frame = queries.sweeps(engine)
    assert list(frame.columns) == queries.SWEEP_COLUMNS
    assert list(frame["name"]) == ["empty", "known"]  # newest first
    row = frame.set_index("name").loc["known"]
    assert (row.n_trials, row.n_terminated, row.n_error, row.n_running, row.n_pending) == (8, 6, 1, 1, 0)
    assert frame.set_index("name").loc["empty"].n_trials == 0


def test_trials_of_a_sweep_by_name_or_id(engine, known, statements):
    frame = queries.trials(engine, "known")
    assert len(statements) == 1
    assert list(frame.columns) == queries.TRIAL_COLUMNS
    assert len(frame) == 8 and frame.trial_id.is_monotonic_increasing
    row = frame.set_index("trial_key").loc["A-1"]
    assert (row.shortcut, row.seed, row.epochs, row.status) == ("A", 1, 3, "terminated")
    assert row.final_test_err == pytest.approx(errs(4, 3)["test_err"])
    assert row.config["lr"] == 0.1 and row.started_at.tzinfo is not None
    assert frame.set_index("trial_key").loc["A-9"].error == "CUDA out of memory"
    assert queries.trials(engine, known.id).equals(frame)
    assert queries.trials(engine, np.int64(known.id)).equals(frame)
    assert queries.trials(engine, "nope").empty


def test_trials_filtered_in_sql_equal_the_whole_sweep_filtered_in_pandas(engine, known, statements):
    make_sweep(engine, "other")  # same axes in another sweep: never mixed in
    whole = queries.trials(engine, "known")
    statements.clear()
    got = queries.trials(engine, "known", depth=20, shortcut="A", seed=[0, np.int64(9)])
    assert len(statements) == 1 and "shortcut IN" in statements[0]  # the filter is in the SQL
    expected = whole[(whole.shortcut == "A") & whole.seed.isin([0, 9])].reset_index(drop=True)
    assert list(got.trial_key) == ["A-0", "A-9"] and got.equals(expected)
    assert list(queries.trials(engine, "known", status="terminated", shortcut="none").trial_key) == [
        "none-0", "none-1", "none-2"]
    assert queries.trials(engine, "known", depth=56).empty
    assert queries.trials(engine, known.id, shortcut=None).equals(whole)  # None: no filter
    with pytest.raises(ValueError, match=r"cannot filter trials on \['lr'\]"):
        queries.trials(engine, "known", lr=0.1)


def test_axis_values_lists_each_axis_without_reading_results(engine, known):
    values = queries.axis_values(engine, "known")
    assert values == {"dataset": ["cifar10"], "model": ["cifar"], "depth": [20], "block": ["basic"],
                      "shortcut": ["A", "none"], "seed": [0, 1, 2, 8, 9]}
    assert queries.axis_values(engine, "nope") == {a: [] for a in queries.AXES}


def test_curves_of_many_trials_in_one_query(engine, known, statements):
    ids = list(known.trials.values())
    frame = queries.curves(engine, ids, ["test_err", "train_err"])
    assert len(statements) == 1
    assert list(frame.columns) == queries.CURVE_COLUMNS
    assert len(frame) == 2 * (6 * 3 + 2)
    tid = known.trials["none-1"]
    curve = frame[(frame.trial_id == tid) & (frame.name == "test_err")]
    assert list(curve.epoch) == [1, 2, 3]
    assert list(curve.value) == [errs(1, e)["test_err"] for e in (1, 2, 3)]
    assert len(queries.curves(engine, [tid])) == 3 * len(errs(0, 1))
    assert queries.curves(engine, [tid], "test_err").equals(curve.reset_index(drop=True))
    assert queries.curves(engine, []).empty


def test_grid_summary(engine, known):
    frame = queries.grid(engine, "known")
    assert list(frame.columns) == queries.GRID_COLUMNS
    assert list(frame.shortcut) == ["A", "none"] and list(frame.n_seeds) == [3, 3]
    assert queries.grid(engine, known.id).equals(frame)


def test_layer_stats_at_the_last_probe_or_a_given_epoch(engine, known, statements):
    ids = [known.trials[k] for k in ("none-0", "A-2", "A-9")]
    frame = queries.layer_stats(engine, ids)
    assert len(statements) == 1
    assert list(frame.columns) == queries.LAYER_COLUMNS
    # A-9 was never probed; the others' last probe is epoch 3.
    assert set(frame.trial_id) == set(ids[:2]) and set(frame.epoch) == {3}
    assert list(frame[frame.trial_id == ids[1]].layer) == [0, 1, 2, 3]
    assert list(frame[frame.trial_id == ids[1]]["std"]) == [5 + i + 3 for i in range(4)]
    at_1 = queries.layer_stats(engine, ids, epoch=1)
    assert set(at_1.epoch) == {1} and len(at_1) == 8
    assert queries.layer_stats(engine, ids, epoch=2).empty


def test_sweep_details_has_the_spec_or_no_rows(engine, known):
    row = queries.sweep_details(engine, "known")
    assert list(row.columns) == queries.SWEEP_DETAIL_COLUMNS and len(row) == 1
    assert row.iloc[0]["spec"] == "name: known\n"
    assert queries.sweep_details(engine, known.id).equals(row)
    assert queries.sweep_details(engine, "nope").empty


def test_a_sweep_is_read_by_name_or_id_as_one_row(engine, known):
    row = queries.sweep(engine, "known")
    assert (row.id, row.name, row.spec) == (known.id, "known", "name: known\n")
    assert queries.sweep(engine, known.id) == row
    assert queries.sweep(engine, "nope") is None and queries.sweep(engine, 10**9) is None
    assert list(queries.sweep_details(engine, "known").iloc[0]) == [getattr(row, c) for c in queries.SWEEP_DETAIL_COLUMNS]


def test_probed_epochs_of_many_trials(engine, known, statements):
    ids = [known.trials[k] for k in ("none-0", "A-2", "A-9")]
    assert queries.probed_epochs(engine, ids) == [1, 3]
    assert len(statements) == 1
    assert queries.probed_epochs(engine, [known.trials["A-9"]]) == []
    assert queries.probed_epochs(engine, []) == []


def test_relations_lists_views_then_tables_without_alembic(engine):
    frame = queries.relations(engine)
    assert list(frame.columns) == queries.RELATION_COLUMNS
    assert list(dict.fromkeys(frame.relation)) == [
        "grid_results", "metrics", "trial_results", "layer_stats", "sweeps", "trial_attempts", "trials",
    ]  # fmt: skip  (metric_values and metric_names, the storage behind the metrics view, are left out)
    metrics = frame[frame.relation == "metrics"]
    assert list(metrics.column) == ["trial_id", "epoch", "name", "value"] and set(metrics.kind) == {"view"}
