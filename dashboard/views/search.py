"""Search: for a sweep that searches hyperparameters (`search.space`), the views optuna-dashboard
users rely on, drawn from the Optuna study kept in the same database (db.optuna_journal):
hyperparameter importance (Optuna's own evaluator), parallel coordinates (Optuna's plot), a slice
plot per hyperparameter and the study's trials; a click on a point or a row opens that trial.
"""

from __future__ import annotations

import json
import math

import numpy as np
import optuna
import pandas as pd
import plotly.graph_objects as go
import streamlit as st
import yaml

from dashboard import cached, sidebar

st.title("Search")
selection = sidebar.current()
if selection.sweep is None:
    sidebar.selected_trials(selection)  # says there is no sweep, and stops
spec = yaml.safe_load(cached.sweep_spec(selection.url, selection.sweep) or "") or {}
search = spec.get("search") or {}
space = list((search.get("space") or {}).keys())
if not space:
    st.info(f"Sweep **{selection.sweep}** searches no hyperparameters (its file has no `search.space`); "
            "the Grid and Curves pages compare its grid points. sweeps/tune-lr.yaml is a search.")
    sidebar.stop()
trials = sidebar.selected_trials(selection)  # after the spec: a sweep that searches nothing reads none
metric, mode = search.get("metric", "val_err"), search.get("mode", "min")
study = cached.study(selection.url, selection.sweep, cached.progress(selection.url, selection.sweep))
done = [] if study is None else [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
if not done:
    st.info(f"The Optuna study of **{selection.sweep}** has no finished trial yet; its views appear after the first.")
    sidebar.stop()


def _trial_ids(study_trials: list, ours: pd.DataFrame) -> list[int | None]:
    """The resweep trial each Optuna trial ran as: the one whose config holds its parameters."""
    configs = [(int(i), {**json.loads(c or "{}"), **{a: getattr(r, a) for a in ("depth", "block", "shortcut", "seed")}})
               for i, c, r in zip(ours["trial_id"], ours["config"], ours.itertuples())]
    found = []
    for t in study_trials:
        match = None
        for trial_id, config in configs:
            if all(_same(config.get(k), v) for k, v in t.params.items()):
                match = trial_id
                break
        found.append(match)
    return found


def _same(a, b) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return math.isclose(float(a), float(b), rel_tol=1e-9)
    return str(a) == str(b)


table = pd.DataFrame([{"optuna trial": t.number, metric: t.value, **t.params} for t in done])
table.insert(1, "trial_id", _trial_ids(done, trials))
st.caption(f"{len(done)} finished trials of the Optuna study; objective: {metric} ({mode}imised).")

st.subheader("Hyperparameter importance")
if len(done) >= 2:
    try:
        moved = [p for p in table.columns[3:] if table[p].nunique() > 1]  # a grid axis with one value says nothing
        importances = optuna.importance.get_param_importances(study, params=moved)
        fig = go.Figure(go.Bar(x=list(importances.values())[::-1], y=list(importances.keys())[::-1], orientation="h",
                               hovertemplate="%{y}: %{x:.3f}<extra></extra>"))
        fig.update_layout(height=120 + 40 * len(importances), margin={"l": 110, "r": 20, "t": 10, "b": 40},
                          xaxis_title=f"importance for {metric} (fANOVA, Optuna's default evaluator)")
        st.plotly_chart(fig)
    except (ValueError, RuntimeError) as exc:  # e.g. every trial with the same parameters
        st.caption(f"Optuna cannot evaluate the importances yet: {exc}")
else:
    st.caption("Importance needs two finished trials.")

st.subheader("Parallel coordinates")
parallel = optuna.visualization.plot_parallel_coordinate(study, params=[p for p in space if p in table])
parallel.update_layout(height=420, margin={"l": 60, "r": 60, "t": 40, "b": 30}, title=None)
st.plotly_chart(parallel)

st.subheader("Slice plots")
columns = st.columns(min(3, len(space)))
logs = {k for k, v in (search.get("space") or {}).items() if isinstance(v, dict) and any("log" in key for key in v)}
for i, param in enumerate(p for p in space if p in table):
    fig = go.Figure(go.Scatter(
        x=table[param], y=table[metric] * (100 if metric.endswith("_err") else 1), mode="markers",
        marker={"size": 9, "color": table["optuna trial"], "colorscale": "Blues", "showscale": False,
                "line": {"width": 1, "color": "#333"}},
        customdata=np.stack([table["optuna trial"], table["trial_id"].fillna(-1)], axis=-1),
        hovertemplate=f"optuna trial %{{customdata[0]}} (trial %{{customdata[1]}})<br>{param} %{{x:.4g}}: %{{y:.3g}}<extra></extra>",
    ))  # fmt: skip
    fig.update_layout(height=320, margin={"l": 55, "r": 10, "t": 30, "b": 45}, title={"text": param, "font": {"size": 14}},
                      xaxis={"title": {"text": param}, "type": "log" if param in logs else "linear"},
                      yaxis={"title": {"text": metric + (" (%)" if metric.endswith("_err") else "")}})
    picked = columns[i % len(columns)].plotly_chart(fig, key=f"slice_{param}", on_select="rerun", selection_mode="points")
    points = (picked or {}).get("selection", {}).get("points", []) if picked else []
    if points:
        trial_id = int(points[0]["customdata"][1])
        if trial_id >= 0:
            st.switch_page(sidebar.TRIAL_PAGE, query_params={"sweep": selection.sweep, "trial": str(trial_id)})
st.caption("Darker points are later trials. Click a point to open its trial.")

st.subheader("The study's trials")
best = table.sort_values(metric, ascending=mode == "min").reset_index(drop=True)
picked = st.dataframe(best, hide_index=True, key="search_rows", on_select="rerun", selection_mode="single-row",
                      column_config={"trial_id": st.column_config.NumberColumn("trial", format="%d")})
st.caption("Best first. Click a row to open the trial's page.")
sidebar.open_trial(picked, best, selection.sweep)
