"""Sweeps: every sweep with its status and progress, and the selected sweep's trials; live.

While any sweep runs, the tables redraw themselves every few seconds (a Streamlit fragment), so
a running sweep's progress moves without a reload; they stop when none runs. A click on a trial
opens its page.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard import cached, sidebar
from db.models import TRIAL_STATUSES
from resweep.paper import AXES

REFRESH_S = sidebar.LIVE_S
TRIAL_COLUMNS = ["trial_id", "trial_key", *AXES, "status", "epochs", "final_train_err", "final_test_err", "best_test_err",
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
        "finished": [f"{d} of {t}" if t else "no trials yet" for d, t in zip(done, total)],
        "running": sweeps["n_running"].astype(int),
        "pending": sweeps["n_pending"].astype(int),
        "failed": sweeps["n_error"].astype(int),
        "stopped": sweeps["n_stopped"].astype(int),
        "started": [_when(t) for t in sweeps["created_at"]],
        "ended": [_when(t) for t in sweeps["finished_at"]],  # empty while it runs
        "git commit": commit,
    })  # fmt: skip


def _when(value) -> str:
    return "" if value is None or pd.isna(value) else pd.Timestamp(value).strftime("%Y-%m-%d %H:%M")


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
                min_value=0.0, max_value=1.0, color="green",
            ),
            "started": st.column_config.TextColumn("started (UTC)"),
            "ended": st.column_config.TextColumn("ended (UTC)"),
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
    st.caption(" · ".join(f"{counts[s]} {s}" for s in TRIAL_STATUSES if s in counts) + f" · {len(trials)} shown"
               + "".join(f" · {c} {trials[c].iloc[0]}" for c in ("dataset", "model") if trials[c].nunique() == 1))
    same = [c for c in ("dataset", "model") if trials[c].nunique() == 1]  # said once, in the caption
    shown = trials[[c for c in TRIAL_COLUMNS if c not in same]].copy()
    for col in ("final_train_err", "final_test_err", "best_test_err"):
        shown[col] = shown[col].astype(float) * 100
    picked = st.dataframe(
        shown, hide_index=True, key="trial_rows", on_select="rerun", selection_mode="single-row",
        column_config={
            c: st.column_config.NumberColumn(c.replace("_err", " err (%)"), format="%.2f")
            for c in ("final_train_err", "final_test_err", "best_test_err")
        },
    )  # fmt: skip
    st.caption("Click a row to open the trial's page.")
    sidebar.open_trial(picked, shown, selection.sweep)


st.title("Sweeps")
selection = sidebar.current()
running = bool((cached.sweeps(selection.url)["status"] == sidebar.RUNNING).any())
st.caption(f"Refreshes every {REFRESH_S} s while a sweep runs." if running else "No sweep is running.")
st.fragment(run_every=REFRESH_S if running else None)(live)(selection)
