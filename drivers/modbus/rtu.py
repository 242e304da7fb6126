"""Modbus RTU master: our own framing, because a shared RS-485 line needs it.

Why not pymodbus's RTU client: RTU frames carry no transaction id, and pymodbus 3.x
takes the first frame that parses as the answer to the request on the wire (its framer
hunts for any byte that looks like a unit id and checks only that). Its maintainers
note that a late answer is then "returned as wrong response" to the next request and
that only a large enough timeout avoids it. On a bus of presses that means a stroke
count or a material lot of one press published for another, with no error flag. It
also sends the next request at once after an answer, with no 3.5-character silence
(a slave that frames by silence then glues the two frames and drops the request). So
this module owns the RTU framing (the PDUs are ``drivers.modbus.pdu``'s, shared with
Modbus TCP).

Rules of the line, every frame:

- **Silence before every request**: the line must have been quiet for the inter-frame
  gap (3.5 characters, ``inter_frame_s``) since the last byte either way; bytes that
  arrive meanwhile are a stray or late answer and are discarded (counted), never read as
  the next answer.
- **After a timeout** the slave may still answer. The next *different* request waits
  until that answer has come and gone, or until two timeouts after the request (a slave
  later than that counts as dead). A retry of the *same* request does not wait: an
  answer to the first attempt is a valid answer to the retry.
- **An answer must match the request**: unit id, function code (or its exception
  code), byte count exactly as asked (a register answer longer than asked is an error,
  not something to cut down), CRC, and nothing more on the line right after it. A
  mismatch is ``BadAnswer``: a per-tag error for that read, the unit stays online.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import termios
import time
from dataclasses import dataclass, field

import serial

from drivers.link import LinkDown
from drivers.modbus.pdu import (
    BadAnswer,
    ExceptionAnswer,
    NoAnswer,
    Request,
    read_request,
    write_request,
)
from drivers.serial_settings import (
    LineSettings,
    explain_refusal,
    is_settings_refusal,
    open_serial,
    port_problem,
    refused_settings,
)

log = logging.getLogger(__name__)

__all__ = ["BadAnswer", "ExceptionAnswer", "LinkDown", "NoAnswer", "RtuMaster", "char_time_s",
           "crc16", "rtu_frame"]

_CONNECT_TIMEOUT_S = 3.0
# Before a deadline counts, one short wait through the event loop: bytes that arrived
# while the loop was busy are read first (a stall must not turn into a false timeout, or
# into a guard that ends before a late answer already on its way in was seen).
_SETTLE_S = 0.001


# ---------------------------------------------------------------------------- frames

def _crc_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_CRC_TABLE = _crc_table()


def crc16(data: bytes) -> bytes:
    """Modbus CRC-16 (poly 0xA001, init 0xFFFF), low byte first as sent on the line."""
    crc = 0xFFFF
    for byte in data:
        crc = (crc >> 8) ^ _CRC_TABLE[(crc ^ byte) & 0xFF]
    return struct.pack("<H", crc)


def rtu_frame(unit: int, request: Request) -> bytes:
    """The RTU frame of a request: unit, PDU, CRC."""
    body = bytes((unit,)) + request.pdu
    return body + crc16(body)


# ---------------------------------------------------------------------------- line

class _Line(asyncio.Protocol):
    """Bytes in, with the time of the last one; connection loss as a reason."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.last_rx = 0.0
        self.lost: str | None = None
        self.changed = asyncio.Event()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self.last_rx = time.monotonic()
        self.changed.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = _reason(exc) if exc is not None else "connection closed"
        self.changed.set()

    async def wait(self, timeout: float) -> None:
        """Until new bytes, a lost connection, or ``timeout`` seconds."""
        if timeout <= 0:
            return
        self.changed.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):  # not wait_for: it can swallow a cancel
                await self.changed.wait()


def _reason(exc: BaseException) -> str:
    text = str(exc)
    return (text or type(exc).__name__)[:200]


