"""The dashboard's only door to the database, and the only module that caches.

The engine is a cached resource (one pool per database URL, shared by every browser session);
query results are cached data with a short time-to-live, so a page redrawn for a widget change
costs no query while a running sweep still shows new epochs within seconds. Every read is a
`db.queries` function; the SQL page's user statement goes through `db.readonly`, uncached.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st
from sqlalchemy.engine import Engine

from db import queries, readonly
from db.engine import get_engine, redact, resolve_url

TTL_S = 5  # how stale a cached result may be: a running sweep reports an epoch every few seconds
LIVE_TTL_S = 2  # the Sweeps page refreshes itself; its counts should move with it


def database_url() -> str:
    """The URL the dashboard reads: $RESWEEP_DB, else sqlite:///resweep.db (password kept)."""
    return resolve_url(None)


def shown_url(url: str) -> str:
    """The URL as the page shows it: password hidden."""
    return redact(url)


@st.cache_resource(show_spinner=False)
def engine(url: str) -> Engine:
    """The engine for `url`, opened once; never creates a database (a reader should not).

    Raises StoreError (not cached) for a missing, unreachable, foreign, old or newer database.
    """
    return get_engine(url, create=False)


@st.cache_data(ttl=LIVE_TTL_S, show_spinner=False)
def sweeps(url: str) -> pd.DataFrame:
    """Every sweep, newest first, with trial counts by status."""
    return queries.sweeps(engine(url))


@st.cache_data(ttl=TTL_S, show_spinner=False)
def trials(url: str, sweep: str) -> pd.DataFrame:
    """The trials of a sweep with their axes and final results (no config column)."""
    return queries.trials(engine(url), sweep).drop(columns=["config"])


@st.cache_data(ttl=TTL_S, show_spinner=False)
def curves(url: str, trial_ids: tuple[int, ...], names: tuple[str, ...]) -> pd.DataFrame:
    """Long-format metric curves (trial_id, epoch, name, value) of the given trials."""
    return queries.curves(engine(url), trial_ids, names)


@st.cache_data(ttl=TTL_S, show_spinner=False)
def probed_epochs(url: str, trial_ids: tuple[int, ...]) -> list[int]:
    """The epochs at which any of the trials recorded layer responses, ascending."""
    return queries.probed_epochs(engine(url), trial_ids)


@st.cache_data(ttl=TTL_S, show_spinner=False)
def layer_stats(url: str, trial_ids: tuple[int, ...], epoch: int | None) -> pd.DataFrame:
    """Layer response records of the trials at `epoch` (None: each trial's last probe)."""
    return queries.layer_stats(engine(url), trial_ids, epoch)


@st.cache_data(ttl=60, show_spinner=False)
def relations(url: str) -> pd.DataFrame:
    """The tables and views a user can query, with their columns."""
    return queries.relations(engine(url))


def run_sql(url: str, sql: str, limit: int, timeout_s: float) -> readonly.QueryResult:
    """The user's statement through the read-only path of `python -m orchestrator query`.

    Not cached: a user who presses Run again wants the database as it is now.
    """
    return readonly.run_readonly(url, sql, limit, timeout_s=timeout_s)
