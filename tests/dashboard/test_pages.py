"""Every dashboard page, run by Streamlit's AppTest over the fixture database (conftest.py).

A test opens the app the way a shared link does: query parameters name the sweep and the
filters, the router draws the sidebar and the page. Numbers are checked against values worked
out by hand from the fixture's FINAL_TEST table.
"""

from __future__ import annotations

import base64
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.io
import pytest
import sqlalchemy as sa
from streamlit.testing.v1 import AppTest

import dashboard
from db.engine import get_engine
from tests.dashboard.conftest import DEPTH_SWEEP, EPOCHS, STARTING_SWEEP, build, layer_std

APP = Path(dashboard.__file__).resolve().parent / "app.py"
PAGES = ("sweeps", "curves", "grid", "layers", "search", "trial", "sql")


def open_page(url: str, page: str, monkeypatch: pytest.MonkeyPatch, **params: str | list[str]) -> AppTest:
    """Run the app on `page` with the URL query `params` (as a shared link would) over `url`."""
    monkeypatch.setenv("RESWEEP_DB", url)
    monkeypatch.setenv("RESWEEP_SQL_PAGE", "on")  # AppTest has no server address (test_sql_page_access.py)
    at = AppTest.from_file(str(APP), default_timeout=30)
    at.query_params.update(params)
    at.run()  # the default page (Sweeps) draws the sidebar and takes the query parameters
    if page != "sweeps":
        at.switch_page(f"views/{page}.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def messages(at: AppTest) -> str:
    return " ".join(e.value for kind in (at.error, at.warning, at.info) for e in kind)


def frame_with(at: AppTest, column: str) -> pd.DataFrame:
    """The first table on the page that has `column`."""
    return next(d.value for d in at.dataframe if column in d.value.columns)


def figure(at: AppTest, index: int = 0):
    return plotly.io.from_json(at.get("plotly_chart")[index].proto.spec)


def values(array) -> list:
    """A trace's data as a list; plotly sends numeric arrays base64-encoded ({dtype, bdata})."""
    if isinstance(array, dict) and "bdata" in array:
        flat = np.frombuffer(base64.b64decode(array["bdata"]), dtype=array["dtype"])
        shape = [int(n) for n in str(array.get("shape", len(flat))).split(",")]
        return flat.reshape(shape).tolist()
    return list(array)


def traces(at: AppTest) -> dict[tuple[str, str], list[float]]:
    """The named line traces of the page's chart: (legend group, 'test'|'train') -> y values."""
    out = {}
    for t in figure(at).data:
        if t.fill is None:
            kind = "train" if t.line.dash == "dash" else "test"
            out[t.legendgroup, kind] = values(t.y)
    return out


# --- the shared sidebar ------------------------------------------------------------------------


def test_sidebar_shows_database_sweeps_newest_first_and_filters(fixture_db, monkeypatch):
    at = open_page(fixture_db, "sweeps", monkeypatch)
    assert at.sidebar.markdown[0].value == f"``{fixture_db}``"  # inline code
    assert at.sidebar.selectbox(key="sweep").options == [STARTING_SWEEP, DEPTH_SWEEP]
    assert at.sidebar.selectbox(key="sweep").value == STARTING_SWEEP
    assert [m.key for m in at.sidebar.multiselect] == ["compare", "dataset", "model", "depth", "block", "shortcut", "seed"]


def test_sidebar_takes_sweep_and_filters_from_the_query_string(fixture_db, monkeypatch):
    at = open_page(fixture_db, "sweeps", monkeypatch, sweep=DEPTH_SWEEP, depth="56", shortcut=["none", "A"])
    assert at.sidebar.selectbox(key="sweep").value == DEPTH_SWEEP
    assert at.sidebar.multiselect(key="depth").value == [56]
    assert at.sidebar.multiselect(key="depth").options == ["20", "56"]
    assert sorted(at.sidebar.multiselect(key="shortcut").value) == ["A", "none"]


def test_unreachable_database_is_one_clear_line_with_the_password_hidden(monkeypatch):
    url = "postgresql://resweep:s3cret-pw@127.0.0.1:9/resweep"  # port 9 (discard): refused at once
    at = open_page(url, "sweeps", monkeypatch)
    assert "s3cret-pw" not in str(at._tree)
    assert at.sidebar.markdown[0].value == "``postgresql+psycopg://resweep:***@127.0.0.1:9/resweep``"
    assert "cannot use postgresql+psycopg://resweep:***@127.0.0.1:9/resweep" in at.error[0].value


def test_missing_database_file_is_reported_and_not_created(tmp_path, monkeypatch):
    path = tmp_path / "nowhere.db"
    at = open_page(f"sqlite:///{path}", "curves", monkeypatch)
    assert "no database at" in at.error[0].value
    assert not path.exists()


def test_database_behind_the_code_says_how_to_upgrade(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'old.db'}"
    get_engine(url).dispose()
    monkeypatch.setattr("db.migrate.head_revision", lambda: "9999_from_the_future")
    for page in PAGES:
        at = open_page(url, page, monkeypatch)
        assert f"run `python -m orchestrator db upgrade --db {url}`" in at.error[0].value, page


def test_empty_database_says_no_sweeps_on_every_page_and_sql_still_works(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    get_engine(url).dispose()
    for page in ("sweeps", "curves", "grid", "layers"):
        at = open_page(url, page, monkeypatch)
        assert "No sweeps in" in messages(at), page
        assert not at.get("plotly_chart")
    at = open_page(url, "sql", monkeypatch)
    assert at.dataframe[0].value.empty
    assert any("trial_results" in e.label for e in at.expander)


# --- Sweeps -------------------------------------------------------------------------------------


def test_sweeps_page_shows_status_and_progress_of_every_sweep(fixture_db, monkeypatch):
    at = open_page(fixture_db, "sweeps", monkeypatch, sweep=DEPTH_SWEEP)
    table = at.dataframe[0].value.set_index("sweep")
    assert table.loc[DEPTH_SWEEP, "status"] == "finished"
    assert table.loc[DEPTH_SWEEP, "finished"] == "8 of 9"
    assert table.loc[DEPTH_SWEEP, "failed"] == 1
    assert table.loc[DEPTH_SWEEP, "progress"] == pytest.approx(8 / 9)
    assert table.loc[DEPTH_SWEEP, "git commit"] == "0123456789"
    assert table.loc[STARTING_SWEEP, "status"] == "running"
    assert (table.loc[STARTING_SWEEP, "running"], table.loc[STARTING_SWEEP, "finished"]) == (2, "0 of 2")
    assert len(at.dataframe[1].value) == 9  # the selected sweep's trials


def test_sweeps_page_trial_table_follows_the_filters(fixture_db, monkeypatch):
    at = open_page(fixture_db, "sweeps", monkeypatch, sweep=DEPTH_SWEEP, depth="20", seed="1")
    trials = at.dataframe[1].value
    assert sorted(trials["shortcut"]) == ["A", "none"]
    assert set(trials["depth"]) == {20} and set(trials["seed"]) == {1}


def test_sweeps_page_trial_table_shows_each_trials_hyperparameters_besides_the_axes(fixture_db, monkeypatch):
    # Generic: every key of trials.config but the axes (a new hyperparameter shows without a dashboard edit).
    at = open_page(fixture_db, "sweeps", monkeypatch, sweep=DEPTH_SWEEP)
    shown = [json.loads(c) for c in at.dataframe[1].value["config"]]
    assert shown and all(c == {"data_dir": None, "epochs": EPOCHS, "batch_size": 128, "lr": 0.1, "probes_every": 2}
                         for c in shown)


# --- Curves -------------------------------------------------------------------------------------


def test_curves_are_seed_means_split_plain_and_residual(fixture_db, monkeypatch):
    at = open_page(fixture_db, "curves", monkeypatch, sweep=DEPTH_SWEEP)
    lines = traces(at)
    assert set(lines) == {(g, k) for g in ("plain-20", "ResNet-20 (A)", "plain-56", "ResNet-56 (A)") for k in ("test", "train")}
    # ResNet-20: seeds end at 9 % and 8 %, falling 10 points an epoch; train = test - 3 points
    assert lines["ResNet-20 (A)", "test"] == pytest.approx([28.5, 18.5, 8.5])
    assert lines["ResNet-20 (A)", "train"] == pytest.approx([25.5, 15.5, 5.5])
    # ResNet-56's failed seed 2 reported one epoch (90 %): epoch 1 averages three seeds
    assert lines["ResNet-56 (A)", "test"] == pytest.approx([(26.5 + 27.5 + 90) / 3, 17.0, 7.0])
    assert [a.text for a in figure(at).layout.annotations] == ["plain", "residual"]


def test_curves_band_is_one_std_over_seeds(fixture_db, monkeypatch):
    at = open_page(fixture_db, "curves", monkeypatch, sweep=DEPTH_SWEEP, depth="20", shortcut="none")
    bands = [t for t in figure(at).data if t.fill == "toself" and t.legendgroup == "plain-20"]
    test_band = bands[0]  # drawn before its line; test first
    upper = values(test_band.y)[:3]
    assert upper == pytest.approx([31 + math.sqrt(2), 21 + math.sqrt(2), 11 + math.sqrt(2)])


def test_curves_filters_change_the_lines(fixture_db, monkeypatch):
    at = open_page(fixture_db, "curves", monkeypatch, sweep=DEPTH_SWEEP, shortcut="none", seed="0")
    lines = traces(at)
    assert {g for g, _ in lines} == {"plain-20", "plain-56"}
    assert lines["plain-56", "test"] == pytest.approx([34.0, 24.0, 14.0])  # seed 0 alone
    assert [a.text for a in figure(at).layout.annotations] == ["plain"]


def test_curves_loss_on_log_scale_coloured_by_shortcut_in_one_panel(fixture_db, monkeypatch):
    at = open_page(fixture_db, "curves", monkeypatch, sweep=DEPTH_SWEEP, depth="20",
                   metric="loss", scale="log", colour="shortcut", split="one panel")  # fmt: skip
    fig = figure(at)
    assert fig.layout.yaxis.type == "log"
    assert fig.layout.yaxis.title.text == "loss"
    assert not fig.layout.annotations  # one panel
    lines = traces(at)
    assert lines["ResNet-20 (A)", "test"] == pytest.approx([2 * 0.285 + 0.1, 2 * 0.185 + 0.1, 2 * 0.085 + 0.1])
    colour = {g: t.line.color for t in fig.data if t.fill is None for g in [t.legendgroup]}
    assert colour["plain-20"] != colour["ResNet-20 (A)"]


def test_curves_of_a_sweep_without_a_finished_epoch_say_so(fixture_db, monkeypatch):
    at = open_page(fixture_db, "curves", monkeypatch, sweep=STARTING_SWEEP)
    assert "has finished an epoch yet" in messages(at)
    assert not at.get("plotly_chart")


def test_filters_that_keep_no_trial_say_so(fixture_db, monkeypatch):
    at = open_page(fixture_db, "curves", monkeypatch, sweep=DEPTH_SWEEP, depth="20", seed="2")
    assert "passes the filters" in messages(at)


# --- Grid ---------------------------------------------------------------------------------------


def test_grid_numbers_equal_the_hand_computed_means_and_stds(fixture_db, monkeypatch):
    at = open_page(fixture_db, "grid", monkeypatch, sweep=DEPTH_SWEEP)
    cells = frame_with(at, "test_err_mean").set_index(["depth", "shortcut"])
    s1, s2 = math.sqrt(2) / 2, math.sqrt(2)  # std of (a, a + 1) and of (a, a + 2), in points
    assert cells.loc[(20, "none"), ["test_err_mean", "test_err_std"]].tolist() == pytest.approx([11.0, s2])
    assert cells.loc[(20, "A"), ["test_err_mean", "test_err_std"]].tolist() == pytest.approx([8.5, s1])
    assert cells.loc[(56, "none"), ["test_err_mean", "test_err_std"]].tolist() == pytest.approx([15.0, s2])
    assert cells.loc[(56, "A"), ["test_err_mean", "test_err_std"]].tolist() == pytest.approx([7.0, s1])
    assert cells.loc[(56, "A"), ["train_err_mean", "n_seeds"]].tolist() == pytest.approx([4.0, 2])  # failed seed left out
    pivot = at.dataframe[0].value
    assert list(pivot.columns) == ["none", "A"]
    assert pivot.loc[20, "A"] == "8.50 ± 0.71" and pivot.loc[56, "none"] == "15.00 ± 1.41"
    heat = figure(at)
    assert np.allclose(values(heat.data[0].z), [[11.0, 8.5], [15.0, 7.0]])


def test_grid_shows_the_papers_numbers_beside_ours_like_with_like(fixture_db, monkeypatch):
    at = open_page(fixture_db, "grid", monkeypatch, sweep=DEPTH_SWEEP)
    paper = frame_with(at, "paper").set_index("depth")
    assert paper["paper"].to_dict() == {20: "8.75 (single run)", 56: "6.97 (single run)"}  # plain nets: none
    assert paper.loc[56, "ours"] == "7.00 ± 0.71" and paper.loc[20, "ours"] == "8.50 ± 0.71"
    # 8.50 - 8.75 with the paper's spread taken as ours: +- t(0.975, 1) * 0.7071 * sqrt(1/2 + 1).
    half = 12.7062 * math.sqrt(0.5) * math.sqrt(1.5)
    assert paper.loc[20, "ours − paper (95 % CI)"] == f"-0.25 ({-0.25 - half:+.2f} to {-0.25 + half:+.2f})"
    # a ±22-point interval that includes 0 is no evidence of agreement (the report's two one-sided tests)
    assert paper.loc[20, "verdict"] == "not contradicted"


def test_grid_shows_differences_between_cells_with_welch_intervals(fixture_db, monkeypatch):
    from scipy import stats as scipy_stats

    at = open_page(fixture_db, "grid", monkeypatch, sweep=DEPTH_SWEEP)
    diffs = frame_with(at, "a − b (points, 95 % CI)").set_index(["a", "b"])
    assert set(diffs.index) == {("plain-56", "plain-20"), ("ResNet-56 (A)", "ResNet-20 (A)"),
                                ("ResNet-20 (A)", "plain-20"), ("ResNet-56 (A)", "plain-56")}
    # plain-56 vs plain-20, test error: 15 vs 11, std sqrt(2) each over 2 seeds.
    ci = scipy_stats.ttest_ind_from_stats(15.0, math.sqrt(2), 2, 11.0, math.sqrt(2), 2, equal_var=False)
    se = math.sqrt(2 / 2 + 2 / 2)  # Welch: equal spreads and counts give df = 2 + 2 - 2 = 2
    assert ci.statistic == pytest.approx(4.0 / se)
    half = scipy_stats.t.ppf(0.975, 2) * se
    assert diffs.loc[("plain-56", "plain-20"), "a − b (points, 95 % CI)"] == f"+4.00 ({4 - half:+.2f} to {4 + half:+.2f})"
    assert diffs.loc[("plain-56", "plain-20"), "verdict"] == "no significant difference"


def test_grid_follows_the_seed_filter_and_the_chosen_axes(fixture_db, monkeypatch):
    at = open_page(fixture_db, "grid", monkeypatch, sweep=DEPTH_SWEEP, seed="0", rows="shortcut",
                   cols="depth", value="training error")  # fmt: skip
    pivot = at.dataframe[0].value
    assert list(pivot.index) == ["none", "A"] and list(pivot.columns) == [20, 56]
    assert pivot.loc["A", 56] == "3.50"  # one seed: no std; train = 6.5 % - 3 points
    assert frame_with(at, "test_err_mean")["n_seeds"].tolist() == [1, 1, 1, 1]


def test_grid_of_a_sweep_without_a_finished_epoch_says_so(fixture_db, monkeypatch):
    at = open_page(fixture_db, "grid", monkeypatch, sweep=STARTING_SWEEP)
    assert "has finished an epoch yet" in messages(at)
    assert not at.dataframe


# --- Layer responses -----------------------------------------------------------------------------


def test_layer_responses_in_forward_order_and_sorted(fixture_db, monkeypatch):
    at = open_page(fixture_db, "layers", monkeypatch, sweep=DEPTH_SWEEP, depth="20", epoch="2")
    fig = figure(at)
    by_name = {}
    for t in fig.data:
        by_name.setdefault(t.name, []).append(t)
    assert set(by_name) == {"plain-20", "ResNet-20 (A)"}
    forward, ranked = by_name["plain-20"]
    want = [(layer_std(20, "none", 0, i, 2) + layer_std(20, "none", 1, i, 2)) / 2 for i in range(19)]
    assert values(forward.x) == list(range(1, 20))
    assert values(forward.y) == pytest.approx(want)
    assert values(ranked.y) == pytest.approx(sorted(want, reverse=True))
    assert forward.line.dash == "dash" and by_name["ResNet-20 (A)"][0].line.dash is None
    assert at.selectbox(key="epoch").options == ["last probed", "2", "3"]


def test_layer_responses_default_to_the_last_probe(fixture_db, monkeypatch):
    at = open_page(fixture_db, "layers", monkeypatch, sweep=DEPTH_SWEEP, depth="56", shortcut="A")
    (forward, _ranked) = figure(at).data
    want = (layer_std(56, "A", 0, 0, 3) + layer_std(56, "A", 1, 0, 3)) / 2
    assert values(forward.y)[0] == pytest.approx(want)  # the failed seed 2 was never probed


def test_layer_responses_of_a_sweep_without_probes_say_so(fixture_db, monkeypatch):
    at = open_page(fixture_db, "layers", monkeypatch, sweep=STARTING_SWEEP)
    assert "has recorded layer responses yet" in messages(at)


# --- SQL ----------------------------------------------------------------------------------------


def test_sql_page_runs_the_default_query_and_lists_tables_and_views(fixture_db, monkeypatch):
    at = open_page(fixture_db, "sql", monkeypatch)
    result = at.dataframe[0].value
    assert len(result) == 4 and set(result["sweep"]) == {DEPTH_SWEEP}
    labels = [e.label for e in at.expander]
    for name, kind in [("grid_results", "view"), ("trial_results", "view"), ("trials", "table"), ("metrics", "view")]:
        assert f"**{name}** · {kind}" in labels
    assert "`final_test_err`" in " ".join(m.value for m in at.markdown)


def test_sql_page_caps_the_rows(fixture_db, monkeypatch):
    at = open_page(fixture_db, "sql", monkeypatch)
    at.text_area(key="sql").input("SELECT id FROM trials ORDER BY id")
    at.number_input(key="limit").set_value(3)
    at.button[0].click().run()
    assert at.dataframe[0].value["id"].tolist() == [1, 2, 3]
    assert "cut at the row cap of 3" in at.main.caption[-1].value


def test_the_sql_pages_statement_is_in_its_url_and_a_link_runs_it(fixture_db, monkeypatch):
    at = open_page(fixture_db, "sql", monkeypatch, sql="SELECT count(*) AS n FROM trials")
    assert at.text_area(key="sql").value == "SELECT count(*) AS n FROM trials"
    engine = sa.create_engine(fixture_db)
    with engine.connect() as conn:
        trials = conn.execute(sa.text("SELECT count(*) FROM trials")).scalar_one()
    engine.dispose()
    assert trials > 0 and at.dataframe[0].value["n"].tolist() == [trials]
    at.text_area(key="sql").input("SELECT 42 AS answer")
    at.button[0].click().run()
    assert at.query_params["sql"] == "SELECT 42 AS answer" and at.dataframe[0].value["answer"].tolist() == [42]


def test_sql_page_refuses_writes_with_one_line(fixture_db, monkeypatch):
    at = open_page(fixture_db, "sql", monkeypatch)
    at.text_area(key="sql").input("DELETE FROM sweeps")
    at.button[0].click().run()
    assert not at.exception
    assert at.error[0].value.startswith("refused: DELETE statements are not allowed")
    at.text_area(key="sql").input("PRAGMA user_version = 3")  # db.readonly names its command in the refusal
    at.button[0].click().run()
    assert "this page is read-only" in at.error[0].value and "query command" not in at.error[0].value
    at = open_page(fixture_db, "sweeps", monkeypatch)
    assert len(at.dataframe[0].value) == 2  # still there


# --- PostgreSQL ---------------------------------------------------------------------------------


@pytest.mark.postgres
def test_every_page_reads_postgresql_the_same(pg_url, monkeypatch):
    build(pg_url)
    opened = {page: open_page(pg_url, page, monkeypatch, sweep=DEPTH_SWEEP) for page in PAGES}
    for page, at in opened.items():
        assert not at.error, (page, [e.value for e in at.error])
    assert opened["grid"].dataframe[0].value.loc[20, "A"] == "8.50 ± 0.71"
    assert traces(opened["curves"])["ResNet-20 (A)", "test"] == pytest.approx([28.5, 18.5, 8.5])
    assert len(opened["sql"].dataframe[0].value) == 4


# --- what the pages choose, the trial page ----------------------------------------------------


def line_colours(at: AppTest) -> dict[str, str]:
    return {t.legendgroup: t.line.color for t in figure(at).data if t.fill is None}


def test_every_control_is_in_the_url_even_at_its_default(fixture_db, monkeypatch):
    at = open_page(fixture_db, "curves", monkeypatch)
    assert dict(at.query_params) == {"sweep": STARTING_SWEEP, "metric": "error", "colour": "net",  # the newest
                                     "split": "one panel", "scale": "linear"}  # one net: one panel
    at = open_page(fixture_db, "grid", monkeypatch, sweep=DEPTH_SWEEP)
    assert {k: at.query_params[k] for k in ("sweep", "rows", "cols", "value")} == {
        "sweep": DEPTH_SWEEP, "rows": "depth", "cols": "shortcut", "value": "test error"}


def test_a_net_keeps_its_colour_under_filters_and_on_every_page(fixture_db, monkeypatch):
    every = line_colours(open_page(fixture_db, "curves", monkeypatch, sweep=DEPTH_SWEEP))
    assert len(set(every.values())) == 4  # one colour per net
    some = line_colours(open_page(fixture_db, "curves", monkeypatch, sweep=DEPTH_SWEEP, depth="56"))
    assert some == {k: every[k] for k in ("plain-56", "ResNet-56 (A)")}
    layers = open_page(fixture_db, "layers", monkeypatch, sweep=DEPTH_SWEEP)
    assert {t.name: t.line.color for t in figure(layers).data} == every


def test_bands_stay_within_the_possible_range(fixture_db, monkeypatch):
    # ResNet-56 (A) at epoch 1: seeds at 26.5, 27.5 and 90 %: mean 48, std 36.4, so mean - std < 12
    at = open_page(fixture_db, "curves", monkeypatch, sweep=DEPTH_SWEEP, depth="56", shortcut="A", seed=["0", "1", "2"])
    for band in (t for t in figure(at).data if t.fill == "toself"):
        ys = values(band.y)
        assert min(ys) >= 0.0 and max(ys) <= 100.0


def test_the_loss_view_is_on_a_log_axis_by_default(fixture_db, monkeypatch):
    at = open_page(fixture_db, "curves", monkeypatch, sweep=DEPTH_SWEEP, metric="loss")
    assert figure(at).layout.yaxis.type == "log" and at.query_params["scale"] == "log"


def test_the_heatmap_scale_is_anchored_at_0_and_100(fixture_db, monkeypatch):
    heat = figure(open_page(fixture_db, "grid", monkeypatch, sweep=DEPTH_SWEEP)).data[0]
    assert (heat.zmin, heat.zmax) == (0.0, 100.0)


def test_the_layer_caption_says_what_the_data_shows(fixture_db, monkeypatch):
    at = open_page(fixture_db, "layers", monkeypatch, sweep=DEPTH_SWEEP, epoch="3")
    caption = at.main.caption[-1].value
    assert "at 20 layers, the residual nets' responses average" in caption and "smaller than the plain nets'" in caption
    # one kind of net alone: nothing to compare, nothing claimed
    at = open_page(fixture_db, "layers", monkeypatch, sweep=DEPTH_SWEEP, shortcut="A")
    assert "respond" not in at.main.caption[-1].value and "smaller" not in at.main.caption[-1].value


def test_the_trial_page_shows_a_failed_trials_error_metrics_and_config(fixture_db, monkeypatch):
    at = open_page(fixture_db, "trial", monkeypatch, trial="9")  # ResNet-56 A seed 2, CUDA out of memory
    assert at.sidebar.selectbox(key="sweep").value == DEPTH_SWEEP  # the link's trial picks its sweep
    assert "This trial failed." in at.error[0].value and "CUDA out of memory" in at.error[0].value
    assert at.subheader[0].value == "ResNet-56 A seed 2 · error"
    assert [m.value for m in at.metric][:2] == ["1", "90.00 %"]
    first = figure(at, 0)
    assert {t.name for t in first.data} == {"train_err", "test_err"} and values(first.data[1].y) == pytest.approx([90.0])
    assert at.json[0].value and json.loads(at.json[0].value)["seed"] == 2


def test_the_trial_page_smooths_and_draws_against_wall_time(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'r.db'}"
    build(url)
    from db import writes

    engine = get_engine(url)
    for epoch in (1, 2, 3):  # trial 1 gets its epoch times: 10 s, 20 s, 30 s
        writes.record_result(engine, 1, epoch, {"epoch_time_s": 10.0 * epoch})
    engine.dispose()
    at = open_page(url, "trial", monkeypatch, sweep=DEPTH_SWEEP, trial="1", x="wall time", smooth="0.6")
    err = figure(at, 0)
    raw, smoothed = err.data[0], err.data[1]  # the raw values faint behind the smoothed line
    assert raw.opacity == 0.25 and values(raw.x) == pytest.approx([10 / 60, 30 / 60, 60 / 60])
    y = values(raw.y)  # an exponential moving average, debiased: its first point is the first value
    assert values(smoothed.y)[0] == pytest.approx(y[0]) and values(smoothed.y)[1] == pytest.approx(
        (0.6 * 0.4 * y[0] + 0.4 * y[1]) / (0.6 * 0.4 + 0.4))


def test_a_sweep_without_searched_hyperparameters_has_no_search_views(fixture_db, monkeypatch):
    at = open_page(fixture_db, "search", monkeypatch, sweep=DEPTH_SWEEP)
    assert "searches no hyperparameters" in messages(at) and not at.get("plotly_chart")


def test_every_grid_point_formats_the_best_seed_like_the_others(fixture_db, monkeypatch):
    at = open_page(fixture_db, "grid", monkeypatch, sweep=DEPTH_SWEEP)
    table = [d for d in at.dataframe if "test_err_best" in d.value.columns][0]
    config = json.loads(table.proto.columns)
    assert config["test_err_best"]["type_config"]["format"] == "%.2f"
