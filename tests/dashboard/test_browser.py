"""The dashboard in a real browser: `streamlit run` on a free localhost port over the fixture
database, driven by headless Debian Chromium through Playwright.

Each step checks that the page's charts and tables were drawn and that no exception box shows,
and saves a screenshot under test-artifacts/dashboard/ (look at them).
"""

from __future__ import annotations

import re
import shutil
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import sqlalchemy as sa

from db import queries, writes
from db.engine import get_engine
from tests.dashboard.conftest import (DEPTH_SWEEP, STARTING_SWEEP, TIMEOUT_MS, assert_clean, charts, config,
                                      new_tab, serving, settle, shot)

playwright = pytest.importorskip("playwright.sync_api")

pytestmark = pytest.mark.browser


PREACT_SWEEP = "cifar10-preact"  # a second study, for the comparison of sweeps


@pytest.fixture(scope="module")
def served_db(fixture_db, tmp_path_factory) -> str:
    """A copy of the fixture database this module may write to (the live-refresh test does), with
    a second finished study: pre-activation ResNet-20 (A), two seeds, three epochs."""
    copy = tmp_path_factory.mktemp("served") / "resweep.db"
    shutil.copyfile(sa.make_url(fixture_db).database, copy)
    url = f"sqlite:///{copy}"
    engine = get_engine(url)
    sweep = writes.create_sweep(engine, name=PREACT_SWEEP, spec=f"name: {PREACT_SWEEP}\n", spec_hash="3" * 64)
    for seed in (0, 1):
        trial = writes.upsert_trial(engine, sweep, f"p_{seed}", status="running",
                                    config={**config(20, "A", seed), "block": "preact"})
        for epoch in (1, 2, 3):
            writes.record_result(engine, trial, epoch, {"train_err": 0.5 / epoch, "test_err": 0.55 / epoch})
        writes.set_trial_status(engine, trial, "terminated", ended=True)
    writes.set_sweep_status(engine, sweep, "finished", finished=True)
    engine.dispose()
    return url


@pytest.fixture(scope="module")
def server(served_db, tmp_path_factory):
    """The app served by `streamlit run` on a free localhost port; its log kept beside it."""
    with serving(served_db, tmp_path_factory) as address:
        yield address


@pytest.fixture(scope="module")
def page(browser):
    tab = new_tab(browser, 1400, 1000)
    yield tab
    tab.close()


def tables(tab) -> int:
    tab.wait_for_selector('[data-testid="stDataFrame"]')
    return tab.locator('[data-testid="stDataFrame"]').count()


def legend(tab) -> list[str]:
    texts = tab.locator('[data-testid="stPlotlyChart"] .legendtext').evaluate_all("els => els.map(e => e.textContent)")
    return sorted(set(texts))


def open_menu(tab, widget) -> None:
    """Click a select widget until its menu is open: a click that lands while the page's live
    watch runs (a 0.1 s fragment run every few seconds while a sweep runs) can be lost."""
    for _ in range(5):
        widget.click()
        try:
            tab.get_by_role("option").first.wait_for(timeout=2000)
            return
        except playwright.Error:
            tab.keyboard.press("Escape")
    raise AssertionError("the menu did not open")


def nav(tab, label: str) -> None:
    tab.locator('[data-testid="stSidebarNav"] a', has_text=label).first.click()


def test_a_shared_link_opens_straight_on_its_page(server, page):
    # The very first request to this fresh server names a page and a filter, as a shared link does.
    page.goto(f"{server}/curves?sweep={DEPTH_SWEEP}&depth=56")
    settle(page, "Curves")
    assert_clean(page)
    assert charts(page) == 1
    assert legend(page) == ["ResNet-56 (A)", "plain-56"]
    shot(page, "1-curves-shared-link")


def test_changing_a_filter_redraws_the_chart_and_goes_into_the_url(server, page):
    page.goto(f"{server}/curves?sweep={DEPTH_SWEEP}")
    settle(page, "Curves")
    assert legend(page) == ["ResNet-20 (A)", "ResNet-56 (A)", "plain-20", "plain-56"]
    shortcut = page.locator('[data-testid="stSidebar"] [data-testid="stMultiSelect"]', has_text="shortcut")
    open_menu(page, shortcut)
    page.get_by_role("option", name="none", exact=True).click()
    page.keyboard.press("Escape")
    page.wait_for_url(re.compile(r"shortcut=none"))
    page.wait_for_function("() => [...document.querySelectorAll('.legendtext')].every(e => e.textContent.startsWith('plain'))")
    settle(page, "Curves")
    assert_clean(page)
    assert legend(page) == ["plain-20", "plain-56"]
    shot(page, "2-curves-filtered")

    nav(page, "Grid")  # the filter travels with the link to the next page
    page.wait_for_url(re.compile(r"/grid\?.*shortcut=none"))
    settle(page, "Grid")
    assert_clean(page)
    assert charts(page) == 1 and tables(page) == 3  # pivot, paper's Table 6, every grid point
    shot(page, "3-grid-filtered")


