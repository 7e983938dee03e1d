"""The import map of DESIGN.md ("Data flow and module map"), checked over the source tree.

Every `import` statement of the five packages is read with `ast` (those inside functions too:
a lazy import is still a dependency). The rules:
- a package imports only packages below it: resweep < trainers, db (side by side, neither
  imports the other) < orchestrator < dashboard;
- torch only under trainers/; ray only in orchestrator/ and trainers/trainable.py; streamlit only
  under dashboard/; SQL (sqlalchemy, alembic, psycopg) only under db/.

What the tree does today against these rules is listed in KNOWN, each with why; the test fails
on anything new, and also on an entry that no longer happens, so the list stays true.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAYER = {"resweep": 0, "trainers": 1, "db": 1, "orchestrator": 2, "dashboard": 3}
SQL = ("sqlalchemy", "alembic", "psycopg")


def allowed_third_party(path: str, top: str) -> bool:
    package = path.split("/", 1)[0]
    if top in ("torch", "torchvision"):
        return package == "trainers"
    if top == "ray":
        return package == "orchestrator" or path == "trainers/trainable.py"
    if top == "streamlit":
        return package == "dashboard"
    if top in SQL:
        return package == "db"
    return True


# (file, imported module) -> why it is there. Keep each reason true; fix rather than add.
KNOWN = {
    # DESIGN.md's stated exception: the notebook API's front door. resweep/__init__.py imports
    # this module only inside resweep.open() (test below), so `import resweep` stays light.
    ("resweep/results.py", "db"): "resweep.open's facade reads through db.queries",
    ("resweep/results.py", "db.engine"): "resweep.open's facade opens the database",
    ("resweep/results.py", "trainers.restore"): "Results.model() loads a trained network (torch)",
}
# Naming the Engine type that db's functions take and return, in annotations, uses no SQL: a
# module holding an engine from db.engine may import the name from where SQLAlchemy defines it.
ENGINE_TYPE = ("sqlalchemy.engine", "Engine")


def imports(path: Path) -> list[tuple[str, list[str]]]:
    """(module, names imported from it) for every absolute import in the file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.module, [alias.name for alias in node.names]))
    return found


def violations() -> set[tuple[str, str]]:
    found = set()
    for package in LAYER:
        for file in sorted((ROOT / package).rglob("*.py")):
            path = file.relative_to(ROOT).as_posix()
            for module, names in imports(file):
                top = module.split(".")[0]
                if top == package:
                    continue
                if top in LAYER:
                    if LAYER[top] >= LAYER[package]:
                        found.add((path, module))
                elif not allowed_third_party(path, top) and (module, names) != (ENGINE_TYPE[0], [ENGINE_TYPE[1]]):
                    found.add((path, module))
    return found


def test_the_source_tree_follows_the_import_map():
    found = violations()
    new = sorted(found - set(KNOWN))
    gone = sorted(set(KNOWN) - found)
    assert not new, f"imports against DESIGN.md's module map: {new}"
    assert not gone, f"fixed, so delete from KNOWN in tests/test_import_map.py: {gone}"


def test_import_resweep_does_not_load_the_database_layer():
    """What makes resweep/results.py's entries in KNOWN acceptable: resweep/__init__.py imports
    it (and db, trainers) only inside a function or under TYPE_CHECKING, never when imported."""
    tree = ast.parse((ROOT / "resweep" / "__init__.py").read_text())
    module_level = {alias.name if isinstance(node, ast.Import) else f"{node.module}.{alias.name}"
                    for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))
                    for alias in node.names}
    assert not {m for m in module_level if m.split(".")[0] in ("db", "trainers") or m.startswith("resweep.results")}


def test_the_check_catches_a_wrong_way_import(tmp_path, monkeypatch):
    """The checker itself: a trainers module importing the orchestrator, a db module importing
    torch, and a dashboard module importing sqlalchemy are each reported."""
    for package, text in (("trainers", "from orchestrator import spec\n"), ("db", "import torch\n"),
                          ("dashboard", "def f():\n    import sqlalchemy\n"), ("orchestrator", "")):
        (tmp_path / package).mkdir()
        (tmp_path / package / "bad.py").write_text(text)
    for package in ("resweep",):
        (tmp_path / package).mkdir()
    monkeypatch.setattr(__import__(__name__, fromlist=["ROOT"]), "ROOT", tmp_path)
    assert violations() == {("trainers/bad.py", "orchestrator"), ("db/bad.py", "torch"),
                            ("dashboard/bad.py", "sqlalchemy")}
