"""100 % inspection: a mode (not a state) switched on by a reaction plan and ended by a
quality ``release``; while on, every piece is to be measured. The track counts strokes
of released production against measured pieces (a piece = one value of every
characteristic) and raises one ``unmeasured_pieces`` alarm when the gap passes
``inspection_100_max_unmeasured`` (re-armed when the measuring has caught up)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from collector.domain import Event, Plan
from collector.workflow.codec import Record, want

if TYPE_CHECKING:
    from collector.workflow.core import PressWorkflow


@dataclass(slots=True)
class Track:
    since_ts: float | None  # None: restored from a snapshot that had no track
    strokes: int = 0
    measured: dict[str, int] = field(default_factory=dict)  # values per characteristic
    alarmed: bool = False
    alarms: int = 0


@dataclass(slots=True)
class Inspection100(Record):
    track: Track | None = None  # None: the mode is off

    @property
    def on(self) -> bool:
        return self.track is not None

    def start(self, ts: float) -> None:
        if self.track is None:
            self.track = Track(ts)

    def end(self) -> None:
        self.track = None

    def totals(self, plan: Plan | None, max_unmeasured: int) -> dict[str, Any] | None:
        track = self.track
        if track is None:
            return None
        counts = track.measured
        chars = [c.id for c in plan.characteristics] if plan is not None else []
        measured = min((counts.get(c, 0) for c in chars), default=0)
        return {"since_ts": track.since_ts, "strokes": track.strokes,
                "pieces_measured": measured,
                "unmeasured_pieces": max(0, track.strokes - measured),
                "per_characteristic": {c: counts.get(c, 0) for c in chars},
                "max_unmeasured": max_unmeasured, "alarms": track.alarms}

    def strokes(self, wf: PressWorkflow, ts: float, delta: int) -> list[Event]:
        """Strokes of released production while the mode is on."""
        if self.track is None:
            return []
        self.track.strokes += delta
        return self.check(wf, ts)

    def measured(self, wf: PressWorkflow, ts: float, char_id: str) -> bool:
        """A patrol value under the mode; True if it counted."""
        if self.track is None:
            return False
        measured = self.track.measured
        measured[char_id] = measured.get(char_id, 0) + 1
        self.check(wf, ts)  # catching up re-arms the unmeasured alarm
        return True

    def void(self, char_id: str) -> None:
        if self.track is not None:
            measured = self.track.measured
            measured[char_id] = max(0, measured.get(char_id, 0) - 1)

    def check(self, wf: PressWorkflow, ts: float) -> list[Event]:
        """Alarm once when more strokes than ``inspection_100_max_unmeasured`` are not
        matched by measured pieces; re-armed when the measuring has caught up."""
        limit = wf.settings.inspection_100_max_unmeasured
        track, totals = self.track, self.totals(wf.plan(), limit)
        if track is None or totals is None:
            return []
        if totals["unmeasured_pieces"] <= limit:
            track.alarmed = False
            return []
        if track.alarmed:
            return []
        track.alarmed = True
        track.alarms += 1
        totals["alarms"] = track.alarms
        return [wf.event("alarm", ts, {
            "cause": "unmeasured_pieces", "characteristic": None, "char_class": None,
            "actions": [], "evidence": totals, "reading_ids": [], "phase": wf.spc.phase})]

    def validate(self) -> None:
        if self.track is not None:
            want(self.track.strokes >= 0 and min(self.track.measured.values(), default=0) >= 0,
                 "inspection_100 counts")
