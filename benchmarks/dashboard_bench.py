"""Dashboard page render times in a real browser, on the 2,000-trial database of db_bench.

    python -m benchmarks.dashboard_bench [--trials 2000] [--epochs 200] [--repeat 3] [--quick]
                                         [--keep PATH.db] [--db URL]
    python -m benchmarks --only dashboard_bench          (through the runner)

Builds the database with benchmarks/db_bench.py's builder (2,000 trials x 200 epochs x 8
metrics and 5 probes of 56 layers, one sweep), serves it with `streamlit run` on a free
localhost port, and drives headless Debian Chromium: every round visits each page through the
sidebar navigation and times from the click until the page's script has finished and its
charts and tables are drawn. Round 1 is the first load (cold caches): the baseline. The figure
is the median of the next `repeat` rounds, the page's render time after the first load; the
target is under 2 s. The filters stay at "all", so every page shows all 2,000 trials.
`--keep` builds the database at a path (or reuses it there); `--db` times an existing database
(the quickstart's, say) instead.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import db_bench  # noqa: E402
from benchmarks.common import result  # noqa: E402
from db.engine import get_engine  # noqa: E402
from orchestrator.cli.dashboard import start, wait_until_serving  # noqa: E402

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip
# page title (sidebar label) -> what the page must have drawn before it counts as rendered
PAGES = {
    "Curves": '[data-testid="stPlotlyChart"] .main-svg .trace',
    "Grid": '[data-testid="stPlotlyChart"] .main-svg .hm',
    "Layer responses": '[data-testid="stPlotlyChart"] .main-svg .trace',
    "SQL": '[data-testid="stDataFrame"]',
    "Sweeps": '[data-testid="stDataFrame"]',
}
IDLE = '[data-testid="stApp"][data-test-script-state="notRunning"]'
TARGET_S = 2.0
TIMEOUT_MS = 120_000


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rendered(tab, title: str) -> None:
    """Wait until the page titled `title` has finished its run and drawn its content."""
    tab.wait_for_selector(f'h1:has-text("{title}")', timeout=TIMEOUT_MS)
    tab.wait_for_selector(IDLE, timeout=TIMEOUT_MS)
    tab.wait_for_selector(PAGES[title], state="attached", timeout=TIMEOUT_MS)
    if tab.locator('[data-testid="stException"]').count():
        raise RuntimeError(f"the {title} page shows an exception: {tab.inner_text('[data-testid=stMain]')[:500]}")


def measure(base_url: str, repeat: int) -> dict[str, list[float]]:
    """Seconds per page and round; round 0 is the first load."""
    from playwright.sync_api import sync_playwright

    times: dict[str, list[float]] = {title: [] for title in PAGES}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        tab = browser.new_page(viewport={"width": 1400, "height": 1000})
        t0 = time.perf_counter()
        tab.goto(base_url)  # the Sweeps page, the app's root
        _rendered(tab, "Sweeps")
        first_sweeps = time.perf_counter() - t0
        for round_ in range(repeat + 1):
            for title in PAGES:
                if round_ == 0 and title == "Sweeps":
                    times[title].append(first_sweeps)
                    continue
                t0 = time.perf_counter()
                tab.locator('[data-testid="stSidebarNav"] a', has_text=title).first.click()
                _rendered(tab, title)
                times[title].append(time.perf_counter() - t0)
        browser.close()
    return times


def run(quick: bool, trials: int | None = None, epochs: int | None = None, repeat: int = 3,
        db: str | None = None, keep: Path | None = None) -> list[dict]:
    """The benchmark convention (benchmarks/common.py): one row per page. `db` serves that
    database instead of building one; `keep` builds (or reuses) the database at that path."""
    trials = trials or (200 if quick else 2000)
    epochs = epochs or (50 if quick else 200)
    if not CHROMIUM.exists():
        return [result("dashboard pages", None, "s", note="Debian's chromium is not installed (apt-get install chromium)")]
    with tempfile.TemporaryDirectory(prefix="resweep-dashboard-bench-") as tmp:
        if db is None:
            path = keep or Path(tmp) / "bench.db"
            url = f"sqlite:///{path}"
            if not path.exists():
                build = argparse.Namespace(trials=trials, epochs=epochs, layers=56, probes=5)
                db_bench._old_layout(get_engine(url))  # build_query_db copies the points into it too
                engine, _ids, build_s, _sizes = db_bench.build_query_db(url, build)
                engine.dispose()
                print(f"built {trials} trials x {epochs} epochs in {build_s:.1f} s", file=sys.stderr)
            label = f"{trials} trials"
        else:
            url, label = db, db.rsplit("/", 1)[-1]
        port = _free_port()
        with (Path(tmp) / "server.log").open("w") as log:
            server = start(url, "127.0.0.1", port, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_until_serving(server, "127.0.0.1", port)
            times = measure(f"http://127.0.0.1:{port}", repeat)
        finally:
            server.terminate()
            server.wait(timeout=30)
    rows = []
    for title, seconds in times.items():
        after = statistics.median(seconds[1:])
        rows.append(result(
            f"{title} page, {label}: render after first load (median of {repeat})", after, "s",
            baseline="first load (cold caches)", baseline_value=seconds[0],
            note=f"target < {TARGET_S:g} s: {'met' if after < TARGET_S else 'MISSED'}; "
                 f"rounds {', '.join(f'{s:.2f}' for s in seconds)} s",
        ))  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=None, help="trials in the database (default 2000)")
    parser.add_argument("--epochs", type=int, default=None, help="epochs per trial (default 200)")
    parser.add_argument("--repeat", type=int, default=3, help="timed rounds after the first load")
    parser.add_argument("--quick", action="store_true", help="200 trials x 50 epochs")
    parser.add_argument("--db", default=None, help="serve this database (a URL) instead of building one")
    parser.add_argument("--keep", type=Path, default=None, help="build the database at this path, or reuse it")
    args = parser.parse_args(argv)
    rows = run(args.quick, args.trials, args.epochs, args.repeat, args.db, args.keep)
    print(f"{'page':<76} {'after first load':>17} {'first load':>11} {'ratio':>6}")
    for r in rows:
        if r["value"] is None:
            print(f"{r['name']:<76} {'-':>17}  ({r.get('note')})")
            continue
        print(f"{r['name']:<76} {r['value']:>15.2f} s {r['baseline_value']:>9.2f} s {r['ratio']:>6.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
