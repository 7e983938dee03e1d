"""SQL: the user's own read-only query, through the same path as `python -m orchestrator query`
(db.readonly: one statement as the database parses it, a read-only transaction as the role
resweep_reader on PostgreSQL or a read-only file on SQLite, row and byte caps, a time limit;
see docs/security.md for what that guarantees to whoever can open the dashboard). Off where the
dashboard listens beyond the loopback, unless asked for (orchestrator.cli.dashboard.sql_page_on)."""

from __future__ import annotations

import streamlit as st

from dashboard import cached, sidebar
from db import readonly
from db.errors import StoreError
from orchestrator.cli.dashboard import SQL_PAGE_ENV, sql_page_on

DEFAULT_SQL = "SELECT * FROM grid_results ORDER BY sweep, dataset, model, block, shortcut, depth"
RESULT_KEY = "_resweep_sql_result"
LINKED_KEY = "_resweep_sql_linked"  # the statement this session last took from, or wrote into, the URL

st.title("SQL")
if not sql_page_on(st.get_option("server.address")):
    # One read-only statement can still take the memory of one PostgreSQL expression, which no
    # server setting bounds (docs/security.md): not for whoever can reach a dashboard with no login.
    st.info("The SQL page is off: this dashboard listens beyond this machine. Serve it with "
            "`python -m orchestrator dashboard --sql-page` (or "
            f"{SQL_PAGE_ENV}=on for `streamlit run`), or use `python -m orchestrator query` here.",
            icon=":material/lock:")
    sidebar.stop()
selection = sidebar.current()
query_col, schema_col = st.columns([3, 1])

with schema_col:
    st.subheader("Tables and views")
    relations = cached.relations(selection.url)
    for (name, kind), cols in relations.groupby(["relation", "kind"], sort=False):
        with st.expander(f"**{name}** · {kind}", expanded=kind == "view"):
            st.markdown("\n".join(f"- `{c}` {t.lower()}" for c, t in zip(cols["column"], cols["type"])))

# The statement is the page's state, so it lives in the URL (`?sql=`): a link opens it, and runs it,
# as the page runs its default statement on first load.
linked = st.query_params.get("sql")
if linked and linked != st.session_state.get(LINKED_KEY):
    st.session_state["sql"] = st.session_state[LINKED_KEY] = linked
    st.session_state.pop(RESULT_KEY, None)

with query_col:
    with st.form("sql_form", border=False):
        sql = st.text_area("Read-only SQL (one statement)", DEFAULT_SQL, height=140, key="sql")
        cap_col, time_col, run_col = st.columns([1, 1, 1], vertical_alignment="bottom")
        limit = cap_col.number_input("Row cap", min_value=1, max_value=readonly.MAX_LIMIT, value=readonly.DEFAULT_LIMIT,
                                     step=100, key="limit")
        timeout_s = time_col.number_input("Time limit (s)", min_value=1, max_value=120, value=10, key="timeout")
        submitted = run_col.form_submit_button("Run", type="primary", icon=":material/play_arrow:")

    if submitted:
        st.query_params["sql"] = st.session_state[LINKED_KEY] = sql
    if submitted or RESULT_KEY not in st.session_state:
        try:
            st.session_state[RESULT_KEY] = cached.run_sql(selection.url, sql, int(limit), float(timeout_s))
        except StoreError as exc:  # refused statement, SQL error, timeout: the user's to fix
            st.session_state[RESULT_KEY] = exc
    result = st.session_state[RESULT_KEY]
    if isinstance(result, StoreError):
        # db.readonly speaks for the `query` command; here the reader is on this page
        st.error(str(result).replace("the query command", "this page"), icon=":material/block:")
    else:
        frame = result.to_frame()
        st.dataframe(frame, hide_index=True)
        more = f", cut at the row cap of {result.limit}" if result.truncated else ""
        st.caption(f"{len(frame)} rows{more}.")
