"""The paper's findings, checked against a sweep's numbers.

Each check looks for the configurations it needs in the grid (mean over seeds of the finished
trials' final errors) or in the layer responses, and says nothing when they are missing. When it
can speak it says `reproduced`, `partly reproduced` or `not reproduced`, followed by the numbers
it compared, so a reader can see why. The claims are those of He et al. (2016):

- degradation (Sec. 4.1, Fig. 6 left): a deeper plain net ends with a HIGHER TRAINING error than
  a shallower one;
- cure (Fig. 6 middle): the residual net of a depth ends lower than the plain net of that depth,
  and deeper residual nets do not train worse than shallower ones (within the seeds' spread);
- shortcut options (Table 3): error falls from A to B to C (ImageNet ResNet-34 top-1 25.03, 24.52,
  24.19 %), by small margins;
- responses (Sec. 4.2, Fig. 7): residual nets' layer responses are smaller than plain nets'; the
  deeper the residual net, the smaller.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd

REPRODUCED, PARTLY, NOT_REPRODUCED = "reproduced", "partly reproduced", "not reproduced"
FAMILY = ["dataset", "model", "block"]  # comparisons are made within one family of nets
RESIDUAL = ("A", "B", "C")
PAPER_SHORTCUT_ORDER = ("A", "B", "C")  # the paper's Table 3: error falls in this order


@dataclass(frozen=True)
class Finding:
    """One claim of the paper and what this sweep says about it."""

    key: str  # degradation | cure | deeper_residual | shortcuts | responses | deeper_responses
    claim: str  # the paper's claim, one sentence
    status: str  # reproduced | partly reproduced | not reproduced
    evidence: list[str] = field(default_factory=list)  # one line per comparison, with numbers


def label(depth: int, block: str, shortcut: str, *, with_shortcut: bool = True) -> str:
    """The paper's name for a net: plain-20, ResNet-56 (A), ResNet-50 (B, bottleneck)."""
    kind = "plain" if shortcut == "none" else "ResNet"
    extras = [shortcut] if shortcut != "none" and with_shortcut else []
    if block != "basic":
        extras.append(block)
    return f"{kind}-{depth}" + (f" ({', '.join(extras)})" if extras else "")


def pct(x: float) -> str:
    return "n/a" if x is None or math.isnan(x) else f"{100 * x:.2f} %"


def _pm(mean: float, std: float, n: int, fmt=pct) -> str:
    if n > 1 and std is not None and not math.isnan(std):
        return f"{fmt(mean).removesuffix(' %')} ± {fmt(std)}"
    return fmt(mean)


def _within_spread(a: pd.Series, b: pd.Series, col: str) -> bool:
    """Whether two means differ by less than the larger of their std's over seeds."""
    sa, sb = a.get(f"{col}_std"), b.get(f"{col}_std")
    stds = [s for s in (sa, sb) if s is not None and not math.isnan(s)]
    return bool(stds) and abs(a[f"{col}_mean"] - b[f"{col}_mean"]) < max(stds)


def _noise(a: pd.Series, b: pd.Series, col: str) -> str:
    return " (within the seeds' spread)" if _within_spread(a, b, col) else ""


def _status(outcomes: list[bool]) -> str:
    if all(outcomes):
        return REPRODUCED
    return NOT_REPRODUCED if not any(outcomes) else PARTLY


def _families(frame: pd.DataFrame):
    for _, fam in frame.groupby(FAMILY, sort=True):
        yield fam


def _many(frame: pd.DataFrame) -> bool:
    """Whether the frame holds more than one family, so lines must say which one they are about."""
    return frame.groupby(FAMILY).ngroups > 1


def _family_note(fam: pd.DataFrame, many: bool) -> str:
    if not many:
        return ""
    row = fam.iloc[0]
    return f"[{row['dataset']}, {row['model']} nets, {row['block']} blocks] "


def _compare_line(a: pd.Series, b: pd.Series, col: str, what: str, holds: bool, rel: str) -> str:
    """`ResNet-56 (A) final training error 5.00 ± 0.10 % < plain-56 9.00 %: holds`."""
    va = _pm(a[f"{col}_mean"], a.get(f"{col}_std"), a["n_seeds"])
    vb = _pm(b[f"{col}_mean"], b.get(f"{col}_std"), b["n_seeds"])
    name_a = label(a["depth"], a["block"], a["shortcut"])
    name_b = label(b["depth"], b["block"], b["shortcut"])
    verdict = "holds" if holds else "does not hold"
    return f"{name_a} {what} {va} {rel} {name_b} {vb}: {verdict}{_noise(a, b, col)}"


