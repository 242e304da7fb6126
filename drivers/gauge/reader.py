"""Serial gauge reader: pyserial-asyncio-fast port, line framing, unplug and replug.

One ``SerialGauge`` per gauge (or gauge multiplexer) port. It reads bytes, cuts them into
lines, parses each line with its family's rules (``drivers.gauge.records``) and hands values and
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
import termios
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date

import serial

from drivers.base import Backoff, GaugeError, GaugeValue, Sink
from drivers.gauge.presets import make_parser, poll_commands
from drivers.gauge.records import Parsed, Parser, Rejected, parse_records
from drivers.link import LinkState
from drivers.serial_settings import (
    LineSettings,
    explain_refusal,
    is_settings_refusal,
    open_serial_streams,
    refused_settings,
)

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
        poll_command: bytes = b"",
        channels: tuple[int, ...] = (),
        poll_interval_s: float = 0.0,
        poll_timeout_s: float = 1.0,
        dtr: bool | None = None,
        rts: bool | None = None,
        echo: bool | None = None,
        calibration_due: date | None = None,
        today: Callable[[], date] = date.today,
        settings_where: str = "",
        settings_cli: bool = False,
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
        self.link = LinkState(gauge_id, ("lines", "values", "garbage", "too_long",
                                         "partial_dropped", "reopens", "open_failures",
                                         "ignored", "echoes", "poll_timeouts"),
                              on_change=self._log_change)
        self.stats = self.link.stats
        # Polled gauges: what one poll sends (Metro: one channel digit per channel).
        self.poll_commands = poll_commands(preset, tuple(channels), poll_command)
        self.poll_interval_s = poll_interval_s
        self.poll_timeout_s = poll_timeout_s
        # Sylvac cables take their power from DTR (on) with RTS off; None = leave as is.
        self.dtr = True if dtr is None and preset.name == "sylvac" else dtr
        self.rts = False if rts is None and preset.name == "sylvac" else rts
        self.echo = preset.echoes_commands if echo is None else echo
        self.calibration_due = calibration_due
        self._today = today
        # Where a refused line setting is overridden (said in the reason): config or CLI.
        self.settings_where = settings_where or f"in [[gauges]] {self.name}"
        self.settings_cli = settings_cli
        self._writer: asyncio.StreamWriter | None = None
        self._echo_pending: list[bytes] = []
        self._answer = asyncio.Event()
        self._poll_lock = asyncio.Lock()
        self.framer = LineFramer(max_line)
        self._garbage_log = BurstLog(gauge_id, garbage_log_every)
        self._opened = 0

    async def run(self, sink: Sink) -> None:
        """Open, read, reopen after loss, until cancelled."""
        self.link.attach(sink)
        while True:
            try:
                reader, writer = await self._open()
            except (OSError, ValueError, termios.error) as exc:  # SerialException: OSError
                self.stats["open_failures"] += 1
                log.debug("%s: cannot open %s: %s", self.gauge_id, self.port, exc)
                self._set_online(False, await self._open_failure(exc))
                await asyncio.sleep(self.backoff.next_delay())
                continue
            poller: asyncio.Task[None] | None = None
            try:
                self._set_lines(writer)
                self._writer = writer
                self._connected()
                if self.poll_interval_s > 0 and self.poll_commands:
                    poller = asyncio.create_task(self._poll_loop(), name=f"{self.gauge_id} poll")
                reason = await self._read(reader)
            finally:
                self._writer = None
                if poller is not None:
                    poller.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await poller
                await _close(writer)
            self._lost(reason)
            await asyncio.sleep(self.backoff.next_delay())

    @property
    def ever_opened(self) -> bool:
        """The port was open at least once (a probe tells "cannot open" from "lost")."""
        return self._opened > 0

    async def _open_failure(self, exc: BaseException) -> str:
        """The reason an open failed; for refused line settings, which setting and the
        override to try (not pyserial's bare "(22, 'Invalid argument')")."""
        if not is_settings_refusal(exc):
            return _reason(exc)
        settings = LineSettings(self.baudrate, self.bytesize, self.parity, self.stopbits)
        refused = await asyncio.to_thread(refused_settings, self.port, settings)
        return explain_refusal(self.port, settings, refused, self.settings_where,
                               self.settings_cli)

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await open_serial_streams(
            self.port, LineSettings(self.baudrate, self.bytesize, self.parity, self.stopbits))

    def _set_lines(self, writer: asyncio.StreamWriter) -> None:
        """Set DTR/RTS as the cable needs (Sylvac: powered by DTR on, RTS off)."""
        port = getattr(writer.transport, "serial", None)
        if port is None:
            return
        with contextlib.suppress(OSError, ValueError, termios.error):  # a pty has none
            if self.dtr is not None:
                port.dtr = self.dtr
            if self.rts is not None:
                port.rts = self.rts

    # -- polling -----------------------------------------------------------------------
    async def poll(self) -> bool:
        """Send one poll (every command of it) and wait for the answer to each, up to
        ``poll_timeout_s``. False when the port is closed or the gauge has no poll
        command. Safe to call from a trigger while the schedule also polls: polls are
        serialised."""
        if not self.poll_commands:
            return False
        async with self._poll_lock:
            for command in self.poll_commands:
                writer = self._writer
                if writer is None:
                    return False
                self._answer.clear()
                if self.echo:
                    self._echo_pending.append(command.rstrip(b"\r\n"))
                try:
                    writer.write(command)
                    await writer.drain()
                except (OSError, serial.SerialException):
                    return False
                self.stats["polls"] += 1
                try:
                    await asyncio.wait_for(self._answer.wait(), self.poll_timeout_s)
                except TimeoutError:
                    self.stats["poll_timeouts"] += 1
                self._echo_pending.clear()
        return True

    async def _poll_loop(self) -> None:
        """Poll on a drift-free grid while the port is open."""
        anchor = time.monotonic()
        slot = 0
        while True:
            await self.poll()
            slot += 1
            now = time.monotonic()
            slot = max(slot, int((now - anchor) / self.poll_interval_s) + 1)
            await asyncio.sleep(anchor + slot * self.poll_interval_s - now)

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

    def _strip_echo(self, line: bytes) -> bytes:
        """Drop the echo of a command we sent (duplex instruments echo every command);
        the echo may share its line with the answer."""
        while self._echo_pending:
            echo = self._echo_pending[0]
            if not line.startswith(echo):
                break  # not the echo (yet): poll() forgets it once the answer is in
            self._echo_pending.pop(0)
            self.stats["echoes"] += 1
            line = line[len(echo):]
        return line

    @property
    def calibration_overdue(self) -> bool:
        """Past the due date: the due day itself still counts as calibrated."""
        return self.calibration_due is not None and self._today() > self.calibration_due

    def _on_line(self, line: bytes, ts: float) -> None:
        if self._echo_pending:
            stripped = self._strip_echo(line)
            if not stripped:
                return
            line = stripped
        self.stats["lines"] += 1
        overdue = self.calibration_overdue
        results = parse_records(self.parser, line)
        for result in results:
            self._on_record(result, line, ts, overdue)
        if not all(isinstance(r, Rejected) and r.ignored for r in results):
            self._answer.set()  # a power-on line is no answer to a poll

    def _on_record(self, result: Parsed | Rejected, line: bytes, ts: float,
                   overdue: bool) -> None:
        if isinstance(result, Parsed):
            self.stats["values"] += 1
            self._garbage_log.good()
            self.link.emit(GaugeValue(self.name, ts, result.value,
                                  result.unit or self.unit_default, result.channel, line,
                                  result.flag, overdue, result.verdict))
        elif result.ignored:
            self.stats["ignored"] += 1
        elif result.reportable:
            self.stats["errors"] += 1
            self._garbage_log.good()
            log.info("%s: %s", self.gauge_id, result.reason)
            self.link.emit(GaugeError(self.name, ts, result.reason, line))
        else:
            self._on_garbage(result.reason, line, ts)

    def _on_too_long(self, head: bytes, ts: float) -> None:
        self.stats["lines"] += 1
        self.stats["too_long"] += 1
        self._on_garbage("too_long", head, ts)

    def _on_garbage(self, reason: str, raw: bytes, ts: float) -> None:
        self.stats["garbage"] += 1
        self._garbage_log.bad(reason, raw)
        self.link.emit(GaugeError(self.name, ts, reason, raw))

    @property
    def online(self) -> bool | None:
        """None until the first verdict."""
        return self.link.online

    def _set_online(self, online: bool, reason: str) -> None:
        """Emit a ConnectionChange only when the state really changes."""
        self.link.set_online(online, reason)

    def _log_change(self, source: str, online: bool, reason: str) -> None:
        if online:
            log.info("%s online (%s)", source, self.port)
        else:
            log.warning("%s offline (%s): %s", source, self.port, reason)


async def _close(writer: asyncio.StreamWriter) -> None:
    """Close the port and wait until pyserial has released it, so that a reopen (or a
    test's event loop ending) never races a close still running in the executor."""
    writer.close()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(writer.wait_closed(), 2.0)
