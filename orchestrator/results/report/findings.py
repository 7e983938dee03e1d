"""The paper's findings, checked against a sweep's numbers.

Each check looks for the configurations it needs in the grid (mean over seeds of the finished
trials' final errors) or in the layer responses, and says nothing when they are missing. Every
comparison of two cells is a difference with its 95 % confidence interval over seeds (Welch's t,
resweep.stats, which says why not a bootstrap), and its verdict comes from the interval: `holds`
when the whole interval lies on the claimed side, `does not hold` when it lies on the other,
`inconclusive` when it straddles 0, `cannot be judged` when a cell has one seed. A finding is
`reproduced` when every judged comparison holds, `not reproduced` when every one is contradicted,
`inconclusive` when none is either, `partly reproduced` otherwise, and `cannot be judged` when no
comparison has an interval. The claims are those of He et al. (2016):

- degradation (Sec. 4.1, Fig. 6 left): a deeper plain net ends with a HIGHER TRAINING error than
  a shallower one;
- cure (Fig. 6 middle): the residual net of a depth ends lower than the plain net of that depth,
  and deeper residual nets do not train worse than shallower ones (within the seeds' spread);
- shortcut options (Table 3): error falls from A to B to C (ImageNet ResNet-34 top-1,
  resweep.paper.SHORTCUT_OPTIONS_TOP1), by small margins;
- responses (Sec. 4.2, Fig. 7): residual nets' layer responses are smaller than plain nets'; the
  deeper the residual net, the smaller.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import pandas as pd

from resweep import stats
from resweep.paper import PAPER_EPOCHS, PLAIN, PREACT_OF, RESIDUAL, SHORTCUT_OPTIONS_TOP1, net_label, references

REPRODUCED, PARTLY, NOT_REPRODUCED = "reproduced", "partly reproduced", "not reproduced"
INCONCLUSIVE, UNJUDGED = "inconclusive", "cannot be judged"
VERDICT_WORDS = {stats.HOLDS: "holds", stats.CONSISTENT: "holds (no significant difference)",
                 stats.CONTRADICTED: "does not hold", stats.INCONCLUSIVE: "inconclusive (the interval includes 0)",
                 stats.UNJUDGED: "cannot be judged (one seed: no interval)"}
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
    return None if d is None else replace(d, diff=d.diff * scale, low=d.low * scale, high=d.high * scale)


def vs_paper(r, ref) -> stats.Difference | None:
    """Our mean final test error over a grid row's seeds (fractions) minus a paper's number
    (`resweep.paper.Reference`, percent), in points, like with like (resweep.stats.vs_reference)."""
    std = float("nan" if r.test_err_std is None else r.test_err_std)
    return stats.vs_reference(100 * r.test_err_mean, 100 * std, int(r.n_seeds), ref)


def _evidence(d: stats.Difference | None, outcome: str, unit: str = " points") -> str:
    verdict = VERDICT_WORDS[outcome]
    if d is None:
        return verdict
    return f"{verdict}; difference {d.text(unit, 3 if unit == '' else 2)}, {d.method}"


def _status(outcomes: list[str]) -> str:
    judged = [o for o in outcomes if o != stats.UNJUDGED]
    if not judged:
        return UNJUDGED
    good = [o in (stats.HOLDS, stats.CONSISTENT) for o in judged]
    bad = [o == stats.CONTRADICTED for o in judged]
    if all(good):
        return REPRODUCED
    if all(bad):
        return NOT_REPRODUCED
    return INCONCLUSIVE if not any(good) and not any(bad) else PARTLY


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
    the outcome) for the claim `a <claim> b`."""
    va = _pm(a[f"{col}_mean"], a.get(f"{col}_std"), a["n_seeds"])
    vb = _pm(b[f"{col}_mean"], b.get(f"{col}_std"), b["n_seeds"])
    name_a = net_label(a["depth"], a["block"], a["shortcut"])
    name_b = net_label(b["depth"], b["block"], b["shortcut"])
    d = difference(a, b, col)
    outcome = stats.judge(d, claim)
    return f"{name_a} {what} {va} {claim} {name_b} {vb}: {_evidence(d, outcome)}", outcome


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
    """At each depth with both, the residual net ends with a lower training error than the plain."""
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
            outcomes.append(outcome)
            lines.append(_family_note(fam, _many(grid)) + line
                         + f"; test error {pct(r['test_err_mean'])} vs {pct(p['test_err_mean'])}")
    return _found("cure",
                  "Cure: the residual net of a depth ends with a lower training "
                  "error than the plain net of the same depth.", outcomes, lines)


def deeper_residual(grid: pd.DataFrame) -> list[Finding]:
    """The deepest residual net trains no worse than the shallowest (per shortcut option).

    "No worse" is a claim of no difference: it holds unless the 95 % interval of (deeper -
    shallower) lies wholly above 0; an interval that includes 0 says "no significant difference".
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
                  "Depth with shortcuts: deeper residual nets do not train worse than shallower ones.",
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
                lines.append(f"  {worse} > {better}: {_evidence(d, outcome)}")
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
            f"{net_label(b['depth'], b['block'], b['shortcut'])} {vb}: {_evidence(d, outcome, '')}"), outcome


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
    than the original unit (Table 4, in resweep.paper.REFERENCES: e.g. 110 6.61 -> 6.37 %)."""
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
                  "units of the same depth (ECCV 2016, Table 4).", outcomes, lines)


def paper_numbers(grid: pd.DataFrame, epochs: int | None) -> list[Finding]:
    """Our final test errors against the papers' numbers, like with like (resweep.paper, .stats):
    a mean +- std with our mean (Welch), a median or single run with our mean (the paper's spread
    taken as ours), a best of N beside our best seed (`test_err_best`, shown, not judged). Only for
    sweeps trained as long as the papers' (PAPER_EPOCHS); the claim is that ours agree."""
    if epochs is not None and epochs < PAPER_EPOCHS:
        return []
    lines, outcomes = [], []
    for r in grid.sort_values(["block", "shortcut", "depth"]).itertuples():
        for ref in references(r.dataset, r.model, r.depth, r.block, r.shortcut):
            name = net_label(r.depth, r.block, r.shortcut)
            if ref.kind == "best_of":
                best = getattr(r, "test_err_best", float("nan"))
                lines.append(f"{name} best seed {pct(best)} of {r.n_seeds} vs {ref.source} {ref.text} %: "
                             "best-of-N has no interval, shown only")
                continue
            d = vs_paper(r, ref)
            outcome = stats.judge(d, "=")
            outcomes.append(outcome)
            lines.append(f"{name} mean test error {_pm(r.test_err_mean, r.test_err_std, r.n_seeds)} vs "
                         f"{ref.source} {ref.text} %: {_evidence(d, outcome)}")
    if not lines:
        return []
    return [Finding("paper",
                    "The papers' numbers: our final test errors agree with the published ones, compared "
                    "like with like (mean with mean, best with best).", _status(outcomes), lines)]


def all_findings(grid: pd.DataFrame, resp: pd.DataFrame, epochs: int | None = None) -> list[Finding]:
    """Every finding the sweep has the data for, in the paper's order."""
    found: list[Finding] = []
    if not grid.empty:
        found += degradation(grid) + cure(grid) + deeper_residual(grid) + shortcut_options(grid)
        found += preactivation(grid) + paper_numbers(grid, epochs)
    if not resp.empty:
        found += responses(resp)
    return found
