"""Reads the subscriber's capture (bench/sub.py) into figures."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

_ISO_CACHE: dict[str, float] = {}


def iso_to_epoch(text: str) -> float:
    """'2026-11-25T09:48:30.123Z' -> epoch s (the seconds part is cached)."""
    head, _, ms = text.rstrip("Z").partition(".")
    base = _ISO_CACHE.get(head)
    if base is None:
        base = _ISO_CACHE[head] = datetime.fromisoformat(head + "+00:00").timestamp()
    return base + (int(ms) / 1000 if ms else 0.0)


@dataclass
class Msg:
    recv: float
    kind: str
    press: str
    seq: int
    ts: float
    n: int

    @property
    def replay(self) -> bool:
        """Came on ``{press}/telemetry/replay`` (the backlog of an outage)."""
        return self.kind == "telemetry_replay"


@dataclass
class Capture:
    msgs: list[Msg] = field(default_factory=list)

    @classmethod
    def read(cls, path: Path) -> Capture:
        out = cls()
        if not path.exists():
            return out
        for line in path.read_text().splitlines():
            parts = line.split("\t")
            if len(parts) != 6 or parts[4] == "-":
                continue
            out.msgs.append(Msg(float(parts[0]), parts[1], parts[2], int(parts[3]),
                                iso_to_epoch(parts[4]), int(parts[5])))
        return out

    def telemetry(self) -> list[Msg]:
        """Both telemetry topics (live and replay)."""
        return [m for m in self.msgs if m.kind in ("telemetry", "telemetry_replay")]

    def integrity(self) -> dict[str, int]:
        """Duplicates and gaps of the telemetry stream over the whole run, per press seq."""
        seen: dict[str, set[int]] = {}
        dups = 0
        readings = 0
        for m in self.telemetry():
            s = seen.setdefault(m.press, set())
            if m.seq in s:
                dups += 1
                continue
            s.add(m.seq)
            readings += m.n
        gaps = sum((max(s) - min(s) + 1) - len(s) for s in seen.values() if s)
        return {"unique_messages": sum(len(s) for s in seen.values()),
                "unique_readings": readings, "duplicates": dups, "seq_gaps": gaps}


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    k = min(len(values) - 1, max(0, math.ceil(q * len(values)) - 1))
    return values[k]


def ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 2)


def latency(msgs: list[Msg]) -> dict[str, float | None]:
    lat = [m.recv - m.ts for m in msgs]
    return {"latency_p50_ms": ms(pct(lat, 0.5)), "latency_p99_ms": ms(pct(lat, 0.99)),
            "latency_max_ms": ms(max(lat) if lat else None)}


def window(msgs: list[Msg], t0: float, t1: float) -> list[Msg]:
    return [m for m in msgs if t0 <= m.ts < t1]