def degradation(grid: pd.DataFrame) -> list[Finding]:
    """Deeper plain nets end with a higher training error than shallower ones."""
    plain = grid[grid["shortcut"] == "none"]
    fams = [f for f in _families(plain) if f["depth"].nunique() >= 2]
    lines, outcomes = [], []
    for fam in fams:
        fam = fam.sort_values("depth")
        lo, hi = fam.iloc[0], fam.iloc[-1]
        holds = hi["train_err_mean"] > lo["train_err_mean"]
        outcomes.append(holds)
        line = _compare_line(hi, lo, "train_err", "final training error", holds, ">")
        errs = ", ".join(f"{label(r.depth, r.block, r.shortcut)} {pct(r.train_err_mean)}"
                         for r in fam.itertuples())
        lines.append(_family_note(fam, _many(plain)) + line)
        if len(fam) > 2:
            lines.append(f"all plain depths, final training error: {errs}")
        test_hi, test_lo = hi["test_err_mean"], lo["test_err_mean"]
        lines.append(f"test error alongside: {label(hi.depth, hi.block, 'none')} {pct(test_hi)}, "
                     f"{label(lo.depth, lo.block, 'none')} {pct(test_lo)}")
    if not outcomes:
        return []
    return [Finding("degradation",
                    "Degradation: a deeper plain net ends with a higher training error than a "
                    "shallower one.", _status(outcomes), lines)]


def cure(grid: pd.DataFrame) -> list[Finding]:
    """At each depth with both, the residual net ends with a lower training error than the plain."""
    lines, outcomes = [], []
    fams = list(_families(grid))
    for fam in fams:
        plain = fam[fam["shortcut"] == "none"].set_index("depth")
        res = fam[fam["shortcut"].isin(RESIDUAL)].sort_values(["depth", "shortcut"])
        for _, r in res.iterrows():
            if r["depth"] not in plain.index:
                continue
            p = plain.loc[r["depth"]].copy()
            p["depth"] = r["depth"]
            holds = r["train_err_mean"] < p["train_err_mean"]
            outcomes.append(holds)
            lines.append(_family_note(fam, _many(grid))
                         + _compare_line(r, p, "train_err", "final training error", holds, "<")
                         + f"; test error {pct(r['test_err_mean'])} vs {pct(p['test_err_mean'])}")
    if not outcomes:
        return []
    return [Finding("cure",
                    "Cure: the residual net of a depth ends with a lower training "
                    "error than the plain net of the same depth.", _status(outcomes), lines)]


def deeper_residual(grid: pd.DataFrame) -> list[Finding]:
    """The deepest residual net trains no worse than the shallowest (per shortcut option).

    "No worse" is a claim of no difference, so a deeper net whose training error is higher by
    less than the seeds' spread passes it (and the line says so); with one seed it must not be
    higher at all.
    """
    res = grid[grid["shortcut"].isin(RESIDUAL)]
    lines, outcomes = [], []
    groups = [g for _, g in res.groupby(FAMILY + ["shortcut"]) if g["depth"].nunique() >= 2]
    for g in groups:
        g = g.sort_values("depth")
        lo, hi = g.iloc[0], g.iloc[-1]
        holds = hi["train_err_mean"] <= lo["train_err_mean"] or _within_spread(hi, lo, "train_err")
        outcomes.append(holds)
        lines.append(_family_note(g, _many(res))
                     + _compare_line(hi, lo, "train_err", "final training error", holds, "<=")
                     + f"; test error {pct(hi['test_err_mean'])} vs {pct(lo['test_err_mean'])}")
        if len(g) > 2:
            lines.append("all depths, final training / test error: " + ", ".join(
                f"{label(r.depth, r.block, r.shortcut)} {pct(r.train_err_mean)} / "
                f"{pct(r.test_err_mean)}" for r in g.itertuples()))
    if not outcomes:
        return []
    return [Finding("deeper_residual",
                    "Depth with shortcuts: deeper residual nets do not train worse than shallower ones.",
                    _status(outcomes), lines)]


