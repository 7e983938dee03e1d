"""docs/architecture.md against the tree: a new engineer finds every file to touch from it alone,
so every path it names must exist, every module of orchestrator/ must be named in it, and the
rules it states must be the ones tests/test_import_map.py enforces."""

from __future__ import annotations

import re
from pathlib import Path

from tests.test_import_map import ADAPTERS, LAYER, MAX_MODULES_PER_FOLDER, ROOMS

ROOT = Path(__file__).resolve().parents[1]
DOC = (ROOT / "docs" / "architecture.md").read_text()
PATH = re.compile(r"`((?:resweep|trainers|db|orchestrator|dashboard|benchmarks|tests|docs)/[A-Za-z0-9_./]*)`")


def test_every_path_the_page_names_exists():
    named = set(PATH.findall(DOC))
    assert len(named) > 40
    missing = sorted(p for p in named if not (p.endswith("NAME.py") or (ROOT / p.rstrip("/")).exists()))
    assert missing == []


def test_every_module_of_orchestrator_is_named_on_the_page():
    modules = sorted(f.relative_to(ROOT).as_posix() for f in (ROOT / "orchestrator").rglob("*.py")
                     if f.name != "__init__.py" and "report" not in f.parts)
    text = DOC.replace("\n", " ")
    unnamed = [m for m in modules if m not in text and Path(m).name not in text]
    assert unnamed == []


def test_the_page_states_the_rules_the_import_map_enforces():
    rooms = dict(re.findall(r"^\| `orchestrator/(\w+)/` \| .* \| ([^|]+) \|$", DOC, re.M))
    allowed = {room: set() if "none" in text else set(re.findall(r"\b(run|cluster|results)\b", text))
               for room, text in rooms.items()}
    assert allowed == ROOMS
    diagram = DOC.split("```")[1]
    assert all(f"{package}/" in diagram for package in LAYER)
    assert f"more than {MAX_MODULES_PER_FOLDER} modules" in DOC
    assert all(f"`{adapter}`" in DOC for adapter in ADAPTERS.values())


def test_each_common_change_has_its_files():
    for heading in ("### A new block type", "### A new metric", "### A new database backend",
                    "### A new cluster kind"):
        section = DOC.split(heading, 1)[1].split("\n### ", 1)[0]
        assert len(PATH.findall(section)) >= 3, heading
