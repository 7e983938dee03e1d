"""The pages' tables: the grid pivoted, differences between cells, the papers' numbers beside
ours. Plain pandas, no Streamlit, no database.

A group is one grid point without its seed; its numbers are pooled over the seeds in the
selection by `resweep.pooling` and written by `resweep.stats.mean_std`; nets are named by
`resweep.paper`.
"""

from __future__ import annotations

import numbers

import pandas as pd

from resweep import pooling, stats
from resweep.paper import PLAIN, group_label, references
from resweep.pooling import GROUP_AXES

NET = "net"  # derived axis: plain (shortcut none) | residual
# Choices of the axis that splits the curves into panels (option text == URL value).
ONE_PANEL = "one panel"
SPLITS = {"plain|residual": NET, "shortcut": "shortcut", "block": "block", "depth": "depth",
          "dataset": "dataset", "model": "model", ONE_PANEL: ""}  # fmt: skip
COLOURS = ["depth", "shortcut", "block", "dataset", "model"]


def order_key(value: object) -> tuple:
    """Sort key for axis values: numbers by value, then "none" (the plain net), then by name."""
    if isinstance(value, numbers.Real):
        return (0, value, "")
    return (1, 0 if value == PLAIN else 1, str(value))


def with_net(frame: pd.DataFrame) -> pd.DataFrame:
    """`frame` with the derived `net` axis: plain where shortcut is none, else residual."""
    return frame.assign(**{NET: frame["shortcut"].map(lambda s: "plain" if s == PLAIN else "residual")})


def varying(frame: pd.DataFrame, axes: list[str] = GROUP_AXES) -> list[str]:
    """The axes that take more than one value in `frame` (and its `sweep`, when sweeps are compared)."""
    axes = ["sweep", *axes] if "sweep" in frame and "sweep" not in axes else axes
    return [a for a in axes if frame[a].nunique(dropna=False) > 1]


def grid_cells(trials: pd.DataFrame) -> pd.DataFrame:
    """One row per group of the finished trials: n_seeds and mean/std of the final errors in %,
    and the best seed's test error (resweep.pooling.final_errors, over the trials the filters keep)."""
    cells = pooling.final_errors(trials)
    percent = ["train_err_mean", "train_err_std", "test_err_mean", "test_err_std", "test_err_best", "test_err_median"]
    cells[percent] = cells[percent] * 100
    return cells


def pivot(cells: pd.DataFrame, rows: str, cols: str, value: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The cells pivoted by two axes: (means, 'mean ± std' texts), same shape.

    Axes other than `rows` and `cols` that still vary are kept as outer row levels, so no two
    grid points ever share a cell.
    """
    outer = [a for a in varying(cells) if a not in (rows, cols)]
    index = [*outer, rows]
    pairs = zip(cells[f"{value}_mean"], cells[f"{value}_std"])
    text = cells.assign(_text=[stats.mean_std(m, s, missing="") for m, s in pairs])
    means = cells.pivot_table(index=index, columns=cols, values=f"{value}_mean", aggfunc="first")
    means = means.loc[sorted(means.index, key=_index_key), sorted(means.columns, key=order_key)]
    texts = text.pivot_table(index=index, columns=cols, values="_text", aggfunc="first").reindex_like(means)
    return means, texts.fillna("")


def _index_key(label: object) -> tuple:
    return tuple(map(order_key, label)) if isinstance(label, tuple) else order_key(label)


def _ci(d: stats.Difference | None) -> str:
    return "" if d is None else f"{d.diff:+.2f} ({d.low:+.2f} to {d.high:+.2f})"


def paper_comparison(cells: pd.DataFrame) -> pd.DataFrame | None:
    """Our test errors beside every paper number for the same net (resweep.paper), like with like:
    a best of N beside our best seed, a median beside our median, a mean or single run beside our
    mean, with ours - paper and its 95 % interval and the verdict of the report's findings
    (agreement within stats.MARGIN_POINTS; resweep.stats); None when no cell is a net the papers ran."""
    rows = []
    for c in cells.itertuples():
        for ref in references(c.dataset, c.model, c.depth, c.block, c.shortcut):
            best = ref.kind == "best_of"
            median = ref.kind == "median_of"
            d = None if best else stats.vs_reference(c.test_err_mean, c.test_err_std, int(c.n_seeds), ref,
                                                     median=c.test_err_median)
            ours = (f"{c.test_err_best:.2f} (best of {c.n_seeds})" if best else
                    f"{c.test_err_median:.2f} (median of {c.n_seeds})" if median else
                    stats.mean_std(c.test_err_mean, c.test_err_std, missing=""))
            verdict = ("best of N: no interval" if best else
                       {stats.HOLDS: f"agrees within {stats.MARGIN_POINTS:.1f} points", stats.NOT_CONTRADICTED: "not contradicted",
                        stats.CONTRADICTED: "higher" if d and d.low > 0 else "lower",
                        stats.UNJUDGED: "cannot be judged (" + stats.no_interval(c.test_err_std, int(c.n_seeds)) + ")",
                        }[stats.judge(d, "=", stats.MARGIN_POINTS)])
            rows.append({"net": group_label(c._asdict(), []), "depth": c.depth, "block": c.block,
                         "shortcut": c.shortcut, "seeds": c.n_seeds, "ours": ours, "paper": ref.text,
                         "source": ref.source, "ours − paper (95 % CI)": _ci(d), "verdict": verdict})
    return pd.DataFrame(rows) if rows else None


def comparisons(cells: pd.DataFrame, value: str = "test_err") -> pd.DataFrame:
    """Every pair of cells that differ in one axis (depth, shortcut or block) and agree on the rest:
    a - b of `value` (%, mean over seeds) with its 95 % interval (Welch's t, resweep.stats) and
    what the interval says. One seed in either cell: cannot be judged."""
    rows = []
    axes = ["depth", "shortcut", "block", "sweep"]
    keys = ["sweep", *GROUP_AXES] if "sweep" in cells else GROUP_AXES
    cells = cells.sort_values(keys, key=lambda col: col.map(order_key)).reset_index(drop=True)
    shown = varying(cells)
    for i, a in cells.iterrows():
        for _, b in cells.iloc[i + 1:].iterrows():
            differ = [x for x in keys if a[x] != b[x]]
            if len(differ) != 1 or differ[0] not in axes:
                continue
            hi, lo = (b, a)  # the deeper net / later option / other block first, as "plain-56 vs plain-20"
            d = stats.welch(hi[f"{value}_mean"], hi[f"{value}_std"], int(hi["n_seeds"]),
                            lo[f"{value}_mean"], lo[f"{value}_std"], int(lo["n_seeds"]))
            verdict = ("cannot be judged (one seed)" if d is None else
                       "higher" if d.low > 0 else "lower" if d.high < 0 else "no significant difference")
            rows.append({"axis": differ[0], "a": group_label(hi, shown), "b": group_label(lo, shown),
                         "a − b (points, 95 % CI)": _ci(d), "verdict": f"a {verdict}" if verdict in ("higher", "lower") else verdict})
    return pd.DataFrame(rows, columns=["axis", "a", "b", "a − b (points, 95 % CI)", "verdict"])
