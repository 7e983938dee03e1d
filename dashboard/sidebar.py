"""The shared sidebar: the database in use, the sweep (and sweeps to compare it with), filters
on the grid axes, and the watch that keeps every page live.

Every choice is part of the URL query string (`?sweep=...&depth=20&depth=56`; dashboard.state),
so a view is shared by sharing its link. The router draws the sidebar once per run and leaves the
resulting `Selection` in the session state, where the pages pick it up with `current()`.

Live pages: a fragment in the sidebar looks at the sweeps every few seconds while one of them
runs (and now and then otherwise, to notice a newly launched sweep). When the sweep list or a
shown sweep moved (a trial started, reported an epoch, ended), it reruns the whole page, so every
page follows a running sweep and none redraws while nothing changed.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import NoReturn

import pandas as pd
import streamlit as st

from dashboard import cached, choices, figures, state
from resweep.paper import AXES

SELECTION_KEY = "_resweep_selection"
EARLY_KEY = "_resweep_early_chart"
RUN_KEY, WATCHED_KEY = "_resweep_run", "_resweep_watched"
LIVE_S = 5  # how often a page looks for news while a sweep runs
IDLE_S = 10  # how often it looks for a newly launched sweep while none runs (one cached query)
RUNNING = "running"


@dataclass(frozen=True)
class Selection:
    """What the sidebar selects: a sweep of one database, the sweeps compared with it, and per
    axis the values kept (an axis with no values chosen keeps every value)."""

    url: str
    sweep: str | None = None
    filters: dict[str, tuple] = field(default_factory=dict)
    compared: tuple[str, ...] = ()

    @property
    def sweeps(self) -> tuple[str, ...]:
        """The sweep and those compared with it (pages that compare draw them all)."""
        return () if self.sweep is None else (self.sweep, *self.compared)

    def sql_filters(self) -> tuple[tuple[str, tuple], ...]:
        """The filters as `cached.trials` takes them (applied in SQL)."""
        return tuple((axis, tuple(values)) for axis, values in sorted(self.filters.items()) if values)


def draw(url: str) -> Selection:
    """Draw the sidebar and return the selection (raises StoreError if the database cannot
    be read)."""
    sidebar = st.sidebar
    sidebar.caption("Database")
    # inline code, not st.code: a code block makes every page's first visit load a 1.5 MB highlighter
    sidebar.markdown(f"``{cached.shown_url(url)}``")
    sweeps = cached.sweeps(url)
    st.session_state[RUN_KEY] = uuid.uuid4().hex  # a full run: the watch records what it saw
    if sweeps.empty:
        _watch(url, ())
        return Selection(url)
    names = sweeps["name"].tolist()
    sweep = state.choose(
        sidebar.selectbox, "Sweep", names, key="sweep", default=_default_sweep(url, names),
        help="Newest first. Every choice on a page is part of its URL: share the link to share the view.",
    )  # fmt: skip
    compared = state.choose(
        sidebar.multiselect, "Compare with", [n for n in names if n != sweep], key="compare", default=[],
        many=True, placeholder="no other sweep",
        help="Curves and Grid draw these sweeps beside the chosen one, each net labelled with its sweep.",
    )  # fmt: skip
    values = cached.axis_values(url, sweep)
    for other in compared:
        for axis, more in cached.axis_values(url, other).items():
            values[axis] = sorted(set(values[axis]) | set(more), key=str)
    sidebar.caption("Filters (none chosen: all)")
    filters = {}
    for axis in AXES:
        filters[axis] = tuple(state.choose(sidebar.multiselect, axis, values[axis], key=axis, default=[], many=True,
                                           placeholder="all"))
    shown = (sweep, *compared)
    _watch(url, shown)
    return Selection(url, sweep, filters, tuple(compared))


def _default_sweep(url: str, names: list[str]) -> str:
    """The newest sweep, or the sweep of the trial a link names (/trial?trial=12)."""
    trial = state.linked("trial")
    if trial is not None and trial.isdigit():
        found = cached.trial(url, int(trial))
        if not found.empty and found["sweep"].iloc[0] in names:
            return found["sweep"].iloc[0]
    return names[0]


def _signature(sweeps: pd.DataFrame, shown: tuple[str, ...]) -> tuple:
    """What a page must follow: the sweep list, and how far each shown sweep has come."""
    rows = sweeps[sweeps["name"].isin(shown)]
    moved = rows[["name", "status", "n_trials", "n_pending", "n_running", "n_terminated", "n_error", "n_stopped",
                  "n_epochs"]]  # fmt: skip
    return tuple(sweeps["name"]), tuple(map(tuple, moved.astype(str).to_numpy()))


def _watch(url: str, shown: tuple[str, ...]) -> None:
    sweeps = cached.sweeps(url)
    live = sweeps.loc[sweeps["name"].isin(shown) & (sweeps["status"] == RUNNING), "name"].tolist()
    any_running = bool((sweeps["status"] == RUNNING).any())
    every = LIVE_S if any_running else IDLE_S
    if live:
        st.sidebar.caption(f":material/sync: Live: {', '.join(live)} is running; this page follows it every {LIVE_S} s.")
    # Outside the sidebar: a fragment run in the sidebar would close a filter's open menu there.
    with st.container(height=1, border=False):
        st.fragment(run_every=every)(_look)(url, shown)


def _look(url: str, shown: tuple[str, ...]) -> None:
    """Rerun the page when what it shows moved (a fragment: runs alone every few seconds)."""
    seen = _signature(cached.sweeps(url), shown)
    run = st.session_state.get(RUN_KEY)
    before = st.session_state.get(WATCHED_KEY)
    st.session_state[WATCHED_KEY] = (run, seen)
    if before is not None and before[0] == run and before[1] != seen:
        st.rerun()  # the whole page, with the sweep list in the sidebar


def early_chart() -> None:
    """Draw an empty chart 10 pixels high now, before the page reads anything, and keep its slot
    until `drop_early_chart`. A first visit's browser fetches Plotly (a 4.7 MB script: 1.5-3 s to
    load and start on two busy cores) only when a run sends its first chart: sent first, it loads
    while the run reads its data. Every later page finds Plotly loaded."""
    slot = st.empty()
    slot.plotly_chart(figures.placeholder(), config={"displayModeBar": False, "staticPlot": True})
    st.session_state[EARLY_KEY] = slot


def drop_early_chart() -> None:
    """Take the early chart away (if this run drew one)."""
    slot = st.session_state.pop(EARLY_KEY, None)
    if slot is not None:
        slot.empty()


def stop() -> NoReturn:
    """End the page's run here (`st.stop`), the early chart taken away first: once a stop is
    asked for, the run can draw nothing more."""
    drop_early_chart()
    st.stop()
    raise AssertionError("unreachable: st.stop() ends the run")  # for type checkers


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
        stop()
    trials = cached.trials(selection.url, selection.sweep, selection.sql_filters())
    if trials.empty:
        st.warning(f"No trial of sweep **{selection.sweep}** passes the filters in the sidebar.")
        stop()
    return trials


def compared_trials(selection: Selection) -> pd.DataFrame:
    """The trials of the sweep and of those compared with it that pass the filters, with a
    `sweep` column; stops the page with a message when there is none."""
    selected_trials(selection)  # the messages for no sweep, no trial
    frames = [cached.trials(selection.url, name, selection.sql_filters()).assign(sweep=name)
              for name in selection.sweeps]
    return pd.concat(frames, ignore_index=True)


def pooled_trials(trials: pd.DataFrame, where=st) -> tuple[pd.DataFrame, str]:
    """The trials a pooling page reads (dashboard.choices.drawn), and a sentence saying which:
    where some net has more trials than its share of choices.DRAWN, a control (`where`, in the
    URL as ?pool=) lets the reader pool all of them instead of an even spread over each net's
    seeds; the sentence is empty when every trial is read."""
    cap = choices.per_net(trials)
    sample = choices.drawn(trials, cap)
    if len(sample) == len(trials):
        return trials, ""
    pool = state.choose(
        where.segmented_control, "Trials pooled", [choices.POOL_SAMPLE, choices.POOL_ALL], key="pool",
        default=choices.POOL_SAMPLE,
        help=f"spread: up to {cap} trials of each net, evenly over its seeds ({len(sample):,} of {len(trials):,}); "
             "all: every trial, which reads every value (slow the first time on a big sweep).",
    )  # fmt: skip
    if pool == choices.POOL_ALL:
        return trials, f"All {len(trials):,} trials pooled. "
    return sample, (
        f"{len(sample):,} of the {len(trials):,} trials pooled: up to {cap} of each net, spread evenly over its "
        f"seeds, so {len(trials) - len(sample):,} are not drawn (choose 'all' above, or filter the seeds in the "
        "sidebar; the Grid page pools every finished trial). "
    )


TRIAL_PAGE = "views/trial.py"


def open_trial(picked, shown: pd.DataFrame, sweep: str) -> None:
    """Switch to the trial page of the row a table's selection names (`picked`: what
    st.dataframe(on_select="rerun", selection_mode="single-row") returned over `shown`, which
    has a trial_id column)."""
    rows = picked.selection.rows if picked is not None else []
    if rows and not pd.isna(shown.iloc[rows[0]]["trial_id"]):
        trial_id = int(shown.iloc[rows[0]]["trial_id"])
        st.switch_page(TRIAL_PAGE, query_params={"sweep": sweep, "trial": str(trial_id)})


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
