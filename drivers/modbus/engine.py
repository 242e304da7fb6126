"""The one Modbus poll engine: units on a line, one request on the wire at a time.

A *line* is one connection: a Modbus TCP connection to a PLC (one unit), a serial port
with an RS-485 bus of presses (many units), or a serial device server speaking RTU
frames over TCP (many units). Every press on a line is a :class:`BusUnit` with its own
tags, poll period, timeout and retries, its own sink, its own online state
(``drivers.link.LinkState``) and its own drift-free slot grid (``drivers.link.SlotGrid``),
so TCP and RTU have the same counters and the same schedule rules. The collector sees one
``PollResult`` per press per poll and one ``ConnectionChange`` per press per change, with
``source`` = that press's source id.

Why it looks like this:

- One request at a time per line: RS-485 is half duplex, and a PLC's Modbus TCP server
  serves one connection's requests in order anyway. The loop serves the unit whose next
  slot is earliest; the master (``rtu.RtuMaster`` / ``tcp.TcpMaster``) keeps the wire's
  rules (RTU: silence before every frame, late answers discarded; TCP: transaction ids).
- A dead unit on a bus is the known failure of other gateways: each of its polls costs a
  full timeout and, polled at its normal period, it eats the bus and stalls every other
  press. Here a unit whose request times out (after its retries) is reported offline
  *for that press only*, and is tried again only after a capped exponential backoff, so
  it costs one timeout per backoff period; the other units keep their period.
- Silence from one unit says nothing about a serial line: the line is declared down
  (every unit offline, port released, reconnect with backoff) when the port fails or
  cannot be opened with its line settings. Over TCP (Modbus TCP, RTU over TCP) the line
  is also declared down when no attached unit answered its last poll: a half-open
  socket looks exactly like that.
- Writes (``BusUnit.write``, issue 14's output tags) queue on the line and are served
  between polls, each read back and compared; polling never waits for a write's caller.
- Modbus exception responses are per tag with the exception name; an answer that is not
  the answer to the request is per tag ``BadResponse``; the unit stays online.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from drivers.base import Backoff, PollResult, Sink
from drivers.link import POLL_EARLY_S, LinkDown, LinkState, SlotGrid, WriteFailed
from drivers.modbus.codec import (
    BIT_AREAS,
    Block,
    TagSpec,
    decode_block,
    decode_value,
    encode_value,
    plan_blocks,
    value_problems,
)
from drivers.modbus.pdu import BadAnswer, ExceptionAnswer, NoAnswer, exception_name
from drivers.modbus.rtu import RtuMaster, char_time_s
from drivers.modbus.tcp import TcpMaster
from drivers.serial_settings import LineSettings

log = logging.getLogger(__name__)

__all__ = ["BusUnit", "LinkDown", "ModbusBus", "ModbusTcpLink", "SerialLink", "TcpLink",
           "UnitTimeout", "WriteFailed", "read_block", "read_once_line", "rtu_gap_s"]


class UnitTimeout(Exception):
    """One unit did not answer (after its retries); the line itself may be fine."""


def rtu_gap_s(baudrate: int, bits_per_char: int = 11) -> float:
    """Modbus RTU silent interval between frames: 3.5 character times, fixed 1.75 ms
    above 19200 baud (Modbus over serial line spec, 2.5.1.1)."""
    if baudrate > 19200:
        return 0.00175
    return 3.5 * bits_per_char / baudrate


class Master(Protocol):
    """What the engine needs of a framing (``RtuMaster``, ``TcpMaster``)."""

    stats: dict[str, int]

    @property
    def name(self) -> str: ...
    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def read(self, unit: int, area: str, start: int, count: int, timeout_s: float,
                   retries: int = 0) -> list[int] | list[bool]: ...
    async def write(self, unit: int, area: str, start: int, values: list[int] | list[bool],
                    timeout_s: float, retries: int = 0) -> None: ...


@dataclass(frozen=True, slots=True)
class SerialLink:
    """RTU over a serial port."""

    port: str
    baudrate: int = 19200
    bytesize: int = 8
    parity: str = "N"
    stopbits: int = 1

    down_when_silent = False  # a silent unit says nothing about the port

    @property
    def key(self) -> str:
        return self.port

    def describe(self) -> str:
        return f"{self.port} {self.baudrate} {self.bytesize}{self.parity}{self.stopbits}"

    @property
    def settings(self) -> LineSettings:
        return LineSettings(self.baudrate, self.bytesize, self.parity, self.stopbits)

    def default_gap_s(self) -> float:
        return rtu_gap_s(self.baudrate)

    @staticmethod
    def timeout_reason(unit: int) -> str:
        return f"timeout (unit {unit} did not answer)"


@dataclass(frozen=True, slots=True)
class TcpLink:
    """RTU frames over a TCP socket (serial device server in transparent mode)."""

    host: str
    port: int

    down_when_silent = True

    @property
    def key(self) -> str:
        return f"{self.host}:{self.port}"

    def describe(self) -> str:
        return f"rtu-over-tcp {self.host}:{self.port}"

    @staticmethod
    def default_gap_s() -> float:
        return 0.0  # the device server times the serial side

    @staticmethod
    def timeout_reason(unit: int) -> str:
        return f"timeout (unit {unit} did not answer)"


@dataclass(frozen=True, slots=True)
class ModbusTcpLink:
    """Modbus TCP (MBAP framing) to one PLC or gateway."""

    host: str
    port: int = 502

    down_when_silent = True

    @property
    def key(self) -> str:
        return f"tcp {self.host}:{self.port}"

    def describe(self) -> str:
        return f"{self.host}:{self.port}"

    @staticmethod
    def default_gap_s() -> float:
        return 0.0

    @staticmethod
    def timeout_reason(_unit: int) -> str:
        return "timeout"


Link = SerialLink | TcpLink | ModbusTcpLink


def new_master(link: Link, inter_frame_s: float,
               settings_where: str = "in the [plc] table of every press on this bus",
               settings_cli: bool = False) -> Master:
    """The master for ``link``; RTU keeps ``inter_frame_s`` of silence before each frame."""
    if isinstance(link, SerialLink):
        return RtuMaster(port=link.port, settings=link.settings, gap_s=inter_frame_s,
                         char_s=char_time_s(link.settings), settings_where=settings_where,
                         settings_cli=settings_cli)
    if isinstance(link, ModbusTcpLink):
        return TcpMaster(link.host, link.port)
    return RtuMaster(host=link.host, tcp_port=link.port, gap_s=inter_frame_s)


async def read_block(master: Master, block: Block, unit: int, timeout_s: float,
                     retries: int) -> tuple[dict[str, Any] | None, str | None]:
    """Read and decode one block: (values, None) or (None, error name).

    The error name is the Modbus exception's, or ``BadResponse`` for an answer that is
    not the answer to this request. Raises ``UnitTimeout`` when the unit stays silent
    through ``retries`` repeats and ``LinkDown`` when the link fails.
    """
    try:
        data = await master.read(unit, block.area, block.start, block.count, timeout_s,
                                 retries)
    except ExceptionAnswer as exc:
        return None, exception_name(exc.code)
    except BadAnswer as exc:
        log.warning("line %s unit %d, %s %d+%d: %s", master.name, unit, block.area,
                    block.start, block.count, exc)
        return None, "BadResponse"
    except NoAnswer as exc:
        raise UnitTimeout(str(exc)) from exc
    try:
        return decode_block(block, data), None
    except ValueError:
        return None, "BadResponse"


@dataclass(eq=False)
class _Write:
    tag: TagSpec
    words: list[int] | list[bool]
    value: Any
    done: asyncio.Future[None]


@dataclass(eq=False)
class BusUnit:
    """One press on a line. ``stats``: ``polls``, ``late_polls``, ``errors`` (failed
    block reads: exception responses, malformed answers, timeouts, and each time the
    line went down), ``timeouts``, ``writes``, ``write_errors``."""

    source: str
    unit: int
    blocks: list[Block]
    poll_interval_s: float
    timeout_s: float
    retries: int
    backoff: Backoff
    tags: dict[str, TagSpec] = field(default_factory=dict)
    attached: bool = False
    next_due: float = 0.0
    last_ok: bool = True
    state: LinkState = field(init=False)
    grid: SlotGrid = field(init=False)

    def __post_init__(self) -> None:
        self.state = LinkState(self.source, ("timeouts", "writes", "write_errors"))
        self.grid = SlotGrid(self.poll_interval_s, self.state)

    @property
    def stats(self) -> dict[str, int]:
        return self.state.stats

    @property
    def online(self) -> bool | None:
        return self.state.online

    @property
    def sink(self) -> Sink:
        return self.state.sink

    def set_online(self, online: bool, reason: str) -> None:
        self.state.set_online(online, reason)


class ModbusBus:
    """One Modbus line shared by one or more presses. ``add_unit`` at build time, then
    each press's driver task awaits ``attach(source, sink)``: the line loop runs while at
    least one press is attached and stops when the last one is cancelled."""

    def __init__(self, link: Link, inter_frame_s: float | None = None,
                 link_backoff: Backoff | None = None,
                 dead_backoff: tuple[float, float] = (1.0, 30.0)) -> None:
        self.link = link
        self.inter_frame_s = link.default_gap_s() if inter_frame_s is None else inter_frame_s
        self.link_backoff = link_backoff or Backoff()
        self.dead_backoff = dead_backoff
        self.units: dict[str, BusUnit] = {}
        self.stats = {"requests": 0, "reconnects": 0, "link_errors": 0}
        self._task: asyncio.Task[None] | None = None
        self._waiter: asyncio.Future[None] | None = None  # the loop's wait between polls
        self._writes: list[tuple[BusUnit, _Write]] = []
        self._live: list[BusUnit] = []  # the attached units (rebuilt on attach/detach)
        self.master: Master | None = None  # the current connection (stats)

    @property
    def name(self) -> str:
        return self.link.key

    def add_unit(self, source: str, unit: int, tags: Sequence[TagSpec], poll_interval_s: float,
                 timeout_s: float, retries: int = 1, max_gap: int = 8,
                 max_registers: int = 125, max_bits: int = 2000,
                 outputs: Sequence[TagSpec] = ()) -> BusUnit:
        """``outputs``: tags that are written (``write``) but never polled (issue 14's
        output tags: the PLC's side of a heartbeat or a lamp is not telemetry)."""
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
                           Backoff(initial=max(initial, poll_interval_s), maximum=maximum),
                           {t.name: t for t in (*tags, *outputs)})
        self.units[source] = bus_unit
        return bus_unit

    async def attach(self, source: str, sink: Sink) -> None:
        """Run the press ``source`` on this line until cancelled (the driver task of one
        press). A crash of the line loop (a bug) propagates to every attached press,
        each first reported offline (``LinkState.report_failure``)."""
        unit = self.units[source]
        unit.state.attach(sink)
        unit.attached = True
        self._relist()
        unit.state.online = None
        unit.next_due = time.monotonic()
        unit.grid.restart(unit.next_due)
        self._wake()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self.run(), name=f"bus {self.name}")
        try:
            await asyncio.shield(self._task)
        except Exception as exc:  # the line loop died of a bug: this press is not polled
            unit.state.report_failure(exc)
            raise
        finally:
            unit.attached = False
            self._relist()
            unit.state.detach()
            self._fail_writes(unit, "the press's driver stopped")
            if not any(u.attached for u in self.units.values()) and self._task is not None:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await self._task
                self._task = None

    # -- writes ------------------------------------------------------------------------
    async def write(self, source: str, tag: str, value: Any) -> None:
        """Write ``value`` to ``tag`` of press ``source`` (encoded as the tag's type,
        scale and order), then read it back and compare. Served by the line loop between
        polls; raises ``WriteFailed`` with the reason (refused, not answered, read back
        different, line down, tag not writable) and ValueError for a value the tag's type
        cannot hold."""
        unit = self.units[source]
        spec = unit.tags.get(tag)
        if spec is None:
            raise WriteFailed(f"{source}: no tag {tag!r}")
        if spec.area not in ("holding", "coil"):
            raise WriteFailed(f"{source}: tag {tag} is in {spec.area} (read-only); only "
                              "holding registers and coils can be written")
        try:
            words = ([bool(value)] if spec.area in BIT_AREAS
                     else encode_value(spec, value))
        except (struct.error, OverflowError, TypeError) as exc:
            raise ValueError(f"{source}: {value!r} does not fit tag {tag} "
                             f"({spec.type}): {exc}") from None
        if not unit.attached:
            raise WriteFailed(f"{source}: not running")
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._writes.append((unit, _Write(spec, words, value, done)))
        self._wake()
        await done

    def _fail_writes(self, unit: BusUnit | None, reason: str) -> None:
        keep = []
        for owner, job in self._writes:
            if unit is None or owner is unit:
                if not job.done.done():
                    job.done.set_exception(WriteFailed(f"{owner.source}: {reason}"))
            else:
                keep.append((owner, job))
        self._writes = keep

    async def _serve_write(self, master: Master, unit: BusUnit, job: _Write) -> None:
        spec = job.tag
        unit.stats["writes"] += 1
        try:
            await master.write(unit.unit, spec.area, spec.address, job.words, unit.timeout_s,
                               unit.retries)
            self.stats["requests"] += 1
            back = await master.read(unit.unit, spec.area, spec.address, spec.width,
                                     unit.timeout_s, unit.retries)
            self.stats["requests"] += 1
        except ExceptionAnswer as exc:
            problem = f"refused: {exception_name(exc.code)}"
        except BadAnswer as exc:
            problem = f"bad answer: {exc}"
        except NoAnswer:
            problem = "no answer"
        except LinkDown as exc:
            unit.stats["write_errors"] += 1
            if not job.done.done():
                job.done.set_exception(WriteFailed(f"{unit.source}: tag {spec.name}: "
                                                   f"line down: {exc}"))
            raise
        else:
            got = decode_value(spec, back)
            want = decode_value(spec, [bool(w) for w in job.words] if spec.area in BIT_AREAS
                                else job.words)
            problem = "" if got == want else f"read back {got!r}, wrote {want!r}"
        if problem:
            unit.stats["write_errors"] += 1
            log.warning("%s: write of %s = %r failed: %s", unit.source, spec.name, job.value,
                        problem)
            if not job.done.done():
                job.done.set_exception(WriteFailed(f"{unit.source}: tag {spec.name}: "
                                                   f"{problem}"))
        elif not job.done.done():
            job.done.set_result(None)

    # -- loop --------------------------------------------------------------------------
    async def run(self) -> None:
        """Connect, serve the units, reconnect after a link failure, until cancelled."""
        first = True
        try:
            while self._attached():
                if not first:
                    self.stats["reconnects"] += 1
                first = False
                master = new_master(self.link, self.inter_frame_s)
                self.master = master
                try:
                    await master.open()
                    await self._serve(master)
                except LinkDown as exc:
                    self.stats["link_errors"] += 1
                    log.warning("line %s down: %s", self.name, exc)
                    self._fail_writes(None, f"line down: {exc}")
                    for unit in self._attached():
                        unit.stats["errors"] += 1
                        unit.set_online(False, str(exc))
                finally:
                    await master.close()  # released before the backoff, never held
                await asyncio.sleep(self.link_backoff.next_delay())
        finally:
            self._fail_writes(None, "stopped")

    def _wake(self) -> None:
        """End the loop's wait now (a press attached, a write queued)."""
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def _sleep(self, delay: float) -> None:
        """Wait ``delay`` seconds or until woken. A timer and a future, as asyncio.sleep
        itself: no cancellation per wait (asyncio.timeout around an Event cost a task
        cancel and two exceptions per poll, measurable at 1,000 polls/s)."""
        loop = asyncio.get_running_loop()
        waiter = self._waiter = loop.create_future()
        timer = loop.call_later(delay, _done, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            self._waiter = None

    def _relist(self) -> None:
        """Rebuild the attached units' list (a press attached or left), in ``units``
        order: the loop reads it per poll instead of filtering ``units`` each time."""
        self._live = [u for u in self.units.values() if u.attached]

    def _attached(self) -> list[BusUnit]:
        return self._live

    async def _serve(self, master: Master) -> None:
        now = time.monotonic()
        for unit in self._attached():  # after a reconnect every unit starts afresh
            unit.grid.restart(now)
            unit.next_due = now
            unit.last_ok = True
        answered = False
        down_when_silent = self.link.down_when_silent
        while True:
            units = self._live
            if not units:
                return  # the last press left: run() ends (no idle wait without a timer)
            # Modbus TCP and RTU over TCP carry one unit per line: no min() to pick it
            unit = units[0] if len(units) == 1 else min(units, key=_next_due)
            delay = unit.next_due - time.monotonic()
            if delay > POLL_EARLY_S and self._writes:  # between polls: one write, look again
                owner, job = self._writes.pop(0)
                if owner.attached:
                    await self._serve_write(master, owner, job)
                continue
            if delay > POLL_EARLY_S:
                await self._sleep(delay)
                continue  # re-pick: a unit may have been attached meanwhile, or a write
            await self._poll_unit(master, unit)
            if unit.last_ok:
                if not answered:
                    answered = True
                    self.link_backoff.reset()  # the line works: the next outage afresh
            elif down_when_silent and not any(u.last_ok for u in self._live):
                raise LinkDown("no unit answers")

    async def _poll_unit(self, master: Master, unit: BusUnit) -> None:
        scheduled = unit.next_due
        started = time.monotonic()
        values: dict[str, Any] = {}
        errors: dict[str, str] = {}
        stats = unit.state.stats
        try:
            for block in unit.blocks:
                self.stats["requests"] += 1
                got, error = await read_block(master, block, unit.unit, unit.timeout_s,
                                              unit.retries)
                if got is not None:
                    if block.floats or block.texts:
                        bad = value_problems(block, got)  # fixes the values in place
                        if bad:  # NaN/inf, text that is not UTF-8: a value, flagged per tag
                            stats["errors"] += len(bad)
                            errors.update(bad)
                    values.update(got)
                    continue
                stats["errors"] += 1
                for tag in block.tags:
                    errors[tag.name] = error or "error"
        except UnitTimeout:
            stats["timeouts"] += 1
            stats["errors"] += 1
            unit.last_ok = False
            unit.set_online(False, self.link.timeout_reason(unit.unit))
            unit.next_due = time.monotonic() + unit.backoff.next_delay()
            return
        unit.last_ok = True
        if unit.state.online is not True:
            unit.backoff.reset()
            unit.grid.restart(scheduled)
            unit.set_online(True, "")
        stats["polls"] += 1
        unit.state.sink(PollResult(unit.source, time.time(), values, errors, scheduled,
                                   started, stats["late_polls"]))
        unit.grid.advance()
        unit.next_due = unit.grid.due


async def read_once_line(link: Link, unit: int, tags: Sequence[TagSpec], timeout_s: float,
                         retries: int = 0, max_gap: int = 8,
                         inter_frame_s: float | None = None, settings_where: str = "",
                         settings_cli: bool = True) -> dict[str, Any]:
    """Read every tag once (CLI probe): ``{name: value | TagError}``.

    Raises ``ConnectionError`` when the line cannot be opened (a refused serial setting
    is named) or the unit does not answer; the line is always released.
    """
    from drivers.link import TagError

    if inter_frame_s is None:
        inter_frame_s = link.default_gap_s()
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
        raise ConnectionError(f"{_where(link)}: {link.timeout_reason(unit)}") from exc
    except LinkDown as exc:
        raise ConnectionError(f"{_where(link)}: {exc}") from exc
    finally:
        await master.close()
    return out



def _next_due(unit: BusUnit) -> float:
    return unit.next_due


def _done(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


def _where(link: Link) -> str:
    return link.describe() if isinstance(link, ModbusTcpLink) else link.key
