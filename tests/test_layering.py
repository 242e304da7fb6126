"""The layering of docs/DESIGN.md, checked on the import graph of every module:

    sim, bench  ->  collector  ->  drivers, buffer        (sink -> collector)

``drivers`` and ``buffer`` never import ``collector`` nor each other; nothing in the
product (collector, drivers, buffer) imports ``sim`` or ``bench``. Every import
statement counts, also those inside functions (a lazy import is still a dependency).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
LAYERS = ("collector", "drivers", "buffer", "sink", "sim", "bench")
# package -> the top-level packages of this project it must never import
FORBIDDEN = {
    "drivers": {"collector", "buffer", "sink", "sim", "bench"},
    "buffer": {"collector", "drivers", "sink", "sim", "bench"},
    "collector": {"sink", "sim", "bench"},
    "sink": {"sim", "bench"},  # the central consumer: beside the collector, no simulator
    "sim": {"bench"},
}
# The one crossing allowed: the CLI hands the `sink` command (the central consumer, a
# package beside the collector in the same wheel) over, importing it only then.
ALLOWED = {("collector/cli.py", "sink")}


def imports_of(path: Path) -> set[tuple[str, int]]:
    """(imported top-level package, line) for every import in a module."""
    tree = ast.parse(path.read_text(), str(path))
    found: set[tuple[str, int]] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update((alias.name.split(".")[0], node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add((node.module.split(".")[0], node.lineno))
    return found


def violations(package: str) -> list[str]:
    out = []
    for path in sorted((REPO / package).rglob("*.py")):
        for imported, line in imports_of(path):
            if imported in FORBIDDEN[package] and \
                    (str(path.relative_to(REPO)), imported) not in ALLOWED:
                out.append(f"{path.relative_to(REPO)}:{line} imports {imported}")
    return out


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_layering(package: str) -> None:
    assert violations(package) == []


def test_the_check_sees_a_violation(tmp_path: Path) -> None:
    """The checker itself: a lazy import inside a function is found."""
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from collector.config import load_config\n"
                      "    import sim.press\n")
    assert imports_of(module) == {("collector", 2), ("sim", 3)}
