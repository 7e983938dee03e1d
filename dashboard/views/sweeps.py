"""Sweeps: every sweep with its status and progress, and the selected sweep's trials; live.

The tables redraw themselves every few seconds (a Streamlit fragment), so a running sweep's
progress moves without a reload.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard import cached, sidebar
from db.models import TRIAL_STATUSES
from resweep.paper import AXES

REFRESH_S = 5
TRIAL_COLUMNS = ["trial_id", *AXES, "status", "epochs", "final_train_err", "final_test_err", "best_test_err",
                 "params_count", "hostname", "node_ip", "attempts", "started_at", "ended_at", "error",
                 "config"]  # fmt: skip


def sweep_table(sweeps: pd.DataFrame) -> pd.DataFrame:
    """One display row per sweep: progress as trials finished of total, running, failed."""
    total = sweeps["n_trials"].astype(int)
    done = sweeps["n_terminated"].astype(int)
    commit = [
        "" if pd.isna(c) else f"{c[:10]}{' (dirty)' if d else ''}"
        for c, d in zip(sweeps["git_commit"], sweeps["git_dirty"])
    ]
    return pd.DataFrame({
        "sweep": sweeps["name"],
        "status": sweeps["status"],
        "progress": [d / t if t else 0.0 for d, t in zip(done, total)],
        "finished": [f"{d} of {t}" for d, t in zip(done, total)],
        "running": sweeps["n_running"].astype(int),
        "pending": sweeps["n_pending"].astype(int),
        "failed": sweeps["n_error"].astype(int),
        "stopped": sweeps["n_stopped"].astype(int),
        "started": sweeps["created_at"],
        "ended": sweeps["finished_at"],
        "git commit": commit,
    })  # fmt: skip


@st.fragment(run_every=REFRESH_S)
def live(selection: sidebar.Selection) -> None:
    sweeps = cached.sweeps(selection.url)
    if sweeps.empty:
        st.info(sidebar.no_sweeps_message(selection.url))
        return
    st.dataframe(
        sweep_table(sweeps), hide_index=True,
        column_config={
            "progress": st.column_config.ProgressColumn(
                "progress", help="Trials finished (terminated) of all trials", format="percent",
                min_value=0.0, max_value=1.0,
            ),
            "started": st.column_config.DatetimeColumn("started", format="YYYY-MM-DD HH:mm"),
            "ended": st.column_config.DatetimeColumn("ended", format="YYYY-MM-DD HH:mm"),
        },
    )  # fmt: skip
    if selection.sweep is None:
        return
    trials = cached.trials(selection.url, selection.sweep, selection.sql_filters())
    st.subheader(f"Trials of {selection.sweep}")
    if trials.empty:
        st.warning(f"No trial of sweep **{selection.sweep}** passes the filters in the sidebar.")
        return
    counts = trials["status"].value_counts()
    st.caption(" · ".join(f"{counts[s]} {s}" for s in TRIAL_STATUSES if s in counts) + f" · {len(trials)} shown")
    shown = trials[TRIAL_COLUMNS].copy()
    for col in ("final_train_err", "final_test_err", "best_test_err"):
        shown[col] = shown[col].astype(float) * 100
    st.dataframe(
        shown, hide_index=True,
        column_config={
            c: st.column_config.NumberColumn(c.replace("_err", " err (%)"), format="%.2f")
            for c in ("final_train_err", "final_test_err", "best_test_err")
        },
    )  # fmt: skip


st.title("Sweeps")
st.caption(f"Refreshes every {REFRESH_S} s while the page is open.")
live(sidebar.current())
