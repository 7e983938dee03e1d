"""Dashboard page render times in a real browser, on one sweep of 20,000 trials (by default).

    python -m benchmarks.dashboard_bench [--trials 20000] [--epochs 100] [--repeat 3] [--quick]
                                         [--keep PATH.db | --db URL | --pg]
                                         [--others 49 --other-trials 1633 --other-epochs 20]
    python -m benchmarks --only dashboard_bench          (through the runner: --quick there)

Builds sweep `bench` (`build_sweep`: --trials terminated trials x --epochs epochs x 8 metrics, and
5 probes of 56 layers; 20 grid points, so 1,000 seeds each at 20,000 trials), serves it with
`streamlit run` on a free localhost port, and drives headless Debian Chromium over every page:
- first load: each page's link (`/curves?sweep=bench`) opened on a fresh server (nothing cached;
  the server started as `python -m orchestrator dashboard` starts it, so the pages' libraries
  are loaded and the app's own modules are not), timed until the page's script has finished and
  its charts and tables are drawn; the target is 4 s;
- after the first load: every page drawn once in one server, then `repeat` rounds through the
  sidebar's navigation; the figure is each page's median, the target 2 s.
The filters stay at "all", so every page shows the whole sweep.
`--keep` builds the SQLite database at a path (or reuses it there); `--db` serves a database
that holds sweep `bench` (or builds it there when it does not); `--pg` builds in a scratch
PostgreSQL database on $RESWEEP_TEST_PG's server, dropped afterwards. `--others N` then adds N
finished sweeps beside `bench` (--other-trials x --other-epochs, one probe) and measures again:
the sweeps list and `bench`'s pages beside the other sweeps, against the same pages with `bench`
alone. `--quick` (200 trials x 20 epochs, one round, each page's first visit in one server
instead of a fresh server per page) checks that the benchmark works.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import sqlalchemy as sa  # noqa: E402

from benchmarks import _rivals, db_bench  # noqa: E402
from benchmarks.common import result  # noqa: E402
from db import writes  # noqa: E402
from db.engine import get_engine  # noqa: E402
from db.models import METRIC_IDS  # noqa: E402
from orchestrator.cli.dashboard import start, wait_until_serving  # noqa: E402

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip
SWEEP = "bench"  # the sweep every page shows (others, when built, only sit beside it)
# page title (sidebar label) -> (its URL path, the default page at the root, what it must have drawn before it counts as rendered)
CHART = '[data-testid="stPlotlyChart"] .main-svg .trace'
PAGES = {
    "Sweeps": ("", '[data-testid="stDataFrame"]'),
    "Curves": ("curves", CHART),
    "Grid": ("grid", '[data-testid="stPlotlyChart"] .main-svg .hm'),
    "Layer responses": ("layers", CHART),
    "Search": ("search", f'[data-testid="stAlert"], {CHART}'),  # the bench's sweep searches nothing
    "Trial": ("trial", CHART),
    "SQL": ("sql", '[data-testid="stDataFrame"]'),
}
IDLE = '[data-testid="stApp"][data-test-script-state="notRunning"]'
WARM_S, COLD_S = 2.0, 4.0  # the targets: after the first load, and the first load of a fresh server
TIMEOUT_MS = 180_000
def build_sweep(engine: sa.Engine, name: str, trials: int, epochs: int, probes: int, layers: int = 56) -> None:
    """One finished sweep of `trials` terminated trials x `epochs` epochs x 8 metrics, layer
    records of `layers` layers at `probes` epochs, set-based in a 16-slot recorder's order (the
    points of db_bench.build_query_db, without its copy in the layout before migration 0007);
    the summaries kept as db.writes keeps them."""
    sweep_id = writes.create_sweep(engine, name=name, spec=f"name: {name}\n", spec_hash="0" * 64)
    ids = db_bench.add_trials(engine, sweep_id, trials, f"{name}-")
    first = ids[0]
    names = " UNION ALL ".join(f"SELECT {METRIC_IDS[n]} AS name_id, {k} AS k" for k, n in enumerate(_rivals.NAMES))
    every = max(1, epochs // max(probes, 1))
    with engine.begin() as conn:  # text(): escapes '%' for psycopg
        conn.execute(sa.text(
            f"""
            INSERT INTO metric_values (trial_id, name_id, epoch, value)
            WITH RECURSIVE s(x) AS ({_rivals.series(epochs)}), n AS ({names})
            SELECT t.id, n.name_id, s.x, 1.0 / (s.x + n.k + 1) + ((t.id - {first}) % 97) * 0.001
            FROM trials AS t CROSS JOIN n CROSS JOIN s
            WHERE t.sweep_id = {sweep_id}
            {_rivals.recorder_order(f"(t.id - {first})", "s.x", "n.k")}
            """
        ))  # fmt: skip
        writes.refresh_summaries(conn, ids)
        if probes:
            conn.execute(sa.text(
                f"""
                INSERT INTO layer_stats (trial_id, epoch, layer, name, stage, std, mean)
                WITH RECURSIVE s(x) AS ({_rivals.series(layers)}),
                     p(e) AS (SELECT {every} UNION ALL SELECT e + {every} FROM p
                              WHERE e + {every} <= {min(every * probes, epochs)})
                SELECT t.id, p.e, s.x - 1, 'layer' || (s.x - 1), 1 + (s.x - 1) * 3 / {layers},
                       1.0 + (s.x - 7 * (s.x / 7)) * 0.1 + ((t.id - {first}) % 5) * 0.01, 0.0
                FROM trials AS t CROSS JOIN p CROSS JOIN s
                WHERE t.sweep_id = {sweep_id}
                ORDER BY t.id, p.e, s.x
                """
            ))  # fmt: skip
    writes.set_sweep_status(engine, sweep_id, "finished", finished=True)


def build(url: str, trials: int, epochs: int, others: int = 0, other_trials: int = 0, other_epochs: int = 20) -> float:
    """The benchmark's database at `url` (new and empty): sweep `bench` of `trials` x `epochs`
    (5 probes), after `others` sweeps of `other_trials` trials x `other_epochs` epochs (1 probe)
    each, so `bench` is the newest. Returns the seconds it took."""
    start = time.perf_counter()
    engine = get_engine(url)
    for i in range(others):
        build_sweep(engine, f"other-{i:02d}", other_trials, other_epochs, probes=1)
    build_sweep(engine, "bench", trials, epochs, probes=5)
    _rivals.analyze(engine)
    engine.dispose()
    return time.perf_counter() - start


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _rendered(tab, title: str) -> None:
    """Wait until the page titled `title` has finished its run and drawn its content."""
    tab.wait_for_selector(f'h1:has-text("{title}")', timeout=TIMEOUT_MS)
    tab.wait_for_selector(IDLE, timeout=TIMEOUT_MS)
    tab.wait_for_selector(PAGES[title][1], state="attached", timeout=TIMEOUT_MS)
    if tab.locator('[data-testid="stException"]').count():
        raise RuntimeError(f"the {title} page shows an exception: {tab.inner_text('[data-testid=stMain]')[:500]}")


class _Server:
    """`streamlit run` of the dashboard over `url` on a free port, stopped on exit."""

    def __init__(self, url: str, log: Path) -> None:
        self.url, self.log = url, log

    def __enter__(self) -> str:
        port = _free_port()
        with self.log.open("a") as out:
            self.proc = start(self.url, "127.0.0.1", port, stdout=out, stderr=subprocess.STDOUT)
        wait_until_serving(self.proc, "127.0.0.1", port)
        return f"http://127.0.0.1:{port}"

    def __exit__(self, *exc) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


def cold(browser, url: str, log: Path) -> dict[str, float]:
    """Seconds from opening each page's link (?sweep=bench) in a new tab of a fresh server (empty
    caches; the pages' libraries loaded at its start, as `orchestrator dashboard` serves it) until
    it has drawn: what a reader of a shared link waits after a restart."""
    times = {}
    for title, (path, _) in PAGES.items():
        with _Server(url, log) as base:
            tab = browser.new_page(viewport={"width": 1400, "height": 1000})
            t0 = time.perf_counter()
            tab.goto(f"{base}/{path}?sweep={SWEEP}")
            _rendered(tab, title)
            times[title] = time.perf_counter() - t0
            tab.close()
    return times


def warm(browser, url: str, log: Path, repeat: int) -> tuple[dict[str, float], dict[str, list[float]]]:
    """Seconds per page and round, each page reached through the sidebar's navigation after
    every page has been drawn once in this server (round 0, returned apart: each page's first
    visit in one server, the Sweeps page by its link)."""
    first: dict[str, float] = {}
    times: dict[str, list[float]] = {title: [] for title in PAGES}
    with _Server(url, log) as base:
        tab = browser.new_page(viewport={"width": 1400, "height": 1000})
        t0 = time.perf_counter()
        tab.goto(f"{base}/?sweep={SWEEP}")
        _rendered(tab, "Sweeps")
        first["Sweeps"] = time.perf_counter() - t0
        for round_ in range(repeat + 1):
            for title in PAGES:
                if round_ == 0 and title == "Sweeps":
                    continue  # shown already: its own link is inert
                t0 = time.perf_counter()
                tab.locator('[data-testid="stSidebarNav"] a', has_text=title).first.click()
                _rendered(tab, title)
                seconds = time.perf_counter() - t0
                if round_:
                    times[title].append(seconds)
                else:
                    first[title] = seconds
        tab.close()
    return first, times


def measure(url: str, repeat: int, log: Path, fresh: bool = True) -> dict[str, tuple[float, list[float]]]:
    """Per page: (first load, warm seconds per round). The first load is the page's link opened
    on a fresh server (`fresh`), else its first visit in the server of the warm rounds."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        first = cold(browser, url, log) if fresh else None
        visited, after = warm(browser, url, log, repeat)
        first = first or visited
        print("first loads: " + ", ".join(f"{t} {s:.2f} s" for t, s in first.items()), file=sys.stderr)
        browser.close()
    return {title: (first[title], after[title]) for title in PAGES}


