"""Modbus RTU bus: several presses (unit ids) on one serial line or serial device server.

One ``ModbusBus`` per physical bus (a serial port, or a ``host:port`` of a serial device
server speaking RTU frames over TCP). Each press on the bus is a ``BusUnit`` with its own
tags, poll period, timeout and retries, and its own sink; the collector sees exactly what
``ModbusPoller`` (Modbus TCP) gives it: one ``PollResult`` per press per poll and one
``ConnectionChange`` per press per change, with ``source`` = that press's source id.

Why it looks like this:

- RS-485 is half duplex: one request on the wire at a time. The bus loop serves the unit
  whose next slot is earliest, then waits the RTU inter-frame gap (3.5 characters, at
  least 1.75 ms above 19200 baud) before the next request.
- A dead unit is the known failure of other gateways: each of its polls costs a full
  timeout and, polled at its normal period, it eats the bus and stalls every other
  press. Here a unit whose request times out (after its retries) is reported offline
  *for that press only*, and is tried again only after a capped exponential backoff, so
  it costs one timeout per backoff period; the other units keep their period. When it
  answers again it is online and back on its period.
- The RTU framing is our own (``drivers.rtu_master``): silence before every frame,
  stray and late answers discarded, every answer checked against its request (unit,
  function, byte count, CRC). pymodbus's RTU client took a late answer as the reply to
  the next request and sent frames back to back (see that module). Silence from one
  unit says nothing about the link: the link is declared down (every unit offline,
  port released, reconnect with backoff) when the port or socket fails or cannot be
  opened with its line settings, or — over TCP — when no attached unit answered its
  last poll.
- Modbus exception responses are per tag with the exception name, as in the TCP driver;
  an answer that is not the answer to the request is per tag ``BadResponse``.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from drivers.base import Backoff, ConnectionChange, PollResult, Sink, report_failure
from drivers.modbus_codec import Block, TagSpec, decode_block, plan_blocks, value_problems
from drivers.modbus_tcp import exception_name
from drivers.rtu_master import (
    BadAnswer,
    ExceptionAnswer,
    LinkDown,
    NoAnswer,
    RtuMaster,
    char_time_s,
)
from drivers.serial_settings import LineSettings

log = logging.getLogger(__name__)
logging.getLogger("pymodbus").setLevel(logging.CRITICAL)  # as before: probes print one line

__all__ = ["BusUnit", "LinkDown", "ModbusBus", "SerialLink", "TcpLink", "UnitTimeout",
           "port_problem", "read_block", "read_once_rtu", "rtu_gap_s"]


class UnitTimeout(Exception):
    """One unit did not answer (after its retries); the bus itself is fine."""


def rtu_gap_s(baudrate: int, bits_per_char: int = 11) -> float:
    """Modbus RTU silent interval between frames: 3.5 character times, fixed 1.75 ms
    above 19200 baud (Modbus over serial line spec, 2.5.1.1)."""
    if baudrate > 19200:
        return 0.00175
    return 3.5 * bits_per_char / baudrate


@dataclass(frozen=True, slots=True)
class SerialLink:
    """RTU over a serial port."""

    port: str
    baudrate: int = 19200
    bytesize: int = 8
    parity: str = "N"
    stopbits: int = 1

    @property
    def key(self) -> str:
        return self.port

    def describe(self) -> str:
        return f"{self.port} {self.baudrate} {self.bytesize}{self.parity}{self.stopbits}"

    @property
    def settings(self) -> LineSettings:
        return LineSettings(self.baudrate, self.bytesize, self.parity, self.stopbits)


@dataclass(frozen=True, slots=True)
class TcpLink:
    """RTU frames over a TCP socket (serial device server in transparent mode)."""

    host: str
    port: int

    @property
    def key(self) -> str:
        return f"{self.host}:{self.port}"

    def describe(self) -> str:
        return f"rtu-over-tcp {self.host}:{self.port}"


Link = SerialLink | TcpLink


def new_master(link: Link, inter_frame_s: float,
               settings_where: str = "in the [plc] table of every press on this bus",
               settings_cli: bool = False) -> RtuMaster:
    """An RTU master for ``link`` keeping ``inter_frame_s`` of silence before each frame."""
    if isinstance(link, SerialLink):
        return RtuMaster(port=link.port, settings=link.settings, gap_s=inter_frame_s,
                         char_s=char_time_s(link.settings), settings_where=settings_where,
                         settings_cli=settings_cli)
    return RtuMaster(host=link.host, tcp_port=link.port, gap_s=inter_frame_s)


def port_problem(path: str) -> str:
    """Why a serial device cannot be opened, in words: missing, busy (someone holds the
    exclusive lock pyserial and pymodbus take), not permitted, or '' if it looks fine."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    except FileNotFoundError:
        return f"serial port {path} does not exist"
    except OSError as exc:
        return f"cannot open serial port {path}: {exc.strerror}"
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return f"serial port {path} is busy (another program holds it open)"
    finally:
        os.close(fd)  # closing drops the lock too
    return ""


