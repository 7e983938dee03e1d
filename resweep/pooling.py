"""Seeds pooled: the mean, sample std and count over the seeds of each grid point.

A group is one grid point without its seed (`GROUP_AXES`: dataset, model, depth, block,
shortcut); its numbers are the mean and the sample standard deviation (n - 1, as in the
`grid_results` view; NaN for one seed) over the seeds at hand. The dashboard (over the trials its
filters keep) and the report (over a whole sweep) pool with these functions; the console and the
report read the `grid_results` view, which pools the same way in SQL. Means are written with
`resweep.stats.mean_std`.

Inputs are the frames of `db.queries`: trials (trial_id, the axes, status, final errors), curves
(long: trial_id, epoch, name, value) and layer_stats (trial_id, epoch, layer, std, ...).
"""

from __future__ import annotations

import pandas as pd

from resweep import paper

GROUP_AXES = list(paper.GROUP_AXES)  # a list: pandas takes a tuple for one key
FINISHED = "terminated"  # the trials whose final errors are pooled


def curve_sums(curves: pd.DataFrame, trials: pd.DataFrame) -> pd.DataFrame:
    """Per group, metric and epoch: n, sum and sum of squares of the trials' values (NULLs
    skipped). Sums add up, so blocks of trials can be summed (and cached) apart and combined
    by `bands_from_sums`."""
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
    """Mean, sample std (n - 1; NaN for one seed) and n per group, metric and epoch, sorted."""
    keys = [*GROUP_AXES, "name", "epoch"]
    total = sums.groupby(keys, sort=True)[["n", "sum", "sumsq"]].sum().reset_index()
    total = total[total["n"] > 0]
    n = total["n"].astype(float)
    mean = total["sum"] / n
    var = ((total["sumsq"] - total["sum"] * mean) / (n - 1)).clip(lower=0.0)
    std = var.pow(0.5).where(n > 1)
    return total[keys].assign(mean=mean, std=std, n=total["n"].astype(int)).reset_index(drop=True)


def curve_bands(curves: pd.DataFrame, trials: pd.DataFrame) -> pd.DataFrame:
    """Per group, metric and epoch: mean, std and n over the seeds (the curves' lines and bands)."""
    return bands_from_sums(curve_sums(curves, trials))


def final_errors(trials: pd.DataFrame) -> pd.DataFrame:
    """One row per group of the finished trials: n_seeds, the mean and std of the final training
    and test errors, the best (lowest) final test error, `test_err_best`, and the median one,
    `test_err_median` (fractions, as stored). The `grid_results` view's definition, plus the best
    and median seeds."""
    done = trials[trials["status"] == FINISHED]
    cells = done.groupby(GROUP_AXES, sort=True, dropna=False).agg(
        n_seeds=("trial_id", "count"),
        train_err_mean=("final_train_err", "mean"),
        train_err_std=("final_train_err", lambda s: s.std(ddof=1)),
        test_err_mean=("final_test_err", "mean"),
        test_err_std=("final_test_err", lambda s: s.std(ddof=1)),
        test_err_best=("final_test_err", "min"),
        test_err_median=("final_test_err", "median"),  # set against a paper's median (resweep.stats)
    )
    errors = ["train_err_mean", "train_err_std", "test_err_mean", "test_err_std", "test_err_best", "test_err_median"]
    cells[errors] = cells[errors].astype(float)
    return cells.reset_index()


def layer_profiles(layers: pd.DataFrame, trials: pd.DataFrame) -> pd.DataFrame:
    """Per group and layer (Fig. 7): the response std's mean, std and n over the seeds, the latest
    epoch probed, and the layer's rank in its group by that mean (0 = largest), as in the paper's
    right-hand panel."""
    columns = [*GROUP_AXES, "layer", "epoch", "mean", "std", "n", "rank"]
    if layers.empty:
        return pd.DataFrame(columns=columns)
    merged = layers.merge(trials[["trial_id", *GROUP_AXES]], on="trial_id")
    prof = (merged.groupby([*GROUP_AXES, "layer"], sort=True)
                  .agg(epoch=("epoch", "max"), mean=("std", "mean"), std=("std", "std"), n=("std", "count"))
                  .reset_index())  # fmt: skip
    prof["rank"] = prof.groupby(GROUP_AXES)["mean"].rank(method="first", ascending=False).astype(int) - 1
    return prof[columns]


def response_summary(layers: pd.DataFrame, trials: pd.DataFrame) -> pd.DataFrame:
    """Per group: each trial's response std averaged over its layers, then its mean (`std_mean`),
    std (`std_std`) and count (`n_seeds`) over the seeds (the report's response findings)."""
    if layers.empty:
        return pd.DataFrame(columns=[*GROUP_AXES, "std_mean", "std_std", "n_seeds"])
    merged = layers.merge(trials[["trial_id", *GROUP_AXES]], on="trial_id")
    per_trial = merged.groupby([*GROUP_AXES, "trial_id"])["std"].mean().reset_index()
    return (per_trial.groupby(GROUP_AXES)["std"]
                     .agg(std_mean="mean", std_std="std", n_seeds="count").reset_index())  # fmt: skip
