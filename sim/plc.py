"""The simulated PLC of each driver package, by the registry's package name.

The demo (and anything else that needs "a PLC for this press") asks here instead of
naming protocols: ``for_protocol(press.plc.protocol)`` gives how to start a simulator
speaking it and how to point a press's ``[plc]`` table at that simulator. Adding a
protocol with a simulator = its simulator module in ``sim/`` and one entry below.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from drivers.registry import plc_plugin


@dataclass(frozen=True, slots=True)
class PlcSim:
    # (part, die, lot) -> a started simulator, running at 60 spm; it has .port
    start: Callable[[str, int, str], Awaitable[Any]]
    # (the press's [plc] config, the simulator's port) -> a copy pointing at it
    point: Callable[[Any, int], Any]


async def _start_modbus(part: str, die: int, lot: str) -> Any:
    from sim.press import PressSimulator

    sim = PressSimulator(host="127.0.0.1", port=0, part=part, die=die, lot=lot, spm=60)
    await sim.start()
    sim.set_running(True)
    return sim


async def _start_opcua(part: str, die: int, lot: str) -> Any:
    from sim.opcua import OpcuaPressSimulator  # asyncua only when needed

    sim = OpcuaPressSimulator(host="127.0.0.1", port=0, part=part, die=die, lot=lot, spm=60)
    await sim.start()
    sim.set_running(True)
    return sim


def _point_host_port(plc: Any, port: int) -> Any:
    return plc.model_copy(update={"host": "127.0.0.1", "port": port})


def _point_endpoint(plc: Any, port: int) -> Any:
    return plc.model_copy(update={"endpoint": f"opc.tcp://127.0.0.1:{port}/press"})


SIMULATORS: dict[str, PlcSim] = {
    "modbus": PlcSim(_start_modbus, _point_host_port),  # Modbus TCP (the demo's presses)
    "opcua": PlcSim(_start_opcua, _point_endpoint),
}


def for_protocol(protocol: str) -> PlcSim:
    """The simulator for a ``[plc] protocol`` value (via the driver registry)."""
    return SIMULATORS[plc_plugin(protocol).name]
