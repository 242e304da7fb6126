"""The message contract: topics, the common envelope and its JSON encoding.

Everything a subscriber sees is shaped here, so the JSON Schemas in
``collector/schemas`` and the AsyncAPI document have one place to agree with. Payloads
are encoded once, when the row goes into the outbox; the publisher only moves bytes.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import orjson

from collector.domain import Event

SCHEMA_PREFIX = "press-collector/"
SCHEMA_VERSION = 1

EVENTS_STREAM = "events"
TELEMETRY_STREAM = "telemetry"
COLLECTOR_PRESS = "_collector"  # the "press" of collector-level records (alarms)


class Topics:
    """Topic names under the configured root (ISA-95 / Unified Namespace habit)."""

    def __init__(self, root: str, host: str) -> None:
        self.root = root
        self.host = host

    def event(self, press: str, kind: str) -> str:
        return f"{self.root}/{press}/events/{kind}"

    def telemetry(self, press: str) -> str:
        return f"{self.root}/{press}/telemetry"

    def state(self, press: str) -> str:
        return f"{self.root}/{press}/state"

    def status(self) -> str:
        return f"{self.root}/_collector/{self.host}/status"

    def cmd_result(self, press: str) -> str:
        return f"{self.root}/{press}/cmd_result"

    def commands(self) -> str:
        """What the collector subscribes to: every command to every press."""
        return f"{self.root}/+/cmd/#"

    def command_probe(self) -> str:
        """The collector's own loop-back message proving its command subscription
        delivers (a broker ACL may accept the subscription and deliver nothing)."""
        return f"{self.root}/{COLLECTOR_PRESS}/cmd/probe/{self.host}"
    def alarm(self) -> str:
        return f"{self.root}/_collector/{self.host}/alarm"


class _IsoClock:
    """Formats epoch seconds as ISO 8601 UTC with milliseconds, caching the seconds part.

    Telemetry formats a timestamp per poll; the cache makes that a dict lookup and an
    f-string instead of a ``datetime`` round trip.
    """

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def __call__(self, ts: float) -> str:
        second, millis = divmod(round(ts * 1000), 1000)
        if second != self._second:
            self._second = second
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._prefix}.{millis:03d}Z"


iso_utc = _IsoClock()


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, bytes):
        return value.decode("ascii", "backslashreplace")
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")


def dumps(obj: Any) -> bytes:
    return orjson.dumps(obj, default=_default)


class _Uuid4Hex:
    """Random (version 4) UUIDs as 32 hex digits, from ``os.urandom`` read 4 KiB at a
    time: ``uuid.uuid4().hex`` makes one getrandom() call and one UUID object per
    message (3-4 us, ~3 % of the daemon's busy samples at 1,000 messages/s)."""

    __slots__ = ("_buf", "_pos")
    _SIZE = 4096
    # version 4 in the high nibble of byte 6, RFC 4122 variant (10xx) in byte 8
    _CLEAR = ~((0xF << 76) | (0x3 << 62)) & ((1 << 128) - 1)
    _SET = (0x4 << 76) | (0x2 << 62)

    def __init__(self) -> None:
        self._buf = b""
        self._pos = 0

    def __call__(self) -> str:
        pos = self._pos
        if pos >= len(self._buf):
            self._buf, pos = os.urandom(self._SIZE), 0
        self._pos = pos + 16
        n = int.from_bytes(self._buf[pos:pos + 16]) & self._CLEAR | self._SET
        return f"{n:032x}"


    def reset(self) -> None:
        """Forget the buffered randomness (a forked child must not repeat the parent's ids)."""
        self._buf, self._pos = b"", 0


_ids = _Uuid4Hex()
os.register_at_fork(after_in_child=_ids.reset)


def envelope(kind: str, press: str, stream: str, seq: int, ts: float, host: str,
             context: Mapping[str, Any], data: Mapping[str, Any]) -> dict[str, Any]:
    """The common envelope: a record that is traceable on its own."""
    return {
        "schema": SCHEMA_PREFIX + kind,
        "schema_version": SCHEMA_VERSION,
        "id": _ids(),
        "press": press,
        "stream": stream,
        "seq": seq,
        "ts": iso_utc(ts),
        "host": host,
        "context": context,
        "data": data,
    }


def encode_event(event: Event, press: str, seq: int, host: str) -> bytes:
    return dumps(envelope(event.kind, press, EVENTS_STREAM, seq, event.ts, host,
                          event.context, event.body))


def encode_telemetry(press: str, seq: int, ts: float, host: str, values: Mapping[str, Any],
                     errors: Mapping[str, str], context: Mapping[str, Any],
                     filtered: bool = False) -> bytes:
    data: dict[str, Any] = {"values": values}
    if errors:
        data["errors"] = errors
    if filtered:
        data["filtered"] = True  # tags held back by on_change / deadband / publish_every
    return dumps(envelope("telemetry", press, TELEMETRY_STREAM, seq, ts, host, context, data))


def encode_state(press: str, ts: float, host: str, state: str, plc_online: bool,
                 context: Mapping[str, Any], collector_online: bool = True,
                 removed: bool = False) -> bytes:
    """The retained state: what a dashboard shows when it connects, no seq (latest wins).
    ``collector_online`` false: the collector stopped cleanly at ``ts`` and nobody
    watches this press (``state`` is where it left the workflow). ``removed``: the press
    was taken out of the collector's config (SIGHUP) at ``ts``; only present when true."""
    out: dict[str, Any] = {
        "schema": SCHEMA_PREFIX + "state",
        "schema_version": SCHEMA_VERSION,
        "press": press,
        "ts": iso_utc(ts),
        "host": host,
        "state": state,
        "plc_online": plc_online,
        "collector_online": collector_online,
        "context": context,
    }
    if removed:
        out["removed"] = True
    return dumps(out)


def encode_status(host: str, online: bool, ts: float | None = None) -> bytes:
    """Birth and last-will payload of the collector process."""
    return dumps({
        "schema": SCHEMA_PREFIX + "status",
        "schema_version": SCHEMA_VERSION,
        "host": host,
        "status": "online" if online else "offline",
        "ts": iso_utc(time.time() if ts is None else ts),
    })


def encode_cmd_result(press: str, ts: float, host: str, request_id: str | None, command: str,
                      ok: bool, code: str | None, message: str, events: list[str],
                      state: str | None, effect: Mapping[str, Any] | None = None) -> bytes:
    """The reply to a command on ``{root}/{press}/cmd_result`` (``effect``: what an
    accepted command did, e.g. the 100 % inspection totals of a release)."""
    out: dict[str, Any] = {
        "schema": SCHEMA_PREFIX + "cmd_result", "schema_version": SCHEMA_VERSION,
        "press": press, "ts": iso_utc(ts), "host": host, "request_id": request_id,
        "command": command, "ok": ok,
        "error": None if ok else {"code": code, "message": message}, "events": events,
    }
    if state is not None:
        out["state"] = state
    if effect is not None:
        out["effect"] = effect
    return dumps(out)
def encode_alarm(seq: int, host: str, kind: str, active: bool, data: Mapping[str, Any],
                 ts: float | None = None) -> bytes:
    """A collector-level alarm (e.g. ``buffer_full``): raised (active) and cleared."""
    return dumps(envelope("collector_alarm", COLLECTOR_PRESS, EVENTS_STREAM, seq,
                          time.time() if ts is None else ts, host, {},
                          {"kind": kind, "active": active, **data}))
