"""Grid: the final training and test error of every grid point, mean +- std over seeds.

A table and a heatmap pivoted by two chosen axes, the differences between cells with their 95 %
confidence intervals, the papers' numbers beside ours (like with like), and every grid point.
"""

from __future__ import annotations

import streamlit as st

import pandas as pd

from dashboard import aggregate, figures, sidebar, state
from resweep import pooling

VALUES = {"test error": "test_err", "training error": "train_err"}  # option text == URL value

st.title("Grid")
selection = sidebar.current()
trials = sidebar.compared_trials(selection)
several = len(selection.sweeps) > 1
AXIS_CHOICES = [*pooling.GROUP_AXES, *(["sweep"] if several else [])]
parts = [aggregate.grid_cells(group).assign(sweep=name) for name, group in trials.groupby("sweep", sort=False)]
cells = pd.concat(parts, ignore_index=True)
if not several:
    cells = cells.drop(columns="sweep")
if cells.empty:
    st.info(
        f"No trial of sweep **{selection.sweep}** (within the filters) has finished yet; the grid "
        "holds finished trials' final errors. The Curves page shows running trials' epochs."
        if (trials["epochs"] > 0).any()
        else sidebar.no_epoch_message(selection.sweep, "errors")
    )
    sidebar.stop()

left, mid, right = st.columns(3)
rows = state.choose(left.selectbox, "Rows", AXIS_CHOICES, key="rows", default="depth")
cols = state.choose(mid.selectbox, "Columns", AXIS_CHOICES, key="cols", default="sweep" if several else "shortcut")
shown = state.choose(right.segmented_control, "Value", list(VALUES), key="value", default="test error")
value = VALUES[shown]
if rows == cols:
    st.warning("Rows and columns are the same axis: choose two different ones.")
    sidebar.stop()

means, texts = aggregate.pivot(cells, rows, cols, value)
st.subheader(f"Final {shown} (%), mean ± std over seeds")
st.dataframe(texts)
st.plotly_chart(figures.grid_heatmap(means, texts, value=shown, rows=rows, cols=cols))
st.caption("Colours on a fixed 0-100 % scale. Whether two cells differ is said below, with its interval.")

st.subheader(f"Differences between cells: final {shown}, 95 % confidence intervals over seeds")
st.dataframe(aggregate.comparisons(cells, value), hide_index=True)
st.caption(
    "Pairs of grid points that differ in one axis (depth, shortcut, block or sweep): a − b of the mean over "
    "seeds, in points, with Welch's t interval (a bootstrap over 3 seeds is far too narrow). An interval "
    "that includes 0 is no significant difference; a point with one seed cannot be judged."
)

paper = aggregate.paper_comparison(cells)
if paper is not None:
    st.subheader("Test error (%) beside the papers' numbers, like with like")
    st.dataframe(paper, hide_index=True)
    st.caption(
        "He et al., CVPR 2016, Table 6 (single runs; ResNet-110 best of 5 and mean ± std of 5) and ECCV 2016, "
        "Table 4 (median of 5). A best of N is set beside our best seed, the others beside our mean ± std over "
        "seeds; ours − paper: Welch's t against a mean ± std, else the paper's spread taken as ours."
    )

st.subheader("Every grid point")
st.dataframe(
    cells, hide_index=True,
    column_config={
        c: st.column_config.NumberColumn(c.replace("_err_", " err ").replace("mean", "mean (%)").replace("std", "std (%)"), format="%.2f")
        for c in ("train_err_mean", "train_err_std", "test_err_mean", "test_err_std")
    } | {c: st.column_config.NumberColumn(c.replace("test_err_", "test err ") + " (%)", format="%.2f")
         for c in ("test_err_best", "test_err_median") if c in cells},
)  # fmt: skip
running = int((trials["status"] != pooling.FINISHED).sum())
if running:
    st.caption(f"{running} selected trials have not finished (or failed) and are left out.")
