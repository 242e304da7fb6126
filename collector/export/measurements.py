"""Quality events in the buffer -> one :class:`Measurement` per measured value.

Where the values come from (the message contract, collector/schemas):

- ``first_article`` events: one value per entry of ``data.results`` (per characteristic
  and piece); purpose ``first_article``. Values voided with ``repeat_measurement`` during
  a first article never reach the event (the workflow drops them before judging).
- ``measurement`` events: one patrol value each; purpose ``patrol`` or
  ``inspection_100``. A patrol value voided afterwards with ``repeat_measurement`` (a
  ``command`` event naming its ``reading_id``) stays in the export, marked ``voided``
  (the Q-DAS attribute 129: shown, not computed), as it stays in the event log.
- The process events of a press - ``annotation`` (die change, die repair, press
  maintenance, material lot change, job change, long stop, plan change), ``setup`` with
  reason ``job_start``, and ``state_change`` into ``hold`` and out of it to ``released``
  - become event codes (:data:`CATALOGUE`) on the *next value of every characteristic*
  on that press, so each characteristic's chart shows the marker where its values
  change. Issue 14 added the containment (a hold names its suspect range in the code's
  detail; a ``release`` command that closed a containment is code 112 with the
  disposition) and the joint sign-off (``sign_off``, code 113). Process events are
  taken whatever part they name: a job change to part P is news for P's next values.

Each value carries the context of its event (part, plan revision, die, material lot,
heat, stroke count, phase, operator of the last accepted command) and its gauge.

Memory: per press one page of rows, the held-back last patrol value (a void can follow
it), and the process events not yet attached; nothing grows with the number of values.
The values of several presses are merged in time order (``heapq.merge``).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from buffer.event_reader import PAGE_ROWS, read_stream, stream_presses

EVENTS_STREAM = "events"
COLLECTOR_PRESS = "_collector"
_PREFIX = b'{"schema":"press-collector/'
_KINDS = {b"measurement", b"first_article", b"annotation", b"setup", b"state_change",
          b"command", b"sign_off"}
_COMMANDS = (b'"repeat_measurement"', b'"release"')  # the commands an export reads

# The event catalogue: name -> (code, text). Codes are stable (documented in
# docs/quality.md, "Exports"); a plant enters the same catalogue in its Q-DAS database
# once. New codes may be added; existing ones never change meaning.
CATALOGUE: dict[str, tuple[int, str]] = {
    "job_start": (100, "job start (first setup, nothing ran before)"),
    "die_change": (101, "die change"),
    "die_repair": (102, "die repair"),
    "press_maintenance": (103, "press maintenance"),
    "material_lot_change": (104, "material change (lot / heat)"),
    "job_change": (105, "job change (other part)"),
    "long_stop": (106, "long stop"),
    "plan_change": (107, "measurement plan revision change"),
    "hold": (110, "press put on hold"),
    "release": (111, "quality release from hold"),
    "containment_disposition": (112, "suspect parts released with their disposition"),
    "sign_off": (113, "first article confirmed by every role (joint sign-off)"),
}


@dataclass(frozen=True, slots=True)
class EventCode:
    """A process event attached to the values that follow it."""

    code: int
    name: str
    ts: str  # ISO 8601 UTC of the event
    detail: str  # e.g. "die_id D1 -> D2"


@dataclass(slots=True)
class Measurement:
    """One measured value with everything needed to trace it (one CSV row, one Q-DAS
    value)."""

    press: str
    seq: int  # seq of the event in the press's events stream
    event_id: str
    event_ts: str  # ISO 8601 UTC, when the value was judged
    measured_ts: float  # epoch seconds, when the gauge took it
    purpose: str  # first_article, patrol, inspection_100
    part_number: str | None
    plan_revision: str | None
    characteristic: str
    name: str
    char_class: str | None
    unit: str
    nominal: str
    lsl: str | None
    usl: str | None
    resolution: str | None
    value: str
    deviation: str | None
    verdict: str
    reading_id: str | None
    gauge: str | None
    channel: int | None
    die_id: str | None
    material_lot: str | None
    heat_number: str | None
    operator: str | None
    stroke_count: int | None
    phase: int | None
    attempt: int | None = None  # first article attempt
    piece: int | None = None  # piece within the first-article sample
    subgroup_id: str | None = None
    subgroup_position: int | None = None
    subgroup_size: int | None = None
    events: tuple[EventCode, ...] = ()
    voided: bool = False

    @property
    def measured_iso(self) -> str:
        return iso_utc(self.measured_ts)


def iso_utc(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


@dataclass(slots=True)
class _PressState:
    """Per-press bookkeeping while its events stream by (bounded, see module doc)."""

    codes: list[tuple[int, EventCode]] = field(default_factory=list)  # (generation, code)
    generation: int = 0
    seen: dict[str, int] = field(default_factory=dict)  # characteristic -> generation
    last_value_gen: int = 0  # generation at the last value of any characteristic
    held: Measurement | None = None  # last patrol value: a void may follow

    def attach(self, m: Measurement) -> Measurement:
        """Give ``m`` the process events since the last value of its characteristic (a
        characteristic not seen yet: since the press's last value event, so the values of
        one first article all get the events before it). Call :meth:`event_done` after
        the values of one event."""
        start = self.seen.get(m.characteristic, self.last_value_gen)
        self.seen[m.characteristic] = self.generation
        if self.codes and self.codes[-1][0] > start:
            m.events = tuple(c for g, c in self.codes if g > start)
        return m

    def event_done(self) -> None:
        self.last_value_gen = self.generation
        floor = min(self.seen.values(), default=self.generation)
        if self.codes and self.codes[0][0] <= floor:  # attached everywhere: forget
            self.codes = [(g, c) for g, c in self.codes if g > floor]


def _kind(payload: bytes) -> bytes | None:
    if not payload.startswith(_PREFIX):
        return None
    end = payload.find(b'"', len(_PREFIX))
    return payload[len(_PREFIX):end] if end > 0 else None


def _ts_epoch(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def _base(doc: dict[str, Any], press: str, seq: int, r: dict[str, Any],
          purpose: str) -> Measurement:
    ctx = doc.get("context") or {}
    measured = r.get("measured_ts")
    return Measurement(
        press=press, seq=seq, event_id=doc.get("id", ""), event_ts=doc["ts"],
        measured_ts=float(measured) if isinstance(measured, int | float)
        else _ts_epoch(doc["ts"]),
        purpose=purpose, part_number=ctx.get("part_number"),
        plan_revision=ctx.get("plan_revision"), characteristic=str(r["characteristic"]),
        name=str(r.get("name", "")), char_class=r.get("char_class"),
        unit=str(r.get("unit", "")), nominal=str(r["nominal"]), lsl=r.get("lsl"),
        usl=r.get("usl"), resolution=r.get("resolution"), value=str(r["value"]),
        deviation=r.get("deviation"), verdict=str(r.get("verdict", "")),
        reading_id=r.get("reading_id"), gauge=r.get("gauge"), channel=r.get("channel"),
        die_id=ctx.get("die_id"), material_lot=ctx.get("material_lot"),
        heat_number=ctx.get("heat_number"), operator=ctx.get("operator"),
        stroke_count=ctx.get("stroke_count"), phase=ctx.get("phase"))


def _detail(data: dict[str, Any]) -> str:
    prev, new = data.get("previous") or {}, data.get("new") or {}
    changed = [f"{k} {prev.get(k)} -> {new.get(k)}" for k in sorted(set(prev) | set(new))
               if prev.get(k) != new.get(k)]
    return "; ".join(changed)


def press_measurements(path: Path, press: str, part: str | None, start: str | None,
                       end: str | None, page_rows: int = PAGE_ROWS
                       ) -> Iterator[Measurement]:
    """The values of one press for ``part`` (None: every part) judged in
    ``start <= ts < end`` (ISO 8601 UTC strings as in the envelope; None: open), in event
    order. The whole events stream of the press is read (process events before the
    period count for its first values; a void may follow the period's last value), but
    only the relevant kinds are parsed."""
    st = _PressState()

    def wanted(m: Measurement) -> bool:
        return ((part is None or m.part_number == part)
                and (start is None or m.event_ts >= start)
                and (end is None or m.event_ts < end))

    def release() -> Iterator[Measurement]:
        held, st.held = st.held, None
        if held is not None and wanted(held):
            yield held

    for seq, payload in read_stream(path, press, EVENTS_STREAM, page_rows=page_rows):
        kind = _kind(payload)
        if kind not in _KINDS:
            continue
        if kind == b"command" and not any(c in payload for c in _COMMANDS):
            continue
        try:
            doc = orjson.loads(payload)
            data = doc["data"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            continue  # not an event of ours: an export never fails on one odd row
        if kind == b"measurement":
            yield from release()
            m = _base(doc, press, seq, data, str(data.get("purpose") or "patrol"))
            sub = data.get("subgroup") or {}
            m.subgroup_id, m.subgroup_position = sub.get("id"), sub.get("position")
            m.subgroup_size = sub.get("size")
            m.stroke_count = data.get("stroke_count", m.stroke_count)
            st.held = st.attach(m)
            st.event_done()
        elif kind == b"first_article":
            yield from release()
            for r in data.get("results") or ():
                m = _base(doc, press, seq, r, "first_article")
                m.attempt, m.piece = data.get("attempt"), r.get("piece")
                m = st.attach(m)
                if wanted(m):
                    yield m
            st.event_done()
        elif kind == b"command" and data.get("command") == "repeat_measurement":
            voided = (data.get("effect") or {}).get("voided") or {}
            held = st.held
            if (voided.get("kind") == "patrol" and held is not None
                    and voided.get("reading_id") == held.reading_id):
                held.voided = True
        elif kind != b"command" or data.get("command") == "release":
            code = _process_code(kind, data, doc.get("context") or {})
            if code is not None:
                st.generation += 1
                st.codes.append((st.generation, replace(code, ts=doc.get("ts", ""))))
    yield from release()


def _process_code(kind: bytes, data: dict[str, Any], ctx: dict[str, Any]
                  ) -> EventCode | None:
    name = None
    detail = ""
    if kind == b"annotation":
        name = data.get("type")
    elif kind == b"setup" and "job_start" in (data.get("reasons") or ()):
        name = "job_start"
    elif kind == b"state_change":
        detail = str(data.get("cause") or "")
        if data.get("to") == "hold":
            name = "hold"
            suspect = ctx.get("containment")
            if isinstance(suspect, dict) and data.get("cause") in ("measurement_fail",
                                                                   "reaction_hold"):
                detail = f"{detail}; suspect {suspect_text(suspect)}"
        elif data.get("from") == "hold" and data.get("to") == "released":
            name = "release"
    elif kind == b"command":  # a release that closed a containment
        closed = (data.get("effect") or {}).get("containment")
        if isinstance(closed, dict):
            name, detail = "containment_disposition", disposition_text(closed)
    elif kind == b"sign_off":
        name = "sign_off"
        detail = "attempt {} confirmed by {}".format(data.get("attempt"), ", ".join(
            f"{c.get('role')} {c.get('operator')}" for c in data.get("confirmations") or ()
            if isinstance(c, dict)))
    if name not in CATALOGUE:
        return None
    if kind in (b"annotation", b"setup"):
        detail = _detail(data)
    return EventCode(CATALOGUE[name][0], name, "", detail)


def suspect_text(c: dict[str, Any]) -> str:
    """``C1 strokes 10..36 (26 parts)`` (times when there is no stroke counter)."""
    chars = ",".join(str(x) for x in c.get("characteristics") or ())
    if c.get("parts") is not None:
        span = f"strokes {c.get('first_stroke')}..{c.get('last_stroke')} ({c['parts']} parts)"
    else:
        since = iso_utc(c["since"]) if isinstance(c.get("since"), int | float) else "?"
        until = iso_utc(c["until"]) if isinstance(c.get("until"), int | float) else "?"
        span = f"{since}..{until}"
    return f"{chars} {span}".strip()


def disposition_text(c: dict[str, Any]) -> str:
    """The closed containment and what became of its parts, for K0009 / the CSV."""
    d = c.get("disposition") or {}
    text = (f"{c.get('id')} {suspect_text(c)}: good {d.get('sorted_good')}, reworked "
            f"{d.get('reworked')}, scrapped {d.get('scrapped')}")
    return f"{text} ({d['note']})" if d.get("note") else text


def measurements(path: Path, part: str | None = None, start: str | None = None,
                 end: str | None = None, presses: Iterable[str] | None = None,
                 page_rows: int = PAGE_ROWS) -> Iterator[Measurement]:
    """Every value of ``part`` in the period from every press (or ``presses``), merged in
    time order of judgement (ties: press, then event order)."""
    names = list(presses) if presses is not None else [
        p for p in stream_presses(path, EVENTS_STREAM) if p != COLLECTOR_PRESS]
    streams = [press_measurements(path, p, part, start, end, page_rows) for p in names]
    return heapq.merge(*streams, key=lambda m: (m.event_ts, m.press, m.seq))


__all__ = ["CATALOGUE", "EventCode", "Measurement", "measurements", "press_measurements"]
