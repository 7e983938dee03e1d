"""Means over seeds as text, differences between two grid cells with 95 % intervals, and verdicts.

Method: Welch's t interval. Each cell is a handful of seeds (3 in the shipped sweeps); Welch's
interval needs only each cell's mean, sample std and count, allows the two cells different
spreads, and is exact for normal seed-to-seed noise. A bootstrap was rejected because with 3 seeds
a cell has only 10 distinct resamples and the percentile bootstrap's interval is far too narrow
(it ignores that the std itself is estimated from 3 values; its coverage is well under 95 %);
Welch's t pays for that with its few degrees of freedom (wide intervals, honestly so).

No interval, so `cannot be judged`: a cell with one seed (no spread to build one from), and two
cells whose seeds all gave the same value (zero spread in both: Welch's t is undefined there,
scipy returns an infinite or NaN interval, and a zero-width interval would claim certainty that
two or three seeds cannot give).

Claims and verdicts (`judge`):
- a difference (`>`, `<`): `holds` when the whole 95 % interval lies on the claimed side,
  `contradicted` when it lies on the other, `inconclusive` when it includes 0;
- no difference (`=`) or no worse (`<=`): absence of a difference is not shown by a wide interval
  that includes 0. These claims take a stated `margin` (same unit as the difference) and two
  one-sided tests at 5 % each (TOST; the 90 % interval): `=` holds when the 90 % interval lies
  within (-margin, +margin), `<=` when its upper end is below +margin; `contradicted` when the 90 %
  interval lies wholly beyond the margin; otherwise `not contradicted` (no evidence either way),
  which never counts as reproduced.

Against a paper's number (resweep.paper.Reference), like with like, by its kind:
- `mean_std` (mean +- std of k runs): Welch between our seeds' mean and the paper's (mean, std, k);
- `median_of` (median of k runs): our median over n seeds minus the paper's. Neither spread is
  known exactly: the paper's runs are taken to vary as our seeds do (std s), and for normal noise
  the median of m runs has variance MEDIAN_VARIANCE[m] * s^2 / m (exact for small m; pi/2 for large
  m), so the difference has standard error s * sqrt(MEDIAN_VARIANCE[n]/n + MEDIAN_VARIANCE[k]/k),
  with n - 1 degrees of freedom (the std is ours);
- `single_run`, and `unstated` (a number whose kind the paper does not say, taken as one run: the
  widest interval of the kinds it could be): our mean minus the number, standard error
  s * sqrt(1/n + 1), n - 1 degrees of freedom;
- `best_of` (the lowest of k runs): an order statistic that depends on k, with no interval from
  summary numbers: shown beside our best seed, not judged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

HOLDS, CONTRADICTED, INCONCLUSIVE, NOT_CONTRADICTED, UNJUDGED = (
    "holds", "contradicted", "inconclusive", "not contradicted", "cannot be judged")  # fmt: skip
LEVEL = 0.95  # the intervals shown, and the two-sided tests of a difference
TOST_LEVEL = 0.90  # two one-sided tests at 5 % each: equivalence (=) and no-worse (<=) claims
# The margin of the report's claims of no difference, in percentage points of error: "deeper residual
# nets train no worse" (training error) and "our test error agrees with the paper's" hold only when
# two one-sided tests put the difference within this many points (the papers' own run-to-run std at
# ResNet-110 is 0.16 points; 1 point is a difference the papers would call a change of recipe).
MARGIN_POINTS = 1.0

# Variance of the median of m independent normal values, in units of sigma^2 / m (numerical
# integration of the order statistics' densities; the sample mean's is 1). Even m: the mean of the
# two middle values. Beyond the table: pi / 2, the large-m limit.
MEDIAN_VARIANCE = {1: 1.0, 2: 1.0, 3: 1.3460, 4: 1.1928, 5: 1.4342, 6: 1.2885, 7: 1.4731, 8: 1.3454,
                   9: 1.4949, 10: 1.3833}


def median_variance(m: int) -> float:
    """Var(median of m normal values) / (sigma^2 / m): MEDIAN_VARIANCE, else pi/2."""
    return MEDIAN_VARIANCE.get(int(m), math.pi / 2)


@dataclass(frozen=True)
class Difference:
    """a - b with its 95 % confidence interval [low, high]; df: the t distribution's degrees of freedom."""

    diff: float
    low: float
    high: float
    df: float
    method: str  # "Welch's t", "t on medians, ..." or "t, the paper's number taken as one run, ..."
    se: float = math.nan  # the standard error of diff (for the one-sided tests of = and <=)

    def scaled(self, k: float) -> Difference:
        """The same difference in another unit (k times: fractions -> points)."""
        return Difference(self.diff * k, self.low * k, self.high * k, self.df, self.method, self.se * k)

    def interval(self, level: float) -> tuple[float, float]:
        """The two-sided `level` interval (LEVEL's is (low, high))."""
        if level == LEVEL or not math.isfinite(self.se):
            return self.low, self.high
        half = t_ppf(0.5 + level / 2, self.df) * self.se
        return self.diff - half, self.diff + half

    def text(self, unit: str = " points", digits: int = 2) -> str:
        """'+1.23 points (95 % CI +0.40 to +2.06)'."""
        f = f"{{:+.{digits}f}}"
        return f"{f.format(self.diff)}{unit} (95 % CI {f.format(self.low)} to {f.format(self.high)})"


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny, qab, qap, qam = 1e-300, a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-15:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """The regularised incomplete beta function I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with `df` (> 0, not necessarily whole) degrees of freedom."""
    tail = 0.5 * _betainc(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t > 0 else tail


def t_ppf(q: float, df: float) -> float:
    """The q-quantile of Student's t with `df` degrees of freedom (bisection on t_cdf)."""
    if not 0.0 < q < 1.0 or not df > 0:
        raise ValueError(f"t_ppf needs 0 < q < 1 and df > 0, not q={q}, df={df}")
    if q < 0.5:
        return -t_ppf(1.0 - q, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < q:
        hi *= 2.0
    for _ in range(200):
        mid = (lo + hi) / 2.0
        lo, hi = (mid, hi) if t_cdf(mid, df) < q else (lo, mid)
        if hi - lo < 1e-12 * max(1.0, hi):
            break
    return (lo + hi) / 2.0


def _interval(diff: float, se: float, df: float, method: str) -> Difference:
    half = t_ppf(0.5 + LEVEL / 2, df) * se
    return Difference(diff, diff - half, diff + half, df, method, se)


def _ok(*values) -> bool:
    return all(v is not None and not (isinstance(v, float) and math.isnan(v)) for v in values)


def mean_std(mean: float | None, std: float | None, n: int | None = None, *, digits: int = 2,
             scale: float = 1.0, unit: str = "", missing: str = "n/a") -> str:
    """A mean over seeds (or runs) as every table, figure and console line writes it: '7.51 ± 0.12',
    with `digits` decimals after multiplying by `scale`, then `unit` ('7.51 ± 0.12 %'). The std is
    left out for one seed (n == 1) or when there is none (None, NaN: '8.75'); `missing` stands for
    a missing mean."""
    if not _ok(mean):
        return missing
    text = f"{scale * float(mean):.{digits}f}"
    if (n is None or n > 1) and _ok(std):
        text += f" ± {scale * float(std):.{digits}f}"
    return text + unit


def no_interval(std_a: float | None, n_a: int | None, std_b: float | None = 0.0, n_b: int | None = 2) -> str:
    """Why two cells (or a cell and a paper's number, cell b's defaults) have no interval."""
    if not _ok(n_a, n_b) or n_a < 2 or n_b < 2:
        return "one seed: no interval"
    if _ok(std_a, std_b) and std_a == 0 and std_b == 0:
        return "no spread: every seed gave the same value, so no interval"
    return "no interval"


def welch(mean_a: float, std_a: float, n_a: int, mean_b: float, std_b: float, n_b: int) -> Difference | None:
    """mean_a - mean_b with Welch's 95 % interval; None when a cell has fewer than 2 seeds or
    neither cell has any spread (see `no_interval`)."""
    if not _ok(mean_a, std_a, n_a, mean_b, std_b, n_b) or n_a < 2 or n_b < 2:
        return None
    va, vb = std_a**2 / n_a, std_b**2 / n_b
    se = math.sqrt(va + vb)
    if se == 0:
        return None
    df = (va + vb) ** 2 / (va**2 / (n_a - 1) + vb**2 / (n_b - 1))
    return _interval(mean_a - mean_b, se, df, "Welch's t")


def vs_reference(mean: float, std: float, n: int, ref, median: float | None = None) -> Difference | None:
    """Ours over n seeds (their mean, sample std and, for a median reference, median) minus a
    paper's number (`resweep.paper.Reference`), like with like (the module's docstring); None for
    a best-of reference, fewer than 2 seeds, or seeds without spread."""
    if ref.kind == "best_of" or not _ok(mean, std, n) or n < 2 or std == 0:
        return None
    if ref.kind == "mean_std":
        return welch(mean, std, n, ref.test_err, ref.std, ref.runs)
    if ref.kind == "median_of":
        if not _ok(median):
            raise ValueError("a median reference is compared with our median: pass median=")
        se = std * math.sqrt(median_variance(n) / n + median_variance(ref.runs) / ref.runs)
        return _interval(median - ref.test_err, se, float(n - 1),
                         "t on medians, the paper's runs taken to vary as our seeds")
    if ref.kind in ("single_run", "unstated"):
        se = std * math.sqrt(1.0 / n + 1.0)
        return _interval(mean - ref.test_err, se, float(n - 1),
                         "t, the paper's number taken as one run that varies as our seeds")
    raise ValueError(f"unknown reference kind {ref.kind!r}")


def judge(d: Difference | None, claim: str, margin: float | None = None) -> str:
    """The verdict on a claim about a - b: '>' (a above b), '<' (a below b), '<=' (a no higher
    than b, by more than `margin`) or '=' (a and b within `margin` of each other); the module's
    docstring says how. 'cannot be judged' without an interval."""
    if claim in ("<=", "=") and (margin is None or not margin > 0):
        raise ValueError(f"the claim {claim!r} needs a margin > 0 (the difference that counts as none)")
    if d is None:
        return UNJUDGED
    above, below = d.low > 0, d.high < 0
    if claim == ">":
        return HOLDS if above else CONTRADICTED if below else INCONCLUSIVE
    if claim == "<":
        return HOLDS if below else CONTRADICTED if above else INCONCLUSIVE
    low, high = d.interval(TOST_LEVEL)
    if claim == "<=":
        return HOLDS if high < margin else CONTRADICTED if low > margin else NOT_CONTRADICTED
    if claim == "=":
        if -margin < low and high < margin:
            return HOLDS
        return CONTRADICTED if low > margin or high < -margin else NOT_CONTRADICTED
    raise ValueError(f"claim must be one of >, <, <=, =, not {claim!r}")