def test_every_page_draws_its_charts_and_tables(server, page):
    page.goto(f"{server}/?sweep={DEPTH_SWEEP}")
    settle(page, "Sweeps")
    assert_clean(page)
    assert tables(page) == 2
    shot(page, "4-sweeps")

    nav(page, "Curves")
    settle(page, "Curves")
    assert_clean(page)
    assert charts(page) == 1
    page.locator('[data-testid="stButtonGroup"]', has_text="linear").get_by_text("log", exact=True).click()
    page.wait_for_url(re.compile(r"scale=log"))
    settle(page, "Curves")
    assert page.locator('[data-testid="stPlotlyChart"] .yaxislayer-above text').count() > 0
    assert_clean(page)
    shot(page, "5-curves-log")

    nav(page, "Grid")
    settle(page, "Grid")
    assert_clean(page)
    # pivot, differences between cells (95 % intervals), the papers' numbers, every grid point
    assert charts(page) == 1 and tables(page) == 4
    assert "Table 6" in page.inner_text('[data-testid="stMain"]')
    shot(page, "6-grid")

    nav(page, "Layer responses")
    settle(page, "Layer responses")
    assert_clean(page)
    assert charts(page) == 1
    assert legend(page) == ["ResNet-20 (A)", "ResNet-56 (A)", "plain-20", "plain-56"]
    shot(page, "7-layer-responses")

    nav(page, "SQL")
    settle(page, "SQL")
    assert_clean(page)
    assert tables(page) == 1
    assert "trial_results" in page.inner_text('[data-testid="stMain"]')
    page.locator('[data-testid="stTextArea"] textarea').fill(
        "SELECT depth, avg(final_test_err) AS err FROM trial_results WHERE epochs > 0 GROUP BY depth"
    )
    page.get_by_role("button", name="Run").click()
    page.wait_for_selector('[data-testid="stCaptionContainer"]:has-text("2 rows")')  # the default query had 4
    assert_clean(page)
    shot(page, "8-sql")


def test_a_sweep_without_a_finished_epoch_shows_a_message(server, page):
    page.goto(f"{server}/curves?sweep={STARTING_SWEEP}")
    settle(page, "Curves")
    assert_clean(page)
    assert "has finished an epoch yet" in page.inner_text('[data-testid="stAlert"]')
    shot(page, "9-curves-no-epoch")


def test_the_sweeps_page_follows_a_running_sweep_without_a_reload(server, page, served_db):
    page.goto(f"{server}/?sweep={STARTING_SWEEP}")
    settle(page, "Sweeps")
    page.wait_for_selector('[data-testid="stCaptionContainer"]:has-text("2 running · 2 shown")')
    engine = get_engine(served_db)  # the recorder's part: one trial reports an epoch and ends
    sweep = queries.sweep(engine, STARTING_SWEEP)
    trial = writes.upsert_trial(engine, sweep.id, "s_0", status="running", config=config(110, "A", 0))
    writes.record_result(engine, trial, 1, {"train_err": 0.5, "test_err": 0.55})
    writes.set_trial_status(engine, trial, "terminated", ended=True)
    engine.dispose()
    page.wait_for_selector('[data-testid="stCaptionContainer"]:has-text("1 running · 1 terminated")', timeout=30_000)
    assert_clean(page)
    shot(page, "10-sweeps-live")


def chart_texts(tab) -> list[str]:
    """Every text the page's charts drew (titles, ticks, legend), in order."""
    return tab.locator('[data-testid="stPlotlyChart"] .main-svg text').evaluate_all("els => els.map(e => e.textContent)")


def query(tab) -> dict[str, list[str]]:
    return parse_qs(urlsplit(tab.url).query)


# Every page's state, as a link names it; a link with only the sweep gets every control's value.
STATES = {
    "": {"sweep": DEPTH_SWEEP, "shortcut": "A"},  # Sweeps
    "curves": {"sweep": DEPTH_SWEEP, "depth": "56", "metric": "loss", "colour": "shortcut",
               "split": "one panel", "scale": "linear"},
    "grid": {"sweep": DEPTH_SWEEP, "seed": "0", "rows": "shortcut", "cols": "depth", "value": "training error"},
    "layers": {"sweep": DEPTH_SWEEP, "epoch": "2"},
    "trial": {"sweep": DEPTH_SWEEP, "trial": "3", "x": "wall time", "smooth": "0.6"},
}
TITLES = {"": "Sweeps", "curves": "Curves", "grid": "Grid", "layers": "Layer responses", "trial": "Trial"}