async def read_block(master: RtuMaster, block: Block, unit: int, timeout_s: float,
                     retries: int) -> tuple[dict[str, Any] | None, str | None]:
    """Read and decode one block on a bus: (values, None) or (None, error name).

    The error name is the Modbus exception's, or ``BadResponse`` for an answer that is
    not the answer to this request. Raises ``UnitTimeout`` when the unit stays silent
    through ``retries`` repeats and ``LinkDown`` when the port/socket fails.
    """
    try:
        data = await master.read(unit, block.area, block.start, block.count, timeout_s,
                                 retries)
    except ExceptionAnswer as exc:
        return None, exception_name(exc.code)
    except BadAnswer as exc:
        log.warning("bus %s unit %d, %s %d+%d: %s", master.name, unit, block.area,
                    block.start, block.count, exc)
        return None, "BadResponse"
    except NoAnswer as exc:
        raise UnitTimeout(f"timeout (unit {unit} did not answer)") from exc
    try:
        return decode_block(block, data), None
    except ValueError:
        return None, "BadResponse"


def _no_sink(_event: object) -> None:
    """Placeholder until a press attaches."""


@dataclass(eq=False)
class BusUnit:
    """One press on a bus. ``stats`` as in ModbusPoller plus ``skipped`` (polls not made
    while the unit was backed off)."""

    source: str
    unit: int
    blocks: list[Block]
    poll_interval_s: float
    timeout_s: float
    retries: int
    backoff: Backoff
    sink: Sink = _no_sink
    attached: bool = False
    online: bool | None = None
    anchor: float = 0.0
    slot: int = 0
    next_due: float = 0.0
    last_ok: bool = True
    stats: dict[str, int] = field(default_factory=lambda: {
        "polls": 0, "late_polls": 0, "errors": 0, "timeouts": 0})

    def emit(self, event: PollResult | ConnectionChange) -> None:
        self.sink(event)

    def set_online(self, online: bool, reason: str) -> None:
        if self.online is online:
            return
        self.online = online
        log.info("%s %s %s", self.source, "online" if online else "offline", reason)
        self.emit(ConnectionChange(self.source, time.time(), online, reason))


