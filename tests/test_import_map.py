"""The import map of DESIGN.md ("Data flow and module map"), checked over the source tree.

Every `import` statement of the five packages is read with `ast` (those inside functions too:
a lazy import is still a dependency). The rules:
- a package imports only packages below it: resweep < trainers, db (side by side, neither
  imports the other) < orchestrator < dashboard;
- torch only under trainers/; ray only in orchestrator/ and trainers/trainable.py; streamlit only
  under dashboard/; SQL (sqlalchemy, alembic, psycopg) only under db/.

Inside orchestrator/, the four rooms: `cli/` may import every room; `cluster/` and `results/` only
`run/`'s public names; `run/` none of the others. No import cycle between modules anywhere (lazy
imports count), and no folder holds more than 16 modules side by side.

What the tree does today against these rules is listed in KNOWN, each with why; the test fails
on anything new, and also on an entry that no longer happens, so the list stays true.
"""

from __future__ import annotations

import ast
import sys
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


# orchestrator's rooms: which others each may import (DESIGN.md's module map).
ROOMS = {"cli": {"run", "cluster", "results"}, "cluster": {"run"}, "results": {"run"}, "run": set()}
MAX_MODULES_PER_FOLDER = 16


def room_violations(root: Path = ROOT) -> set[tuple[str, str]]:
    """(file, imported name) for every import of a room it may not import, or of a private name
    (leading underscore) of `run/` from another room."""
    found = set()
    for room in ROOMS:
        for file in sorted((root / "orchestrator" / room).rglob("*.py")):
            path = file.relative_to(root).as_posix()
            for module, names in imports(file):
                parts = module.split(".")
                if parts[0] != "orchestrator" or len(parts) < 2 or parts[1] == room:
                    continue
                if parts[1] not in ROOMS[room]:
                    found.add((path, module))
                elif parts[1] == "run" and any(part.startswith("_") for part in parts[2:] + names):
                    found.add((path, f"{module}:{','.join(names)}"))
    return found


def module_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """Module -> the project's modules it imports (at the top or inside functions)."""
    files = {}
    for package in LAYER:
        for file in (root / package).rglob("*.py"):
            rel = file.relative_to(root).with_suffix("")
            files[".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)] = file

    def resolve(name: str) -> str | None:
        while name and name not in files:
            name = name.rpartition(".")[0]
        return name or None

    graph = {}
    for name, file in files.items():
        targets = set()
        for module, names in imports(file):
            for target in (module, *(f"{module}.{n}" for n in names)):
                found = resolve(target)
                # importing a submodule runs its packages' __init__ first: not an edge back to them
                if found and found != name and not name.startswith(found + "."):
                    targets.add(found)
        graph[name] = targets
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 10 * len(graph)))
    try:
        for v in sorted(graph):
            if v not in index:
                visit(v)
    finally:
        sys.setrecursionlimit(limit)
    return found


def test_the_rooms_of_orchestrator_import_only_what_the_map_allows():
    assert sorted(p.name for p in (ROOT / "orchestrator").iterdir() if p.is_dir() and p.name != "__pycache__") == sorted(ROOMS)
    assert not room_violations(), f"imports across orchestrator's rooms against DESIGN.md: {sorted(room_violations())}"


def test_no_module_imports_itself_back_through_others():
    assert cycles(module_graph()) == []


def test_no_folder_holds_more_than_sixteen_modules():
    crowded = {}
    for package in LAYER:
        for folder in [ROOT / package, *(ROOT / package).rglob("*/")]:
            modules = [f for f in folder.glob("*.py") if f.name != "__init__.py"]
            if folder.name != "__pycache__" and len(modules) > MAX_MODULES_PER_FOLDER:
                crowded[folder.relative_to(ROOT).as_posix()] = len(modules)
    assert crowded == {}


def test_the_room_and_cycle_checks_catch_what_they_should(tmp_path):
    """The checkers themselves: run/ importing cli/, results/ importing a private name of run/,
    and two modules importing each other are each reported."""
    for room in ROOMS:
        (tmp_path / "orchestrator" / room).mkdir(parents=True)
    (tmp_path / "orchestrator" / "run" / "a.py").write_text("from orchestrator.cli import app\n")
    (tmp_path / "orchestrator" / "results" / "b.py").write_text("from orchestrator.run.launch import _private\n")
    assert room_violations(tmp_path) == {("orchestrator/run/a.py", "orchestrator.cli"),
                                         ("orchestrator/results/b.py", "orchestrator.run.launch:_private")}
    for package in LAYER:
        (tmp_path / package).mkdir(exist_ok=True)
    (tmp_path / "db" / "x.py").write_text("def f():\n    from db import y\n")
    (tmp_path / "db" / "y.py").write_text("import db.x\n")
    assert cycles(module_graph(tmp_path)) == [["db.x", "db.y"]]


ADAPTERS = {"ray": "orchestrator/run/ray_compat.py", "torch": "trainers/torch_compat.py"}


def private_uses(root: Path = ROOT) -> set[tuple[str, str]]:
    """(file, name) for each private name of Ray or torch used outside its adapter module: a
    module path or an imported or accessed name with a part that starts with `_`."""
    found = set()
    for package in LAYER:
        for file in sorted((root / package).rglob("*.py")):
            path = file.relative_to(root).as_posix()
            tree = ast.parse(file.read_text(), path)
            inner = {id(node.value) for node in ast.walk(tree) if isinstance(node, ast.Attribute)}
            for node in ast.walk(tree):
                if id(node) in inner:
                    continue  # part of a longer a.b.c: that one is read whole
                dotted = None
                if isinstance(node, ast.Import):
                    dotted = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    dotted = [f"{node.module}.{alias.name}" for alias in node.names]
                elif isinstance(node, ast.Attribute):
                    parts, value = [node.attr], node.value
                    while isinstance(value, ast.Attribute):
                        parts.append(value.attr)
                        value = value.value
                    if isinstance(value, ast.Name):
                        dotted = [".".join([value.id, *reversed(parts)])]
                for name in dotted or []:
                    top, *rest = name.split(".")
                    if top in ADAPTERS and path != ADAPTERS[top] and any(p.startswith("_") for p in rest):
                        found.add((path, name))
    return found


def test_private_ray_and_torch_names_live_in_one_adapter_each():
    assert private_uses() == set()


def test_the_private_name_check_sees_imports_and_attributes(tmp_path):
    for package in LAYER:
        (tmp_path / package).mkdir()
    (tmp_path / "orchestrator" / "a.py").write_text("import ray\nfrom ray.air._internal import usage\nray._private.worker\n")
    (tmp_path / "trainers" / "b.py").write_text("import torch\ntorch._dynamo.reset()\n")
    assert private_uses(tmp_path) == {("orchestrator/a.py", "ray.air._internal.usage"),
                                      ("orchestrator/a.py", "ray._private.worker"),
                                      ("trainers/b.py", "torch._dynamo.reset")}
