"""Seed aggregation and tables for the pages: plain pandas, no Streamlit, no database.

A group is one grid point without its seed (dataset, model, depth, block, shortcut); its
numbers are the mean and the sample standard deviation (n - 1, as in the `grid_results` view)
over the seeds in the selection.
"""

from __future__ import annotations

import numbers

import pandas as pd

GROUP_AXES = ["dataset", "model", "depth", "block", "shortcut"]
FINISHED = "terminated"
NET = "net"  # derived axis: plain (shortcut none) | residual
# Choices of the axis that splits the curves into panels (option text == URL value).
ONE_PANEL = "one panel"
SPLITS = {"plain|residual": NET, "shortcut": "shortcut", "block": "block", "depth": "depth",
          "dataset": "dataset", "model": "model", ONE_PANEL: ""}  # fmt: skip
COLOURS = ["depth", "shortcut", "block", "dataset", "model"]

# He et al. 2016, Table 6: test error (%) of the CIFAR-10 ResNets (basic blocks, option A).
PAPER_TABLE6 = {20: 8.75, 32: 7.51, 44: 7.17, 56: 6.97, 110: 6.43, 1202: 7.93}


def order_key(value: object) -> tuple:
    """Sort key for axis values: numbers by value, then "none" (the plain net), then by name."""
    if isinstance(value, numbers.Real):
        return (0, value, "")
    return (1, 0 if value == "none" else 1, str(value))


def with_net(frame: pd.DataFrame) -> pd.DataFrame:
    """`frame` with the derived `net` axis: plain where shortcut is none, else residual."""
    return frame.assign(**{NET: frame["shortcut"].map(lambda s: "plain" if s == "none" else "residual")})


def varying(frame: pd.DataFrame, axes: list[str] = GROUP_AXES) -> list[str]:
    """The axes that take more than one value in `frame`."""
    return [a for a in axes if frame[a].nunique(dropna=False) > 1]


def group_label(row: pd.Series | dict, varying_axes: list[str]) -> str:
    """The paper's name for a group ("plain-20", "ResNet-56") plus any other axis that varies."""
    name = f"{'plain' if row['shortcut'] == 'none' else 'ResNet'}-{row['depth']}"
    extras = [
        str(row[a]) if a in ("block", "shortcut") else f"{a} {row[a]}"
        for a in varying_axes
        if a != "depth" and not (a == "shortcut" and row["shortcut"] == "none")
    ]
    return f"{name} ({', '.join(extras)})" if extras else name


def curve_sums(curves: pd.DataFrame, trials: pd.DataFrame) -> pd.DataFrame:
    """Per group, metric and epoch: n, sum and sum of squares of the trials' values (NULLs
    skipped). Sums add up, so blocks of trials can be summed (and cached) apart and combined
    by `bands_from_sums`.

    curves: long format (trial_id, epoch, name, value); trials: trial_id and the group axes.
    """
    axes = trials.set_index("trial_id")[GROUP_AXES]
    codes, groups = pd.factorize(pd.MultiIndex.from_frame(axes))
    group = curves["trial_id"].map(pd.Series(codes, index=axes.index))
    value = curves["value"].astype(float)
    frame = pd.DataFrame({
        "group": group, "name": curves["name"], "epoch": curves["epoch"],
        "n": value.notna().astype(int), "sum": value.fillna(0.0), "sumsq": value.fillna(0.0) ** 2,
    }).dropna(subset=["group"])  # fmt: skip
    sums = frame.groupby(["group", "name", "epoch"], sort=False).sum().reset_index()
    keys = groups.to_frame(index=False, name=GROUP_AXES).iloc[sums["group"].astype(int)].reset_index(drop=True)
    return pd.concat([keys, sums.drop(columns="group")], axis=1)


def bands_from_sums(sums: pd.DataFrame) -> pd.DataFrame:
    """Mean, sample std (n - 1; NaN for one seed) and n per group, metric and epoch."""
    keys = [*GROUP_AXES, "name", "epoch"]
    total = sums.groupby(keys, sort=True)[["n", "sum", "sumsq"]].sum().reset_index()
    total = total[total["n"] > 0]
    n = total["n"].astype(float)
    mean = total["sum"] / n
    var = ((total["sumsq"] - total["sum"] * mean) / (n - 1)).clip(lower=0.0)
    std = var.pow(0.5).where(n > 1)
    return total[keys].assign(mean=mean, std=std, n=total["n"].astype(int)).reset_index(drop=True)


