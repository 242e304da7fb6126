"""Poll gauges when the press says so: a PLC tag's rising edge or a stroke count step.

Polled gauges (Sylvac duplex, Millimar, Chicago, Metro) measure when asked. The natural
moment is a press event: "part in fixture" goes true, or the stroke counter steps (one
gauge reading per part). The PLC driver already delivers every poll to the press; this
small wrapper looks at the same ``PollResult`` first-hand and asks the gauge driver to
poll, without the workflow knowing about gauges' wiring. Edges are seen on consecutive
poll results: the first result after start only sets the reference (no phantom edge
at start-up), and a tag missing from a result (read error) neither fires nor resets it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from drivers.base import DriverEvent, PollResult, Sink

log = logging.getLogger(__name__)

STROKE = "stroke"
_MISSING = object()


class Pollable(Protocol):
    async def poll(self) -> bool: ...


class GaugeTriggers:
    """Trigger rules of one press: ``(trigger, tag, gauge)``; callable as a sink wrapper."""

    def __init__(self, role_tags: Mapping[str, str]) -> None:
        self._stroke_tag = next((t for t, r in role_tags.items() if r == "stroke_count"), None)
        self._rules: list[tuple[str, str, Pollable]] = []
        self._last: dict[str, Any] = {}
        self._tasks: set[asyncio.Task[bool]] = set()
        self.fired = 0

    def add(self, gauge: Pollable, triggers: Iterable[str]) -> None:
        """``triggers``: 'stroke' (needs a stroke_count tag) or PLC tag names."""
        for trigger in triggers:
            tag = self._stroke_tag if trigger == STROKE else trigger
            if tag is None:
                raise ValueError("trigger 'stroke' needs a tag with role stroke_count")
            self._rules.append((trigger, tag, gauge))

    def __bool__(self) -> bool:
        return bool(self._rules)

    def wrap(self, sink: Sink) -> Sink:
        """A sink that passes every event on, then polls the gauges a poll result fires."""
        def wrapped(event: DriverEvent) -> None:
            sink(event)
            if isinstance(event, PollResult):
                self.on_poll(event)
        return wrapped

    def due(self, result: PollResult) -> list[Pollable]:
        """The gauges this poll result fires (each once), and remember the tag values."""
        fire: list[Pollable] = []
        # A flagged value (NaN, text that is not UTF-8) counts as missing: no edge.
        values = ({t: v for t, v in result.values.items() if t not in result.errors}
                  if result.errors else result.values)
        for trigger, tag, gauge in self._rules:
            new = values.get(tag, _MISSING)
            old = self._last.get(tag, _MISSING)
            if new is _MISSING or old is _MISSING:
                continue
            if trigger == STROKE:
                hit = isinstance(new, int) and isinstance(old, int) and new > old
            else:
                hit = bool(new) and not bool(old)
            if hit and gauge not in fire:
                fire.append(gauge)
        for _trigger, tag, _gauge in self._rules:
            if tag in values:
                self._last[tag] = values[tag]
        return fire

    def on_poll(self, result: PollResult) -> None:
        for gauge in self.due(result):
            self.fired += 1
            task = asyncio.get_running_loop().create_task(gauge.poll())
            self._tasks.add(task)
            task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[bool]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("gauge poll failed", exc_info=task.exception())
