"""Curves: training and test error (or loss) against epoch, as in the paper's Fig. 6.

One line per group of seeds (mean, with a band of +- one std), coloured by one axis and split
into panels by another (plain | residual by default).
"""

from __future__ import annotations

import streamlit as st

from dashboard import aggregate, cached, figures, sidebar
from resweep import pooling

st.title("Curves")
selection = sidebar.current()
trials = sidebar.selected_trials(selection)

left, mid, right, last = st.columns([1, 1, 1, 1])
kind = left.segmented_control(
    "Metric", ["error", "loss"], default="error", key="metric", bind="query-params"
) or "error"
colour = mid.selectbox("Colour by", aggregate.COLOURS, key="colour", bind="query-params")
panels = right.selectbox("Panels by", list(aggregate.SPLITS), key="split", bind="query-params")
log_y = last.toggle("Log scale", key="log", bind="query-params")

bands = cached.curve_bands(selection.url, trials, figures.ERROR_METRICS[kind])
if bands.empty:
    st.info(sidebar.no_epoch_message(selection.sweep, "curves"))
    st.stop()
bands = aggregate.with_net(bands)
st.plotly_chart(
    figures.curves_figure(bands, kind=kind, colour=colour, split=aggregate.SPLITS[panels], log_y=log_y),
)
n_groups = bands.groupby(pooling.GROUP_AXES).ngroups
st.caption(
    f"{len(trials)} trials in {n_groups} groups of seeds. Bold: test, dashed: "
    "training; lines are the mean over seeds, bands +- one standard deviation."
)
