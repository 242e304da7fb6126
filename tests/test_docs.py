"""Docs that are generated from code must not drift from it."""

from __future__ import annotations

import re
from pathlib import Path

from collector.config.reference import reference_markdown
from collector.workflow import diagram

README = Path(__file__).resolve().parent.parent / "README.md"
CONFIG_REFERENCE = README.parent / "docs" / "config-reference.md"


def test_readme_workflow_diagram_matches_the_transition_table() -> None:
    match = re.search(r"<!-- workflow-diagram:start -->\n```mermaid\n(.*?)\n```",
                      README.read_text(), flags=re.S)
    assert match, "README.md lost its workflow diagram block"
    assert match.group(1) == diagram("mermaid"), "run scripts/gen-docs"


def test_config_reference_matches_the_models() -> None:
    """docs/config-reference.md is generated from collector/config/'s models."""
    assert CONFIG_REFERENCE.read_text(encoding="utf-8") == reference_markdown(), \
        "docs/config-reference.md is stale: run scripts/gen-docs"


def test_readme_starts_with_the_demo_and_test_commands() -> None:
    head = README.read_text().splitlines()[:6]
    assert any(line.startswith("make demo") for line in head)
    assert any(line.startswith("make test") for line in head)


def test_readme_command_table_lists_every_command() -> None:
    """Every top-level command of the CLI has a row in the README's command table."""
    import argparse

    from collector.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    table = README.read_text().split("## Commands", 1)[1].split("\n## ", 1)[0]
    missing = [name for name in sub.choices if f"`press-collector {name}" not in table]
    assert missing == [], f"README.md command table lacks {missing}"
