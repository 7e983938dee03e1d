"""Curves: training and test error (or loss) against epoch, as in the paper's Fig. 6.

One line per net (mean over its seeds, with a band of +- one std), one colour per net on every
page; the panels split by the axis that shows the study (plain | residual where both are there).
Several sweeps (the sidebar's "Compare with") are drawn together, each net labelled with its sweep.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard import aggregate, cached, choices, figures, sidebar, state

SCALES = ["linear", "log"]


def _scale_follows_metric() -> None:
    """A new metric gets its own default scale: losses span decades (log), errors do not."""
    st.session_state["scale"] = "log" if st.session_state.get("metric") == "loss" else "linear"


st.title("Curves")
selection = sidebar.current()
trials = sidebar.compared_trials(selection)
everything = pd.concat([cached.trials(selection.url, s).assign(sweep=s) for s in selection.sweeps], ignore_index=True)

left, mid, right, last, pool_at = st.columns([1, 1, 1, 1, 1])
kind = state.choose(left.segmented_control, "Metric", ["error", "loss"], key="metric", default="error",
                    on_change=_scale_follows_metric)
colours = [c for c in choices.COLOURS if c != choices.SWEEP or len(selection.sweeps) > 1]
colour = state.choose(mid.selectbox, "Colour by", colours, key="colour", default=choices.COLOUR_NET,
                      help="net: every net its own colour, the same on every page and under every filter.")
panels = state.choose(right.selectbox, "Panels by", list(choices.SPLITS), key="split",
                      default=choices.default_split(everything))
scale = state.choose(last.segmented_control, "Y axis", SCALES, key="scale",
                     default="log" if kind == "loss" else "linear")

names = figures.ERROR_METRICS[kind]
pooled, pooled_text = sidebar.pooled_trials(trials, pool_at)
parts = [cached.curve_bands(selection.url, group, names).assign(sweep=name)
         for name, group in pooled.groupby("sweep", sort=False)]
bands = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
if bands.empty:
    st.info(sidebar.no_epoch_message(selection.sweep, "curves"))
    sidebar.stop()
bands = choices.with_looks(aggregate.with_net(bands), everything, colour)
st.plotly_chart(figures.curves_figure(bands, kind=kind, split=choices.SPLITS[panels], log_y=scale == "log"))
n_groups = bands[choices.KEY].drop_duplicates().shape[0]
st.caption(
    f"{len(trials):,} trial{'s' * (len(trials) != 1)} in {n_groups} net{'s' * (n_groups != 1)}. {pooled_text}Bold: test, "
    "dashed: training; lines are the mean over seeds, bands +- one standard deviation (clipped to the possible range)."
)
