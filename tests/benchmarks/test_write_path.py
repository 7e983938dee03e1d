"""benchmarks/write_path.py runs and reports in the agreed shape (never asserted on timings)."""

from __future__ import annotations

from benchmarks import write_path
from benchmarks.common import KEYS


def test_write_path_reports_a_result_write_beside_its_baseline_on_sqlite():
    (row,) = write_path.run(True, backends=("sqlite",), calls=40)
    assert set(KEYS) <= set(row) and row["unit"] == "ms"
    assert row["baseline"] == "bare DBAPI upsert of the same metric rows"
    assert row["value"] > 0 and row["baseline_value"] > 0 and row["ratio"] > 0


def test_a_git_revisions_writer_is_imported_beside_todays():
    old = write_path.writes_at("HEAD")
    assert old.__name__ == "writes_at_HEAD" and old is not write_path.writes
    assert callable(old.record_result)
