"""Modbus drivers as the collector sees them: one press = one unit on a line.

``ModbusPoller`` is Modbus TCP: a line (``engine.ModbusBus`` over ``ModbusTcpLink``)
with one unit. An RTU press is a unit on a shared ``ModbusBus`` (``ModbusUnitDriver``).
Both follow ``drivers.base.Driver``: ``run(sink)`` until cancelled, ``stats``,
``online``, ``read_once()`` and ``write(tag, value)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from drivers.base import Backoff, Sink
from drivers.link import TagError
from drivers.modbus.codec import TagSpec
from drivers.modbus.engine import Link, ModbusBus, ModbusTcpLink, read_once_line

__all__ = ["ModbusPoller", "ModbusUnitDriver", "TagError", "read_once"]


class ModbusUnitDriver:
    """One press on a (possibly shared) line."""

    def __init__(self, bus: ModbusBus, source: str) -> None:
        self.bus = bus
        self.source = source
        self.unit = bus.units[source]

    @property
    def blocks(self) -> list:
        return self.unit.blocks

    @property
    def online(self) -> bool | None:
        return self.unit.online

    @property
    def stats(self) -> dict[str, int]:
        """The unit's counters and its line's ``reconnects``."""
        return {**self.unit.stats, "reconnects": self.bus.stats["reconnects"]}

    async def run(self, sink: Sink) -> None:
        await self.bus.attach(self.source, sink)

    async def read_once(self) -> dict[str, Any]:
        """Every tag once on a connection of its own: ``{name: value | TagError}``;
        ConnectionError when the line cannot be opened or the unit is silent."""
        u = self.unit
        return await read_once_line(self.bus.link, u.unit, list(u.tags.values()), u.timeout_s,
                                    u.retries, inter_frame_s=self.bus.inter_frame_s,
                                    settings_cli=False)

    async def write(self, tag: str, value: Any) -> None:
        """Write and read back (``ModbusBus.write``); raises ``WriteFailed``."""
        await self.bus.write(self.source, tag, value)


class ModbusPoller(ModbusUnitDriver):
    """Modbus TCP: polls one PLC's tags forever and hands each poll to a sync sink."""

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
        retries: int = 0,
        outputs: Sequence[TagSpec] = (),
    ) -> None:
        if poll_interval_s <= 0 or timeout_s <= 0:
            raise ValueError("poll_interval_s and timeout_s must be > 0")
        self.host, self.port = host, port
        bus = ModbusBus(ModbusTcpLink(host, port), link_backoff=backoff or Backoff())
        bus.add_unit(source, unit, tags, poll_interval_s, timeout_s, retries, max_gap,
                     max_registers, max_bits, outputs)
        super().__init__(bus, source)


async def read_once(host: str, port: int, unit: int, tags: Sequence[TagSpec],
                    timeout_s: float, max_gap: int = 8) -> dict[str, Any]:
    """Read every tag of a Modbus TCP device once (CLI probe): ``{name: value |
    TagError}``. Raises ``ConnectionError`` when it cannot be reached or does not answer."""
    link: Link = ModbusTcpLink(host, port)
    return await read_once_line(link, unit, tags, timeout_s, 0, max_gap)
