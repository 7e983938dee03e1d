"""Means over seeds as text, differences between two grid cells with 95 % intervals, and verdicts.

Method: Welch's t interval. Each cell is a handful of seeds (3 in the shipped sweeps); Welch's
interval needs only each cell's mean, sample std and count, allows the two cells different
spreads, and is exact for normal seed-to-seed noise. A bootstrap was rejected because with 3 seeds
a cell has only 10 distinct resamples and the percentile bootstrap's interval is far too narrow
(it ignores that the std itself is estimated from 3 values; its coverage is well under 95 %);
Welch's t pays for that with its few degrees of freedom (wide intervals, honestly so).

A cell with one seed has no spread to build an interval from: such a comparison `cannot be judged`.

Against a paper's number (resweep.paper), like with like:
- mean +- std of k runs: Welch between our seeds and the paper's (mean, std, k);
- median of k runs, or a single run (k = 1): the paper's spread is not given, so it is taken to be
  ours: the difference of our mean and the paper's number has standard error
  s * sqrt(1/n + c/k), c = pi/2 for a median (its asymptotic variance for normal noise) and 1 for
  a single run, with n - 1 degrees of freedom;
- best of k runs: an order statistic that depends on k, with no interval from summary numbers:
  shown beside our best seed, not judged (ResNet-110's mean +- std is judged instead).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

HOLDS, CONTRADICTED, INCONCLUSIVE, CONSISTENT, UNJUDGED = (
    "holds", "contradicted", "inconclusive", "consistent", "cannot be judged")  # fmt: skip
LEVEL = 0.95


@dataclass(frozen=True)
class Difference:
    """a - b with its 95 % confidence interval [low, high]; df: the t distribution's degrees of freedom."""

    diff: float
    low: float
    high: float
    df: float
    method: str  # "Welch's t" or "t, the paper's spread taken as ours"

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
    return Difference(diff, diff - half, diff + half, df, method)


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


def welch(mean_a: float, std_a: float, n_a: int, mean_b: float, std_b: float, n_b: int) -> Difference | None:
    """mean_a - mean_b with Welch's 95 % interval; None when a cell has fewer than 2 seeds."""
    if not _ok(mean_a, std_a, n_a, mean_b, std_b, n_b) or n_a < 2 or n_b < 2:
        return None
    va, vb = std_a**2 / n_a, std_b**2 / n_b
    se = math.sqrt(va + vb)
    if se == 0:
        return Difference(mean_a - mean_b, mean_a - mean_b, mean_a - mean_b, float(n_a + n_b - 2), "Welch's t")
    df = (va + vb) ** 2 / (va**2 / (n_a - 1) + vb**2 / (n_b - 1))
    return _interval(mean_a - mean_b, se, df, "Welch's t")


def vs_reference(mean: float, std: float, n: int, ref) -> Difference | None:
    """Our mean over n seeds minus a paper's number (`resweep.paper.Reference`), like with like;
    None for a best-of reference (no interval) or fewer than 2 seeds."""
    if ref.kind == "best_of" or not _ok(mean, std, n) or n < 2:
        return None
    if ref.kind == "mean_std":
        return welch(mean, std, n, ref.test_err, ref.std, ref.runs)
    c = math.pi / 2 if ref.kind == "median_of" and ref.runs > 1 else 1.0
    se = std * math.sqrt(1.0 / n + c / ref.runs)
    return _interval(mean - ref.test_err, se, float(n - 1), "t, the paper's spread taken as ours")


def judge(d: Difference | None, claim: str) -> str:
    """The verdict on a claim about a - b: '>' (a above b), '<' (a below b), '<=' (a no higher
    than b) or '=' (a and b agree). 'holds' / 'contradicted' when the whole interval says so,
    'inconclusive' when it straddles 0 ('consistent' for the '<=' and '=' claims, which a
    straddling interval is evidence for), 'cannot be judged' without an interval."""
    if d is None:
        return UNJUDGED
    above, below = d.low > 0, d.high < 0
    if claim == ">":
        return HOLDS if above else CONTRADICTED if below else INCONCLUSIVE
    if claim == "<":
        return HOLDS if below else CONTRADICTED if above else INCONCLUSIVE
    if claim == "<=":
        return HOLDS if below else CONTRADICTED if above else CONSISTENT
    if claim == "=":
        return CONSISTENT if not (above or below) else CONTRADICTED
    raise ValueError(f"claim must be one of >, <, <=, =, not {claim!r}")
