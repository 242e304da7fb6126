"""PAYLOAD_PARSER for ../shared/nodered-bench: press-collector telemetry -> readings.

Contract (harness README, "The payload hook"): ``parse(topic, payload)`` returns one
``(key, value, ts_epoch_ms, seq)`` per reading, key ``"<press>/<register>"``; ``[]`` for
messages without readings (status, state, events). Runs under the harness's own Python
(standard library only), so no orjson here.
"""

from __future__ import annotations

import json
from datetime import datetime

_BASE: dict[str, int] = {}


def _epoch_ms(iso: str) -> int:
    """'2026-11-25T09:48:30.123Z' -> epoch ms (the seconds part is cached)."""
    head, _, frac = iso.rstrip("Z").partition(".")
    base = _BASE.get(head)
    if base is None:
        base = _BASE[head] = int(datetime.fromisoformat(head + "+00:00").timestamp()) * 1000
    return base + (int(frac[:3].ljust(3, "0")) if frac else 0)


def parse(topic: str, payload: str) -> list[tuple[str, int, int, int]]:
    if not topic.endswith("/telemetry"):
        return []
    d = json.loads(payload)
    press = d["press"]
    ts = _epoch_ms(d["ts"])
    seq = d["seq"]
    return [(f"{press}/{name[1:]}", value, ts, seq)
            for name, value in d["data"]["values"].items()]
