"""A small result database for the dashboard tests, written through db.writes like the recorder.

Sweep `cifar10-depth` (finished): CIFAR-10, 6n+2 nets with basic blocks, depth 20 and 56, plain
(shortcut none) and ResNet (shortcut A), seeds 0 and 1, three epochs each, layer responses at
epochs 2 and 3; plus one failed trial (depth 56, A, seed 2) that the grid must leave out.
Sweep `cifar10-starting` (running): two trials that have not finished an epoch.
The final errors (FINAL_TEST, FINAL_TRAIN) are chosen so the means and stds are easy by hand.

Also what the two browser modules (test_browser.py, test_browser_sweep.py) share: the app served
by `streamlit run`, headless Debian Chromium through Playwright, and the page helpers.
"""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from db import writes
from db.engine import get_engine

DEPTH_SWEEP = "cifar10-depth"
STARTING_SWEEP = "cifar10-starting"
EPOCHS = 3
PROBED = (2, 3)
# (depth, shortcut) -> final test error of seed 0, seed 1
FINAL_TEST = {(20, "none"): (0.10, 0.12), (20, "A"): (0.09, 0.08), (56, "none"): (0.14, 0.16), (56, "A"): (0.065, 0.075)}
TRAIN_GAP = 0.03  # final train error = final test error - TRAIN_GAP


def config(depth: int, shortcut: str, seed: int) -> dict:
    return {"dataset": "cifar10", "data_dir": None, "model": "cifar", "depth": depth, "block": "basic",
            "shortcut": shortcut, "seed": seed, "epochs": EPOCHS, "batch_size": 128, "lr": 0.1,
            "probes_every": 2}  # fmt: skip


def error_at(final: float, epoch: int) -> float:
    """Errors fall by 0.1 an epoch to their final value at epoch 3."""
    return round(final + 0.1 * (EPOCHS - epoch), 6)


def layer_std(depth: int, shortcut: str, seed: int, layer: int, epoch: int) -> float:
    """Plain nets respond more, and more so the deeper they are (the paper's Fig. 7)."""
    base = 1.5 + depth / 40 if shortcut == "none" else 1.5 - depth / 80
    wobble = 0.05 * (layer % 3)  # so the sorted panel differs from the forward one
    return base - 0.5 * layer / depth + wobble + 0.1 * seed + 0.001 * epoch


def build(url: str) -> None:
    """Write the fixture database at `url` (a new, empty database)."""
    engine = get_engine(url)
    sweep = writes.create_sweep(engine, name=DEPTH_SWEEP, spec="name: cifar10-depth\n", spec_hash="0" * 64,
                                git_commit="0123456789abcdef0123456789abcdef01234567", git_dirty=False)  # fmt: skip
    for (depth, shortcut), finals in FINAL_TEST.items():
        for seed, final in enumerate(finals):
            trial = writes.upsert_trial(engine, sweep, f"t_{depth}_{shortcut}_{seed}", status="running",
                                        config=config(depth, shortcut, seed), params_count=1000 * depth)  # fmt: skip
            for epoch in range(1, EPOCHS + 1):
                layers = None
                if epoch in PROBED:
                    layers = [{"layer": i, "name": f"conv{i}", "stage": 1 + 3 * i // depth,
                               "std": layer_std(depth, shortcut, seed, i, epoch), "mean": 0.0}
                              for i in range(depth - 1)]  # fmt: skip
                test = error_at(final, epoch)
                writes.record_result(engine, trial, epoch, {
                    "train_err": round(test - TRAIN_GAP, 6), "test_err": test, "train_loss": 2 * test,
                    "test_loss": 2 * test + 0.1, "lr": 0.1,
                }, layers)  # fmt: skip
            writes.set_trial_status(engine, trial, "terminated", ended=True)
    failed = writes.upsert_trial(engine, sweep, "t_56_A_2", status="running", config=config(56, "A", 2))
    writes.record_result(engine, failed, 1, {"train_err": 0.9, "test_err": 0.9})
    writes.set_trial_status(engine, failed, "error", error="CUDA out of memory", ended=True)
    writes.set_sweep_status(engine, sweep, "finished", finished=True)

    starting = writes.create_sweep(engine, name=STARTING_SWEEP, spec="name: cifar10-starting\n", spec_hash="1" * 64)
    for seed in (0, 1):
        writes.upsert_trial(engine, starting, f"s_{seed}", status="running", config=config(110, "A", seed))
    engine.dispose()


@pytest.fixture(scope="session")
def fixture_db(tmp_path_factory) -> str:
    """The URL of the fixture database (SQLite), built once per test session; read-only."""
    url = f"sqlite:///{Path(tmp_path_factory.mktemp('dashboard')) / 'resweep.db'}"
    build(url)
    return url


@pytest.fixture
def built_engine(db_url):
    """An engine on a new fixture database, once on SQLite and once on PostgreSQL (db_url)."""
    build(db_url)
    engine = get_engine(db_url, create=False)
    yield engine
    engine.dispose()


def free_port() -> int:
    """A TCP port on localhost that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- The dashboard in a real browser --------------------------------------------------------------

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "dashboard"
TIMEOUT_MS = 45_000  # a cold first render on a busy two-core machine
IDLE = '[data-testid="stApp"][data-test-script-state="notRunning"]'


@contextmanager
def serving(url: str, tmp_path_factory) -> Iterator[str]:
    """The app served by `streamlit run` over `url` on a free localhost port (its address); its
    log kept beside it."""
    from orchestrator.cli.dashboard import start, wait_until_serving

    port = free_port()
    log = tmp_path_factory.mktemp("streamlit") / "server.log"
    with log.open("w") as out:
        proc = start(url, "127.0.0.1", port, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_until_serving(proc, "127.0.0.1", port)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture(scope="module")
def browser():
    """Headless Debian Chromium, one per module that asks. Not one per session: while Playwright's
    sync API is open it keeps an asyncio loop running in this thread, so every later test that
    calls asyncio.run() (Streamlit's AppTest, the database tests) would fail meanwhile."""
    playwright = pytest.importorskip("playwright.sync_api")
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with playwright.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def new_tab(browser, width: int, height: int):
    """A page in a context of its own (no cookies or storage shared), with the tests' timeout."""
    tab = browser.new_page(viewport={"width": width, "height": height})
    tab.set_default_timeout(TIMEOUT_MS)
    return tab


def settle(tab, title: str) -> None:
    """Wait until the page titled `title` has finished its run."""
    tab.wait_for_selector(f'h1:has-text("{title}")')
    tab.wait_for_selector(IDLE)
    tab.wait_for_timeout(300)  # let plotly and the data grid paint
    tab.wait_for_selector(IDLE)


def assert_clean(tab) -> None:
    assert tab.locator('[data-testid="stException"]').count() == 0, tab.inner_text('[data-testid="stMain"]')
    assert "Traceback" not in tab.inner_text("body")


def charts(tab) -> int:
    """Plotly charts drawn with at least one trace."""
    tab.wait_for_selector('[data-testid="stPlotlyChart"] .main-svg :is(.trace, .hm)', state="attached")
    return tab.locator('[data-testid="stPlotlyChart"]').count()


def shot(tab, name: str) -> None:
    """A full-page screenshot under test-artifacts/dashboard/ (look at them)."""
    tab.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
