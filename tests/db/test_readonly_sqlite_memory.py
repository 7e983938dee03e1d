"""SQLite's door bounds memory before it allocates: statements built to exhaust memory end with one
line and exit status 2, in a `query` process that stays under a few hundred MB, and inside a
long-lived process (the dashboard's server) the next ordinary query still works.

Each case runs the real CLI under a 2 GiB address-space limit and measures its peak RSS (the
kernel's ru_maxrss of that child, from wait4 in a fresh interpreter that started it). Figures (2-core machine shared with other jobs,
Python 3.11.7, SQLite 3.40.1, December 2026): every case below peaked at 168-235 MB, a bare
`query "SELECT 1"` at 170 MB; before the limits the first two cases peaked at 4.7 GB and 2.5 GB
and the row of 2,000 copies of a 4 MB blob at 6.9 GB (docs/security.md, "SQLite").
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from db import readonly
from db.engine import get_engine
from db.errors import QueryError
from tests.db.known import make_sweep

ROOT = Path(__file__).resolve().parents[2]
PEAK_RSS_BOUND = 400 * 2**20  # bytes
ADDRESS_SPACE = 2 * 2**30  # RLIMIT_AS of the child: it must end with its one line, not be killed

VALUE = "a value larger than 4 MiB"  # SQLITE_LIMIT_LENGTH
HEAP = "needed more than the 64 MiB of memory a query may use"  # hard_heap_limit
RESULT = "is larger than 64 MiB"  # the byte cap, counted row by row


def _series(n: int) -> str:
    return f"WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < {n}) "


CASES = {
    "40 zeroblobs of 60 MB in one row": ("SELECT " + ", ".join(f"zeroblob(60000000) AS b{i}" for i in range(40)), VALUE),
    "80 rows of one 30 MB blob": (_series(80) + "SELECT zeroblob(30000000) FROM s", VALUE),
    "randomblob and printf padding": (
        "SELECT randomblob(50000000) AS a, printf('%.*c', 50000000, 'x') AS b, printf('%050000000d', 1) AS c", VALUE),
    "a recursive CTE doubling a string": (
        "WITH RECURSIVE t(i, v) AS (SELECT 1, 'x' UNION ALL SELECT i + 1, v || v FROM t WHERE i < 40) SELECT i, v FROM t",
        VALUE),
    "group_concat over a million rows": (_series(1_000_000) + "SELECT group_concat(printf('%.*c', 200, 'x')) FROM s", VALUE),
    "one row of 2000 copies of a 4 MB blob": (
        "WITH t(x) AS (SELECT randomblob(4000000)) SELECT " + ", ".join(["x"] * 2000) + " FROM t", HEAP),
    "one row of 16 texts of 4 MB that would take 16 MB each as str": (
        "SELECT " + ", ".join(f"printf('%.*c', 4000000, 'x') || char(128512) AS t{i}" for i in range(16)), HEAP),
    "100,000 rows of 1 MB": (_series(100_000) + "SELECT zeroblob(1000000) FROM s", RESULT),
}  # fmt: skip


@pytest.fixture(scope="module")
def sqlite_file(tmp_path_factory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('memory') / 'resweep.db'}"
    engine = get_engine(url)
    make_sweep(engine)
    engine.dispose()
    return url


# A fresh interpreter runs the command as its own child under the address-space limit and reports
# that child's exit status and peak RSS (ru_maxrss from wait4) as JSON on its last line. Measured
# there, not by the test process, whose handling of children (SIGCHLD, asyncio's child watchers
# from the browser tests) this must not depend on.
MEASURE = (
    "import json, os, resource, signal, subprocess, sys\n"
    "signal.signal(signal.SIGCHLD, signal.SIG_DFL)\n"
    "n = int(sys.argv[1])\n"
    "def limit(): resource.setrlimit(resource.RLIMIT_AS, (n, n))\n"
    "with open(sys.argv[2], 'wb') as out, open(sys.argv[3], 'wb') as err:\n"
    "    child = subprocess.Popen(sys.argv[4:], stdout=out, stderr=err, preexec_fn=limit)\n"
    "    _, status, usage = os.wait4(child.pid, 0)\n"
    "print(json.dumps([os.waitstatus_to_exitcode(status), usage.ru_maxrss * 1024]))\n"
)


def _run_measured(args: list[str], tmp_path: Path) -> tuple[int, str, str, int]:
    """Run `args` under the address-space limit; its exit status (negative: killed by that
    signal), stdout, stderr and peak RSS in bytes."""
    out, err = tmp_path / "stdout", tmp_path / "stderr"
    measured = subprocess.run([sys.executable, "-c", MEASURE, str(ADDRESS_SPACE), str(out), str(err), *args],
                              capture_output=True, text=True, cwd=ROOT, timeout=600,
                              env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"})  # fmt: skip
    assert measured.returncode == 0, measured.stderr[-2000:]
    rc, peak = json.loads(measured.stdout.strip().splitlines()[-1])
    return rc, out.read_text(), err.read_text(), peak


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES)
def test_a_statement_built_to_exhaust_memory_ends_in_one_line_under_a_few_hundred_mb(case, sqlite_file, tmp_path):
    sql, refusal = CASES[case]
    rc, stdout, stderr, peak = _run_measured(
        [sys.executable, "-m", "orchestrator", "query", sql, "--db", sqlite_file, "--format", "csv"], tmp_path)
    print(f"\n{case}: exit {rc}, peak RSS {peak / 2**20:.0f} MiB: {stderr.strip()[:140]}")
    assert rc == 2, f"{case}: exit {rc} (negative: killed), stderr {stderr[-500:]!r}"
    assert stdout == "" and len(stderr.strip().splitlines()) == 1 and "Traceback" not in stderr
    assert refusal in stderr, stderr
    assert peak < PEAK_RSS_BOUND, f"{case}: peak RSS {peak / 2**20:.0f} MiB"


LONG_LIVED = textwrap.dedent(
    """
    import json, resource, sqlite3, sys
    from db import queries, readonly
    from db.engine import get_engine
    from db.errors import StoreError

    url, hostile = sys.argv[1], json.loads(sys.argv[2])
    outcomes = []
    for sql in hostile + ["SELECT " + "1 " * 600000]:  # the last: a statement of 1.2 MB
        try:
            readonly.run_readonly(url, sql, 1000)
            outcomes.append("returned")
        except StoreError as exc:
            outcomes.append(str(exc))
    ordinary = readonly.run_readonly(url, "SELECT name, status FROM sweeps UNION ALL SELECT 'x', length(spec) FROM sweeps")
    engine = get_engine(url)  # the dashboard's own reads, through SQLAlchemy, under the same heap limit
    print(json.dumps({
        "outcomes": outcomes, "ordinary": [list(r) for r in ordinary.rows],
        "sweeps": list(queries.sweeps(engine)["name"]),
        "heap_limit": sqlite3.connect(":memory:").execute("PRAGMA hard_heap_limit").fetchone()[0],
        "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }))
    """
)


@pytest.mark.slow
def test_the_dashboard_process_survives_hostile_statements_and_serves_the_next_query(sqlite_file, tmp_path):
    """The SQL page runs the door inside the Streamlit server: the same function, many times, in
    one process whose SQLite heap limit is process-wide."""
    hostile = [CASES[case][0] for case in ("40 zeroblobs of 60 MB in one row", "one row of 2000 copies of a 4 MB blob",
                                           "one row of 16 texts of 4 MB that would take 16 MB each as str",
                                           "100,000 rows of 1 MB")]  # fmt: skip
    rc, stdout, stderr, peak = _run_measured(
        [sys.executable, "-c", LONG_LIVED, sqlite_file, json.dumps(hostile)], tmp_path)
    assert rc == 0, stderr[-2000:]
    report = json.loads(stdout)
    print(f"\nlong-lived process: peak RSS {peak / 2**20:.0f} MiB; {report['outcomes']}")
    assert [VALUE in o or HEAP in o or RESULT in o for o in report["outcomes"][:-1]] == [True] * len(hostile)
    assert "statement is longer than 1 MiB" in report["outcomes"][-1]
    assert all("\n" not in o for o in report["outcomes"])
    assert report["ordinary"][0][0] == report["sweeps"][0] and len(report["ordinary"]) == 2
    assert report["heap_limit"] == readonly.SQLITE_HEAP_BYTES
    assert peak < PEAK_RSS_BOUND, f"peak RSS {peak / 2**20:.0f} MiB"


def test_text_keeps_its_type_and_a_value_that_is_not_utf8_is_one_line(sqlite_file):
    result = readonly.run_readonly(sqlite_file, "SELECT 'déjà vu 😀' AS t, x'00ff' AS b, 1.5 AS f, NULL AS n")
    assert result.rows == [("déjà vu 😀", b"\x00\xff", 1.5, None)]
    with pytest.raises(QueryError, match=r"^query failed on .*column 'bad' holds text that is not UTF-8") as err:
        readonly.run_readonly(sqlite_file, "SELECT CAST(x'ff' AS TEXT) AS bad")
    assert "\n" not in str(err.value)


def test_the_byte_cap_counts_what_values_cost_in_python(sqlite_file):
    """100,000 rows of 80 floats are 64 MB of 8-byte values, but some 260 MB of Python floats
    and tuples: the cap counts the latter, so such a result is refused before it is built."""
    sql = _series(100_000) + "SELECT " + ", ".join(f"i * {k}.5" for k in range(80)) + " FROM s"
    with pytest.raises(QueryError, match=RESULT):
        readonly.run_readonly(sqlite_file, sql, limit=100_000)
    assert len(readonly.run_readonly(sqlite_file, sql, limit=1000).rows) == 1000


def test_the_timeout_stops_a_statement_whose_every_step_is_slow(sqlite_file):
    """A distinct recursive CTE of 3 MB rows: each VM step compares and spills megabytes, so the
    progress handler must run often (every 1,000 steps: 8 s for a 5 s limit; every 10,000 ran 90 s)."""
    sql = ("WITH RECURSIVE t(i, v) AS (SELECT 1, randomblob(3000000) UNION SELECT i + 1, randomblob(3000000) "
           "FROM t WHERE i < 10000) SELECT count(*) FROM t")  # fmt: skip
    start = time.monotonic()
    with pytest.raises(QueryError, match="ran past the 5 s timeout"):
        readonly.run_readonly(sqlite_file, sql, timeout_s=5)
    assert time.monotonic() - start < 30
