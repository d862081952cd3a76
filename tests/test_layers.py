"""The floors of piro_cli, lowest first: a module imports only from its own floor or below (README, "Repository
layout"). Every import counts, those inside functions too: a lazy import up the floors is still a dependency."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "piro_cli"

FLOORS = [
    {"errors", "outputs", "reporting", "hardware", "options", "lazy", ""},  # "": piro_cli/__init__.py
    {"data"},
    {"models"},
    {"retrieval"},
    {"losses"},
    {"methods", "recipes", "runs", "convergence"},
    {"training"},
    {"inference"},
    {"evaluation"},
    {"viz"},
    {"demo"},
    {"cli", "__main__", "client"},  # client.py: what programs use to talk to `piro serve`
]


def floor_of(module: str) -> int:
    """The floor of a dotted piro_cli module name."""
    parts = module.split(".")
    top = parts[1] if len(parts) > 1 else ""
    for number, names in enumerate(FLOORS):
        if top in names:
            return number
    raise AssertionError(f"{module}: on no floor; add its package to FLOORS (and to the README's layout)")


def imports_of(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
    return [(line, name) for line, name in found if name == "piro_cli" or name.startswith("piro_cli.")]


def test_no_module_imports_from_a_floor_above_its_own():
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = ".".join(("piro_cli", *path.relative_to(PACKAGE).with_suffix("").parts)).removesuffix(".__init__")
        own = floor_of(module)
        for line, imported in imports_of(path):
            if floor_of(imported) > own:
                upward.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {imported}")
    assert not upward, "imports up the floors:\n" + "\n".join(upward)


def test_the_check_sees_an_upward_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from piro_cli.cli import app\n")
    (line, imported), = imports_of(bad)
    assert line == 2 and floor_of(imported) > floor_of("piro_cli.training.trainer")
