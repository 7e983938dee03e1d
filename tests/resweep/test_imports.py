"""The package map (DESIGN.md): what may import what, read from the source itself."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "ray", "streamlit", "sqlalchemy")
# resweep.open's body: the one documented exception, imported by resweep.open inside the call.
FACADE = {"resweep/results.py"}


def _imports(path: Path, *, module_level_only: bool) -> set[str]:
    """Top-level package names `path` imports (everywhere, or only at module level)."""
    tree = ast.parse(path.read_text(), str(path))
    nodes = tree.body if module_level_only else list(ast.walk(tree))
    names = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def _sources(package: str) -> list[Path]:
    files = sorted((REPO / package).rglob("*.py"))
    assert files, package
    return files


def test_trainers_and_db_import_nothing_from_the_orchestrator_or_the_dashboard():
    wrong = {str(p.relative_to(REPO)): sorted(_imports(p, module_level_only=False) & {"orchestrator", "dashboard"})
             for package in ("trainers", "db") for p in _sources(package)}
    assert {k: v for k, v in wrong.items() if v} == {}


def test_trainers_and_db_do_not_import_each_other():
    wrong = {str(p.relative_to(REPO)): sorted(_imports(p, module_level_only=False) & ({"db", "trainers"} - {package}))
             for package in ("trainers", "db") for p in _sources(package)}
    assert {k: v for k, v in wrong.items() if v} == {}


def test_the_ground_floor_imports_no_heavy_library_and_nothing_above_it_at_module_level():
    above = {"trainers", "db", "orchestrator", "dashboard"}
    wrong = {str(p.relative_to(REPO)): sorted(_imports(p, module_level_only=True) & (set(HEAVY) | above))
             for p in _sources("resweep") if str(p.relative_to(REPO)) not in FACADE}
    assert {k: v for k, v in wrong.items() if v} == {}


def test_importing_the_ground_floor_loads_no_heavy_library():
    modules = [f"resweep.{p.stem}" for p in _sources("resweep")
               if p.stem != "__init__" and str(p.relative_to(REPO)) not in FACADE]
    code = (f"import sys, resweep, {', '.join(modules)}\n"
            f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert out.stdout.strip() == "[]"


def test_user_error_is_one_class_whichever_module_it_is_imported_from():
    from resweep.errors import UserError as from_orchestrator
    from resweep.errors import UserError
    from trainers.data import DatasetUnavailable

    assert from_orchestrator is UserError and issubclass(DatasetUnavailable, UserError)
