"""Layer responses: the std of each 3x3 layer's response (after BN, before the ReLU and the
addition), in forward order and sorted by magnitude, as in the paper's Fig. 7; one column per
depth, one colour per net (the same as on the other pages)."""

from __future__ import annotations

import streamlit as st

from dashboard import cached, choices, figures, sidebar, state

LAST = "last probed"

st.title("Layer responses")
selection = sidebar.current()
trials = sidebar.selected_trials(selection)
left, right = st.columns([1, 1])
trials, pooled_text = sidebar.pooled_trials(trials, right)
epochs = cached.probed_epochs(selection.url, trials)
if not epochs:
    st.info(
        f"No trial of sweep **{selection.sweep}** (within the filters) has recorded layer responses "
        "yet. Trials probe every `probes.every` epochs and at their last epoch."
    )
    sidebar.stop()

choice = state.choose(
    left.selectbox, "Epoch", [LAST, *map(str, epochs)], key="epoch", default=LAST,
    help="'last probed' compares each trial at its own last probe.",
)  # fmt: skip
epoch = None if choice == LAST else int(choice)
profiles, n_probed = cached.layer_profiles(selection.url, trials, epoch)
if profiles.empty:
    st.info(f"No selected trial was probed at epoch {epoch}; choose another epoch.")
    sidebar.stop()
everything = cached.trials(selection.url, selection.sweep).assign(sweep=selection.sweep)
profiles = choices.with_looks(profiles.assign(sweep=selection.sweep), everything, choices.COLOUR_NET)
label = "each trial's last probe" if epoch is None else f"epoch {epoch}"
st.plotly_chart(figures.layer_figure(profiles, epoch_label=label))
st.caption(
    f"{n_probed:,} trials; {pooled_text}each line is the mean over seeds. Dashed: plain nets, solid: nets with shortcuts. "
    + figures.response_finding(profiles)
)
