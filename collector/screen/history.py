"""The screen's feeds start from the tail of each press's event stream in the buffer, so
a restarted daemon shows the chart, the alarms and the last release as before.

Reads at most ``TAIL_EVENTS`` events per press (read-only, plain sqlite3, one short
transaction per press; ``buffer.event_reader.read_range``), in a thread at start.
Events are decoded from their envelopes (the message contract, collector/messages.py);
one that cannot be decoded is skipped.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from buffer.event_reader import read_range
from collector import messages

TAIL_EVENTS = 3000  # about a shift of a busy press; a few MB read once at start
SCHEMA_PREFIX = "press-collector/"


def read_history(path: Path, upto: dict[str, int], tail: int = TAIL_EVENTS
                 ) -> dict[str, list[tuple[int, str, float, dict[str, Any], dict[str, Any]]]]:
    """Per press: (seq, kind, ts, body, context) of its last ``tail`` events up to
    ``upto[press]``, oldest first."""
    out = {}
    for press, last in upto.items():
        if last <= 0:
            out[press] = []
            continue
        rows = read_range(path, press, messages.EVENTS_STREAM, max(1, last - tail + 1), last)
        out[press] = [e for e in (decode(seq, payload) for seq, payload in rows)
                      if e is not None]
    return out


def decode(seq: int, payload: bytes
           ) -> tuple[int, str, float, dict[str, Any], dict[str, Any]] | None:
    try:
        env = orjson.loads(payload)
        schema = env["schema"]
        kind = schema[len(SCHEMA_PREFIX):] if schema.startswith(SCHEMA_PREFIX) else None
        ts = datetime.fromisoformat(env["ts"].replace("Z", "+00:00")).timestamp()
        body, context = env.get("data") or {}, env.get("context") or {}
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
        return None
    if not kind or not isinstance(body, dict) or not isinstance(context, dict):
        return None
    return seq, kind, ts, body, context
