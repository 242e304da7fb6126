"""Modbus TCP poller: pymodbus async client, drift-free poll loop, reconnect with backoff.

One ``ModbusPoller`` per PLC connection. It owns reconnects: pymodbus's own automatic
reconnect and request retries are switched off (``reconnect_delay=0``, ``retries=0``),
because a hidden retry inside the client would stretch a poll past its slot and hide an
outage from the collector. A timeout, refused connect or lost connection closes the
client, reports offline once, and reconnects after a capped exponential backoff.

Schedule: slot k of a connection is ``anchor + k * interval`` on the monotonic clock,
computed by multiplication so that it never drifts; a poll that ends more than one
period late skips the missed slots (counted in ``stats['late_polls']``) instead of
bursting to catch up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException
from pymodbus.pdu import ModbusPDU

from drivers.base import Backoff, ConnectionChange, PollResult, Sink, report_failure
from drivers.modbus_codec import Block, TagSpec, decode_block, plan_blocks, value_problems

log = logging.getLogger(__name__)
logging.getLogger("pymodbus").setLevel(logging.WARNING)

# Modbus exception codes by their names in the Modbus application protocol spec.
EXCEPTION_NAMES: dict[int, str] = {
    1: "IllegalFunction",
    2: "IllegalDataAddress",
    3: "IllegalDataValue",
    4: "ServerDeviceFailure",
    5: "Acknowledge",
    6: "ServerDeviceBusy",
    7: "NegativeAcknowledge",
    8: "MemoryParityError",
    10: "GatewayPathUnavailable",
    11: "GatewayTargetDeviceFailedToRespond",
}

Reader = Callable[..., Awaitable[ModbusPDU]]


class LinkDown(Exception):
    """The connection is unusable (lost, refused, timed out); carries the reason."""


@dataclass(frozen=True, slots=True)
class TagError:
    """A tag that could not be read, as ``read_once`` reports it (e.g. for a CLI probe)."""

    reason: str


def exception_name(code: int) -> str:
    return EXCEPTION_NAMES.get(code, f"ModbusException{code}")


def _reader(client: AsyncModbusTcpClient, area: str) -> Reader:
    return {
        "holding": client.read_holding_registers,
        "input": client.read_input_registers,
        "coil": client.read_coils,
        "discrete": client.read_discrete_inputs,
    }[area]


def _new_client(host: str, port: int, timeout_s: float, name: str) -> AsyncModbusTcpClient:
    """A client that neither retries nor reconnects behind our back."""
    return AsyncModbusTcpClient(
        host, port=port, name=name, timeout=timeout_s, retries=0, reconnect_delay=0
    )


async def _connect(client: AsyncModbusTcpClient, host: str, port: int) -> None:
    """Connect or raise LinkDown; pymodbus returns False and logs the cause itself."""
    if not await client.connect():
        raise LinkDown(f"connect to {host}:{port} failed")


async def _read_block(
    read: Reader, block: Block, unit: int
) -> tuple[dict[str, Any] | None, str | None]:
    """Read and decode one block: (values, None) or (None, error name).

    Device-level errors (exception response, malformed answer) are per block; anything
    that means the link is unusable raises ``LinkDown``.
    """
    try:
        response = await read(block.start, count=block.count, device_id=unit)
    except asyncio.CancelledError:
        raise
    except (ModbusException, OSError, TimeoutError) as exc:
        raise LinkDown(_link_reason(exc)) from exc
    if response.isError():
        return None, exception_name(getattr(response, "exception_code", 0))
    data = response.bits if block.is_bits else response.registers
    try:
        return decode_block(block, data), None
    except ValueError:
        return None, "BadResponse"


def _link_reason(exc: BaseException) -> str:
    text = str(exc)
    if "No response" in text or isinstance(exc, TimeoutError):
        return "timeout"
    if "Not connected" in text:
        return "connection lost"
    return text or type(exc).__name__


def _no_sink(_event: object) -> None:
    """Placeholder until run() is given the real sink."""


class ModbusPoller:
    """Polls one PLC's tags forever and hands each poll to a synchronous sink.

    ``stats``: ``polls`` delivered, ``late_polls`` (slots skipped because a poll ended
    more than one period late), ``errors`` (failed block reads: exception responses,
    malformed answers, and the read or connect that took the link down), ``reconnects``
    (connect attempts after the first). ``online`` is None until the first verdict; the
    first verdict is always reported, so a PLC that is down at start-up yields one
    offline ``ConnectionChange``.
    """

    def __init__(
        self,
        source: str,
        host: str,
        port: int,
        unit: int,
        tags: Sequence[TagSpec],
        poll_interval_s: float,
        timeout_s: float,
        max_gap: int,
        max_registers: int = 125,
        max_bits: int = 2000,
        backoff: Backoff | None = None,
    ) -> None:
        if poll_interval_s <= 0 or timeout_s <= 0:
            raise ValueError("poll_interval_s and timeout_s must be > 0")
        self.source = source
        self.host = host
        self.port = port
        self.unit = unit
        self.poll_interval_s = poll_interval_s
        self.timeout_s = timeout_s
        self.blocks = plan_blocks(tags, max_gap, max_registers, max_bits)
        self.backoff = backoff or Backoff()
        self.stats = {"polls": 0, "late_polls": 0, "errors": 0, "reconnects": 0}
        self.online: bool | None = None  # None until the first verdict
        self._sink: Sink = _no_sink
        self._late_in_burst = 0  # slots skipped in the current burst of late polls

    async def run(self, sink: Sink) -> None:
        """Connect, poll, reconnect, until cancelled; device trouble never escapes.
        A failure that does escape (a bug, e.g. in the sink) first reports the device
        offline (``report_failure``), then propagates to the supervisor."""
        try:
            await self._run(sink)
        except Exception as exc:
            report_failure(self._set_online, self.source, exc)
            raise

    async def _run(self, sink: Sink) -> None:
        self._sink = sink
        attempts = 0
        while True:
            if attempts:
                self.stats["reconnects"] += 1
            attempts += 1
            client = _new_client(self.host, self.port, self.timeout_s, self.source)
            try:
                await _connect(client, self.host, self.port)
                await self._poll_connection(client)
            except LinkDown as exc:
                self.stats["errors"] += 1
                self._set_online(False, str(exc))
            finally:
                client.close()
            await asyncio.sleep(self.backoff.next_delay())

    async def _poll_connection(self, client: AsyncModbusTcpClient) -> None:
        """Poll on this connection's slot grid until the link goes down (LinkDown)."""
        readers = [_reader(client, b.area) for b in self.blocks]
        interval = self.poll_interval_s
        anchor = time.monotonic()
        slot = 0
        while True:
            scheduled = anchor + slot * interval
            delay = scheduled - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            result = await self._poll(readers, scheduled)
            self._deliver(result)
            slot += 1
            late = time.monotonic() - (anchor + slot * interval)
            if late > interval:
                missed = int(late // interval)
                self.stats["late_polls"] += missed
                slot += missed
                self._late_burst(missed, late)
            elif self._late_in_burst:
                log.info("%s: polling on time again (%d slot(s) skipped in that burst, "
                         "late_polls=%d)", self.source, self._late_in_burst,
                         self.stats["late_polls"])
                self._late_in_burst = 0

    def _late_burst(self, missed: int, late: float) -> None:
        """Log a burst of late polls once, when it starts (and once when it ends)."""
        if not self._late_in_burst:
            log.warning("%s: poll ended %.0f ms past its slot: %d poll slot(s) skipped "
                        "(the PLC or this machine cannot keep %.0f ms; late_polls=%d)",
                        self.source, late * 1000, missed, self.poll_interval_s * 1000,
                        self.stats["late_polls"])
        self._late_in_burst += missed

    async def _poll(self, readers: Sequence[Reader], scheduled: float) -> PollResult:
        started = time.monotonic()
        values: dict[str, Any] = {}
        errors: dict[str, str] = {}
        for read, block in zip(readers, self.blocks, strict=True):
            got, error = await _read_block(read, block, self.unit)
            if got is not None:
                bad = value_problems(block, got)
                values.update(got)
                if bad:  # NaN/inf, text that is not UTF-8: a value, flagged per tag
                    self.stats["errors"] += len(bad)
                    errors.update(bad)
                continue
            self.stats["errors"] += 1
            for tag in block.tags:
                errors[tag.name] = error or "error"
        return PollResult(self.source, time.time(), values, errors, scheduled, started,
                          self.stats["late_polls"])

    def _deliver(self, result: PollResult) -> None:
        self.stats["polls"] += 1
        if self.online is not True:
            self.backoff.reset()
            self._set_online(True, "")
        self._emit(result)

    def _set_online(self, online: bool, reason: str) -> None:
        """Emit a ConnectionChange only when the state really changes."""
        if self.online is online:
            return
        self.online = online
        log.info("%s %s %s", self.source, "online" if online else "offline", reason)
        self._emit(ConnectionChange(self.source, time.time(), online, reason))

    def _emit(self, event: PollResult | ConnectionChange) -> None:
        """Call the sink. Its exceptions propagate: they are collector bugs, not device
        trouble, and hiding them here would turn a crash into silent data loss."""
        self._sink(event)


async def read_once(
    host: str,
    port: int,
    unit: int,
    tags: Sequence[TagSpec],
    timeout_s: float,
    max_gap: int = 8,
) -> dict[str, Any]:
    """Read every tag once (CLI probe): ``{name: value | TagError}``.

    Raises ``ConnectionError`` when the PLC cannot be reached or does not answer.
    """
    blocks = plan_blocks(tags, max_gap)
    client = _new_client(host, port, timeout_s, "probe")
    out: dict[str, Any] = {}
    try:
        await _connect(client, host, port)
        for block in blocks:
            got, error = await _read_block(_reader(client, block.area), block, unit)
            if got is None:
                out.update({t.name: TagError(error or "error") for t in block.tags})
            else:
                out.update(got)
    except LinkDown as exc:
        raise ConnectionError(f"{host}:{port}: {exc}") from exc
    finally:
        with contextlib.suppress(Exception):
            client.close()
    return out
