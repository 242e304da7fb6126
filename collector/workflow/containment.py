"""Containment: which parts are suspect when a patrol value fails or a reaction holds.

What a quality engineer asks first when a check fails: since when is it bad, and how
many parts must be isolated? The answer is the range from the *last passing check of
that characteristic* to now, in stroke-counter values and times:

- a passing check is a completed patrol subgroup of the characteristic with every value
  in tolerance and no SPC rule signal on it (``Mark``, with the collector's stroke count
  and the time of its last value); the last ``MARKS_KEPT`` are kept per characteristic;
- every release of production (first article pass, joint sign-off, quality release) is
  the base all characteristics share: nothing before it is suspect any more;
- an out-of-tolerance value: suspect since the characteristic's last passing check (the
  base when there is none since the release);
- a rule signal: the statistics say the process moved at the *start* of the rule's
  window (nine in a row on one side: at the first of the nine), so the range starts at
  the last passing check before the window's first subgroup (the base when none is kept);
- low capability: the index covers every value of the phase, so the range starts at the
  base.

``parts`` = strokes in the range (one stroke, one part: DOMAIN.md has no multi-cavity
dies), ``null`` without a stroke counter. Every failing ``measurement`` and every alarm
that holds the press carries its range (``containment`` in the body). A hold opens the
containment (``open``): it stays open, in every event's context as ``containment``,
until a quality ``release`` gives the disposition (sorted good, reworked, scrapped).
While the press is not released again the range grows with the strokes (parts pressed
on hold are as suspect as the ones before); it is frozen when production is released
(``range_open`` false), also when that happens through a new first article rather than
the quality release. A second hold before the disposition widens the one containment
(earliest start, every characteristic and cause): one range, one disposition, never
fewer parts isolated than either alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from collector.workflow.codec import Record, want

if TYPE_CHECKING:
    from collector.workflow.core import PressWorkflow

MARKS_KEPT = 32  # passing checks kept per characteristic (longest default rule window: 15)
EVERYTHING = (-1, -1)  # 'before' that no check precedes: the range starts at the base


@dataclass(slots=True)
class Mark:
    """A point from which parts are known good: a passing check or a release."""

    stroke: int | None
    ts: float
    source: str  # 'patrol' | 'release'
    subgroup: str | None = None  # 'C1/<phase>/<k>' of a passing patrol check

    def order(self) -> tuple[int, int]:
        return subgroup_order(self.subgroup) if self.subgroup else EVERYTHING


def subgroup_order(sid: str) -> tuple[int, int]:
    """(phase, k) of a subgroup id ``<characteristic>/<phase>/<k>`` (the characteristic
    id may hold slashes itself)."""
    try:
        _, phase, k = sid.rsplit("/", 2)
        return int(phase), int(k)
    except ValueError:
        return EVERYTHING


@dataclass(slots=True)
class Suspect:
    """The open containment: what caused it and where its range starts."""

    id: str
    characteristics: list[str]
    causes: list[str]
    start: Mark | None  # None: no passing check on record (a snapshot from before)
    detected_ts: float
    detected_stroke: int | None
    end_stroke: int | None = None  # frozen when production is released again
    end_ts: float | None = None
    range_open: bool = True
    reading_ids: list[str | None] = field(default_factory=list)


def _range(start: Mark | None, last_stroke: int | None, until: float) -> dict[str, Any]:
    first = start.stroke if start is not None else None
    parts = (max(0, last_stroke - first) if first is not None and last_stroke is not None
             else None)
    return {"first_stroke": first, "last_stroke": last_stroke,
            "since": start.ts if start is not None else None, "until": until,
            "parts": parts,
            "last_good": {"source": start.source if start is not None else None,
                          "subgroup": start.subgroup if start is not None else None}}


@dataclass(slots=True)
class Containment(Record):
    base: Mark | None = None  # the last release of production
    good: dict[str, list[Mark]] = field(default_factory=dict)  # passing checks, oldest first
    failing: dict[str, list[str | None]] = field(default_factory=dict)  # open subgroup's fails
    open: Suspect | None = None
    seq: int = 0

    # ---- what the patrol tells it ---------------------------------------------------
    def released(self, stroke: int | None, ts: float) -> None:
        """Production released: the new base; an open range is frozen here."""
        self.base = Mark(stroke, ts, "release")
        self.good = {}
        self.failing = {}
        if self.open is not None and self.open.range_open:
            self.open.range_open = False
            self.open.end_stroke, self.open.end_ts = stroke, ts

    def value(self, char_id: str, reading_id: str | None, failed: bool) -> None:
        if failed:
            self.failing.setdefault(char_id, []).append(reading_id)

    def check_done(self, char_id: str, subgroup: str, stroke: int | None, ts: float,
                   signalled: bool) -> None:
        """A completed subgroup: a passing check when nothing in it failed."""
        failed = self.failing.pop(char_id, [])
        if not failed and not signalled:
            marks = self.good.setdefault(char_id, [])
            marks.append(Mark(stroke, ts, "patrol", subgroup))
            del marks[:-MARKS_KEPT]

    def void(self, char_id: str, reading_id: str | None, subgroup: str | None) -> None:
        """repeat_measurement: the value is out; a check it completed is no longer one."""
        fails = self.failing.get(char_id)
        if fails and reading_id in fails:
            fails.remove(reading_id)
        marks = self.good.get(char_id)
        if marks and subgroup is not None and marks[-1].subgroup == subgroup:
            marks.pop()

    # ---- ranges ---------------------------------------------------------------------
    def last_good(self, char_id: str, before: tuple[int, int] | None = None) -> Mark | None:
        """The last passing check of the characteristic (before the subgroup ``before``),
        else the release."""
        for mark in reversed(self.good.get(char_id, [])):
            if before is None or mark.order() < before:
                return mark
        return self.base

    def suspect(self, wf: PressWorkflow, ts: float, char_id: str, cause: str,
                before: tuple[int, int] | None = None) -> dict[str, Any]:
        """The suspect range of one failing value or alarm, as of now (an event body's
        ``containment``; ``id`` is filled in when it holds the press)."""
        return {"id": None, "characteristics": [char_id], "causes": [cause],
                **_range(self.last_good(char_id, before), wf.counter.count, ts),
                "detected_ts": ts, "detected_stroke": wf.counter.count, "range_open": False}

    def hold(self, wf: PressWorkflow, ts: float, suspect: dict[str, Any],
             reading_ids: list[str | None]) -> None:
        """A hold caused by ``suspect``: open the containment, or widen the open one.
        ``suspect`` gets the containment's id and says its range stays open."""
        char, cause = suspect["characteristics"][0], suspect["causes"][0]
        start = _mark_of(suspect)
        s = self.open
        if s is None:
            self.seq += 1
            s = self.open = Suspect(f"{wf.press_id}/containment/{self.seq}", [char], [cause],
                                    start, ts, wf.counter.count)
        else:
            if char not in s.characteristics:
                s.characteristics.append(char)
            if cause not in s.causes:
                s.causes.append(cause)
            if _earlier(start, s.start):
                s.start = start
            if not s.range_open:  # held again after a release: the range grows again
                s.range_open, s.end_stroke, s.end_ts = True, None, None
        s.reading_ids += [r for r in reading_ids if r not in s.reading_ids]
        suspect["id"] = s.id
        suspect["range_open"] = True

    def view(self, wf: PressWorkflow) -> dict[str, Any] | None:
        """The open containment as it stands (``context()["containment"]``): while its
        range is open, up to the last stroke counted."""
        s = self.open
        if s is None:
            return None
        if s.range_open:
            last_stroke = wf.counter.count
            stroke_ts = wf.counter.last_stroke_ts
            until = stroke_ts if stroke_ts is not None and stroke_ts > s.detected_ts \
                else s.detected_ts
        else:
            last_stroke, until = s.end_stroke, s.end_ts if s.end_ts is not None \
                else s.detected_ts
        return {"id": s.id, "characteristics": list(s.characteristics),
                "causes": list(s.causes), **_range(s.start, last_stroke, until),
                "detected_ts": s.detected_ts, "detected_stroke": s.detected_stroke,
                "range_open": s.range_open}

    def close(self, wf: PressWorkflow, ts: float) -> dict[str, Any] | None:
        """The quality release with the disposition: the final range (up to now when
        the press was not released since the hold); the containment is closed."""
        s = self.open
        if s is None:
            return None
        if s.range_open:
            s.range_open, s.end_stroke, s.end_ts = False, wf.counter.count, ts
        final = self.view(wf)
        self.open = None
        return final

    def validate(self) -> None:
        want(self.seq >= 0, "containment.seq")
        if self.open is not None:
            want(bool(self.open.characteristics) and bool(self.open.causes),
                 "containment.open")
        for marks in self.good.values():
            del marks[:-MARKS_KEPT]


def _mark_of(suspect: dict[str, Any]) -> Mark | None:
    good = suspect["last_good"]
    if good["source"] is None:
        return None
    return Mark(suspect["first_stroke"], suspect["since"], good["source"], good["subgroup"])


def _earlier(a: Mark | None, b: Mark | None) -> bool:
    """Is ``a`` an earlier start than ``b`` (None: unknown, the earliest of all)?"""
    if b is None:
        return False
    if a is None:
        return True
    return a.ts < b.ts


def load(raw: Any) -> Containment:
    """The section, or a fresh one when the snapshot has none (before issue 14)."""
    if raw is None:
        return Containment()
    loaded: Containment = Containment.load(raw)
    return loaded


__all__ = ["MARKS_KEPT", "Containment", "Mark", "Suspect", "load", "subgroup_order"]
