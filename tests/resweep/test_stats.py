"""Confidence intervals of differences between grid cells: against a hand computation and scipy."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from resweep import stats
from resweep.paper import REFERENCES, Reference, references


def _cell(values):
    v = np.asarray(values, dtype=float)
    return float(v.mean()), float(v.std(ddof=1)), len(v)


def test_welch_interval_by_hand():
    # a = [1, 2, 3], b = [3, 4, 5]: means 2 and 4, both std 1; se = sqrt(1/3 + 1/3) = 0.8165;
    # Welch's df = (2/3)^2 / (2 * (1/3)^2 / 2) = 4; t(0.975, 4) = 2.7764 (a t table).
    d = stats.welch(*_cell([1, 2, 3]), *_cell([3, 4, 5]))
    assert d.diff == -2.0 and d.df == pytest.approx(4.0)
    half = 2.7764 * math.sqrt(2 / 3)
    assert (d.low, d.high) == (pytest.approx(-2 - half, abs=1e-4), pytest.approx(-2 + half, abs=1e-4))
    assert stats.judge(d, "<") == stats.INCONCLUSIVE  # the interval [-4.27, 0.27] straddles 0


@pytest.mark.parametrize(("a", "b"), [
    ([0.081, 0.079, 0.084], [0.141, 0.139, 0.150]),
    ([5.1, 5.3, 4.9, 5.0, 5.6], [5.2, 6.9]),
    ([1.0, 1.1], [0.2, 3.5, 1.7, 2.2]),
    ([0.0, 0.0, 0.001], [0.0, 0.002, 0.0]),
])
def test_welch_interval_matches_scipy(a, b):
    d = stats.welch(*_cell(a), *_cell(b))
    ref = scipy_stats.ttest_ind(a, b, equal_var=False)
    ci = ref.confidence_interval(0.95)
    assert d.diff == pytest.approx(np.mean(a) - np.mean(b))
    assert (d.low, d.high) == (pytest.approx(ci.low, rel=1e-9, abs=1e-12), pytest.approx(ci.high, rel=1e-9, abs=1e-12))
    assert d.df == pytest.approx(ref.df)


@pytest.mark.parametrize("df", [1, 1.37, 2, 2.94, 4, 9.5, 30, 200])
@pytest.mark.parametrize("q", [0.6, 0.9, 0.975, 0.995])
def test_t_quantile_and_cdf_match_scipy(df, q):
    assert stats.t_ppf(q, df) == pytest.approx(scipy_stats.t.ppf(q, df), rel=1e-9)
    assert stats.t_ppf(1 - q, df) == pytest.approx(scipy_stats.t.ppf(1 - q, df), rel=1e-9)
    assert stats.t_cdf(1.7, df) == pytest.approx(scipy_stats.t.cdf(1.7, df), rel=1e-10)


def test_one_seed_cannot_be_judged():
    assert stats.welch(0.1, float("nan"), 1, 0.2, 0.01, 3) is None
    assert stats.welch(0.1, None, 1, 0.2, None, 1) is None
    assert stats.judge(None, ">") == stats.UNJUDGED


def test_verdicts_follow_the_interval():
    above = stats.Difference(1.0, 0.2, 1.8, 4, "x")
    across = stats.Difference(0.5, -0.3, 1.3, 4, "x")
    assert [stats.judge(above, c) for c in (">", "<", "<=", "=")] == [
        stats.HOLDS, stats.CONTRADICTED, stats.CONTRADICTED, stats.CONTRADICTED]
    assert [stats.judge(across, c) for c in (">", "<", "<=", "=")] == [
        stats.INCONCLUSIVE, stats.INCONCLUSIVE, stats.CONSISTENT, stats.CONSISTENT]
    assert above.text() == "+1.00 points (95 % CI +0.20 to +1.80)"


def test_against_a_mean_and_std_is_welch_with_the_papers_runs():
    (ref,) = [r for r in references("cifar10", "cifar", 110, "basic", "A") if r.kind == "mean_std"]
    assert (ref.test_err, ref.std, ref.runs) == (6.61, 0.16, 5)
    d = stats.vs_reference(6.9, 0.2, 3, ref)
    assert d == stats.welch(6.9, 0.2, 3, 6.61, 0.16, 5)
    # scipy from the same summary numbers
    ci = scipy_stats.ttest_ind_from_stats(6.9, 0.2, 3, 6.61, 0.16, 5, equal_var=False)
    assert d.diff == pytest.approx(0.29)
    assert (d.diff / ((d.high - d.diff) / scipy_stats.t.ppf(0.975, d.df))) == pytest.approx(ci.statistic)


def test_against_a_single_run_or_a_median_the_papers_spread_is_taken_as_ours():
    single = Reference("x", "cifar10", "cifar", 20, "basic", "A", 8.75, "single_run")
    d = stats.vs_reference(9.0, 0.3, 3, single)
    half = scipy_stats.t.ppf(0.975, 2) * 0.3 * math.sqrt(1 / 3 + 1)
    assert (d.low, d.high, d.df) == (pytest.approx(0.25 - half), pytest.approx(0.25 + half), 2)
    median = Reference("x", "cifar10", "cifar", 164, "preact_bottleneck", "B", 5.46, "median_of", 5)
    d = stats.vs_reference(5.5, 0.2, 4, median)
    half = scipy_stats.t.ppf(0.975, 3) * 0.2 * math.sqrt(1 / 4 + math.pi / 2 / 5)
    assert (d.low, d.high) == (pytest.approx(0.04 - half), pytest.approx(0.04 + half))


def test_best_of_n_is_never_set_against_a_mean():
    (best,) = [r for r in references("cifar10", "cifar", 110, "basic", "A") if r.kind == "best_of"]
    assert (best.test_err, best.runs) == (6.43, 5) and best.text == "6.43 (best of 5)"
    assert stats.vs_reference(6.5, 0.2, 5, best) is None


def test_reference_kinds_are_the_papers():
    t6 = {r.depth: r for r in REFERENCES if r.source.endswith("Table 6") and r.kind != "mean_std"}
    assert {d: r.kind for d, r in t6.items()} == {
        20: "single_run", 32: "single_run", 44: "single_run", 56: "single_run", 110: "best_of", 1202: "single_run"}
    assert t6[1202].test_err == 7.93 and t6[1202].params_m == 19.4
    t4 = {(r.depth, r.block): r.test_err for r in REFERENCES if r.source.endswith("Table 4")}
    assert t4 == {(110, "basic"): 6.61, (110, "preact"): 6.37, (164, "bottleneck"): 5.93,
                  (164, "preact_bottleneck"): 5.46, (1001, "bottleneck"): 7.61, (1001, "preact_bottleneck"): 4.92}
    assert all(r.kind == "median_of" and r.runs == 5 for r in REFERENCES if r.source.endswith("Table 4"))
    assert references("digits", "cifar", 20, "basic", "A") == []


def test_resweep_imports_no_heavy_package():
    import subprocess
    import sys

    code = ("import sys, resweep.paper, resweep.stats; "
            "print(sorted(m for m in ('torch', 'ray', 'streamlit', 'sqlalchemy', 'scipy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_a_mean_is_written_with_its_std_unless_there_is_one_seed():
    assert stats.mean_std(7.514, 0.118) == "7.51 ± 0.12"
    assert stats.mean_std(0.07514, 0.00118, 3, scale=100, unit=" %") == "7.51 ± 0.12 %"
    assert stats.mean_std(0.0875, 0.001, 1, scale=100, unit=" %") == "8.75 %"  # one seed
    assert stats.mean_std(0.0875, float("nan"), scale=100) == stats.mean_std(0.0875, None, scale=100) == "8.75"
    assert stats.mean_std(1.23456, 0.0012, digits=3) == "1.235 ± 0.001"
    assert stats.mean_std(None, 0.1) == "n/a" and stats.mean_std(float("nan"), None, missing="-") == "-"
