"""Trial: one trial on one page (`/trial?sweep=NAME&trial=ID`), reached by clicking a row of any
trial table: its config, where and how often it ran, every metric it recorded, its layer
responses, its checkpoint (with the model file to download) and its error if it failed."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pandas as pd
import streamlit as st

from dashboard import cached, choices, figures, sidebar, state
from resweep.paper import trial_label

SMOOTHING = [0.0, 0.3, 0.6, 0.8, 0.9, 0.95]
X_AXES = ["epoch", "wall time"]


def model_file(url: str, trial_id: int) -> bytes:
    """The trial's trained network as `python -m orchestrator model` writes it (built on click)."""
    import resweep
    from trainers.restore import save_model_file  # torch: only when asked for

    with resweep.open(url) as results:
        row = results.trial(trial_id)
        uri, config = results.checkpoint(trial_id)
    with tempfile.TemporaryDirectory(prefix="resweep-model-") as tmp:
        path = Path(tmp) / "model.pt"
        save_model_file(path, uri, config, trial_id=int(trial_id), sweep=str(row["sweep"]),
                        trial_key=str(row["trial_key"]))
        return path.read_bytes()


st.title("Trial")
selection = sidebar.current()
trials = sidebar.selected_trials(selection)
ids = trials["trial_id"].astype(int).tolist()
listed = choices.listed_trials(ids, [state.linked("trial"), st.session_state.get("trial")])
at = trials.set_index("trial_id").loc[listed].reset_index()
labels = {int(r.trial_id): f"{r.trial_id} · {trial_label(dict(r._asdict()))} · {r.status}" for r in at.itertuples()}
trial_id = state.choose(st.selectbox, "Trial", listed, key="trial", default=listed[0],
                        format_func=lambda i: labels.get(i, str(i)),
                        help="Any trial table's row opens here; the trial is part of the page's URL.")
if len(listed) < len(ids):
    st.caption(f"The menu lists {len(listed):,} of the {len(ids):,} trials that pass the filters; narrow the filters "
               "in the sidebar, or click a row of the Sweeps page's table, to open any other.")
row = cached.trial(selection.url, int(trial_id))
if row.empty:
    st.warning(f"No trial {trial_id} in this database.")
    sidebar.stop()
t = row.iloc[0]

st.subheader(f"{trial_label(t['config'])} · {t['status']}")
cols = st.columns(6)
cols[0].metric("epochs", int(t["epochs"] or 0))
for col, (name, what) in zip(cols[1:4], [("final_train_err", "final train err"), ("final_test_err", "final test err"),
                                           ("best_test_err", "best test err")]):
    col.metric(what, "-" if pd.isna(t[name]) else f"{100 * t[name]:.2f} %")
cols[4].metric("parameters", "-" if pd.isna(t["params_count"]) else f"{int(t['params_count']):,}")
cols[5].metric("attempts", int(t["attempts"] or 0))
st.caption(f"Trial {t['trial_id']} (Tune's key `{t['trial_key']}`) of sweep **{t['sweep']}**; "
           f"`python -m orchestrator model {t['trial_id']} --out FILE.pt` writes its network.")
if t["status"] == "error" or (isinstance(t["error"], str) and t["error"]):
    st.error(f"**This trial failed.** {t['error'] or 'No error was recorded.'}", icon=":material/error:")

curves = cached.trial_curves(selection.url, int(trial_id), int(t["epochs"] or 0))
st.subheader("Metrics")
if curves.empty:
    st.info("This trial has not reported an epoch yet.")
else:
    left, right, _ = st.columns([1, 2, 2])
    x_axis = state.choose(left.segmented_control, "x axis", X_AXES, key="x", default="epoch")
    smoothing = state.choose(right.select_slider, "Smoothing", SMOOTHING, key="smooth", default=0.0,
                             help="An exponential moving average; the raw values stay faint behind.")
    shown = figures.trial_figures(curves, wall_time=x_axis == "wall time", smoothing=float(smoothing))
    for start in range(0, len(shown), 3):
        for col, (_title, fig) in zip(st.columns(3), shown[start:start + 3]):
            col.plotly_chart(fig)

layers = cached.trial_layers(selection.url, int(trial_id), int(t["epochs"] or 0))
if not layers.empty:
    st.subheader("Layer responses")
    st.plotly_chart(figures.trial_layers_figure(layers))
    st.caption("The std of each 3x3 layer's response (after BN, before the ReLU and the addition), per probed epoch.")

left, right = st.columns(2)
with left:
    st.subheader("Config")
    st.json(t["config"], expanded=True)
with right:
    st.subheader("Where it ran")
    attempts = cached.trial_attempts(selection.url, int(trial_id))
    if attempts.empty:
        st.caption("No attempt recorded yet." if t["status"] == "pending" else "No attempt recorded.")
    else:
        st.dataframe(attempts, hide_index=True)
    st.subheader("Checkpoint")
    if t["checkpoint_uri"]:
        st.code(t["checkpoint_uri"], language=None, wrap_lines=True)
        st.download_button(
            "Download the model file", data=lambda: model_file(selection.url, int(trial_id)),
            file_name=f"{t['sweep']}-trial{t['trial_id']}.pt", mime="application/octet-stream",
            icon=":material/download:", on_click="ignore",
            help="Weights, config and input mean in one file: torch.load(FILE, weights_only=True), or "
                 "trainers.restore.load_model_file(FILE).",
        )  # fmt: skip
    else:
        st.caption("No checkpoint recorded.")
