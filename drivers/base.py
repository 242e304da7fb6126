"""What every driver hands to the collector, and the backoff every driver uses.

Drivers know protocols, not quality: they deliver decoded values keyed by the tag or
gauge names from their own config and never decide anything about a press's state.
They call a synchronous ``sink`` (no ``await`` per value) so that the hot path costs
one function call per poll, not one coroutine per reading.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(slots=True)
class PollResult:
    """All tag values of one poll of one PLC connection.

    ``ts`` is the wall-clock acquisition time (epoch seconds, taken when the response
    arrived); ``scheduled`` and ``started`` are monotonic, for jitter accounting.
    A tag whose block read failed is absent from ``values`` and present in ``errors``
    with a short reason (e.g. the Modbus exception name).
    """

    source: str
    ts: float
    values: dict[str, Any]
    errors: dict[str, str] = field(default_factory=dict)
    scheduled: float = 0.0
    started: float = 0.0
    late_polls: int = 0  # the connection's skipped poll slots so far (cumulative)


@dataclass(slots=True, frozen=True)
class ConnectionChange:
    """A device went online or offline. Emitted once per change, never repeated."""

    source: str
    ts: float
    online: bool
    reason: str = ""


@dataclass(slots=True, frozen=True)
class GaugeValue:
    """One measured value from a gauge.

    ``value`` stays a decimal string as the gauge sent it: its number of decimals is the
    gauge's resolution. ``unit`` comes from the record when it carries one, else config.
    """

    gauge: str
    ts: float
    value: str
    unit: str
    channel: int | None = None
    raw: bytes = b""
    # The gauge's own flag as sent ('<', '=', '>', 'GO', '+NG', '-NG', '= <', 'MAX' ...)
    # and, for a tolerance flag, its meaning: 'below', 'within' or 'above'.
    flag: str | None = None
    # The gauge was past its calibration due date (config) when it took this reading.
    calibration_overdue: bool = False
    verdict: str | None = None


@dataclass(slots=True, frozen=True)
class GaugeError:
    """A line from a gauge that is not a value: device error string or garbage."""

    gauge: str
    ts: float
    reason: str
    raw: bytes = b""

    @property
    def reportable(self) -> bool:
        """A device error code or an unsupported record (the gauge said something that is
        not noise): a ``gauge_error`` event. Garbage and line noise are only counted."""
        return self.reason.startswith(("device_error", "unsupported"))


DriverEvent = PollResult | ConnectionChange | GaugeValue | GaugeError

# Per-tag error codes for values a device sent that JSON cannot carry as they are.
NON_FINITE = "NonFinite"  # a float NaN, +inf or -inf
INVALID_TEXT = "InvalidUTF8"  # string bytes that are not UTF-8 (shown with U+FFFD)


def non_finite_text(value: float) -> str:
    """'NaN', 'Infinity' or '-Infinity' (the spellings JavaScript and Java print and
    Python's float() reads back): telemetry keeps *which* one the PLC sent."""
    if math.isnan(value):
        return "NaN"
    return "Infinity" if value > 0 else "-Infinity"


def json_safe(value: object) -> tuple[object, str | None]:
    """A device value as JSON can carry it, and the per-tag error if it had to change.

    A non-finite float becomes its name (``NON_FINITE``): orjson would write ``null``
    and lose which one it was. A string holding undecodable bytes (asyncua keeps them as
    lone surrogates, which orjson refuses: the whole poll would fail) gets U+FFFD for
    them (``INVALID_TEXT``). Lists are checked element by element."""
    if isinstance(value, float):
        if math.isfinite(value):
            return value, None
        return non_finite_text(value), NON_FINITE
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            fixed = value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
            return fixed, INVALID_TEXT
        return value, None
    if isinstance(value, list):
        problem = None
        out = []
        for item in value:
            safe, bad = json_safe(item)
            out.append(safe)
            problem = problem or bad
        return (out, problem) if problem else (value, None)
    return value, None
Sink = Callable[[DriverEvent], None]


class Driver(Protocol):
    """What the daemon runs for a source (a press's PLC, a gauge); built by the source's
    driver package (``drivers.registry``), never by protocol name in the collector.

    ``run(sink)`` connects, delivers events to the synchronous ``sink`` and reconnects
    until cancelled: device trouble never escapes it (it becomes a ``ConnectionChange``),
    a bug does, after the driver reported the device offline (``drivers.link``).
    ``stats`` are counters for /health; ``online`` is None until the first verdict.
    """

    source: str

    @property
    def online(self) -> bool | None: ...

    @property
    def stats(self) -> dict[str, int]: ...

    async def run(self, sink: Sink) -> None: ...


class PlcDriver(Driver, Protocol):
    """A PLC driver also reads once (probes) and writes outputs (issue 14's output tags):
    ``write`` encodes the value as the tag's type, writes, reads back and compares; it
    raises ``drivers.link.WriteFailed`` (refused, not answered, read back different) and
    never holds up polling."""

    async def read_once(self) -> dict[str, Any]: ...

    async def write(self, tag: str, value: Any) -> None: ...


class Backoff:
    """Capped exponential backoff with jitter, reset on success.

    Jitter keeps a line of presses that lost the network together from reconnecting in
    lock-step.
    """

    def __init__(self, initial: float = 0.5, maximum: float = 30.0, factor: float = 2.0,
                 jitter: float = 0.1) -> None:
        self.initial = initial
        self.maximum = maximum
        self.factor = factor
        self.jitter = jitter
        self._next = initial

    def next_delay(self) -> float:
        delay = self._next
        self._next = min(self.maximum, self._next * self.factor)
        return delay * (1.0 + random.uniform(-self.jitter, self.jitter))

    def reset(self) -> None:
        self._next = self.initial