@dataclass
class RtuMaster:
    """One RTU line (serial port, or RTU frames over TCP to a serial device server).

    ``char_s`` is the time one character takes on the wire (0 over TCP: the device
    server times the line), ``gap_s`` the silence kept before every request.
    ``stats``: requests, timeouts, bad_answers, discarded_bytes (stray or late bytes
    dropped before a request), guard_waits (requests that waited for a late answer).
    """

    port: str = ""
    settings: LineSettings | None = None
    host: str = ""
    tcp_port: int = 0
    gap_s: float = 0.0
    char_s: float = 0.0
    settings_where: str = ""
    settings_cli: bool = False  # a refused setting is explained as CLI options (probes)
    stats: dict[str, int] = field(default_factory=lambda: {
        "requests": 0, "timeouts": 0, "bad_answers": 0, "discarded_bytes": 0,
        "guard_waits": 0})
    _line: _Line | None = None
    _last_tx_end: float = 0.0
    _outstanding: int = 0  # answers still owed by timed-out attempts
    _guard_deadline: float = 0.0

    @property
    def name(self) -> str:
        return self.port if self.settings is not None else f"{self.host}:{self.tcp_port}"

    # -- open / close --------------------------------------------------------------
    async def open(self) -> None:
        """Open the line or raise ``LinkDown`` with the reason in words; a port whose
        line settings are refused names the setting, and is released again."""
        line = _Line()
        try:
            if self.settings is not None:
                await open_serial(self.port, self.settings, lambda: line)
            else:
                await asyncio.wait_for(asyncio.get_running_loop().create_connection(
                    lambda: line, self.host, self.tcp_port), _CONNECT_TIMEOUT_S)
        except (OSError, ValueError, termios.error, serial.SerialException,
                TimeoutError) as exc:
            raise LinkDown(await self._open_problem(exc)) from exc
        self._line = line
        self._last_tx_end = time.monotonic()
        self._outstanding = 0

    async def _open_problem(self, exc: BaseException) -> str:
        if self.settings is None:
            return f"cannot connect to {self.host}:{self.tcp_port}: {_reason(exc)}"
        if is_settings_refusal(exc):
            refused = await asyncio.to_thread(refused_settings, self.port, self.settings)
            return explain_refusal(self.port, self.settings, refused, self.settings_where,
                                   self.settings_cli)
        return port_problem(self.port) or f"cannot open {self.port}: {_reason(exc)}"

    async def close(self) -> None:
        """Close and wait until the port is really released (the serial transport closes
        it from a later loop callback): a reopen right after must not find it busy."""
        line, self._line = self._line, None
        if line is None or line.transport is None:
            return
        line.transport.close()
        deadline = time.monotonic() + 2.0
        while line.lost is None and time.monotonic() < deadline:
            await line.wait(deadline - time.monotonic())

    # -- one request ---------------------------------------------------------------
    async def read(self, unit: int, area: str, start: int, count: int, timeout_s: float,
                   retries: int = 0) -> list[int] | list[bool]:
        """One read, checked against the request. Raises ``ExceptionAnswer`` (the unit
        said no), ``BadAnswer`` (not the answer to this request), ``NoAnswer`` (silent
        through the retries) or ``LinkDown``."""
        data = await self.transact(unit, read_request(area, start, count), timeout_s, retries)
        assert data is not None
        return data

    async def write(self, unit: int, area: str, start: int, values: list[int] | list[bool],
                    timeout_s: float, retries: int = 0) -> None:
        """One write (coils or holding registers), its echo checked; raises as ``read``.
        A retry repeats the same write: writing the same value twice is harmless."""
        await self.transact(unit, write_request(area, start, values), timeout_s, retries)

    async def transact(self, unit: int, request: Request, timeout_s: float,
                       retries: int = 0) -> list[int] | list[bool] | None:
        """Send ``request`` (with up to ``retries`` repeats while the unit is silent)
        and return its checked answer (``Request.check``)."""
        frame = rtu_frame(unit, request)
        for attempt in range(retries + 1):
            await self._quiet(respect_guard=attempt == 0)
            sent_end = self._send(frame)
            if self._outstanding:
                # The answer taken below may be an earlier attempt's: this attempt's own
                # answer can still come, up to two timeouts after it was sent.
                self._guard_deadline = max(self._guard_deadline, sent_end + 2 * timeout_s)
            try:
                answer = await self._answer(unit, request, sent_end + timeout_s)
                return request.check(answer)
            except NoAnswer:
                self.stats["timeouts"] += 1
                self._outstanding += 1
                self._guard_deadline = max(self._guard_deadline, sent_end + 2 * timeout_s)
                continue
            except BadAnswer:
                self.stats["bad_answers"] += 1
                raise
        raise NoAnswer(f"unit {unit} did not answer")

    def _check_line(self) -> _Line:
        line = self._line
        if line is None:
            raise LinkDown("not connected")
        if line.lost is not None:
            raise LinkDown(line.lost)
        return line

    async def _quiet(self, respect_guard: bool) -> None:
        """Wait for the silence before a request, discarding whatever arrives meanwhile;
        with ``respect_guard``, also for answers still owed by timed-out requests."""
        waited = False
        settle = False
        while True:
            line = self._check_line()
            now = time.monotonic()
            if self._outstanding and now >= self._guard_deadline:
                self._outstanding = 0  # later than twice the timeout: the slave is dead
                settle = True  # but first read what a stalled loop has not read yet
            quiet_for = now - max(line.last_rx, self._last_tx_end)
            if line.buffer and now - line.last_rx >= self.gap_s:
                self.stats["discarded_bytes"] += len(line.buffer)
                log.debug("%s: %d stray byte(s) dropped before a request: %s", self.name,
                          len(line.buffer), bytes(line.buffer[:32]).hex())
                line.buffer.clear()
                self._outstanding = max(0, self._outstanding - 1)
                continue
            if line.buffer:
                await line.wait(self.gap_s - (now - line.last_rx))
                continue
            if respect_guard and self._outstanding:
                if not waited:
                    self.stats["guard_waits"] += 1
                    waited = True
                await line.wait(self._guard_deadline - now)
                continue
            if settle:
                settle = False
                await line.wait(_SETTLE_S)
                continue
            if quiet_for >= self.gap_s:
                return
            await line.wait(self.gap_s - quiet_for)

    def _send(self, frame: bytes) -> float:
        line = self._check_line()
        assert line.transport is not None
        try:
            line.transport.write(frame)
        except (OSError, RuntimeError) as exc:
            raise LinkDown(_reason(exc)) from exc
        self.stats["requests"] += 1
        self._last_tx_end = time.monotonic() + len(frame) * self.char_s
        return self._last_tx_end

    async def _answer(self, unit: int, request: Request, deadline: float) -> bytes:
        """The PDU of the answer to the request just sent (its frame checked: unit,
        function, length, CRC, nothing glued after it)."""
        settled = False
        while True:
            line = self._check_line()
            buf = line.buffer
            need = self._frame_length(buf, unit, request)
            if need is not None and len(buf) >= need:
                break
            now = time.monotonic()
            if now >= deadline and not settled:
                settled = True  # a stalled loop may not have read what is there yet
                await line.wait(_SETTLE_S)
                continue
            if now >= deadline:
                if buf:  # a started frame that never completed
                    raise BadAnswer(f"incomplete answer ({len(buf)} bytes: "
                                    f"{bytes(buf[:16]).hex()})")
                raise NoAnswer(f"unit {unit} did not answer")
            await line.wait(deadline - now)
        frame = bytes(buf[:need])
        if crc16(frame[:-2]) != frame[-2:]:
            raise BadAnswer("CRC error")
        # Nothing may follow on the line: more bytes right after it mean two frames
        # glued (a late answer in front of this one, or a slave sending garbage).
        trailing_until = line.last_rx + self.gap_s
        while len(buf) == need and time.monotonic() < trailing_until:
            await line.wait(trailing_until - time.monotonic())
            line = self._check_line()
            trailing_until = line.last_rx + self.gap_s
        if len(buf) > need:
            raise BadAnswer(f"{len(buf) - need} more byte(s) on the line right after "
                            "the answer")
        del buf[:need]
        return frame[1:-2]

    @staticmethod
    def _frame_length(buf: bytearray, unit: int, request: Request) -> int | None:
        """Length of the answer frame once its header is in; BadAnswer when the header
        is not an answer to this request; None while too few bytes are in."""
        if len(buf) < 2:
            return None
        if buf[0] != unit:
            raise BadAnswer(f"unit {buf[0]} answered a request to unit {unit}")
        pdu_length = request.answer_length(buf[1:3])
        return None if pdu_length is None else 3 + pdu_length


def char_time_s(settings: LineSettings) -> float:
    """Seconds one character takes: start + data + parity + stop bits."""
    bits = 1 + settings.bytesize + (settings.parity != "N") + settings.stopbits
    return bits / settings.baudrate
