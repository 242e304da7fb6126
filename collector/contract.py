"""The published contract as code: load the JSON Schemas and check a message against them.

Tests validate every message they receive from the broker with ``validate_message``; a
subscriber team can do the same with the files in ``collector/schemas``.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

SCHEMA_ID = "urn:press-collector:schema:{name}:1"


@cache
def load_schemas() -> dict[str, dict[str, Any]]:
    """Every schema file of the package, keyed by its file stem."""
    schemas = {}
    for entry in resources.files("collector.schemas").iterdir():
        if entry.name.endswith(".json"):
            schemas[entry.name[:-5]] = json.loads(entry.read_text(encoding="utf-8"))
    return schemas


@cache
def _validators() -> dict[str, Any]:
    from jsonschema import Draft202012Validator
    from referencing import Registry, Resource

    schemas = load_schemas()
    registry = Registry().with_resources(
        (schema["$id"], Resource.from_contents(schema)) for schema in schemas.values())
    return {name: Draft202012Validator(schema, registry=registry)
            for name, schema in schemas.items()}


def schema_name_for(topic: str, root: str) -> str:
    """Which schema governs a topic below the root."""
    rest = topic[len(root) + 1:]
    parts = rest.split("/")
    if parts[:3] == ["_collector", "cmd", "probe"] and len(parts) == 4:
        return "command_probe"  # the collector's check of its command subscription
    if rest.startswith("_collector/"):
        return "collector_alarm" if rest.endswith("/alarm") else "status"
    if len(parts) == 2 and parts[1] in ("state", "telemetry", "cmd_result"):
        return parts[1]
    if len(parts) == 3 and parts[1:] == ["telemetry", "replay"]:
        return "telemetry"  # the backlog after an outage: same payload, own topic
    if len(parts) == 4 and parts[1] == "cmd" and parts[2] in ("production", "quality"):
        return "command_request"
    if len(parts) == 3 and parts[1] == "events":
        return parts[2]
    raise ValueError(f"topic {topic!r} is not part of the contract below {root!r}")


def validation_errors(name: str, payload: Any) -> list[str]:
    validators = _validators()
    if name not in validators:
        return [f"no schema named {name!r} (known: {', '.join(sorted(validators))})"]
    return [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
            for e in validators[name].iter_errors(payload)]


def validate_message(topic: str, root: str, payload: Any) -> list[str]:
    """Problems of one received message (empty list: it honours the contract)."""
    return validation_errors(schema_name_for(topic, root), payload)