class ModbusBus:
    """One RTU bus shared by several presses. ``add_unit`` at build time, then each
    press's driver task awaits ``attach(source, sink)``: the bus loop runs while at least
    one press is attached and stops when the last one is cancelled."""

    def __init__(self, link: Link, inter_frame_s: float | None = None,
                 link_backoff: Backoff | None = None,
                 dead_backoff: tuple[float, float] = (1.0, 30.0)) -> None:
        self.link = link
        if inter_frame_s is None:
            inter_frame_s = rtu_gap_s(link.baudrate) if isinstance(link, SerialLink) else 0.0
        self.inter_frame_s = inter_frame_s
        self.link_backoff = link_backoff or Backoff()
        self.dead_backoff = dead_backoff
        self.units: dict[str, BusUnit] = {}
        self.stats = {"requests": 0, "reconnects": 0, "link_errors": 0}
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self.master: RtuMaster | None = None  # the current line (stats: discarded bytes)

    @property
    def name(self) -> str:
        return self.link.key

    def add_unit(self, source: str, unit: int, tags: Sequence[TagSpec], poll_interval_s: float,
                 timeout_s: float, retries: int = 1, max_gap: int = 8,
                 max_registers: int = 125, max_bits: int = 2000) -> BusUnit:
        if poll_interval_s <= 0 or timeout_s <= 0 or retries < 0:
            raise ValueError("poll_interval_s and timeout_s must be > 0, retries >= 0")
        if source in self.units:
            raise ValueError(f"{source} is already on bus {self.name}")
        for other in self.units.values():
            if other.unit == unit:
                raise ValueError(f"unit {unit} on bus {self.name} is already used by "
                                 f"{other.source}")
        initial, maximum = self.dead_backoff
        bus_unit = BusUnit(source, unit, plan_blocks(tags, max_gap, max_registers, max_bits),
                           poll_interval_s, timeout_s, retries,
                           Backoff(initial=max(initial, poll_interval_s), maximum=maximum))
        self.units[source] = bus_unit
        return bus_unit

    async def attach(self, source: str, sink: Sink) -> None:
        """Run the press ``source`` on this bus until cancelled (the driver task of one
        press). A crash of the bus loop (a bug) propagates to every attached press."""
        unit = self.units[source]
        unit.sink, unit.attached = sink, True
        unit.online = None
        unit.next_due = time.monotonic()
        unit.anchor, unit.slot = unit.next_due, 0
        self._wake.set()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self.run(), name=f"bus {self.name}")
        try:
            await asyncio.shield(self._task)
        except Exception as exc:  # the bus loop died of a bug: this press is not polled
            report_failure(unit.set_online, source, exc)
            raise
        finally:
            unit.attached = False
            unit.sink = _no_sink
            if not any(u.attached for u in self.units.values()) and self._task is not None:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await self._task
                self._task = None

    # -- loop --------------------------------------------------------------------------
    async def run(self) -> None:
        """Connect, serve the units, reconnect after a link failure, until cancelled."""
        first = True
        while self._attached():
            if not first:
                self.stats["reconnects"] += 1
            first = False
            master = new_master(self.link, self.inter_frame_s)
            self.master = master
            try:
                await master.open()
                self.link_backoff.reset()
                await self._serve(master)
            except LinkDown as exc:
                self.stats["link_errors"] += 1
                log.warning("bus %s down: %s", self.name, exc)
                for unit in self._attached():
                    unit.set_online(False, str(exc))
            finally:
                await master.close()  # released before the backoff, never held
            await asyncio.sleep(self.link_backoff.next_delay())

    def _attached(self) -> list[BusUnit]:
        return [u for u in self.units.values() if u.attached]

    async def _serve(self, master: RtuMaster) -> None:
        now = time.monotonic()
        for unit in self._attached():  # after a reconnect every unit starts afresh
            unit.anchor, unit.slot, unit.next_due = now, 0, now
        while True:
            units = self._attached()
            if not units:
                return  # the last press left: run() ends (no idle wait without a timer)
            unit = min(units, key=lambda u: u.next_due)
            delay = unit.next_due - time.monotonic()
            if delay > 0:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):  # wait_for may swallow a cancel (3.11)
                        await self._wake.wait()
                continue  # re-pick: a unit may have been attached meanwhile
            await self._poll_unit(master, unit)  # the master keeps the silence per frame
            if isinstance(self.link, TcpLink) and not any(u.last_ok for u in self._attached()):
                raise LinkDown("no unit answers")

    async def _poll_unit(self, master: RtuMaster, unit: BusUnit) -> None:
        scheduled = unit.next_due
        started = time.monotonic()
        values: dict[str, Any] = {}
        errors: dict[str, str] = {}
        try:
            for block in unit.blocks:
                self.stats["requests"] += 1
                got, error = await read_block(master, block, unit.unit, unit.timeout_s,
                                              unit.retries)
                if got is not None:
                    bad = value_problems(block, got)
                    values.update(got)
                    if bad:  # NaN/inf, text that is not UTF-8: a value, flagged per tag
                        unit.stats["errors"] += len(bad)
                        errors.update(bad)
                    continue
                unit.stats["errors"] += 1
                for tag in block.tags:
                    errors[tag.name] = error or "error"
        except UnitTimeout as exc:
            unit.stats["timeouts"] += 1
            unit.stats["errors"] += 1
            unit.last_ok = False
            unit.set_online(False, str(exc))
            unit.next_due = time.monotonic() + unit.backoff.next_delay()
            return
        unit.last_ok = True
        if unit.online is not True:
            unit.backoff.reset()
            unit.anchor, unit.slot = scheduled, 0
            unit.set_online(True, "")
        unit.stats["polls"] += 1
        unit.emit(PollResult(unit.source, time.time(), values, errors, scheduled, started,
                             unit.stats["late_polls"]))
        self._next_slot(unit)

    @staticmethod
    def _next_slot(unit: BusUnit) -> None:
        """Drift-free slot grid per unit; slots missed by more than a period are skipped."""
        interval = unit.poll_interval_s
        unit.slot += 1
        late = time.monotonic() - (unit.anchor + unit.slot * interval)
        if late > interval:
            missed = int(late // interval)
            unit.stats["late_polls"] += missed
            unit.slot += missed
        unit.next_due = unit.anchor + unit.slot * interval


async def read_once_rtu(link: Link, unit: int, tags: Sequence[TagSpec], timeout_s: float,
                        retries: int = 0, max_gap: int = 8,
                        inter_frame_s: float | None = None, settings_where: str = "",
                        settings_cli: bool = True) -> dict[str, Any]:
    """Read every tag once over RTU (CLI probe): ``{name: value | TagError}``.

    Raises ``ConnectionError`` when the port cannot be opened (a refused line setting is
    named) or the unit does not answer; the port is always released.
    """
    from drivers.modbus_tcp import TagError

    if inter_frame_s is None:
        inter_frame_s = rtu_gap_s(link.baudrate) if isinstance(link, SerialLink) else 0.0
    master = new_master(link, inter_frame_s, settings_where, settings_cli)
    out: dict[str, Any] = {}
    try:
        await master.open()
        for block in plan_blocks(tags, max_gap):
            got, error = await read_block(master, block, unit, timeout_s, retries)
            if got is None:
                out.update({t.name: TagError(error or "error") for t in block.tags})
            else:
                out.update(got)
    except UnitTimeout as exc:
        raise ConnectionError(f"{link.key}: {exc}") from exc
    except LinkDown as exc:
        raise ConnectionError(f"{link.key}: {exc}") from exc
    finally:
        await master.close()
    return out
