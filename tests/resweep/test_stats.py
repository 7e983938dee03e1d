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
    above = stats.Difference(1.0, 0.2, 1.8, 4, "x", 0.8 / scipy_stats.t.ppf(0.975, 4))
    across = stats.Difference(0.5, -0.3, 1.3, 4, "x", 0.8 / scipy_stats.t.ppf(0.975, 4))
    assert [stats.judge(above, c) for c in (">", "<")] == [stats.HOLDS, stats.CONTRADICTED]
    assert [stats.judge(across, c) for c in (">", "<")] == [stats.INCONCLUSIVE, stats.INCONCLUSIVE]
    assert above.text() == "+1.00 points (95 % CI +0.20 to +1.80)"


def _cells(a, b):
    return (*_cell(a), *_cell(b))


@pytest.mark.parametrize(("a", "b"), [([0.50, 0.91], [0.45, 0.86]),  # n = 2: CI about -2.7 to +2.8
                                      ([0.5, 0.7, 0.9], [0.45, 0.7, 0.86])])  # n = 3
def test_a_wide_interval_that_includes_zero_is_not_evidence_of_no_difference(a, b):
    d = stats.welch(*_cells(a, b))
    assert d.low < 0 < d.high
    assert stats.judge(d, "=", margin=0.1) == stats.NOT_CONTRADICTED
    assert stats.judge(d, "<=", margin=0.1) == stats.NOT_CONTRADICTED


@pytest.mark.parametrize(("a", "b"), [([5.00, 5.02], [5.01, 5.03]), ([5.00, 5.01, 5.02], [5.01, 5.02, 5.03])])
def test_equivalence_within_the_margin_is_two_one_sided_tests(a, b):
    d = stats.welch(*_cells(a, b))
    low, high = d.interval(stats.TOST_LEVEL)
    # the TOST p-value is the larger of the two one-sided t tests' (scipy's ttest_ind, alternative=...)
    for margin in (0.5, 0.01):
        p_low = scipy_stats.ttest_ind(np.array(a) + margin, b, equal_var=False, alternative="greater").pvalue
        p_high = scipy_stats.ttest_ind(np.array(a) - margin, b, equal_var=False, alternative="less").pvalue
        equivalent = max(p_low, p_high) < 0.05
        assert (stats.judge(d, "=", margin=margin) == stats.HOLDS) == equivalent
        assert (-margin < low and high < margin) == equivalent
    assert stats.judge(d, "=", margin=0.5) == stats.HOLDS and stats.judge(d, "<=", margin=0.5) == stats.HOLDS


def test_no_worse_fails_when_the_difference_lies_beyond_the_margin():
    d = stats.welch(*_cells([9.0, 9.2, 9.1], [5.0, 5.1, 5.2]))  # 4 points worse, n = 3
    assert stats.judge(d, "<=", margin=1.0) == stats.CONTRADICTED
    assert stats.judge(d, "=", margin=1.0) == stats.CONTRADICTED
    with pytest.raises(ValueError, match="margin"):
        stats.judge(d, "=")


@pytest.mark.parametrize("n", [2, 3])
def test_two_cells_without_spread_cannot_be_judged(n):
    # Welch's df is 0/0 here: no t distribution, so no interval (a zero-width one would claim certainty)
    assert stats.welch(0.0, 0.0, n, 0.001, 0.0, n) is None
    assert stats.no_interval(0.0, n, 0.0, n) == "no spread: every seed gave the same value, so no interval"
    assert [stats.judge(None, c, margin=1.0) for c in (">", "<", "<=", "=")] == [stats.UNJUDGED] * 4
    # one cell with spread is enough: Welch's df is then the other cell's n - 1
    d = stats.welch(0.0, 0.0, n, 0.5, 0.1, n)
    assert d is not None and d.df == pytest.approx(n - 1)
    ours = Reference("x", "cifar10", "cifar", 20, "basic", "A", 8.75, "single_run")
    assert stats.vs_reference(9.0, 0.0, n, ours) is None


def test_median_variance_factors_match_the_order_statistics():
    from math import comb

    from scipy import integrate

    for m in (3, 5, 7, 9):
        k = m // 2
        pdf = lambda x: x * x * m * comb(m - 1, k) * (scipy_stats.norm.cdf(x) * scipy_stats.norm.sf(x)) ** k \
            * scipy_stats.norm.pdf(x)  # noqa: E731
        assert stats.median_variance(m) == pytest.approx(m * integrate.quad(pdf, -12, 12)[0], abs=2e-4)
    rng = np.random.default_rng(0)
    for m in (2, 4, 6):
        assert stats.median_variance(m) == pytest.approx(m * np.median(rng.standard_normal((200_000, m)), 1).var(), rel=0.02)
    assert stats.median_variance(50) == pytest.approx(math.pi / 2)


def test_against_a_mean_and_std_is_welch_with_the_papers_runs():
    (ref,) = [r for r in references("cifar10", "cifar", 110, "basic", "A") if r.kind == "mean_std"]
    assert (ref.test_err, ref.std, ref.runs) == (6.61, 0.16, 5)
    d = stats.vs_reference(6.9, 0.2, 3, ref)
    assert d == stats.welch(6.9, 0.2, 3, 6.61, 0.16, 5)
    # scipy from the same summary numbers
    ci = scipy_stats.ttest_ind_from_stats(6.9, 0.2, 3, 6.61, 0.16, 5, equal_var=False)
    assert d.diff == pytest.approx(0.29)
    assert (d.diff / ((d.high - d.diff) / scipy_stats.t.ppf(0.975, d.df))) == pytest.approx(ci.statistic)


def test_against_a_single_run_ours_is_one_more_run_and_a_median_is_set_against_our_median():
    single = Reference("x", "cifar10", "cifar", 20, "basic", "A", 8.75, "single_run")
    d = stats.vs_reference(9.0, 0.3, 3, single)
    half = scipy_stats.t.ppf(0.975, 2) * 0.3 * math.sqrt(1 / 3 + 1)
    assert (d.low, d.high, d.df) == (pytest.approx(0.25 - half), pytest.approx(0.25 + half), 2)
    unstated = Reference("x", "cifar10", "cifar", 164, "bottleneck", "B", 5.93, "unstated")
    assert stats.vs_reference(9.0, 0.3, 3, unstated).method == d.method
    median = Reference("x", "cifar10", "cifar", 164, "preact_bottleneck", "B", 5.46, "median_of", 5)
    d = stats.vs_reference(5.5, 0.2, 4, median, median=5.6)
    half = scipy_stats.t.ppf(0.975, 3) * 0.2 * math.sqrt(1.1928 / 4 + 1.4342 / 5)
    assert d.diff == pytest.approx(0.14)  # our median, not our mean
    assert (d.low, d.high) == (pytest.approx(0.14 - half), pytest.approx(0.14 + half))
    with pytest.raises(ValueError, match="median"):
        stats.vs_reference(5.5, 0.2, 4, median)


def test_best_of_n_is_never_set_against_a_mean():
    (best,) = [r for r in references("cifar10", "cifar", 110, "basic", "A") if r.kind == "best_of"]
    assert (best.test_err, best.runs) == (6.43, 5) and best.text == "6.43 (best of 5)"
    assert stats.vs_reference(6.5, 0.2, 5, best) is None


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
