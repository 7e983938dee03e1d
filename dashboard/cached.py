"""The dashboard's only door to the database, and the only module that caches.

The engine is a cached resource (one pool per database URL, shared by every browser session).
The sweep list and a sweep's trials are cached data with a short time-to-live, so a page redrawn
for a widget change costs no query while a running sweep still shows new epochs within seconds.

The big reads (curves, layer responses) are keyed by content instead: the trials' ids, axes and
recorded epochs, as the short-lived trials table reports them. A trial that records an epoch
changes the key, so those results are never stale and never re-read while nothing changed. The
curves are cached per block of trials (in id order), as sums that add up across blocks: while
a sweep runs, only the blocks holding running trials are read again, never its finished trials.

Every read is a `db.queries` function; the SQL page's user statement goes through
`db.readonly`, uncached.
"""

from __future__ import annotations

import hashlib
import json

import pandas as pd
import streamlit as st
from sqlalchemy.engine import Engine

from db import queries, readonly
from db.engine import get_engine, redact, resolve_url
from resweep import pooling

TTL_S = 5  # how stale the trials table may be: a running sweep reports an epoch every few seconds
LIVE_TTL_S = 2  # the Sweeps page refreshes itself; its counts should move with it
KEPT_S = 3600  # content-keyed entries cannot go stale; the limit only frees memory
BLOCK = 256  # trials per cached block of curves
CONTENT = ["trial_id", "epochs", *pooling.GROUP_AXES]  # what content-keyed reads are keyed by


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


def trials(url: str, sweep: str, filters: tuple[tuple[str, tuple], ...] = ()) -> pd.DataFrame:
    """The trials of a sweep with their axes and final results, and `config` as JSON text of the
    hyperparameters besides the axes (hashable, unlike the dict); `filters` ((axis, values) pairs,
    empty values: no filter) are applied in SQL by db.queries.

    Keyed by how far the sweep has come as the sweep list (`sweeps`) reports it, so the trials
    shown are never older than the sweep list beside them, and are read again only when a trial
    of the sweep moved."""
    return _trials(url, sweep, filters, progress(url, sweep))


def progress(url: str, sweep: str) -> tuple:
    """How far `sweep` has come: its status, its trial counts by status and its recorded epochs."""
    rows = sweeps(url)
    row = rows[rows["name"] == sweep]
    columns = ["status", "n_trials", "n_pending", "n_running", "n_terminated", "n_error", "n_stopped", "n_epochs"]
    return tuple(str(v) for v in row[columns].to_numpy().ravel())


@st.cache_data(ttl=KEPT_S, max_entries=256, show_spinner=False)
def _trials(url: str, sweep: str, filters: tuple[tuple[str, tuple], ...], progress_key: tuple) -> pd.DataFrame:
    frame = queries.trials(engine(url), sweep, **{a: list(v) for a, v in filters if v})
    hyperparameters = [{k: v for k, v in (c or {}).items() if k not in queries.AXES} for c in frame["config"]]
    return frame.assign(config=[json.dumps(h) for h in hyperparameters])


def axis_values(url: str, sweep: str) -> dict[str, list]:
    """Each grid axis's values in the sweep (the sidebar's filter menus), without reading results;
    read again only when the sweep moved (`progress`), so a page of a big finished sweep does
    not pay for its 20,000 trials' axes every few seconds."""
    return _axis_values(url, sweep, progress(url, sweep))


@st.cache_data(ttl=KEPT_S, max_entries=256, show_spinner=False)
def _axis_values(url: str, sweep: str, progress_key: tuple) -> dict[str, list]:
    return queries.axis_values(engine(url), sweep)


