"""Docs that are generated from code must not drift from it."""

from __future__ import annotations

import re
from pathlib import Path

from collector.workflow import diagram

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_workflow_diagram_matches_the_transition_table() -> None:
    match = re.search(r"<!-- workflow-diagram:start -->\n```mermaid\n(.*?)\n```",
                      README.read_text(), flags=re.S)
    assert match, "README.md lost its workflow diagram block"
    assert match.group(1) == diagram("mermaid"), "run scripts/gen-docs"


def test_readme_starts_with_the_demo_and_test_commands() -> None:
    head = README.read_text().splitlines()[:6]
    assert any(line.startswith("make demo") for line in head)
    assert any(line.startswith("make test") for line in head)
