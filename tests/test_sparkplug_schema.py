"""Sparkplug B encoding (collector/sparkplug/codec.py, schema.py), checked against an
independent decoder (tests/support/sparkplug_wire.py: the wire format by hand, no
protobuf runtime) and the compiled schema against the vendored Eclipse Tahu .proto."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import orjson
import pytest

from collector.sparkplug import codec, descriptor, schema
from collector.sparkplug.codec import NodeModel, TelemetryRow
from tests.support import sparkplug_wire as wire

PROTO = Path(codec.__file__).with_name("sparkplug_b.proto")


def proto_fields(text: str) -> set[tuple[str, str, int]]:
    """(message path, field name, number) of every field of the .proto, by a small
    brace-counting reader (comments dropped; oneof blocks belong to their message)."""
    text = re.sub(r"//[^\n]*", "", text)
    out: set[tuple[str, str, int]] = set()
    stack: list[str] = []
    for token in re.finditer(r"(message|enum|oneof)\s+(\w+)\s*\{|\}|"
                             r"(?:(?:optional|repeated|required)\s+)?([\w.]+)\s+(\w+)\s*=\s*"
                             r"(\d+)\s*;", text):
        if token.group(1):
            stack.append(f"{token.group(1)}:{token.group(2)}")
        elif token.group(0) == "}":
            stack.pop()
        elif stack and stack[-1].startswith(("message:", "oneof:")):
            path = ".".join(s.split(":")[1] for s in stack if s.startswith("message:"))
            out.add((path, token.group(4), int(token.group(5))))
    return out


def descriptor_fields() -> set[tuple[str, str, int]]:
    out: set[tuple[str, str, int]] = set()

    def walk(message, prefix: str) -> None:
        path = f"{prefix}{message.name}"
        for f in message.fields:
            out.add((path, f.name, f.number))
        for nested in message.nested_types:
            walk(nested, path + ".")

    walk(schema.Payload.DESCRIPTOR, "")
    return out


def test_the_compiled_schema_is_the_vendored_tahu_proto() -> None:
    text = PROTO.read_text()
    assert hashlib.sha256(PROTO.read_bytes()).hexdigest() == descriptor.PROTO_SHA256, \
        "sparkplug_b.proto changed: run scripts/gen-sparkplug"
    assert "SPDX-License-Identifier: EPL-2.0" in text
    assert PROTO.with_name("EPL-2.0.txt").read_text().startswith("Eclipse Public License - v 2.0")
    expected = proto_fields(text)
    assert len(expected) > 60  # the reader found the schema
    assert descriptor_fields() == expected
    enum = dict(re.findall(r"(\w+)\s*=\s*(\d+);", text.split("enum DataType")[1].split("}")[0]))
    assert {k: int(v) for k, v in enum.items()} == schema.DATATYPES


def row(values: dict, errors: dict | None = None, seq: int = 7, ts_ms: int = 1_764_000_000_123,
        state: str = "released", press: str = "p1") -> TelemetryRow:
    return TelemetryRow(1, press, seq, ts_ms, values, errors or {},
                        {"state": state, "part_number": "BRK-100", "die_id": "D-7",
                         "material_lot": None})


def model_for(tags: list[tuple[str, int | None]], press: str = "p1") -> NodeModel:
    node = NodeModel()
    node.add_tags(press, tags)
    return node


def test_nbirth_and_ndeath() -> None:
    birth = wire.decode(codec.nbirth(1000, 0, 17))
    assert (birth.timestamp, birth.seq) == (1000, 0)
    metrics = birth.by_name()
    assert metrics["bdSeq"].datatype == wire.INT64 and metrics["bdSeq"].value() == 17
    rebirth = metrics["Node Control/Rebirth"]
    assert rebirth.datatype == wire.BOOLEAN and rebirth.value() is False
    assert rebirth.alias is None  # never aliased: any host can ask for a rebirth
    death = wire.decode(codec.ndeath(17))
    assert death.seq is None and [m.name for m in death.metrics] == ["bdSeq"]
    assert death.metrics[0].value() == 17


def test_dbirth_names_types_aliases_and_current_values_ddata_aliases_only() -> None:
    node = model_for([("temp", codec.tag_datatype("int16")),
                      ("force", codec.tag_datatype("uint16", scale=0.1)),
                      ("flow", codec.tag_datatype("float32")),
                      ("running", codec.tag_datatype("bool")),
                      ("recipe", codec.tag_datatype("string")),
                      ("count", codec.tag_datatype("uint32")),
                      ("opc", None)])
    model = node.devices["p1"]
    current = row({"temp": -5, "force": 12.5, "flow": 0.25, "running": True, "recipe": "R1",
                   "count": 4_000_000_000})
    birth = wire.decode(codec.dbirth(model, 3, 2000, current))
    assert birth.seq == 3
    metrics = birth.by_name()
    assert {m.name for m in birth.metrics} == set(model.metrics)
    aliases = [m.alias for m in birth.metrics]
    assert len(set(aliases)) == len(aliases) and None not in aliases
    assert metrics["temp"].datatype == wire.INT16 and metrics["temp"].value() == -5
    assert metrics["force"].datatype == wire.DOUBLE and metrics["force"].value() == 12.5
    assert metrics["flow"].datatype == wire.FLOAT and metrics["flow"].value() == 0.25
    assert metrics["running"].value() is True and metrics["recipe"].value() == "R1"
    assert metrics["count"].datatype == wire.UINT32 and metrics["count"].value() == 4_000_000_000
    assert metrics["opc"].is_null  # no type in the config, no value yet
    assert metrics["Press/state"].value() == "released"
    assert metrics["Press/material_lot"].is_null
    assert metrics["Press/telemetry_seq"].datatype == wire.UINT64
    assert metrics["Press/telemetry_seq"].value() == 7
    assert metrics["temp"].timestamp == current.ts_ms
    assert metrics["opc"].timestamp == 2000  # no value: the birth's time

    by_alias = {m.alias: m for m in birth.metrics}
    data = wire.decode(codec.ddata(model, 4, 3000, row({"temp": 21, "force": 1.5},
                                                       errors={"flow": "nan"}, seq=8),
                                   historical=True))
    assert data.seq == 4 and data.timestamp == 3000
    assert all(m.name is None and m.datatype is None for m in data.metrics)
    got = {by_alias[m.alias].name: m for m in data.metrics}
    assert got["temp"].value(by_alias[got["temp"].alias].datatype) == 21
    assert got["flow"].is_null  # the tag failed this poll
    assert got["Press/telemetry_seq"].value(wire.UINT64) == 8
    assert all(m.is_historical for m in data.metrics)
    assert "recipe" not in got  # report by exception: only what the row holds


def test_signed_integers_travel_as_twos_complement() -> None:
    node = model_for([("a", codec.INT8), ("b", codec.INT32), ("c", codec.INT64)])
    model = node.devices["p1"]
    data = wire.decode(codec.dbirth(model, 1, 1, row({"a": -128, "b": -(2**31), "c": -1})))
    m = data.by_name()
    assert (m["a"].value(), m["b"].value(), m["c"].value()) == (-128, -(2**31), -1)


def test_model_absorbs_new_tags_and_type_drift_with_stable_aliases() -> None:
    node = model_for([("x", None), ("y", codec.INT16)])
    aliases = {n: s.alias for n, s in node.devices["p1"].metrics.items()}
    assert node.absorb("p1", {"x": 3, "y": 4}) is True  # x gets its type from the value
    assert node.devices["p1"].metrics["x"].datatype == codec.INT64
    assert node.absorb("p1", {"x": 5, "y": 6}) is False
    assert node.absorb("p1", {"y": 70000}) is True  # no longer an Int16
    assert node.absorb("p1", {"z": "new"}) is True
    node.add_tags("p2", [("x", codec.INT16)])
    all_aliases = [s.alias for d in node.devices.values() for s in d.metrics.values()]
    assert len(all_aliases) == len(set(all_aliases))  # unique across the edge node
    assert all(node.devices["p1"].metrics[n].alias == a for n, a in aliases.items())


def test_rebirth_request_and_state_parsing() -> None:
    assert codec.rebirth_requested(wire.rebirth_request(1))
    assert not codec.rebirth_requested(wire.rebirth_request(1, value=False))
    assert not codec.rebirth_requested(wire.rebirth_request(1, name="Node Control/Reboot"))
    assert not codec.rebirth_requested(b"\xff\xff garbage")
    assert codec.parse_state(b'{"online": true, "timestamp": 5}') == (True, 5)
    assert codec.parse_state(b'{"online": false, "timestamp": 6}') == (False, 6)
    for bad in (b"ONLINE", b"[]", b'{"online": "yes", "timestamp": 1}',
                b'{"online": true}', b'{"online": true, "timestamp": true}'):
        assert codec.parse_state(bad) is None


def test_telemetry_rows_parse_from_the_json_contract() -> None:
    from collector import messages

    payload = messages.encode_telemetry("p1", 12, 1_764_000_000.5, "h", {"a": 1},
                                        {"b": "timeout"}, {"state": "setup"})
    parsed = codec.parse_telemetry(99, payload)
    assert (parsed.row_id, parsed.press, parsed.seq) == (99, "p1", 12)
    assert parsed.ts_ms == 1_764_000_000_500
    assert parsed.values == {"a": 1} and parsed.errors == {"b": "timeout"}
    assert parsed.context["state"] == "setup"
    assert orjson.loads(payload)["ts"].endswith(".500Z")


@pytest.mark.parametrize(("tag_type", "scale", "expected"), [
    ("bool", 1.0, codec.BOOLEAN), ("int16", 1.0, codec.INT16), ("uint16", 1.0, codec.UINT16),
    ("int32", 1.0, codec.INT32), ("uint32", 1.0, codec.UINT32), ("float32", 1.0, codec.FLOAT),
    ("float64", 1.0, codec.DOUBLE), ("string", 1.0, codec.STRING), ("int16", 0.5, codec.DOUBLE),
    ("float32", 2.0, codec.DOUBLE), (None, 1.0, None)])
def test_tag_types(tag_type: str | None, scale: float, expected: int | None) -> None:
    assert codec.tag_datatype(tag_type, scale) == expected
