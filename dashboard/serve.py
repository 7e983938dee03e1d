"""Serve the dashboard: `python -m dashboard.serve [streamlit run options]`.

This is what `python -m orchestrator dashboard` starts: `streamlit run dashboard/app.py` with the
same options, after importing what the app's pages import (pandas, plotly, SQLAlchemy, Optuna,
the queries) in the server process, before it listens. Plain `streamlit run` imports them in the
first visitor's script run instead, so the first page opened after a (re)start waited 1-2 s
longer than any later one for imports alone (docs/performance.md, "The dashboard at 20,000
trials"). The list is read from the app's and the pages' own import statements, so it follows
them.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import sys
from pathlib import Path

APP = Path(__file__).resolve().parent / "app.py"
VIEWS = APP.parent / "views"


def page_imports() -> list[str]:
    """The modules the app and its pages import at their top level, in file order."""
    modules: dict[str, None] = {}
    for path in [APP, *sorted(VIEWS.glob("*.py"))]:
        for node in ast.parse(path.read_text(), str(path)).body:
            if isinstance(node, ast.Import):
                modules.update(dict.fromkeys(alias.name for alias in node.names))
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level and node.module != "__future__":
                modules[node.module] = None
                for alias in node.names:  # `from dashboard import cached`: cached is a module
                    modules[f"{node.module}.{alias.name}"] = None
    return list(modules)


def preload() -> list[str]:
    """Import every module the pages import but the dashboard's own (names that are not modules
    are skipped); returns those imported. The dashboard's modules declare Streamlit caches, which
    want the runtime that `streamlit run` starts: they are light, and load in the first run. Then walk the stack once: Streamlit's first element of the first run asks
    `inspect.stack()` whether it runs in a REPL, which maps every loaded module to its file the
    first time (0.3-0.6 s with the pages' libraries loaded); done here, that map is kept."""
    imported = []
    for name in page_imports():
        if name.split(".")[0] == "dashboard":
            continue
        try:
            importlib.import_module(name)
        except ImportError:  # `from dashboard import cached`'s class or function names, not modules
            continue
        imported.append(name)
    inspect.stack()
    return imported


def main(argv: list[str] | None = None) -> None:
    """Preload, then hand over to `streamlit run dashboard/app.py ARGV...` in this process."""
    from streamlit.web import cli

    preload()
    sys.argv = ["streamlit", "run", str(APP), *(sys.argv[1:] if argv is None else argv)]
    cli.main(prog_name="streamlit")


if __name__ == "__main__":
    main()
