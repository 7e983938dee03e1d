"""The dashboard in a real browser while a real sweep runs: `python -m orchestrator launch` in a
subprocess (its own local Ray) on a tiny Optuna search over scikit-learn's digits, served by
`streamlit run` and watched by headless Debian Chromium.

One database, one server and one sweep for the module: the first test opens the Curves page on an
empty database, launches the sweep and watches the page follow it without a reload (the sweep
appears in the sidebar, its curves grow epoch by epoch, the page stops refreshing when it ends);
the second opens the search views on the finished study and follows a row to its trial.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
import time

import pytest
import sqlalchemy as sa

from db.engine import get_engine
from tests.dashboard.conftest import assert_clean, charts, new_tab, serving, settle, shot
from tests.orchestrator.conftest import cli_env

playwright = pytest.importorskip("playwright.sync_api")

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.ray]

NAME = "digits-search"
EPOCHS = 12
SAMPLES = 6
SWEEP = f"""\
    name: {NAME}
    dataset: digits
    model: cifar
    grid: {{depth: [8], block: [basic], shortcut: [A], seed: [0]}}
    train: {{epochs: {EPOCHS}, batch_size: 64, lr: 0.05, augment: false, val_size: 200}}
    probes: {{every: 6}}
    resources: {{cpu: 1}}
    search:
      algorithm: optuna
      num_samples: {SAMPLES}
      metric: val_err
      mode: min
      space:
        lr: {{log_uniform: [0.01, 0.3]}}
        weight_decay: {{log_uniform: [1.0e-5, 1.0e-3]}}
    fault_tolerance: {{max_failures: 0, checkpoint_every: 6}}
    """


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    root = tmp_path_factory.mktemp("live")
    (root / f"{NAME}.yaml").write_text(textwrap.dedent(SWEEP))
    url = f"sqlite:///{root / 'resweep.db'}"
    get_engine(url).dispose()  # an empty database: the dashboard opens before the sweep exists
    return root, url


@pytest.fixture(scope="module")
def server(home, tmp_path_factory):
    _, url = home
    with serving(url, tmp_path_factory) as address:
        yield address


@pytest.fixture(scope="module")
def page(browser):
    tab = new_tab(browser, 1440, 900)
    yield tab
    tab.close()


def drawn(tab) -> str:
    """What the chart's lines show (their x, y and hover text, as plotly drew them)."""
    return tab.evaluate("""() => JSON.stringify([...document.querySelectorAll(
        '[data-testid="stPlotlyChart"] .js-plotly-plot')].flatMap(p => p._fullData || []).map(
        t => [Array.from(t.x || []), Array.from(t.y || []), t.hovertemplate]))""")


def lines(tab) -> list:
    """The bold (test error) lines: [x, y, hover template] each."""
    return [t for t in json.loads(drawn(tab)) if t[2] and ", test_err<br>" in t[2]]


def trace_types(tab) -> list[str]:
    return tab.evaluate("""() => [...document.querySelectorAll('[data-testid="stPlotlyChart"] .js-plotly-plot')]
        .flatMap(p => (p._fullData || []).map(t => t.type))""")


