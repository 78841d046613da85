"""Dependencies point down (issue 15): domain <- db <- services <- engine / graphql / web / cli.

An ``ast`` walk over every ``import`` of ``aihub`` — at module level and inside functions (a function-level
import hid two cycles before), but not under ``if TYPE_CHECKING:`` — checks each against ``MAY_IMPORT``. Parts
not named there (``app``, ``server``, ``runtime``, ``health``) are the composition root and may import anything.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "aihub"

BASE = {"domain", "settings", "logs", "metrics"}
#: each part and the parts it may import besides itself
MAY_IMPORT: dict[str, set[str]] = {
    "domain": set(),
    "settings": set(),
    "logs": set(),
    "metrics": set(),
    "db": {"domain", "settings"},
    "bus": {"domain", "settings"},
    "storage": {"domain", "settings"},
    "services": BASE | {"db", "bus", "storage"},
    "engine": BASE | {"db", "bus", "storage", "services"},
    # the adapters reach the core through the services only
    "graphql": BASE | {"bus", "services"},
    "web": BASE | {"bus", "services", "graphql"},
    "cli": BASE | {"bus", "services", "runtime", "server"},
}
#: modules that belong to a part other than their first path component (none now)
PART_OF: dict[str, str] = {}

#: imports that still break the rule, each with its reason; the test fails when one of them is gone, so this
#: list can only shrink (empty now: every part imports only what it may)
NOT_YET: set[str] = set()


def part(relative: Path) -> str:
    first = relative.parts[0].removesuffix(".py")
    return PART_OF.get(first, first)


def _imports(tree: ast.AST) -> list[str]:
    """Every absolute ``aihub`` module imported, skipping ``if TYPE_CHECKING:`` blocks."""
    found: list[str] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.extend(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.extend([node.module] if node.module != "aihub" else [f"aihub.{a.name}" for a in node.names])
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return [name for name in found if name.startswith("aihub.")]


def violations(root: Path) -> set[str]:
    """``file -> part`` for every import of a part that the file's part may not import."""
    found = set()
    for file in sorted(root.rglob("*.py")):
        relative = file.relative_to(root)
        mine = part(relative)
        allowed = MAY_IMPORT.get(mine)
        if allowed is None:
            continue  # the composition root
        for name in _imports(ast.parse(file.read_text())):
            theirs = PART_OF.get(name.split(".")[1], name.split(".")[1])
            if theirs != mine and theirs not in allowed:
                found.add(f"{relative.as_posix()} -> {theirs}")
    return found


def test_dependencies_point_down() -> None:
    found = violations(ROOT)
    assert sorted(found - NOT_YET) == []
    assert sorted(NOT_YET - found) == [], "fixed: remove from NOT_YET"


def test_a_wrong_import_is_caught(tmp_path: Path) -> None:
    """The check fails on a deliberately wrong import: the domain reaching up into the services (inside a
    function, where cycles hide), and a service reaching into the engine."""
    (tmp_path / "domain").mkdir()
    (tmp_path / "services").mkdir()
    (tmp_path / "domain" / "rules.py").write_text(
        "def f():\n    from aihub.services.runs import create_run\n"
    )
    (tmp_path / "services" / "runs.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "from aihub.db.models import Run\n"
        "from aihub.engine.scheduler import Engine\n"
        "if TYPE_CHECKING:\n    from aihub.web.runs import run_routes\n"
    )
    assert violations(tmp_path) == {"domain/rules.py -> services", "services/runs.py -> engine"}