def _rows(times: dict[str, tuple[float, list[float]]], label: str, repeat: int,
          alone: dict[str, tuple[float, list[float]]] | None = None, fresh: bool = True) -> list[dict]:
    """Two rows per page: after the first load (median of `repeat`, beside the first load) and
    the first load itself (beside the same page with the sweep alone, when `alone` is given)."""
    rows = []
    cold_name = "first load, fresh server" if fresh else "first visit (one server for every page)"
    for title, (first, rounds) in times.items():
        after = statistics.median(rounds)
        rows.append(result(
            f"{title} page, {label}: after first load (median of {repeat})", after, "s",
            baseline=cold_name, baseline_value=first,
            note=f"target <= {WARM_S:g} s: {'met' if after <= WARM_S else 'MISSED'}; "
                 f"rounds {', '.join(f'{s:.2f}' for s in rounds)} s",
        ))  # fmt: skip
        rows.append(result(
            f"{title} page, {label}: {cold_name}", first, "s",
            baseline=None if alone is None else "the same, the sweep alone in its database",
            baseline_value=None if alone is None else alone[title][0],
            note=f"target <= {COLD_S:g} s: {'met' if first <= COLD_S else 'MISSED'}",
        ))  # fmt: skip
        if alone is not None:
            before = statistics.median(alone[title][1])
            rows[-2].update(result(rows[-2]["name"], after, "s", baseline="the same, the sweep alone in its database",
                                   baseline_value=before, note=rows[-2]["note"] + f"; alone {before:.2f} s"))
    return rows


