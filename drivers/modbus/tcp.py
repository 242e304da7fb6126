"""Modbus TCP master: MBAP framing over one asyncio connection, our own.

Why not pymodbus's client: measured in ``bench/modbus_transport.py`` (figures in
docs/modbus.md, "TCP framing"), its per-request overhead (request objects, framer,
transaction manager, logging hooks) costs several times the CPU of the few lines below
for the same reads against the same server, and the ceiling benchmark names it the
second largest cost of the daemon after socket sends. The framing is small and fully
specified, the PDUs are shared with RTU (``drivers.modbus.pdu``), and owning it gives
TCP the same checks as RTU: an answer must carry the request's transaction id, protocol
0, the unit asked and the function's exact length, or it is ``BadAnswer``; an answer for
an older (timed-out) transaction is a late answer, discarded and counted. pymodbus stays
the simulators' server (``sim/``) and the reference the tests talk to.

Same interface as ``drivers.modbus.rtu.RtuMaster`` (open / close / transact / read /
write / stats), so one poll engine (``drivers.modbus.engine``) drives both.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from dataclasses import dataclass, field

from drivers.link import LinkDown
from drivers.modbus.pdu import BadAnswer, NoAnswer, Request, read_request, write_request

log = logging.getLogger(__name__)

__all__ = ["TcpMaster"]

_MBAP = struct.Struct(">HHHB")  # transaction, protocol (0), length (unit + PDU), unit


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, TimeoutError):
        return "timeout"
    text = (exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc))
    return (text or type(exc).__name__)[:200]


class _Expired(Exception):
    """A request's timer ran out before its answer came."""


def _expire(waiter: asyncio.Future[tuple[int, bytes]]) -> None:
    if not waiter.done():
        waiter.set_exception(_Expired())


class _Conn(asyncio.Protocol):
    """MBAP frames in, each handed to the waiter of its transaction id."""

    def __init__(self, master: TcpMaster) -> None:
        self.master = master
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.lost: str | None = None
        self.waiters: dict[int, asyncio.Future[tuple[int, bytes]]] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        buf = self.buffer
        buf += data
        while len(buf) >= 7:
            tid, protocol, length, unit = _MBAP.unpack_from(buf)
            if protocol != 0 or not 2 <= length <= 254:
                # Not Modbus TCP (or a stream out of step): nothing after it can be
                # trusted; the link is dropped and reconnected.
                self._fail(f"bad MBAP header {bytes(buf[:7]).hex()}")
                return
            end = 6 + length
            if len(buf) < end:
                return
            pdu = bytes(buf[7:end])
            del buf[:end]
            waiter = self.waiters.pop(tid, None)
            if waiter is None or waiter.done():
                self.master.stats["late_answers"] += 1  # an older, timed-out transaction
                continue
            waiter.set_result((unit, pdu))

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(_reason(exc) if exc is not None else "connection lost")

    def _fail(self, reason: str) -> None:
        if self.lost is None:
            self.lost = reason
        for waiter in self.waiters.values():
            if not waiter.done():
                waiter.set_exception(LinkDown(reason))
        self.waiters.clear()
        if self.transport is not None:
            self.transport.close()


@dataclass
class TcpMaster:
    """One Modbus TCP connection. ``stats``: requests, timeouts, bad_answers,
    late_answers (answers that came after their request timed out, discarded)."""

    host: str
    port: int
    connect_timeout_s: float = 3.0
    stats: dict[str, int] = field(default_factory=lambda: {
        "requests": 0, "timeouts": 0, "bad_answers": 0, "late_answers": 0})
    _conn: _Conn | None = None
    _tid: int = 0

    @property
    def name(self) -> str:
        return f"{self.host}:{self.port}"

    async def open(self) -> None:
        """Connect or raise ``LinkDown`` ('connect to HOST:PORT failed: reason')."""
        conn = _Conn(self)
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                await asyncio.get_running_loop().create_connection(
                    lambda: conn, self.host, self.port)
        except (OSError, TimeoutError) as exc:
            raise LinkDown(f"connect to {self.host}:{self.port} failed: {_reason(exc)}") \
                from exc
        self._conn = conn

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and conn.transport is not None:
            conn.transport.close()
            await asyncio.sleep(0)  # let the loop run connection_lost (socket released)

    async def read(self, unit: int, area: str, start: int, count: int, timeout_s: float,
                   retries: int = 0) -> list[int] | list[bool]:
        data = await self.transact(unit, read_request(area, start, count), timeout_s, retries)
        assert data is not None
        return data

    async def write(self, unit: int, area: str, start: int, values: list[int] | list[bool],
                    timeout_s: float, retries: int = 0) -> None:
        await self.transact(unit, write_request(area, start, values), timeout_s, retries)

    async def transact(self, unit: int, request: Request, timeout_s: float,
                       retries: int = 0) -> list[int] | list[bool] | None:
        """Send ``request`` and return its checked answer (``Request.check``). Raises
        ``ExceptionAnswer``, ``BadAnswer``, ``NoAnswer`` (no answer within ``timeout_s``,
        after ``retries`` repeats) or ``LinkDown``."""
        for _attempt in range(retries + 1):
            conn = self._conn
            if conn is None:
                raise LinkDown("not connected")
            if conn.lost is not None:
                raise LinkDown(conn.lost)
            self._tid = tid = (self._tid + 1) & 0xFFFF
            loop = asyncio.get_running_loop()
            waiter: asyncio.Future[tuple[int, bytes]] = loop.create_future()
            conn.waiters[tid] = waiter
            assert conn.transport is not None
            conn.transport.write(_MBAP.pack(tid, 0, len(request.pdu) + 1, unit) + request.pdu)
            self.stats["requests"] += 1
            # A timer handle, not asyncio.timeout(): a third of the per-request cost.
            timer = loop.call_later(timeout_s, _expire, waiter)
            try:
                got_unit, pdu = await waiter
            except _Expired:
                conn.waiters.pop(tid, None)
                self.stats["timeouts"] += 1
                continue
            finally:
                timer.cancel()
            if got_unit != unit:
                self.stats["bad_answers"] += 1
                raise BadAnswer(f"unit {got_unit} answered a request to unit {unit}")
            try:
                return request.check(pdu)
            except BadAnswer:
                self.stats["bad_answers"] += 1
                raise
        raise NoAnswer(f"unit {unit} did not answer")

