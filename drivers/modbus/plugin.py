"""The Modbus package's registry entry: config -> drivers, summary, probes.

TCP presses get a line each (``ModbusPoller``); RTU presses naming the same serial port
(or serial device server host:port) share one ``ModbusBus`` (kept in
``BuildContext.shared["modbus"]``), each press a unit on it.
"""

from __future__ import annotations

import argparse
from typing import Any, TextIO

from drivers.modbus.codec import TagSpec
from drivers.modbus.driver import ModbusPoller, ModbusUnitDriver
from drivers.modbus.engine import Link, ModbusBus, SerialLink, TcpLink
from drivers.probing import Runner
from drivers.registry import BuildContext

__all__ = ["add_probe_commands", "build", "link_of", "make_bus", "output_specs", "probe_press",
           "summary", "tag_specs"]


def tag_specs(plc: Any) -> list[TagSpec]:
    """The codec's tag specs of a ``[plc]`` table's ``[[plc.tags]]``."""
    return [TagSpec(name=t.name, area=t.area, address=t.address, type=t.type, order=t.order,
                    length=t.length, scale=t.scale, offset=t.offset) for t in plc.tags]


def output_specs(plc: Any) -> list[TagSpec]:
    """The codec's specs of a ``[plc]`` table's ``[[plc.outputs]]`` (written, not polled)."""
    return [TagSpec(name=o.name, area=o.area, address=o.address, type=o.type, order=o.order)
            for o in getattr(plc, "outputs", ())]


def link_of(plc: Any) -> Link:
    """The line a ``[plc]`` table describes (RTU serial port, RTU over TCP, Modbus TCP)."""
    from drivers.modbus.engine import ModbusTcpLink

    if plc.protocol == "modbus_rtu":
        return SerialLink(str(plc.port), plc.baudrate, plc.bytesize, plc.parity, plc.stopbits)
    if plc.protocol == "modbus_rtu_tcp":
        return TcpLink(plc.host, int(plc.port))
    return ModbusTcpLink(plc.host, int(plc.port))


def make_bus(plc: Any) -> ModbusBus:
    """The RTU bus a press's [plc] table describes (serial port or RTU over TCP)."""
    return ModbusBus(link_of(plc), inter_frame_s=plc.inter_frame_ms / 1000 or None)


def build(source: str, plc: Any, ctx: BuildContext) -> ModbusUnitDriver:
    """The driver of one press's PLC (``source`` = 'p1/plc')."""
    if plc.protocol == "modbus_tcp":
        return ModbusPoller(source, plc.host, int(plc.port), plc.unit, tag_specs(plc),
                            poll_interval_s=plc.poll_interval_ms / 1000,
                            timeout_s=plc.timeout_ms / 1000, max_gap=plc.max_gap,
                            max_registers=plc.max_registers, max_bits=plc.max_bits,
                            outputs=output_specs(plc))
    buses: dict[str, ModbusBus] = ctx.shared.setdefault("modbus", {})
    key = link_of(plc).key
    bus = buses.get(key)
    if bus is None:
        bus = buses[key] = make_bus(plc)
    bus.add_unit(source, plc.unit, tag_specs(plc), plc.poll_interval_ms / 1000,
                 plc.timeout_ms / 1000, plc.retries, plc.max_gap, plc.max_registers,
                 plc.max_bits, output_specs(plc))
    return ModbusUnitDriver(bus, source)


def summary(plc: Any) -> str:
    """'modbus_tcp 127.0.0.1:5021 unit 1 every 100 ms' (``check``)."""
    where = plc.port if plc.protocol == "modbus_rtu" else f"{plc.host}:{plc.port}"
    return f"{plc.protocol} {where} unit {plc.unit} every {plc.poll_interval_ms} ms"


async def probe_press(press_id: str, plc: Any, options: Any, out: TextIO) -> int:
    from drivers.modbus.probe import press_probe

    return await press_probe(press_id, plc, options, out)


def add_probe_commands(sub: argparse._SubParsersAction, run: Runner) -> None:
    """``probe modbus``."""
    from drivers.modbus.probe import add_modbus

    add_modbus(sub, run)
