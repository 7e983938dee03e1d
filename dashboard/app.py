"""resweep's dashboard: `streamlit run dashboard/app.py` (or `python -m orchestrator dashboard`).

The router: it lists the pages, draws the shared sidebar (database, sweep, filters) and runs the
page the URL names. The database is $RESWEEP_DB, else sqlite:///resweep.db. A database that
cannot be read (missing, unreachable, schema behind or ahead of the code) is reported on the page
in one line with what to do, never as a traceback.
"""

from __future__ import annotations

import sys
from pathlib import Path

import streamlit as st

try:
    import dashboard  # noqa: F401
except ImportError:  # run from a clone that was not pip-installed: the repo root is our parent
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dashboard import cached, sidebar  # noqa: E402
from db.errors import StoreError  # noqa: E402

# Not `pages/`: Streamlit treats a pages/ folder beside the entrypoint as an old-style multipage
# app until st.navigation first runs in the process, so a shared link to /curves opened first
# after a restart would run the page without this router.
VIEWS = Path(__file__).resolve().parent / "views"
CHART_PAGES = {"curves", "grid", "layers", "search", "trial"}  # url paths of the pages that draw Plotly charts

# The icon ships with the package: a Material icon here would be fetched from a font host.
st.set_page_config(page_title="resweep", page_icon=Path(__file__).resolve().parent / "icon.png", layout="wide")
page = st.navigation(
    [
        st.Page(VIEWS / "sweeps.py", title="Sweeps", icon=":material/list_alt:", url_path="sweeps", default=True),
        st.Page(VIEWS / "curves.py", title="Curves", icon=":material/show_chart:", url_path="curves"),
        st.Page(VIEWS / "grid.py", title="Grid", icon=":material/grid_on:", url_path="grid"),
        st.Page(VIEWS / "layers.py", title="Layer responses", icon=":material/stacked_bar_chart:", url_path="layers"),
        st.Page(VIEWS / "search.py", title="Search", icon=":material/tune:", url_path="search"),
        st.Page(VIEWS / "trial.py", title="Trial", icon=":material/science:", url_path="trial"),
        st.Page(VIEWS / "sql.py", title="SQL", icon=":material/terminal:", url_path="sql"),
    ]
)

if page.url_path in CHART_PAGES:
    sidebar.early_chart()  # so that a first visit's browser loads Plotly while the run reads
try:
    url = cached.database_url()
    sidebar.remember(sidebar.draw(url))
    page.run()
except StoreError as exc:
    st.error(f"**Cannot read the database.** {exc}", icon=":material/database:")
sidebar.drop_early_chart()
