"""Every config key documents itself, and the generated reference covers every key.

docs/config-reference.md is made from the models (collector/config/reference.py); these
tests make sure there is something to make it from, and that what the docs and the
examples say agrees with it. The drift check itself is in tests/test_docs.py.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

from collector.config.reference import all_models, reference_markdown

REPO = Path(__file__).resolve().parent.parent
DESIGN = REPO / "docs" / "DESIGN.md"


def test_every_key_has_a_description() -> None:
    missing = [f"{model.__name__}.{name}" for model in all_models()
               for name, info in model.model_fields.items() if not (info.description or "")]
    assert missing == []


def test_every_table_has_an_introduction() -> None:
    missing = [model.__name__ for model in all_models() if not (model.__doc__ or "").strip()]
    assert missing == []


def test_the_reference_lists_every_key_of_every_model() -> None:
    """One table row per key of every reachable model (the OPC UA press included)."""
    text = reference_markdown()
    for model in all_models():
        for name, info in model.model_fields.items():
            assert f"| `{info.alias or name}` |" in text, f"{model.__name__}.{name}"
    assert "`protocol` = `opcua`" in text


def _keys(data: dict[str, Any]) -> set[str]:
    out: set[str] = set()
    for key, value in data.items():
        out.add(key)
        for table in value if isinstance(value, list) else [value]:
            if isinstance(table, dict):
                out |= _keys(table)
    return out


def test_every_key_of_the_examples_is_in_the_reference() -> None:
    """The commented examples in config/ use only keys the reference documents."""
    text = reference_markdown()
    documented = set(re.findall(r"^\| `([a-z0-9_]+)` \|", text, flags=re.M))
    used: set[str] = set()
    for path in (REPO / "config").rglob("*.toml"):
        used |= _keys(tomllib.loads(path.read_text(encoding="utf-8")))
    assert used - documented == set()


def test_design_points_to_the_reference_instead_of_listing_keys() -> None:
    """docs/DESIGN.md no longer keeps its own (drifting) copy of the keys."""
    text = DESIGN.read_text(encoding="utf-8")
    assert "docs/config-reference.md" in text or "config-reference.md" in text
    section = text.split("## Config files", 1)[1].split("\n## ", 1)[0]
    assert "```toml" not in section