def test_every_pages_state_round_trips_through_its_url(server, page):
    for path, state in STATES.items():
        page.goto(f"{server}/{path}?{urlencode(state)}")
        settle(page, TITLES[path])
        assert_clean(page)
        got = query(page)
        assert {k: v[-1] for k, v in got.items() if k in state} == state, (path, page.url)
        # the same link opened again (a colleague's browser) draws the same view and keeps its URL
        other = page.context.browser.new_page(viewport={"width": 1400, "height": 1000})
        other.set_default_timeout(TIMEOUT_MS)
        try:
            other.goto(page.url)
            settle(other, TITLES[path])
            assert query(other) == got, path
            if path:  # every page but Sweeps draws a chart: wait until both have
                charts(page), charts(other)
                other.wait_for_timeout(500)
            texts = chart_texts(page)
            assert chart_texts(other) == texts and (texts or path == ""), path  # Sweeps has no chart
        finally:
            other.close()
        shot(page, f"11-state-{path or 'sweeps'}")
    # a link with the sweep alone gets every control's value, defaults included
    page.goto(f"{server}/curves?sweep={DEPTH_SWEEP}")
    settle(page, "Curves")
    assert {k: v[-1] for k, v in query(page).items()} == {
        "sweep": DEPTH_SWEEP, "metric": "error", "colour": "net", "split": "plain|residual", "scale": "linear"}


def test_a_link_keeps_its_sweep_when_it_is_the_newest(server, page):
    newest = PREACT_SWEEP  # created last by the served_db fixture
    page.goto(f"{server}/grid?sweep={newest}&shortcut=A")
    settle(page, "Grid")
    assert query(page)["sweep"] == [newest] and query(page)["shortcut"] == ["A"]
    page.goto(f"{server}/grid?shortcut=A")  # no sweep named: the newest, and the URL says which
    settle(page, "Grid")
    assert query(page)["sweep"] == [newest]


def test_a_row_of_the_trials_table_opens_the_trial_page(server, page):
    page.goto(f"{server}/?sweep={DEPTH_SWEEP}")
    settle(page, "Sweeps")
    grid = page.locator('[data-testid="stDataFrame"]').nth(1)
    grid.scroll_into_view_if_needed()
    box = grid.bounding_box()
    page.mouse.click(box["x"] + 16, box["y"] + 36 + 3 * 35 + 17)  # the 4th row's checkbox: trial 4
    page.wait_for_url(re.compile(r"/trial\?.*trial=4"))
    settle(page, "Trial")
    assert_clean(page)
    main = page.inner_text('[data-testid="stMain"]')
    assert "ResNet-20 A seed 1 · terminated" in main and "t_20_A_1" in main
    assert charts(page) >= 2  # error and loss, learning rate
    shot(page, "12-trial-from-row")


def test_two_sweeps_on_one_chart_each_net_labelled_with_its_sweep(server, page):
    page.goto(f"{server}/curves?sweep={DEPTH_SWEEP}&compare={PREACT_SWEEP}&depth=20&shortcut=A")
    settle(page, "Curves")
    assert_clean(page)
    assert legend(page) == [f"ResNet-20 (basic) · {DEPTH_SWEEP}", f"ResNet-20 (preact) · {PREACT_SWEEP}"]
    shot(page, "13-curves-two-sweeps")
    nav(page, "Grid")
    page.wait_for_url(re.compile(r"/grid\?.*compare="))
    settle(page, "Grid")
    assert_clean(page)
    assert query(page)["cols"] == ["sweep"]  # compared sweeps side by side by default
    texts = chart_texts(page)  # the heatmap's columns
    assert DEPTH_SWEEP in texts and PREACT_SWEEP in texts
    shot(page, "14-grid-two-sweeps")


def _frames(tab) -> list[bytes]:
    """The messages the server sends this tab over its websocket, in order (collected as they come)."""
    frames: list[bytes] = []
    tab.on("websocket", lambda ws: ws.on("framereceived", lambda payload: frames.append(
        payload if isinstance(payload, bytes) else payload.encode())))
    return frames


@pytest.mark.parametrize(("path", "title"), [("curves", "Curves"), ("trial", "Trial"), ("sql", "SQL")])
def test_a_chart_page_sends_an_empty_chart_before_it_reads_anything(server, browser, path, title):
    """On the pages that draw charts, an empty chart goes out before the sidebar (the first thing
    that reads the database), so a first visit's browser loads Plotly's script while the run reads
    the data; it is gone once the run ends. The SQL page draws no chart and sends none."""
    tab = new_tab(browser, 1400, 1000)
    try:
        frames = _frames(tab)
        tab.goto(f"{server}/{path}?sweep={DEPTH_SWEEP}")
        settle(tab, title)
        assert_clean(tab)
        early = [i for i, f in enumerate(frames) if b"staticPlot" in f]  # only the empty chart is static
        sidebar = [i for i, f in enumerate(frames) if b"Filters (none chosen: all)" in f]
        assert sidebar, "no sidebar message seen"
        if title == "SQL":
            assert not early
        else:
            assert early and early[0] < sidebar[0]
            assert charts(tab) >= 1
        empty = '[data-testid="stPlotlyChart"]:not(:has(.main-svg :is(.trace, .hm)))'
        assert tab.locator(empty).count() == 0  # the empty one is gone
    finally:
        tab.close()