def _scratch_pg(tag: str) -> tuple[str, Callable[[], None]]:
    """A new PostgreSQL database on db_bench's server (RESWEEP_TEST_PG): its URL and its drop."""
    name = f"resweep_dashbench_{tag}_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(db_bench.PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')

    def drop() -> None:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()

    return db_bench.PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}", drop


def _has_bench(url: str) -> bool:
    engine = get_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(sa.text("SELECT count(*) FROM sweeps WHERE name = :n"), {"n": SWEEP}).scalar() > 0
    finally:
        engine.dispose()


def run(quick: bool, trials: int | None = None, epochs: int | None = None, repeat: int = 3,
        db: str | None = None, keep: Path | None = None, pg: bool = False, others: int = 0,
        other_trials: int | None = None, other_epochs: int = 20) -> list[dict]:
    """The benchmark convention (benchmarks/common.py): two rows per page (after the first load,
    and the first load). `db` serves that database (it must hold sweep `bench`) instead of
    building one; `keep` builds (or reuses) the SQLite database at that path; `pg` builds in a
    scratch PostgreSQL database, dropped afterwards. `others` > 0 measures the sweep alone, then
    again after adding that many sweeps of `other_trials` x `other_epochs` beside it."""
    trials = trials or (200 if quick else 20_000)
    epochs = epochs or (20 if quick else 100)
    other_trials = other_trials or trials
    repeat = 1 if quick else repeat
    if not CHROMIUM.exists():
        return [result("dashboard pages", None, "s", note="Debian's chromium is not installed (apt-get install chromium)")]
    drop = None
    with tempfile.TemporaryDirectory(prefix="resweep-dashboard-bench-") as tmp:
        log = Path(tmp) / "server.log"
        try:
            if db is not None:
                url = db
            elif pg:
                url, drop = _scratch_pg("pg")
            else:
                url = f"sqlite:///{keep or Path(tmp) / 'bench.db'}"
            if not _has_bench(url):
                print(f"building {trials} trials x {epochs} epochs ...", file=sys.stderr)
                print(f"built in {build(url, trials, epochs):.1f} s", file=sys.stderr)
            dialect = "PostgreSQL" if url.startswith("postgresql") else "SQLite"
            label = f"{trials:,} trials, {dialect}"
            alone = measure(url, repeat, log, fresh=not quick)  # quick: one server start, not eight
            rows = _rows(alone, label, repeat, fresh=not quick)
            if others:
                print(f"adding {others} sweeps of {other_trials} trials x {other_epochs} epochs ...", file=sys.stderr)
                start_s = time.perf_counter()
                engine = get_engine(url)
                for i in range(others):
                    build_sweep(engine, f"other-{i:02d}", other_trials, other_epochs, probes=1)
                _rivals.analyze(engine)
                engine.dispose()
                print(f"added in {time.perf_counter() - start_s:.1f} s", file=sys.stderr)
                total = trials + others * other_trials
                beside = measure(url, repeat, log, fresh=not quick)
                rows += _rows(beside, f"{trials:,} trials beside {others} sweeps ({total:,} trials), {dialect}",
                              repeat, alone, fresh=not quick)
        finally:
            if drop is not None:
                drop()
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=None, help="trials in the database (default 2000)")
    parser.add_argument("--epochs", type=int, default=None, help="epochs per trial (default 200)")
    parser.add_argument("--repeat", type=int, default=3, help="timed rounds after the first load")
    parser.add_argument("--quick", action="store_true", help="200 trials x 20 epochs")
    parser.add_argument("--db", default=None, help="serve this database (a URL holding sweep 'bench') instead of building one")
    parser.add_argument("--keep", type=Path, default=None, help="build the SQLite database at this path, or reuse it")
    parser.add_argument("--pg", action="store_true", help="build in a scratch PostgreSQL database ($RESWEEP_TEST_PG's server)")
    parser.add_argument("--others", type=int, default=0, help="then add this many sweeps beside it and measure again")
    parser.add_argument("--other-trials", type=int, default=None, help="trials per other sweep (default --trials)")
    parser.add_argument("--other-epochs", type=int, default=20, help="epochs per other sweep's trial")
    args = parser.parse_args(argv)
    rows = run(args.quick, args.trials, args.epochs, args.repeat, args.db, args.keep, args.pg, args.others,
               args.other_trials, args.other_epochs)
    print(f"{'page':<92} {'value':>8} {'baseline':>9} {'ratio':>6}  note")
    for r in rows:
        if r["value"] is None:
            print(f"{r['name']:<92} {'-':>8}  ({r.get('note')})")
            continue
        base = "-" if r["baseline_value"] is None else f"{r['baseline_value']:.2f} s"
        ratio = "" if r["ratio"] is None else f"{r['ratio']:.2f}"
        print(f"{r['name']:<92} {r['value']:>6.2f} s {base:>9} {ratio:>6}  {r.get('note', '')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
