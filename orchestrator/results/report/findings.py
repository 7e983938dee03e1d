"""The paper's findings, checked against a sweep's numbers.

Each check looks for the configurations it needs in the grid (mean over seeds of the finished
trials' final errors) or in the layer responses, and says nothing when they are missing. Every
comparison of two cells is a difference with its 95 % confidence interval over seeds (Welch's t,
resweep.stats, which says why not a bootstrap), and its verdict comes from the interval: for a
claimed difference, `holds` when the whole interval lies on the claimed side, `does not hold` when
it lies on the other, `inconclusive` when it includes 0; for a claimed absence of difference ("no
worse", "agrees with the paper"), `holds` only when two one-sided tests put the difference within
a stated margin (MARGIN_POINTS), `does not hold` when they put it beyond, else `not contradicted`,
which is no evidence for the claim. `cannot be judged` when a cell has one seed or neither cell
has any spread. A finding is `reproduced` when every judged comparison holds, `not reproduced` when
every one is contradicted, `not contradicted` or `inconclusive` when none is either, `partly
reproduced` otherwise, and `cannot be judged` when no comparison has an interval. The claims are
those of He et al. (2016):

- degradation (Sec. 4.1, Fig. 6 left): a deeper plain net ends with a HIGHER TRAINING error than
  a shallower one;
- cure (Sec. 4.1, Fig. 6 middle): a residual net deeper than the papers' shallowest
  (resweep.paper.SHALLOW_DEPTH: 20 on CIFAR, 18 on ImageNet, where plain and residual nets are
  "comparably accurate") ends lower than the plain net of its depth; at the shallow depths the pair
  is shown, not judged; and deeper residual nets do not train worse than shallower ones (within
  MARGIN_POINTS);
- shortcut options (Table 3): error falls from A to B to C (ImageNet ResNet-34 top-1,
  resweep.paper.SHORTCUT_OPTIONS_TOP1), by small margins;
- responses (Sec. 4.2, Fig. 7): residual nets' layer responses are smaller than plain nets'; the
  deeper the residual net, the smaller.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from resweep import stats
from resweep.paper import (
    PAPER_EPOCHS, PLAIN, PREACT_OF, RESIDUAL, SHALLOW_DEPTH, SHORTCUT_OPTIONS_TOP1, net_label, references,
)

REPRODUCED, PARTLY, NOT_REPRODUCED = "reproduced", "partly reproduced", "not reproduced"
INCONCLUSIVE, NOT_CONTRADICTED, UNJUDGED = "inconclusive", "not contradicted", "cannot be judged"
VERDICT_WORDS = {stats.HOLDS: "holds", stats.CONTRADICTED: "does not hold",
                 stats.INCONCLUSIVE: "inconclusive (the interval includes 0)",
                 stats.NOT_CONTRADICTED: "not contradicted (the 90 % interval reaches beyond the margin: "
                                         "no evidence of agreement either)",
                 stats.UNJUDGED: "cannot be judged"}
MARGIN_POINTS = stats.MARGIN_POINTS  # the claims of no difference: within this many points
FAMILY = ["dataset", "model", "block"]  # comparisons are made within one family of nets


@dataclass(frozen=True)
class Finding:
    """One claim of the paper and what this sweep says about it."""

    key: str  # degradation | cure | deeper_residual | shortcuts | preactivation | paper | responses | deeper_responses
    claim: str  # the paper's claim, one sentence
    status: str  # reproduced | partly reproduced | not reproduced | inconclusive | cannot be judged
    evidence: list[str] = field(default_factory=list)  # one line per comparison, with numbers


def pct(x: float) -> str:
    return stats.mean_std(x, None, scale=100, unit=" %")


def _pm(mean: float, std: float, n: int) -> str:
    """'5.00 ± 0.10 %' (a fraction's mean ± std over seeds, in percent), '9.00 %' for one seed."""
    return stats.mean_std(mean, std, n, scale=100, unit=" %")


def difference(a: pd.Series, b: pd.Series, col: str, scale: float = 100.0) -> stats.Difference | None:
    """a - b of `col` (`{col}_mean`, `{col}_std`, `n_seeds`) with its 95 % interval, in points."""
    d = stats.welch(a[f"{col}_mean"], a.get(f"{col}_std"), int(a["n_seeds"]),
                    b[f"{col}_mean"], b.get(f"{col}_std"), int(b["n_seeds"]))
    return None if d is None else d.scaled(scale)


def _why_none(a: pd.Series, b: pd.Series | None, col: str) -> str:
    """Why a comparison of `col` has no interval (one seed, or no spread in either cell)."""
    b = a if b is None else b
    return stats.no_interval(a.get(f"{col}_std"), int(a["n_seeds"]), b.get(f"{col}_std"), int(b["n_seeds"]))


def vs_paper(r, ref) -> stats.Difference | None:
    """Our final test error over a grid row's seeds (fractions) minus a paper's number
    (`resweep.paper.Reference`, percent), in points, like with like (resweep.stats.vs_reference):
    our median (`test_err_median`) against a median, our mean against anything else."""
    std = float("nan" if r.test_err_std is None else r.test_err_std)
    median = getattr(r, "test_err_median", None)
    median = None if median is None or pd.isna(median) else 100 * float(median)
    if ref.kind == "median_of" and median is None:
        return None
    return stats.vs_reference(100 * r.test_err_mean, 100 * std, int(r.n_seeds), ref, median=median)


def _evidence(d: stats.Difference | None, outcome: str, unit: str = " points", why: str = "",
              margin: float | None = None) -> str:
    verdict = VERDICT_WORDS[outcome]
    if d is None:
        return f"{verdict} ({why})" if why else verdict
    digits = 3 if unit == "" else 2
    text = f"{verdict}; difference {d.text(unit, digits)}, {d.method}"
    if margin is not None:
        low, high = d.interval(stats.TOST_LEVEL)
        text += (f"; margin ±{margin:.{digits}f}{unit}, two one-sided tests (90 % CI "
                 f"{low:+.{digits}f} to {high:+.{digits}f})")
    return text


def _status(outcomes: list[str]) -> str:
    judged = [o for o in outcomes if o != stats.UNJUDGED]
    if not judged:
        return UNJUDGED
    good = [o == stats.HOLDS for o in judged]
    bad = [o == stats.CONTRADICTED for o in judged]
    if all(good):
        return REPRODUCED
    if all(bad):
        return NOT_REPRODUCED
    if not any(good) and not any(bad):
        return NOT_CONTRADICTED if all(o == stats.NOT_CONTRADICTED for o in judged) else INCONCLUSIVE
    return PARTLY


def _found(key: str, claim: str, outcomes: list[str], lines: list[str]) -> list[Finding]:
    """The finding with its status from the outcomes, or none when nothing was compared."""
    return [Finding(key, claim, _status(outcomes), lines)] if outcomes else []


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


def _compare(a: pd.Series, b: pd.Series, col: str, what: str, claim: str) -> tuple[str, str]:
    """(`ResNet-56 (A) final training error 5.00 ± 0.10 % < plain-56 9.00 %: holds; difference ...`,
    the outcome) for the claim `a <claim> b` (`<=` and `=` within MARGIN_POINTS)."""
    va = _pm(a[f"{col}_mean"], a.get(f"{col}_std"), a["n_seeds"])
    vb = _pm(b[f"{col}_mean"], b.get(f"{col}_std"), b["n_seeds"])
    name_a = net_label(a["depth"], a["block"], a["shortcut"])
    name_b = net_label(b["depth"], b["block"], b["shortcut"])
    d = difference(a, b, col)
    margin = MARGIN_POINTS if claim in ("<=", "=") else None
    outcome = stats.judge(d, claim, margin)
    evidence = _evidence(d, outcome, why=_why_none(a, b, col), margin=margin)
    return f"{name_a} {what} {va} {claim} {name_b} {vb}: {evidence}", outcome


def degradation(grid: pd.DataFrame) -> list[Finding]:
    """Deeper plain nets end with a higher training error than shallower ones."""
    plain = grid[grid["shortcut"] == PLAIN]
    fams = [f for f in _families(plain) if f["depth"].nunique() >= 2]
    lines, outcomes = [], []
    for fam in fams:
        fam = fam.sort_values("depth")
        lo, hi = fam.iloc[0], fam.iloc[-1]
        line, outcome = _compare(hi, lo, "train_err", "final training error", ">")
        outcomes.append(outcome)
        errs = ", ".join(f"{net_label(r.depth, r.block, r.shortcut)} {pct(r.train_err_mean)}"
                         for r in fam.itertuples())
        lines.append(_family_note(fam, _many(plain)) + line)
        if len(fam) > 2:
            lines.append(f"all plain depths, final training error: {errs}")
        test_hi, test_lo = hi["test_err_mean"], lo["test_err_mean"]
        lines.append(f"test error alongside: {net_label(hi.depth, hi.block, PLAIN)} {pct(test_hi)}, "
                     f"{net_label(lo.depth, lo.block, PLAIN)} {pct(test_lo)}")
    return _found("degradation",
                  "Degradation: a deeper plain net ends with a higher training error than a "
                  "shallower one.", outcomes, lines)


def cure(grid: pd.DataFrame) -> list[Finding]:
    """At each depth with both that is deeper than the papers' shallowest (SHALLOW_DEPTH), the
    residual net ends with a lower training error than the plain; shallower pairs are shown only."""
    lines, outcomes = [], []
    fams = list(_families(grid))
    for fam in fams:
        plain = fam[fam["shortcut"] == PLAIN].set_index("depth")
        res = fam[fam["shortcut"].isin(RESIDUAL)].sort_values(["depth", "shortcut"])
        for _, r in res.iterrows():
            if r["depth"] not in plain.index:
                continue
            p = plain.loc[r["depth"]].copy()
            p["depth"] = r["depth"]
            line, outcome = _compare(r, p, "train_err", "final training error", "<")
            shallow = SHALLOW_DEPTH.get(r["model"], 0)
            if r["depth"] <= shallow:
                line = (line.split(":")[0] + f": shown, not judged (the papers find plain and residual nets of "
                        f"{shallow} layers or fewer comparably accurate)")
            else:
                outcomes.append(outcome)
            lines.append(_family_note(fam, _many(grid)) + line
                         + f"; test error {pct(r['test_err_mean'])} vs {pct(p['test_err_mean'])}")
    return _found("cure",
                  "Cure: a deep residual net ends with a lower training error than the plain net of the "
                  "same depth (deeper than " + " / ".join(f"{d} layers on {m}" for m, d in SHALLOW_DEPTH.items())
                  + "; shallower plain and residual nets are comparably accurate in the papers).", outcomes, lines)


def deeper_residual(grid: pd.DataFrame) -> list[Finding]:
    """The deepest residual net trains no worse than the shallowest (per shortcut option).

    "No worse" is a claim of no difference: it holds only when two one-sided tests put (deeper -
    shallower) below +MARGIN_POINTS; an interval that merely includes 0 is "not contradicted".
    """
    res = grid[grid["shortcut"].isin(RESIDUAL)]
    lines, outcomes = [], []
    groups = [g for _, g in res.groupby(FAMILY + ["shortcut"]) if g["depth"].nunique() >= 2]
    for g in groups:
        g = g.sort_values("depth")
        lo, hi = g.iloc[0], g.iloc[-1]
        line, outcome = _compare(hi, lo, "train_err", "final training error", "<=")
        outcomes.append(outcome)
        lines.append(_family_note(g, _many(res)) + line
                     + f"; test error {pct(hi['test_err_mean'])} vs {pct(lo['test_err_mean'])}")
        if len(g) > 2:
            lines.append("all depths, final training / test error: " + ", ".join(
                f"{net_label(r.depth, r.block, r.shortcut)} {pct(r.train_err_mean)} / "
                f"{pct(r.test_err_mean)}" for r in g.itertuples()))
    return _found("deeper_residual",
                  "Depth with shortcuts: deeper residual nets do not train worse than shallower ones "
                  f"(by more than {MARGIN_POINTS:.1f} points of training error).",
                  outcomes, lines)


def shortcut_options(grid: pd.DataFrame) -> list[Finding]:
    """Where two or more of A/B/C share a depth, test error falls from A to B to C: each pair of
    options (A vs B, B vs C, A vs C) is one comparison with its interval."""
    res = grid[grid["shortcut"].isin(RESIDUAL)]
    lines, outcomes = [], []
    for _, g in res.groupby(FAMILY + ["depth"], sort=True):
        if g["shortcut"].nunique() < 2:
            continue
        by = g.set_index("shortcut")
        present = [s for s in RESIDUAL if s in by.index]
        first = g.iloc[0]
        errs = ", ".join(f"{s} {_pm(by.at[s, 'test_err_mean'], by.at[s, 'test_err_std'], by.at[s, 'n_seeds'])}"
                         for s in present)
        lines.append(f"{net_label(first['depth'], first['block'], 'A', with_shortcut=False)} final test error by "
                     f"option: {errs} (paper's order {' > '.join(present)})")
        for i, worse in enumerate(present):
            for better in present[i + 1:]:
                a, b = by.loc[worse].copy(), by.loc[better].copy()
                a["shortcut"], b["shortcut"] = worse, better
                d = difference(a, b, "test_err")
                outcome = stats.judge(d, ">")
                outcomes.append(outcome)
                lines.append(f"  {worse} > {better}: {_evidence(d, outcome, why=_why_none(a, b, 'test_err'))}")
    return _found("shortcuts",
                  "Shortcut options: test error falls from A (zero-padding) to B (projections "
                  "where shape changes) to C (all projections), by small margins "
                  f"(paper, ImageNet ResNet-34 top-1: {_TOP1} %).", outcomes, lines)


_TOP1 = " / ".join(f"{SHORTCUT_OPTIONS_TOP1[s]:.2f}" for s in RESIDUAL)  # A / B / C


def _resp_line(a: pd.Series, b: pd.Series) -> tuple[str, str]:
    """The claim `a`'s responses < `b`'s, with its interval (responses are unitless std's)."""
    va = stats.mean_std(a["std_mean"], a.get("std_std"), a["n_seeds"], digits=3)
    vb = stats.mean_std(b["std_mean"], b.get("std_std"), b["n_seeds"], digits=3)
    d = difference(a, b, "std", scale=1.0)
    outcome = stats.judge(d, "<")
    return (f"{net_label(a['depth'], a['block'], a['shortcut'])} mean response std {va} < "
            f"{net_label(b['depth'], b['block'], b['shortcut'])} {vb}: "
            f"{_evidence(d, outcome, '', why=_why_none(a, b, 'std'))}"), outcome


def responses(resp: pd.DataFrame) -> list[Finding]:
    """Residual nets respond less than plain nets of the same depth; deeper residual nets less still.

    `resp`: one row per configuration with `std_mean` (the layers' response std averaged over
    layers, then over seeds), `std_std` (its std over seeds) and `n_seeds`.
    """
    out: list[Finding] = []
    lines, outcomes = [], []
    for fam in _families(resp):
        plain = fam[fam["shortcut"] == PLAIN].set_index("depth")
        for _, r in fam[fam["shortcut"].isin(RESIDUAL)].sort_values(["depth", "shortcut"]).iterrows():
            if r["depth"] in plain.index:
                p = plain.loc[r["depth"]].copy()
                p["depth"] = r["depth"]
                line, outcome = _resp_line(r, p)
                outcomes.append(outcome)
                lines.append(_family_note(fam, _many(resp)) + line)
    out += _found("responses",
                  "Responses: residual nets' layer responses are smaller than plain nets' of the "
                  "same depth (Fig. 7).", outcomes, lines)
    lines, outcomes = [], []
    res = resp[resp["shortcut"].isin(RESIDUAL)]
    for _, g in res.groupby(FAMILY + ["shortcut"], sort=True):
        g = g.sort_values("depth")
        for lo, hi in zip(g.iloc[:-1].to_dict("records"), g.iloc[1:].to_dict("records")):
            line, outcome = _resp_line(pd.Series(hi), pd.Series(lo))
            outcomes.append(outcome)
            lines.append(_family_note(g, _many(res)) + line)
    out += _found("deeper_responses",
                  "Responses and depth: the deeper the residual net, the smaller its layer "
                  "responses (Fig. 7).", outcomes, lines)
    return out


def preactivation(grid: pd.DataFrame) -> list[Finding]:
    """He et al., ECCV 2016: at one depth, the pre-activation unit ends with a lower test error
    than the original unit (Table 3, in resweep.paper.REFERENCES: e.g. 164 5.93 -> 5.46 %)."""
    lines, outcomes = [], []
    keys = ["dataset", "model", "depth", "shortcut"]
    for _, g in grid[grid["shortcut"].isin(RESIDUAL)].groupby(keys, sort=True):
        by = g.set_index("block")
        for orig, pre in PREACT_OF.items():
            if orig in by.index and pre in by.index:
                a, b = by.loc[pre].copy(), by.loc[orig].copy()
                a["block"], b["block"] = pre, orig
                line, outcome = _compare(a, b, "test_err", "final test error", "<")
                outcomes.append(outcome)
                lines.append(line + f"; training error {pct(a['train_err_mean'])} vs {pct(b['train_err_mean'])}")
    return _found("preactivation",
                  "Pre-activation: BN-ReLU-conv units end with a lower test error than the original "
                  "units of the same depth (ECCV 2016, Table 3).", outcomes, lines)


def paper_numbers(grid: pd.DataFrame, epochs: int | None) -> list[Finding]:
    """Our final test errors against the papers' numbers, like with like (resweep.paper, .stats):
    a mean +- std with our mean (Welch), a median with our median, a single run (or a number whose
    kind is not stated) with our mean as one more run, a best of N beside our best seed
    (`test_err_best`, shown, not judged). Only for sweeps trained as long as the papers'
    (PAPER_EPOCHS) with the batch size of the reference's recipe (`batch_size`, 128 when the grid
    lacks it); the claim is that ours agree within MARGIN_POINTS."""
    if epochs is not None and epochs < PAPER_EPOCHS:
        return []
    lines, outcomes = [], []
    for r in grid.sort_values(["block", "shortcut", "depth"]).itertuples():
        batch = getattr(r, "batch_size", 128)
        for ref in references(r.dataset, r.model, r.depth, r.block, r.shortcut,
                              batch_size=128 if batch is None or pd.isna(batch) else int(batch)):
            name = net_label(r.depth, r.block, r.shortcut)
            if ref.kind == "best_of":
                best = getattr(r, "test_err_best", float("nan"))
                lines.append(f"{name} best seed {pct(best)} of {r.n_seeds} vs {ref.paper} {ref.text} %: "
                             "best-of-N has no interval, shown only")
                continue
            d = vs_paper(r, ref)
            outcome = stats.judge(d, "=", MARGIN_POINTS)
            outcomes.append(outcome)
            ours = _pm(r.test_err_mean, r.test_err_std, r.n_seeds)
            if ref.kind == "median_of":
                median = getattr(r, "test_err_median", float("nan"))
                ours = f"median test error {pct(median)} of {r.n_seeds} seeds (mean {ours})"
            elif ref.kind in ("single_run", "unstated"):
                ours = f"mean test error {ours} (the paper's number taken as one run)"
            else:
                ours = f"mean test error {ours}"
            why = stats.no_interval(r.test_err_std, int(r.n_seeds))
            lines.append(f"{name} {ours} vs {ref.paper} {ref.text} %: "
                         f"{_evidence(d, outcome, why=why, margin=MARGIN_POINTS)}")
    if not lines:
        return []
    return [Finding("paper",
                    "The papers' numbers: our final test errors agree with the published ones within "
                    f"{MARGIN_POINTS:.1f} points, compared like with like (mean with mean, median with "
                    "median, best with best).", _status(outcomes), lines)]


def all_findings(grid: pd.DataFrame, resp: pd.DataFrame, epochs: int | None = None) -> list[Finding]:
    """Every finding the sweep has the data for, in the paper's order."""
    found: list[Finding] = []
    if not grid.empty:
        found += degradation(grid) + cure(grid) + deeper_residual(grid) + shortcut_options(grid)
        found += preactivation(grid) + paper_numbers(grid, epochs)
    if not resp.empty:
        found += responses(resp)
    return found
