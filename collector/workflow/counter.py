"""The stroke counter as PLCs send it (issue 11): wraps, glitches, resets.

``count`` is the collector's count: the PLC counter's first value, then + every
plausible increase, so it continues across a wrap at ``stroke_counter_wrap`` and across
glitches. A value that is not a plausible increase counts nothing and opens a
``counter_anomaly`` episode (one alarm); the count resumes with the next value that is
plausible after the last accepted one (a glitch) or after the implausible one (a reset).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from collector.domain import WorkflowSettings
from collector.workflow.codec import Record


@dataclass(slots=True)
class StrokeCounter(Record):
    """``count``: the collector's count; ``last_stroke_ts``: time of the last increase
    (the idle clock); ``raw`` / ``raw_ts``: the last accepted PLC value and its time;
    ``suspect``: the last implausible value (raw, ts) of an open anomaly episode."""

    count: int | None = None
    last_stroke_ts: float | None = None
    raw: int | None = None
    raw_ts: float | None = None
    suspect: tuple[int, float] | None = None

    def baseline(self, ts: float, raw: int | None) -> None:
        """The first poll: the PLC value is the count."""
        if raw is not None:
            self.count = self.raw = raw
            self.last_stroke_ts = self.raw_ts = ts

    def idle(self, ts: float) -> float:
        """Seconds since the last stroke (0 without one)."""
        return max(0.0, ts - self.last_stroke_ts) if self.last_stroke_ts is not None else 0.0

    def step(self, ts: float, raw: int | None, settings: WorkflowSettings,
             phase: int) -> tuple[int, dict[str, Any] | None]:
        """Strokes since the last accepted value, and a ``counter_anomaly`` alarm body
        when this value is not plausible.

        Plausible = an increase of at most what the press can make at
        ``max_strokes_per_min`` since the last accepted value (over at least one second,
        + 1), counted modulo ``stroke_counter_wrap`` so that a wrap is counted across;
        without a rate: any increase (with a wrap: less than half the range).
        """
        if raw is None:
            return 0, None
        if self.raw is None or self.raw_ts is None or self.count is None:
            self.count = self.count if self.count is not None else raw
            self.raw, self.raw_ts, self.suspect = raw, ts, None
            return 0, None
        steps = _plausible(settings, self.raw, self.raw_ts, raw, ts)
        if steps is None and self.suspect is not None:
            steps = _plausible(settings, *self.suspect, raw, ts)  # the counter was reset
        if steps is not None:
            self.count += steps
            self.raw, self.raw_ts, self.suspect = raw, ts, None
            return steps, None
        opened = self.suspect is None
        self.suspect = (raw, ts)
        if not opened:
            return 0, None  # one alarm per episode
        limit = _max_increase(settings, ts - self.raw_ts)
        return 0, {
            "cause": "counter_anomaly", "characteristic": None, "char_class": None,
            "actions": [], "reading_ids": [], "phase": phase,
            "evidence": {
                "previous": self.raw, "value": raw,
                "reason": "decrease" if raw < self.raw else "jump",
                "elapsed_s": round(ts - self.raw_ts, 3),
                "max_increase": None if limit == math.inf else int(limit),
                "max_strokes_per_min": settings.max_strokes_per_min,
                "counter_wrap": settings.stroke_counter_wrap,
                "stroke_count": self.count,
            }}


def _max_increase(settings: WorkflowSettings, elapsed: float) -> float:
    rate = settings.max_strokes_per_min
    if rate is None:
        return math.inf
    return math.ceil(rate * max(elapsed, 1.0) / 60.0) + 1


def _plausible(settings: WorkflowSettings, before: int, before_ts: float, raw: int,
               ts: float) -> int | None:
    """Strokes from ``before`` to ``raw`` if the step is plausible, else None."""
    wrap = settings.stroke_counter_wrap
    if wrap is not None and wrap >= 2:
        steps = (raw - before) % wrap
        limit = min(_max_increase(settings, ts - before_ts), (wrap - 1) // 2)
    else:
        steps = raw - before
        limit = _max_increase(settings, ts - before_ts)
    return steps if 0 <= steps <= limit else None
