"""The registry of event kinds (collector/event_kinds.py) against the JSON Schemas and
against what the code really emits."""

from __future__ import annotations

import copy
import json
import types
import typing
from pathlib import Path
from typing import Any

import orjson
import pytest

from collector import event_kinds, messages
from collector.contract import load_schemas, validate_message
from collector.workflow import EVENT_KINDS, PressWorkflow
from tests.support.workflow_story import PLANS, SETTINGS, feed, joint_story, story

SCHEMAS = load_schemas()
ROOT = "plant/press-shop"


def _data_schema(kind: str) -> dict[str, Any]:
    return SCHEMAS[kind]["properties"]["data"]


@pytest.mark.parametrize("kind", list(event_kinds.KINDS))
def test_body_type_and_schema_name_the_same_keys(kind: str) -> None:
    entry = event_kinds.KINDS[kind]
    required, allowed = event_kinds.keys(entry.body)
    data = _data_schema(entry.schema)
    assert data.get("additionalProperties") is False
    assert set(data["properties"]) == allowed, kind
    assert set(data.get("required", ())) <= required, kind  # the type may promise more


_JSON = {str: {"string"}, bytes: {"string"}, int: {"integer"}, float: {"number"},
         bool: {"boolean"}, type(None): {"null"}}


def _json_types(hint: Any) -> set[str] | None:
    """The JSON types a simple hint allows (None: not a simple hint)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        parts = [_json_types(a) for a in typing.get_args(hint)]
        return None if any(p is None for p in parts) else set().union(*parts)  # type: ignore[arg-type]
    if hint in _JSON:
        return _JSON[hint]
    if origin is list or hint is list:
        return {"array"}
    if origin is dict or hint is dict or typing.is_typeddict(hint):
        return {"object"}
    return None


@pytest.mark.parametrize("kind", list(event_kinds.KINDS))
def test_body_types_fit_the_schema_types(kind: str) -> None:
    entry = event_kinds.KINDS[kind]
    props = _data_schema(entry.schema)["properties"]
    for key, hint in typing.get_type_hints(entry.body).items():
        wanted = _json_types(hint)
        declared = props[key].get("type")
        if wanted is None or declared is None:
            continue  # a $ref, an enum or a const: the schema test of real events decides
        declared = {declared} if isinstance(declared, str) else set(declared)
        if "number" in declared:
            declared.add("integer")
        assert wanted <= declared, (kind, key, wanted, declared)


def test_the_workflow_emits_registered_kinds_only() -> None:
    assert set(EVENT_KINDS) == set(event_kinds.kinds("workflow"))
    assert set(event_kinds.KINDS) <= set(SCHEMAS)
    assert {"gauge_error", "gauge_connection", "output_alarm"} == set(event_kinds.kinds("press"))


def test_every_event_of_the_story_fits_its_type_and_schema() -> None:
    """A long story through every part of the workflow: every body has the keys its type
    says, and the encoded event validates against its schema."""
    wf = PressWorkflow("p1", SETTINGS, PLANS["A"])
    seen: set[str] = set()
    topics = messages.Topics(ROOT, "line-pc-1")
    extra = [["gauge", 1_800_000_000.0, "g9", 2, "garbage", "mm", "p1/gauge/x", False, None]]
    joint = PressWorkflow("p1", SETTINGS, PLANS["A"])  # sign-off and containment
    runs = [(wf, step) for step in story() + extra] + [(joint, s) for s in joint_story()]
    for i, (w, step) in enumerate(runs):
        for e in feed(w, step):
            if e.kind == "_cmd_result":
                continue
            seen.add(e.kind)
            assert event_kinds.problems(e.kind, e.body) == [], (i, e.kind)
            payload = orjson.loads(messages.encode_event(e, "p1", i + 1, "line-pc-1"))
            assert validate_message(topics.event("p1", e.kind), ROOT, payload) == [], (
                i, e.kind)
    assert seen == set(EVENT_KINDS)  # the story visits every kind the workflow has


def test_problems_names_what_is_wrong() -> None:
    assert event_kinds.problems("nope", {}) == ["unknown event kind 'nope'"]
    body = {"from": "a", "to": "b", "cause": "c"}
    assert event_kinds.problems("state_change", body) == []
    broken = copy.deepcopy(body)
    del broken["cause"]
    broken["extra"] = 1
    assert event_kinds.problems("state_change", broken) == [
        "state_change: missing cause", "state_change: unexpected extra"]
    assert json.dumps(body)  # plain dicts on the wire


def test_schema_files_exist_for_every_kind() -> None:
    folder = Path(__file__).parents[1] / "collector" / "schemas"
    for kind in event_kinds.KINDS.values():
        assert (folder / f"{kind.schema}.json").is_file(), kind.name


def test_every_kind_is_in_the_asyncapi_document() -> None:
    """A subscriber finds each kind in the AsyncAPI document: channel, message, schema."""
    import yaml

    doc = yaml.safe_load((Path(__file__).parents[1] / "collector" / "asyncapi.yaml")
                         .read_text())
    for kind in event_kinds.KINDS.values():
        message = doc["components"]["messages"][kind.name]
        assert message["payload"]["schema"]["$ref"] == f"./schemas/{kind.schema}.json"
        if kind.source != "collector":
            assert doc["channels"][kind.name]["address"] == (
                f"{{root}}/{{press}}/events/{kind.name}")