def test_a_page_follows_a_sweep_launched_while_it_is_open(home, server, page):
    root, url = home
    page.goto(f"{server}/curves")
    page.wait_for_selector('[data-testid="stAlert"]:has-text("No sweeps in")')
    launch = subprocess.Popen([sys.executable, "-m", "orchestrator", "launch", f"{NAME}.yaml", "--db", url],
                              cwd=root, env=cli_env({"RAY_USAGE_STATS_ENABLED": "0"}),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        # No reload from here on: the sweep shows up in the sidebar, then its first curves.
        deadline = time.monotonic() + 420  # Ray's start on a busy two-core machine
        while f"sweep={NAME}" not in page.url and launch.poll() is None and time.monotonic() < deadline:
            page.wait_for_timeout(1000)
        assert launch.poll() is None, "the sweep ended before the page saw it: " + launch.stdout.read()[-3000:]
        assert f"sweep={NAME}" in page.url  # the sidebar chose the new sweep, and the URL names it
        page.wait_for_selector('[data-testid="stSidebar"]:has-text("Live:")', timeout=60_000)
        page.wait_for_selector('[data-testid="stPlotlyChart"] .main-svg .trace', state="attached", timeout=300_000)
        first = drawn(page)
        shot(page, "20-curves-live-first-epoch")
        deadline = time.monotonic() + 300  # more epochs and trials come in: the chart changes, no reload
        while drawn(page) == first and launch.poll() is None and time.monotonic() < deadline:
            page.wait_for_timeout(500)
        assert drawn(page) != first, "the chart did not change while the sweep ran"
        out, _ = launch.communicate(timeout=600)
    finally:
        if launch.poll() is None:
            launch.terminate()
            launch.wait(timeout=60)
    assert launch.returncode == 0, out[-3000:]
    # When the sweep has ended the page draws it whole once more and stops following it.
    page.wait_for_selector('[data-testid="stSidebar"]:not(:has-text("Live:"))', timeout=60_000)
    deadline = time.monotonic() + 30  # the last epochs, drawn after the end
    while not (lines(page) and f"mean of {SAMPLES} seeds" in lines(page)[0][2] and len(lines(page)[0][0]) == EPOCHS) \
            and time.monotonic() < deadline:
        page.wait_for_timeout(500)
    assert "/curves?" in page.url and f"sweep={NAME}" in page.url
    assert_clean(page)
    shot(page, "21-curves-live-finished")
    # the search's trials are one net (pooled over the searched values): every epoch of all of them
    (line,) = lines(page)
    assert len(line[0]) == EPOCHS and f"mean of {SAMPLES} seeds" in line[2]


def test_the_search_views_of_a_real_optuna_study_lead_to_its_trials(home, server, page):
    _, url = home
    page.goto(f"{server}/search?sweep={NAME}")
    settle(page, "Search")
    assert_clean(page)
    assert charts(page) >= 4  # importance, parallel coordinates, a slice per hyperparameter
    main = page.inner_text('[data-testid="stMain"]')
    assert f"{SAMPLES} finished trials of the Optuna study" in main
    bars = page.locator('[data-testid="stPlotlyChart"]').first.locator(".ytick text").evaluate_all(
        "els => els.map(e => e.textContent)")
    assert set(bars) == {"lr", "weight_decay"}  # the grid axes with one value say nothing
    assert "Parallel coordinates" in main and "Slice plots" in main
    assert trace_types(page).count("bar") == 1  # the importance; Optuna draws its parallel coordinates with lines
    shot(page, "22-search")
    engine = sa.create_engine(url)
    with engine.connect() as conn:  # the trials whose final val_err is the lowest (ties: any of them)
        finals = conn.execute(sa.text(
            "SELECT m.trial_id, m.value FROM metrics m WHERE m.name = 'val_err' AND m.epoch = "
            "(SELECT max(epoch) FROM metrics WHERE trial_id = m.trial_id AND name = 'val_err')")).all()
    engine.dispose()
    best = {i for i, v in finals if v == min(v for _, v in finals)}
    table = page.locator('[data-testid="stDataFrame"]').last
    table.scroll_into_view_if_needed()
    box = table.bounding_box()
    page.mouse.click(box["x"] + 16, box["y"] + 36 + 17)  # the first row: the best trial
    page.wait_for_url(re.compile(r"/trial\?.*trial=\d+"))
    settle(page, "Trial")
    trial_id = int(re.search(r"trial=(\d+)", page.url).group(1))
    assert trial_id in best
    assert_clean(page)
    assert "Tune's key" in page.inner_text('[data-testid="stMain"]')
    shot(page, "23-trial-from-search")
    # its checkpoint's model file, built when the button is pressed
    button = page.get_by_role("button", name="Download the model file")
    button.scroll_into_view_if_needed()
    with page.expect_download(timeout=180_000) as download:
        button.click()
    import torch

    saved = torch.load(download.value.path(), weights_only=True)
    assert saved["format"] == "resweep-model/1" and saved["trial_id"] == trial_id and saved["sweep"] == NAME
    assert saved["epoch"] == EPOCHS
