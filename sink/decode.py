"""Pure: one MQTT message of the collector's contract -> a row, a latest-value upsert, or a
quarantine entry with its reason. No I/O, so every refusal is a plain unit test.

What is checked (the envelope of collector/messages.py, README "Message contract"):
``schema`` starts with ``press-collector/``; ``schema_version`` is a major version this
sink reads (``SUPPORTED_MAJOR``; an integer, or "M.N" whose M counts); ``id`` is 32 hex
digits; ``press``, ``host`` non-empty strings; ``stream`` is ``events`` or ``telemetry``;
``seq`` an integer >= 1; ``ts`` an ISO 8601 time; ``context`` and ``data`` objects. The
body of each kind is not validated here: the collector's tests validate every message
against the JSON Schemas, and a sink that refused a field it does not know would refuse
every minor version (compatible additions) of the contract.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import orjson

from collector.messages import SCHEMA_PREFIX

SUPPORTED_MAJOR = frozenset({1})
STREAMS = ("events", "telemetry")
_HEX32 = re.compile(r"[0-9a-f]{32}")
_ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)")


@dataclass(frozen=True, slots=True)
class Row:
    """One event or telemetry record, keyed by (host, press, stream, seq)."""

    host: str
    press: str
    stream: str
    seq: int
    id: str
    kind: str
    schema_version: int
    ts: str
    lane: str
    context: str  # JSON text
    data: str  # JSON text

    @property
    def key(self) -> tuple[str, str, str, int]:
        return (self.host, self.press, self.stream, self.seq)


@dataclass(frozen=True, slots=True)
class Latest:
    """A retained message: a press's state or a collector's status (latest wins)."""

    what: str  # "state" | "status"
    host: str
    press: str  # "" for status
    value: str  # the state, or "online" / "offline"
    ts: str
    payload: str  # JSON text


@dataclass(frozen=True, slots=True)
class Refused:
    topic: str
    reason: str
    payload: bytes


def _show(value: Any) -> str:
    return repr(value)[:40]


def major_of(version: Any) -> int | None:
    if isinstance(version, bool):
        return None
    if isinstance(version, int):
        return version
    if isinstance(version, str) and re.fullmatch(r"\d+(\.\d+)*", version):
        return int(version.split(".")[0])
    return None


def decode(topic: str, payload: bytes) -> Row | Latest | Refused:
    """What the sink does with one message (topic as received, payload bytes)."""

    def refuse(reason: str) -> Refused:
        return Refused(topic, reason, bytes(payload))

    try:
        msg = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        return refuse(f"not JSON: {str(exc)[:80]}")
    if not isinstance(msg, dict):
        return refuse("not a JSON object")
    schema = msg.get("schema")
    if not isinstance(schema, str) or not schema.startswith(SCHEMA_PREFIX):
        return refuse(f"schema {_show(schema)} is not press-collector/...")
    major = major_of(msg.get("schema_version"))
    if major is None:
        return refuse(f"schema_version {_show(msg.get('schema_version'))} is not a version")
    if major not in SUPPORTED_MAJOR:
        return refuse(f"schema_version {major} not supported (this sink reads "
                      f"{', '.join(map(str, sorted(SUPPORTED_MAJOR)))}): upgrade the sink")
    kind = schema[len(SCHEMA_PREFIX):]
    host, ts = msg.get("host"), msg.get("ts")
    if not isinstance(host, str) or not host:
        return refuse("host missing")
    if not isinstance(ts, str) or not _ISO.fullmatch(ts):
        return refuse(f"ts {_show(ts)} is not an ISO 8601 time")
    if kind in ("state", "status"):
        value = msg.get(kind)
        press = msg.get("press", "") if kind == "state" else ""
        if not isinstance(value, str) or not isinstance(press, str) or \
                (kind == "state" and not press):
            return refuse(f"{kind} message without {kind}/press")
        return Latest(kind, host, press, value, ts, orjson.dumps(msg).decode())
    press, stream, seq, mid = msg.get("press"), msg.get("stream"), msg.get("seq"), msg.get("id")
    if not isinstance(press, str) or not press:
        return refuse("press missing")
    if stream not in STREAMS:
        return refuse(f"stream {_show(stream)} is not events or telemetry")
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
        return refuse(f"seq {_show(seq)} is not an integer >= 1")
    if not isinstance(mid, str) or not _HEX32.fullmatch(mid):
        return refuse(f"id {_show(mid)} is not 32 hex digits")
    context, data = msg.get("context"), msg.get("data")
    if not isinstance(context, dict) or not isinstance(data, dict):
        return refuse("context or data is not an object")
    lane = "replay" if topic.endswith("/telemetry/replay") else "live"
    return Row(host, press, stream, seq, mid, kind, major, ts, lane,
               orjson.dumps(context).decode(), orjson.dumps(data).decode())