def curve_bands(url: str, selected: pd.DataFrame, names: tuple[str, ...]) -> pd.DataFrame:
    """Mean, std and n over the seeds of each group's curves (resweep.pooling.bands_from_sums)."""
    ordered = selected[CONTENT].sort_values("trial_id", ignore_index=True)
    # blocks of BLOCK trials in id order: a sweep's new trials (higher ids) change its last block
    # only, and a spread of a big sweep's seeds (dashboard.choices.drawn) is read in few queries
    rows = pd.util.hash_pandas_object(ordered, index=False).to_numpy()
    blocks = ordered.groupby(ordered.index // BLOCK, sort=True)
    sums = [_curve_sums(url, _key(rows[i * BLOCK : (i + 1) * BLOCK]), block.reset_index(drop=True), names)
            for i, block in blocks]  # fmt: skip
    return pooling.bands_from_sums(pd.concat(sums, ignore_index=True))


def _key(row_hashes) -> str:
    """A content key from pandas' row hashes: what Streamlit would hash the frame into, at a
    fraction of the cost (its own hashing of a frame argument is the larger part of a warm page)."""
    return hashlib.blake2b(row_hashes.tobytes(), digest_size=16).hexdigest()


def _content(selected: pd.DataFrame) -> tuple[str, pd.DataFrame]:
    frame = selected[CONTENT].reset_index(drop=True)
    return _key(pd.util.hash_pandas_object(frame, index=False).to_numpy()), frame


# Arguments named with a leading underscore are left out of Streamlit's hashing: `key` stands for them.
@st.cache_data(ttl=KEPT_S, max_entries=512, show_spinner=False)
def _curve_sums(url: str, key: str, _block: pd.DataFrame, names: tuple[str, ...]) -> pd.DataFrame:
    return pooling.curve_sums(queries.curves(engine(url), _block["trial_id"], names), _block)


@st.cache_data(ttl=KEPT_S, max_entries=64, show_spinner=False)
def _probed_epochs(url: str, key: str, _selected: pd.DataFrame) -> list[int]:
    return queries.probed_epochs(engine(url), _selected["trial_id"])


def probed_epochs(url: str, selected: pd.DataFrame) -> list[int]:
    """The epochs at which any of the selected trials recorded layer responses, ascending."""
    return _probed_epochs(url, *_content(selected))


@st.cache_data(ttl=KEPT_S, max_entries=64, show_spinner=False)
def _layer_profiles(url: str, key: str, _selected: pd.DataFrame, epoch: int | None) -> tuple[pd.DataFrame, int]:
    layers = queries.layer_stats(engine(url), _selected["trial_id"], epoch)
    return pooling.layer_profiles(layers, _selected), layers["trial_id"].nunique()


def layer_profiles(url: str, selected: pd.DataFrame, epoch: int | None) -> tuple[pd.DataFrame, int]:
    """Per group and layer, the response std pooled over the seeds of the selected trials at
    `epoch` (None: each trial's last probe; resweep.pooling.layer_profiles), and how many trials
    had a probe there."""
    key, frame = _content(selected)
    return _layer_profiles(url, key, frame, epoch)


@st.cache_data(ttl=TTL_S, show_spinner=False)
def trial(url: str, trial_id: int) -> pd.DataFrame:
    """One trial with its sweep, checkpoint and results directory (db.queries.trial); `config`
    is the dict of every hyperparameter."""
    return queries.trial(engine(url), trial_id)


@st.cache_data(ttl=TTL_S, show_spinner=False)
def trial_attempts(url: str, trial_id: int) -> pd.DataFrame:
    return queries.trial_attempts(engine(url), trial_id)


@st.cache_data(ttl=KEPT_S, max_entries=64, show_spinner=False)
def trial_curves(url: str, trial_id: int, epochs: int) -> pd.DataFrame:
    """Every metric of one trial (long format); keyed by its recorded epochs."""
    return queries.curves(engine(url), [trial_id])


@st.cache_data(ttl=KEPT_S, max_entries=64, show_spinner=False)
def trial_layers(url: str, trial_id: int, epochs: int) -> pd.DataFrame:
    """Every layer record of one trial, all probed epochs."""
    frames = [queries.layer_stats(engine(url), [trial_id], e) for e in queries.probed_epochs(engine(url), [trial_id])]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=queries.LAYER_COLUMNS)


@st.cache_data(ttl=TTL_S, show_spinner=False)
def sweep_spec(url: str, sweep: str) -> str:
    """The sweep's YAML as launched."""
    row = queries.sweep(engine(url), sweep)
    return "" if row is None else row.spec


@st.cache_resource(ttl=TTL_S, max_entries=16, show_spinner=False)
def study(url: str, sweep: str, progress_key: tuple):
    """The Optuna study of an optuna sweep (db.optuna_journal), or None; read again when the
    sweep moved."""
    from db.optuna_journal import load_study

    row = queries.sweep(engine(url), sweep)
    return None if row is None else load_study(engine(url), row.id)


@st.cache_data(ttl=60, show_spinner=False)
def relations(url: str) -> pd.DataFrame:
    """The tables and views a user can query, with their columns."""
    return queries.relations(engine(url))


def run_sql(url: str, sql: str, limit: int, timeout_s: float) -> readonly.QueryResult:
    """The user's statement through the read-only path of `python -m orchestrator query`.

    Not cached: a user who presses Run again wants the database as it is now.
    """
    return readonly.run_readonly(url, sql, limit, timeout_s=timeout_s)
