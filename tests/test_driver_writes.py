"""Writes to PLC outputs (issue 14 builds its output tags on them), against the simulators.

Every write is encoded as the tag's type, written, read back and compared; a refused
write, a silent unit and a read-back that differs are ``WriteFailed`` with the reason;
polling goes on while writes are served (real peers: the pymodbus press simulator over
TCP, the RTU bus simulator on a pty pair, the OPC UA press simulator).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from drivers.base import Backoff, DriverEvent, PollResult
from drivers.link import WriteFailed
from drivers.modbus.codec import TagSpec
from drivers.modbus.driver import ModbusPoller, ModbusUnitDriver
from drivers.modbus.engine import ModbusBus, SerialLink
from sim.bus import BusSimulator
from sim.press import PRESS_TAGS, PressSimulator

OUTPUTS = (
    TagSpec("release_permissive", "coil", 8, "bool"),
    TagSpec("hold_lamp", "coil", 9, "bool"),
    TagSpec("heartbeat", "holding", 90, "uint16"),
    TagSpec("setpoint", "holding", 92, "float32", "CDAB", scale=0.1),
    TagSpec("counter", "holding", 94, "uint32"),
    TagSpec("note", "holding", 96, "string", length=2),
)


class Polls:
    """Sink that counts polls and lets a test wait for the next ones."""

    def __init__(self) -> None:
        self.count = 0
        self.changed = asyncio.Event()

    def __call__(self, event: DriverEvent) -> None:
        if isinstance(event, PollResult):
            self.count += 1
            self.changed.set()

    async def wait_for(self, n: int, timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            while self.count < n:
                self.changed.clear()
                await self.changed.wait()


@pytest.fixture
async def tcp() -> AsyncIterator[tuple[PressSimulator, ModbusPoller, Polls]]:
    sim = PressSimulator(spm=0, die=12)
    await sim.start()
    poller = ModbusPoller("p1/plc", "127.0.0.1", sim.port, 1, [*PRESS_TAGS, *OUTPUTS],
                          poll_interval_s=0.02, timeout_s=0.5, max_gap=8,
                          backoff=Backoff(initial=0.02, maximum=0.1, jitter=0.0))
    polls = Polls()
    task = asyncio.create_task(poller.run(polls))
    await polls.wait_for(1)
    try:
        yield sim, poller, polls
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await sim.stop()


async def test_modbus_tcp_writes_are_read_back(tcp) -> None:
    sim, poller, polls = tcp
    await poller.write("release_permissive", True)
    await poller.write("heartbeat", 41)
    await poller.write("setpoint", 12.5)  # raw 125 as float32, word-swapped
    await poller.write("counter", 70_000)
    await poller.write("note", "OK")
    assert sim.coil(8) is True and sim.coil(9) is False
    assert sim.output_registers(90) == [41]
    assert sim.output_registers(94, 2) == [1, 70_000 - 65_536]
    assert sim.output_registers(96, 2) == [0x4F4B, 0]
    await poller.write("release_permissive", False)
    assert sim.coil(8) is False
    assert poller.stats["writes"] == 6 and poller.stats["write_errors"] == 0
    # the next poll shows what was written, decoded as the tag says
    seen = polls.count
    await polls.wait_for(seen + 2)
    got = await poller.read_once()
    assert (got["heartbeat"], got["setpoint"], got["note"]) == (41, pytest.approx(12.5), "OK")


async def test_modbus_write_refused_or_not_kept_is_an_error(tcp) -> None:
    sim, poller, _polls = tcp
    with pytest.raises(WriteFailed, match="refused: IllegalDataAddress"):
        await poller.write("die_id", 99)  # the PLC program owns it
    sim.drop_writes = True  # the PLC program overwrites its outputs at once
    with pytest.raises(WriteFailed, match=r"read back 0, wrote 70000"):
        await poller.write("counter", 70_000)  # function 16: the answer echoes the count
    with pytest.raises(WriteFailed, match=r"bad answer: write echo 005a0000 is not 005a0007"):
        await poller.write("heartbeat", 7)  # function 6: the echo already shows it
    with pytest.raises(WriteFailed, match="read-only"):
        await _write_input(poller)
    with pytest.raises(ValueError, match="out of range for uint16"):
        await poller.write("heartbeat", 70_000)
    with pytest.raises(WriteFailed, match="no tag"):
        await poller.write("nothing", 1)
    assert poller.stats["write_errors"] == 3
    assert poller.online is True  # a refused write is no outage


async def _write_input(poller: ModbusPoller) -> None:
    poller.unit.tags["an_input"] = TagSpec("an_input", "input", 0, "uint16")
    await poller.write("an_input", 1)


async def test_modbus_writes_in_flight_keep_their_order_and_polls_go_on(tcp) -> None:
    """Writes queue on the line in order; a due poll is served before the next write."""
    sim, poller, polls = tcp
    start = polls.count
    await asyncio.gather(*(poller.write("heartbeat", beat) for beat in range(40)))
    assert sim.output_registers(90) == [39] and poller.stats["writes"] == 40
    await polls.wait_for(start + 2)


async def test_modbus_write_on_a_silent_plc_fails_and_polling_recovers(tcp) -> None:
    sim, poller, polls = tcp
    sim.set_silent(True)
    with pytest.raises(WriteFailed):
        await poller.write("heartbeat", 1)
    sim.set_silent(False)
    seen = polls.count
    await polls.wait_for(seen + 1)
    await poller.write("heartbeat", 2)
    assert sim.output_registers(90) == [2]


async def test_modbus_rtu_write_on_a_shared_bus() -> None:
    units = {1: PressSimulator(spm=0, die=1), 2: PressSimulator(spm=0, die=2)}
    async with BusSimulator(units, "serial") as bus_sim:
        bus = ModbusBus(SerialLink(bus_sim.client_port, 19200))
        for unit in (1, 2):
            bus.add_unit(f"p{unit}/plc", unit, [*PRESS_TAGS, *OUTPUTS], 0.05, 0.3)
        drivers = {u: ModbusUnitDriver(bus, f"p{u}/plc") for u in (1, 2)}
        polls = {u: Polls() for u in (1, 2)}
        tasks = [asyncio.create_task(drivers[u].run(polls[u])) for u in (1, 2)]
        try:
            for u in (1, 2):
                await polls[u].wait_for(1)
            await drivers[2].write("hold_lamp", True)
            await drivers[1].write("heartbeat", 5)
            assert units[2].coil(9) is True and units[1].coil(9) is False
            assert units[1].output_registers(90) == [5] and units[2].output_registers(90) == [0]
            with pytest.raises(WriteFailed, match="refused"):
                await drivers[1].write("die_id", 3)
            before = polls[2].count
            await polls[2].wait_for(before + 2)  # the other press kept polling
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


async def test_opcua_node_writes_are_read_back() -> None:
    from drivers.opcua import OpcuaPoller, OpcuaTag
    from sim.opcua import OpcuaPressSimulator, node_text

    async with OpcuaPressSimulator(spm=0) as sim:
        tags = [OpcuaTag("strokes", node_text("strokes")),
                *(OpcuaTag(name, node_text(name)) for name in
                  ("release_permissive", "heartbeat", "setpoint"))]
        poller = OpcuaPoller("p4/plc", sim.url, tags, heartbeat_s=0.2)
        polls = Polls()
        task = asyncio.create_task(poller.run(polls))
        try:
            await polls.wait_for(1, timeout=10)
            await poller.write("release_permissive", True)
            await poller.write("heartbeat", 17)
            await poller.write("setpoint", 1.1)  # a Float node: compared as float32
            assert await sim.output("release_permissive") is True
            assert await sim.output("heartbeat") == 17
            with pytest.raises(WriteFailed, match=r"refused: (BadNotWritable|BadUserAccessDenied)"):
                await poller.write("strokes", 5)
            with pytest.raises(ValueError, match="not a Boolean"):
                await poller.write("release_permissive", 7)
            assert poller.stats["writes"] == 5 and poller.stats["write_errors"] == 1
            seen = polls.count
            await polls.wait_for(seen + 1, timeout=5)  # the session kept delivering
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
