"""The shared sidebar: the database in use, the sweep, and filters on the grid axes.

Every choice is a widget bound to the URL query string (`?sweep=...&depth=20&depth=56`), so
a view is shared by sharing its link. The router draws the sidebar once per run and leaves the
resulting `Selection` in the session state, where the pages pick it up with `current()`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd
import streamlit as st

from dashboard import cached
from resweep.paper import AXES

SELECTION_KEY = "_resweep_selection"


@dataclass(frozen=True)
class Selection:
    """What the sidebar selects: a sweep of one database, and per axis the values kept
    (an axis with no values chosen keeps every value)."""

    url: str
    sweep: str | None = None
    filters: dict[str, tuple] = field(default_factory=dict)

    def sql_filters(self) -> tuple[tuple[str, tuple], ...]:
        """The filters as `cached.trials` takes them (applied in SQL)."""
        return tuple((axis, tuple(values)) for axis, values in sorted(self.filters.items()) if values)

    def apply(self, trials: pd.DataFrame) -> pd.DataFrame:
        """The trials that pass every filter."""
        keep = pd.Series(True, index=trials.index)
        for axis, values in self.filters.items():
            if values:
                keep &= trials[axis].isin(values)
        return trials[keep]


def draw(url: str) -> Selection:
    """Draw the sidebar and return the selection (raises StoreError if the database cannot
    be read)."""
    sidebar = st.sidebar
    sidebar.caption("Database")
    sidebar.code(cached.shown_url(url), language=None, wrap_lines=True)
    sweeps = cached.sweeps(url)
    if sweeps.empty:
        return Selection(url)
    sweep = sidebar.selectbox(
        "Sweep", sweeps["name"].tolist(), key="sweep", bind="query-params",
        help="Newest first. The selection is part of the page's URL: share the link to share the view.",
    )  # fmt: skip
    values = cached.axis_values(url, sweep)
    sidebar.caption("Filters (none chosen: all)")
    filters = {}
    for axis in AXES:
        options = values[axis]
        filters[axis] = tuple(
            sidebar.multiselect(axis, options, key=axis, bind="query-params", placeholder="all")
        )
    return Selection(url, sweep, filters)


def remember(selection: Selection) -> None:
    st.session_state[SELECTION_KEY] = selection


def current() -> Selection:
    """The selection the router's sidebar made in this run."""
    return st.session_state[SELECTION_KEY]


def selected_trials(selection: Selection) -> pd.DataFrame:
    """The selected sweep's trials that pass the filters; stops the page with a message when
    there is no sweep or no trial to show."""
    if selection.sweep is None:
        st.info(no_sweeps_message(selection.url))
        st.stop()
    trials = cached.trials(selection.url, selection.sweep, selection.sql_filters())
    if trials.empty:
        st.warning(f"No trial of sweep **{selection.sweep}** passes the filters in the sidebar.")
        st.stop()
    return trials


def no_sweeps_message(url: str) -> str:
    return (
        f"No sweeps in `{cached.shown_url(url)}` yet. Launch one with "
        f"`python -m orchestrator launch sweeps/NAME.yaml --db {cached.shown_url(url)}`; "
        "this page shows it as soon as it starts."
    )


def no_epoch_message(sweep: str, what: str) -> str:
    return (
        f"No trial of sweep **{sweep}** (within the filters) has finished an epoch yet, so there "
        f"are no {what} to show. They appear here after the first epoch; the Sweeps page shows "
        "the trials' progress."
    )