def curve_bands(curves: pd.DataFrame, trials: pd.DataFrame) -> pd.DataFrame:
    """Per group, metric and epoch: mean, std and n over the seeds."""
    return bands_from_sums(curve_sums(curves, trials))


def grid_cells(trials: pd.DataFrame) -> pd.DataFrame:
    """One row per group of the finished trials: n_seeds and mean/std of the final errors in %.

    Same definition as the `grid_results` view, over the trials the filters keep.
    """
    done = trials[trials["status"] == FINISHED]
    cells = done.groupby(GROUP_AXES, sort=True, dropna=False).agg(
        n_seeds=("trial_id", "count"),
        train_err_mean=("final_train_err", "mean"),
        train_err_std=("final_train_err", lambda s: s.std(ddof=1)),
        test_err_mean=("final_test_err", "mean"),
        test_err_std=("final_test_err", lambda s: s.std(ddof=1)),
    )
    percent = ["train_err_mean", "train_err_std", "test_err_mean", "test_err_std"]
    cells[percent] = cells[percent].astype(float) * 100
    return cells.reset_index()


def mean_pm_std(mean: float, std: float) -> str:
    """'7.51 ± 0.12' (or just the mean for one seed)."""
    if pd.isna(mean):
        return ""
    return f"{mean:.2f}" if pd.isna(std) else f"{mean:.2f} ± {std:.2f}"


def pivot(cells: pd.DataFrame, rows: str, cols: str, value: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The cells pivoted by two axes: (means, 'mean ± std' texts), same shape.

    Axes other than `rows` and `cols` that still vary are kept as outer row levels, so no two
    grid points ever share a cell.
    """
    outer = [a for a in varying(cells) if a not in (rows, cols)]
    index = [*outer, rows]
    text = cells.assign(_text=[mean_pm_std(m, s) for m, s in zip(cells[f"{value}_mean"], cells[f"{value}_std"])])
    means = cells.pivot_table(index=index, columns=cols, values=f"{value}_mean", aggfunc="first")
    means = means.loc[sorted(means.index, key=_index_key), sorted(means.columns, key=order_key)]
    texts = text.pivot_table(index=index, columns=cols, values="_text", aggfunc="first").reindex_like(means)
    return means, texts.fillna("")


def _index_key(label: object) -> tuple:
    return tuple(map(order_key, label)) if isinstance(label, tuple) else order_key(label)


def paper_comparison(cells: pd.DataFrame) -> pd.DataFrame | None:
    """Our CIFAR-10 ResNets' test error beside the paper's Table 6, one row per depth; None when
    the cells hold no CIFAR-10 6n+2 network with basic blocks."""
    ours = cells[(cells["dataset"] == "cifar10") & (cells["model"] == "cifar") & (cells["block"] == "basic")]
    if ours.empty:
        return None
    table = pd.DataFrame({"depth": sorted(set(PAPER_TABLE6) | set(ours["depth"].astype(int)))})
    for shortcut in sorted(ours["shortcut"].unique(), key=lambda s: (s != "none", s)):
        mine = ours[ours["shortcut"] == shortcut].set_index("depth")
        label = "ours, plain" if shortcut == "none" else f"ours, ResNet ({shortcut})"
        table[label] = [
            mean_pm_std(mine.at[d, "test_err_mean"], mine.at[d, "test_err_std"]) if d in mine.index else ""
            for d in table["depth"]
        ]
    table["paper, ResNet (Table 6)"] = [f"{PAPER_TABLE6[d]:.2f}" if d in PAPER_TABLE6 else "" for d in table["depth"]]
    return table


def layer_profiles(stats: pd.DataFrame, trials: pd.DataFrame) -> pd.DataFrame:
    """Per group and layer: the response std averaged over seeds, with its rank in the group
    when sorted by magnitude (0 = largest), as in the two panels of the paper's Fig. 7."""
    merged = stats.merge(trials[["trial_id", *GROUP_AXES]], on="trial_id")
    prof = merged.groupby([*GROUP_AXES, "layer"], sort=True)["std"].agg(["mean", "count"]).reset_index()
    prof = prof.rename(columns={"mean": "std", "count": "n"})
    prof["rank"] = prof.groupby(GROUP_AXES)["std"].rank(method="first", ascending=False).astype(int) - 1
    return prof
