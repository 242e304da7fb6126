"""The lifecycle every driver shares: online state, emit-once, stats, slot grid, failure.

Before this module each driver (Modbus TCP, the RTU bus, OPC UA, serial gauges) kept its
own copy of ``_set_online`` / ``_no_sink`` / ``LinkDown`` / ``TagError`` / the late-poll
arithmetic, and the copies had drifted (late polls were counted in one Modbus engine
only). Now a driver owns one :class:`LinkState` per source (a press's PLC, a gauge) and,
when it polls on a period, one :class:`SlotGrid`; the rules live here once:

- **Emit once.** A ``ConnectionChange`` goes to the sink only when the state really
  changes; the first verdict (online or offline) is always reported, so a device that is
  down at start-up yields one offline change.
- **The sink's exceptions propagate.** They are collector bugs, not device trouble;
  hiding them would turn a crash into silent data loss. Before such a failure leaves
  ``run()``, :meth:`LinkState.report_failure` says the device is offline through the
  same bookkeeping (the press is not left silent while its retained state says online).
- **Drift-free slots.** Slot k is ``anchor + k * interval`` on the monotonic clock,
  computed by multiplication; a poll that ends more than one period late skips the
  missed slots (counted in ``late_polls``) instead of bursting to catch up, and a burst
  of late polls is logged once when it starts and once when it ends.
- **Slots on a shared grid.** After a (re)start the first poll is at once, the next ones
  on multiples of the interval on the monotonic clock, so every press of a daemon with
  the same interval polls in the same instant: their readings land in one commit window
  of the buffer (one fsync, one publisher wake-up, one socket write for all of them)
  instead of one commit per press spread over the period. Measured: docs/modbus.md.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from drivers.base import ConnectionChange, DriverEvent, Sink

log = logging.getLogger(__name__)

__all__ = ["POLL_EARLY_S", "LinkDown", "LinkState", "SlotGrid", "TagError", "WriteFailed",
           "no_sink", "report_failure"]

# A poll due within this is served now, not after another wait: uvloop's timers count
# whole milliseconds on a clock read once per loop turn, so a timer fires up to ~1 ms
# before its time, and a wait under 0.5 ms rounds to "call soon". Waiting again for that
# rest was a busy loop: ~20 extra loop turns per poll (measured, 300 polls every 10 ms:
# 5,849 waits; with this slack 300). A poll up to 1 ms early is on its slot (the jitter
# metric counts it as 0; ``PollResult.scheduled`` stays the slot's time).
POLL_EARLY_S = 0.001


class LinkDown(Exception):
    """The connection is unusable (lost, refused, timed out, port gone); the message is
    the reason that goes into the offline ``ConnectionChange``."""


class WriteFailed(Exception):
    """A write to a device output was refused, not answered, or read back different;
    the message says which (it goes into the alarm an output write raises)."""


@dataclass(frozen=True, slots=True)
class TagError:
    """A tag that could not be read, as a one-shot read (``read_once``, a probe) reports
    it next to the values that could be read."""

    reason: str


def no_sink(_event: object) -> None:
    """Placeholder until ``run()`` is given the real sink (events before that are
    dropped: nobody is listening yet)."""


def report_failure(set_online: Callable[[bool, str], None], source: str,
                   exc: BaseException) -> None:
    """A driver's run() is about to die of ``exc`` (a bug, often in the sink): say the
    device is offline through the driver's own online bookkeeping, so that the press
    is not left silent while its retained state says online. The supervisor restarts
    the driver; its first good poll reports online again. Never raises: the original
    exception is what the supervisor must see."""
    reason = f"driver failed: {type(exc).__name__}: {exc}"[:200]
    try:
        set_online(False, reason)
    except Exception:  # the sink may be what is broken; the crash is logged upstream
        logging.getLogger(__name__).exception("%s: could not report the failure", source)


class LinkState:
    """Online bookkeeping and counters of one source (a press's PLC, one gauge).

    ``stats`` starts with the counters every driver has (``polls``, ``late_polls``,
    ``errors``) plus the driver's own ``extra`` ones. ``online`` is None until the first
    verdict. ``on_change`` logs a change (default: one INFO line); a driver with its own
    wording passes its own.
    """

    __slots__ = ("on_change", "online", "sink", "source", "stats")

    def __init__(self, source: str, extra: tuple[str, ...] = (),
                 on_change: Callable[[str, bool, str], None] | None = None) -> None:
        self.source = source
        self.online: bool | None = None
        self.sink: Sink = no_sink
        self.stats: dict[str, int] = dict.fromkeys(("polls", "late_polls", "errors", *extra), 0)
        self.on_change = on_change or _log_change

    def attach(self, sink: Sink) -> None:
        self.sink = sink

    def detach(self) -> None:
        self.sink = no_sink

    def emit(self, event: DriverEvent) -> None:
        """Call the sink; its exceptions propagate (collector bugs, see the module)."""
        self.sink(event)

    def set_online(self, online: bool, reason: str = "") -> bool:
        """Emit a ConnectionChange only when the state really changes; True if it did."""
        if self.online is online:
            return False
        self.online = online
        self.on_change(self.source, online, reason)
        self.sink(ConnectionChange(self.source, time.time(), online, reason))
        return True

    def report_failure(self, exc: BaseException) -> None:
        """``run()`` is dying of ``exc``: offline with the reason, never raises."""
        report_failure(self.set_online, self.source, exc)

    def count(self, key: str, n: int = 1) -> None:
        self.stats[key] = self.stats.get(key, 0) + n


def _log_change(source: str, online: bool, reason: str) -> None:
    log.info("%s %s %s", source, "online" if online else "offline", reason)


class SlotGrid:
    """The drift-free poll schedule of one source (see the module docstring)."""

    __slots__ = ("_late_in_burst", "anchor", "interval", "slot", "source", "state")

    def __init__(self, interval_s: float, state: LinkState) -> None:
        if interval_s <= 0:
            raise ValueError("poll interval must be > 0")
        self.interval = interval_s
        self.state = state
        self.source = state.source
        self.anchor = 0.0
        self.slot = 0
        self._late_in_burst = 0

    def restart(self, at: float | None = None) -> None:
        """After a (re)connect or a unit that came back: the poll due now is at ``at``
        (default: now), slot 1 the next multiple of the interval (the shared grid)."""
        at = time.monotonic() if at is None else at
        self.anchor = (at // self.interval) * self.interval
        self.slot = 0

    @property
    def due(self) -> float:
        """Monotonic time of the current slot."""
        return self.anchor + self.slot * self.interval

    def advance(self, now: float | None = None) -> int:
        """The poll of the current slot is done: move to the next slot, skipping (and
        counting) the ones missed by more than a period. Returns the slots skipped."""
        interval = self.interval
        self.slot += 1
        now = time.monotonic() if now is None else now
        late = now - (self.anchor + self.slot * interval)
        if late > interval:
            missed = int(late // interval)
            self.slot += missed
            self.state.stats["late_polls"] += missed
            if not self._late_in_burst:
                log.warning("%s: poll ended %.0f ms past its slot: %d poll slot(s) skipped "
                            "(the device or this machine cannot keep %.0f ms; "
                            "late_polls=%d)", self.source, late * 1000, missed,
                            interval * 1000, self.state.stats["late_polls"])
            self._late_in_burst += missed
            return missed
        if self._late_in_burst:
            log.info("%s: polling on time again (%d slot(s) skipped in that burst, "
                     "late_polls=%d)", self.source, self._late_in_burst,
                     self.state.stats["late_polls"])
            self._late_in_burst = 0
        return 0


def stats_view(*parts: dict[str, Any]) -> dict[str, Any]:
    """Counters of several parts as one dict (a driver's unit and its link)."""
    out: dict[str, Any] = {}
    for part in parts:
        out.update(part)
    return out
