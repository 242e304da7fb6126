"""Serial gauge reader: pyserial-asyncio-fast port, line framing, unplug and replug.

One ``SerialGauge`` per gauge (or gauge multiplexer) port. It reads bytes, cuts them into
lines, parses each line with its preset (``drivers.gauge_parsers``) and hands values and
errors to the synchronous sink. Why it looks like this:

- Framing accepts CR, LF and CRLF whatever the configured terminator says: USB adapters,
  multiplexers and misconfigured gauges mix them up, and no record contains CR or LF, so
  being lenient costs nothing. Empty lines (the LF of a CRLF) are skipped.
- A line longer than ``max_line`` is reported once as ``too_long`` and the rest of it is
  discarded up to the next terminator, so a gauge streaming noise at the wrong baud rate
  cannot grow memory, and the tail of the noise is never parsed as a fresh line.
- Garbage is a ``GaugeError`` per line (counted), but the log gets the first line of a
  burst and then summaries: a noisy cable must not flood the journal.
- The port vanishing (USB unplug: EIO, EOF, ENOENT on reopen) is reported once as
  offline; the reader retries with backoff and reports online when the port is back.
  A partial line left at that moment is dropped (counted), never parsed: its other half
  is gone with the device.

Device trouble never escapes ``run()``. Exceptions raised by the sink do: they are
collector bugs, and the daemon's supervisor logs and restarts (same rule as
``ModbusPoller``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

import serial
import serial_asyncio_fast

from drivers.base import Backoff, ConnectionChange, GaugeError, GaugeValue, Sink
from drivers.gauge_parsers import Parsed, Parser, make_parser, parse_line

log = logging.getLogger(__name__)

TERMINATORS = (b"\r", b"\n", b"\r\n")
_READ_SIZE = 4096
_LINE_END = re.compile(rb"[\r\n]")


@dataclass(slots=True, frozen=True)
class Frame:
    """One framed line; ``too_long`` frames hold only the first ``max_line`` bytes."""

    data: bytes
    too_long: bool = False


class LineFramer:
    """Cuts a byte stream into lines at CR, LF or CRLF, with a length cap (no I/O)."""

    def __init__(self, max_line: int) -> None:
        if max_line < 1:
            raise ValueError("max_line must be >= 1")
        self.max_line = max_line
        self._buf = bytearray()
        self._discarding = False

    def feed(self, data: bytes) -> list[Frame]:
        """Frames completed by ``data``, in order; an incomplete tail stays buffered."""
        frames: list[Frame] = []
        pieces = _LINE_END.split(data)
        for piece in pieces[:-1]:
            self._append(piece, frames)
            self._end_line(frames)
        self._append(pieces[-1], frames)
        return frames

    @property
    def pending(self) -> int:
        """Bytes of the unterminated line held so far (diagnostics, tests)."""
        return len(self._buf)

    def drop_partial(self) -> bool:
        """Forget an unterminated line (port lost). True if there was one."""
        had = bool(self._buf) or self._discarding
        self._buf.clear()
        self._discarding = False
        return had

    def _append(self, piece: bytes, frames: list[Frame]) -> None:
        if self._discarding or not piece:
            return
        self._buf += piece
        if len(self._buf) > self.max_line:
            frames.append(Frame(bytes(self._buf[: self.max_line]), too_long=True))
            self._buf.clear()
            self._discarding = True

    def _end_line(self, frames: list[Frame]) -> None:
        if self._discarding:
            self._discarding = False
        elif self._buf:
            frames.append(Frame(bytes(self._buf)))
            self._buf.clear()


class BurstLog:
    """Logs the first bad line of a burst, then at most one summary per ``every``
    seconds, and a last summary when a good line ends the burst."""

    def __init__(self, name: str, every: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self.every = every
        self.clock = clock
        self._in_burst = False
        self._unreported = 0
        self._since = 0.0

    def bad(self, reason: str, raw: bytes) -> None:
        now = self.clock()
        if not self._in_burst:
            self._in_burst, self._since, self._unreported = True, now, 0
            log.warning("%s: %s line %r (more bad lines are summarised)",
                        self.name, reason, raw[:80])
            return
        self._unreported += 1
        if now - self._since >= self.every:
            self._summary(f"in the last {now - self._since:.0f} s")
            self._since = now

    def good(self) -> None:
        """A well-formed line arrived: the burst is over."""
        if self._in_burst:
            self._summary("before the gauge sent a good line again")
        self._in_burst = False

    def flush(self, why: str) -> None:
        if self._in_burst:
            self._summary(why)
        self._in_burst = False

    def _summary(self, why: str) -> None:
        if self._unreported:
            log.warning("%s: %d more bad lines %s", self.name, self._unreported, why)
        self._unreported = 0


def _no_sink(_event: object) -> None:
    """Placeholder until run() is given the real sink."""


_ERRNO_TEXT = re.compile(r"\[Errno (\d+)\] ([^:\]]+)")


def _reason(exc: BaseException) -> str:
    """A short reason for a port failure: 'No such file or directory', not a traceback."""
    text = str(exc)
    if "returned no data" in text:
        return "device disconnected"
    found = _ERRNO_TEXT.findall(text)
    if found:
        return found[-1][1].strip()
    return (text or type(exc).__name__)[:200]


class SerialGauge:
    """Reads one gauge port forever and hands parsed lines to a synchronous sink.

    ``gauge_id`` is the source id ('p1/g1': logs, ``ConnectionChange.source``); ``name``
    (default: the last '/' segment of ``gauge_id``) is what ``GaugeValue.gauge`` and
    ``GaugeError.gauge`` carry. Line settings left as None come from the parser's preset.
    """

    def __init__(
        self,
        gauge_id: str,
        port: str,
        parser: Parser | str = "mitutoyo",
        *,
        baudrate: int | None = None,
        bytesize: int | None = None,
        parity: str | None = None,
        stopbits: int | None = None,
        terminator: bytes | None = None,
        max_line: int = 256,
        unit_default: str = "mm",
        reopen_backoff: Backoff | None = None,
        garbage_log_every: float = 10.0,
        name: str | None = None,
    ) -> None:
        self.gauge_id = gauge_id
        # Values and errors carry the gauge's id from its own config ('g1'), which is what
        # plans route by (base.py: drivers key values by their config names); logs and
        # ConnectionChange.source use the full source id ('p1/g1'), like ModbusPoller.
        self.name = name or gauge_id.rsplit("/", 1)[-1]
        self.port = port
        self.parser = make_parser(parser) if isinstance(parser, str) else parser
        preset = self.parser.preset
        self.baudrate = baudrate or preset.baudrate
        self.bytesize = bytesize or preset.bytesize
        self.parity = parity or preset.parity
        self.stopbits = stopbits or preset.stopbits
        self.terminator = terminator or preset.terminator
        if self.terminator not in TERMINATORS:
            raise ValueError(f"terminator must be CR, LF or CRLF, got {self.terminator!r}")
        self.max_line = max_line
        self.unit_default = unit_default
        self.backoff = reopen_backoff or Backoff(initial=0.2, maximum=5.0)
        self.stats = {"lines": 0, "values": 0, "errors": 0, "garbage": 0, "too_long": 0,
                      "partial_dropped": 0, "reopens": 0, "open_failures": 0}
        self.online: bool | None = None  # None until the first verdict
        self.framer = LineFramer(max_line)
        self._garbage_log = BurstLog(gauge_id, garbage_log_every)
        self._sink: Sink = _no_sink
        self._opened = 0

    async def run(self, sink: Sink) -> None:
        """Open, read, reopen after loss, until cancelled."""
        self._sink = sink
        while True:
            try:
                reader, writer = await self._open()
            except (OSError, ValueError) as exc:  # SerialException is an OSError
                self.stats["open_failures"] += 1
                log.debug("%s: cannot open %s: %s", self.gauge_id, self.port, exc)
                self._set_online(False, _reason(exc))
                await asyncio.sleep(self.backoff.next_delay())
                continue
            try:
                self._connected()
                reason = await self._read(reader)
            finally:
                await _close(writer)
            self._lost(reason)
            await asyncio.sleep(self.backoff.next_delay())

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await serial_asyncio_fast.open_serial_connection(
            url=self.port, baudrate=self.baudrate, bytesize=self.bytesize,
            parity=self.parity, stopbits=self.stopbits, exclusive=True)

    def _connected(self) -> None:
        self._opened += 1
        if self._opened > 1:
            self.stats["reopens"] += 1
        self.framer.drop_partial()
        self.backoff.reset()
        self._set_online(True, "")

    async def _read(self, reader: asyncio.StreamReader) -> str:
        """Feed lines to the sink until the port fails; return why it failed."""
        while True:
            try:
                data = await reader.read(_READ_SIZE)
            except (OSError, serial.SerialException) as exc:
                return _reason(exc)
            if not data:
                return "port closed"
            self.feed(data, time.time())

    def _lost(self, reason: str) -> None:
        if self.framer.drop_partial():
            self.stats["partial_dropped"] += 1
        self._garbage_log.flush("before the port was lost")
        self._set_online(False, reason)

    # -- lines -------------------------------------------------------------------------
    def feed(self, data: bytes, ts: float) -> None:
        """Frame and handle bytes that arrived at ``ts`` (public for tests and tools)."""
        for frame in self.framer.feed(data):
            if frame.too_long:
                self._on_too_long(frame.data, ts)
            else:
                self._on_line(frame.data, ts)

    def _on_line(self, line: bytes, ts: float) -> None:
        self.stats["lines"] += 1
        result = parse_line(self.parser, line)
        if isinstance(result, Parsed):
            self.stats["values"] += 1
            self._garbage_log.good()
            self._sink(GaugeValue(self.name, ts, result.value,
                                  result.unit or self.unit_default, result.channel, line,
                                  result.flag))
        elif result.device_error:
            self.stats["errors"] += 1
            self._garbage_log.good()
            log.info("%s: %s", self.gauge_id, result.reason)
            self._sink(GaugeError(self.name, ts, result.reason, line))
        else:
            self._on_garbage(result.reason, line, ts)

    def _on_too_long(self, head: bytes, ts: float) -> None:
        self.stats["lines"] += 1
        self.stats["too_long"] += 1
        self._on_garbage("too_long", head, ts)

    def _on_garbage(self, reason: str, raw: bytes, ts: float) -> None:
        self.stats["garbage"] += 1
        self._garbage_log.bad(reason, raw)
        self._sink(GaugeError(self.name, ts, reason, raw))

    def _set_online(self, online: bool, reason: str) -> None:
        """Emit a ConnectionChange only when the state really changes."""
        if self.online is online:
            return
        self.online = online
        if online:
            log.info("%s online (%s)", self.gauge_id, self.port)
        else:
            log.warning("%s offline (%s): %s", self.gauge_id, self.port, reason)
        self._sink(ConnectionChange(self.gauge_id, time.time(), online, reason))


async def _close(writer: asyncio.StreamWriter) -> None:
    """Close the port and wait until pyserial has released it, so that a reopen (or a
    test's event loop ending) never races a close still running in the executor."""
    writer.close()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(writer.wait_closed(), 2.0)