def shortcut_options(grid: pd.DataFrame) -> list[Finding]:
    """Where two or more of A/B/C share a depth, their test errors fall in the order A > B > C."""
    res = grid[grid["shortcut"].isin(RESIDUAL)]
    lines, outcomes = [], []
    for _, g in res.groupby(FAMILY + ["depth"], sort=True):
        if g["shortcut"].nunique() < 2:
            continue
        g = g.sort_values("test_err_mean", ascending=False)  # worst first, as A > B > C
        observed = list(g["shortcut"])
        expected = [s for s in PAPER_SHORTCUT_ORDER if s in observed]
        holds = observed == expected
        outcomes.append(holds)
        first = g.iloc[0]
        errs = " > ".join(f"{r.shortcut} {_pm(r.test_err_mean, r.test_err_std, r.n_seeds)}"
                          for r in g.itertuples())
        spread = g["test_err_mean"].max() - g["test_err_mean"].min()
        stds = g["test_err_std"].dropna()
        noise = (", within the seeds' spread" if not stds.empty and spread < stds.max() else "")
        lines.append(f"{label(first['depth'], first['block'], 'A', with_shortcut=False)} "
                     f"final test error by option: {errs} (paper's order "
                     f"{' > '.join(expected)}): {'holds' if holds else 'does not hold'}; "
                     f"spread {100 * spread:.2f} points{noise}")
    if not outcomes:
        return []
    return [Finding("shortcuts",
                    "Shortcut options: test error falls from A (zero-padding) to B (projections "
                    "where shape changes) to C (all projections), by small margins "
                    "(paper, ImageNet ResNet-34 top-1: 25.03 / 24.52 / 24.19 %).",
                    _status(outcomes), lines)]


def _resp_line(a: pd.Series, b: pd.Series, holds: bool, rel: str) -> str:
    fmt = lambda x: f"{x:.3f}"  # noqa: E731  (responses are unitless std's)
    va = _pm(a["std_mean"], a.get("std_std"), a["n_seeds"], fmt)
    vb = _pm(b["std_mean"], b.get("std_std"), b["n_seeds"], fmt)
    return (f"{label(a['depth'], a['block'], a['shortcut'])} mean response std {va} {rel} "
            f"{label(b['depth'], b['block'], b['shortcut'])} {vb}: "
            f"{'holds' if holds else 'does not hold'}{_noise(a, b, 'std')}")


def responses(resp: pd.DataFrame) -> list[Finding]:
    """Residual nets respond less than plain nets of the same depth; deeper residual nets less still.

    `resp`: one row per configuration with `std_mean` (the layers' response std averaged over
    layers, then over seeds), `std_std` (its std over seeds) and `n_seeds`.
    """
    out = []
    lines, outcomes = [], []
    for fam in _families(resp):
        plain = fam[fam["shortcut"] == "none"].set_index("depth")
        for _, r in fam[fam["shortcut"].isin(RESIDUAL)].sort_values(["depth", "shortcut"]).iterrows():
            if r["depth"] in plain.index:
                p = plain.loc[r["depth"]].copy()
                p["depth"] = r["depth"]
                holds = r["std_mean"] < p["std_mean"]
                outcomes.append(holds)
                lines.append(_family_note(fam, _many(resp)) + _resp_line(r, p, holds, "<"))
    if outcomes:
        out.append(Finding("responses",
                           "Responses: residual nets' layer responses are smaller than plain nets' of the "
                           "same depth (Fig. 7).", _status(outcomes), lines))
    lines, outcomes = [], []
    res = resp[resp["shortcut"].isin(RESIDUAL)]
    for _, g in res.groupby(FAMILY + ["shortcut"], sort=True):
        g = g.sort_values("depth")
        for lo, hi in zip(g.iloc[:-1].to_dict("records"), g.iloc[1:].to_dict("records")):
            holds = hi["std_mean"] < lo["std_mean"]
            outcomes.append(holds)
            lines.append(_family_note(g, _many(res)) + _resp_line(pd.Series(hi), pd.Series(lo),
                                                                   holds, "<"))
    if outcomes:
        out.append(Finding("deeper_responses",
                           "Responses and depth: the deeper the residual net, the smaller its layer "
                           "responses (Fig. 7).",
                           _status(outcomes), lines))
    return out


def all_findings(grid: pd.DataFrame, resp: pd.DataFrame) -> list[Finding]:
    """Every finding the sweep has the data for, in the paper's order."""
    found: list[Finding] = []
    if not grid.empty:
        found += degradation(grid) + cure(grid) + deeper_residual(grid) + shortcut_options(grid)
    if not resp.empty:
        found += responses(resp)
    return found
