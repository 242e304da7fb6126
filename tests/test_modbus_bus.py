"""ModbusBus (RTU, shared bus) against a real pymodbus RTU server: on a socat pty pair
(serial) and on a TCP socket with the RTU framer (serial device server)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from pymodbus.constants import ExcCodes

from drivers.base import Backoff, ConnectionChange, PollResult
from drivers.modbus.driver import TagError
from drivers.modbus.engine import ModbusBus, SerialLink, TcpLink, read_once_line, rtu_gap_s
from sim.bus import BusSimulator
from sim.press import PRESS_TAGS, PressSimulator
from tests.test_modbus_tcp import Recorder

UNITS = (1, 2, 3)
DEAD = 3


def _sims() -> dict[int, PressSimulator]:
    return {u: PressSimulator(part=f"PART-{u}", die=10 * u, spm=0, seed=u) for u in UNITS}


@pytest.fixture(params=["serial", "tcp"])
async def bus_sim(request: pytest.FixtureRequest) -> AsyncIterator[BusSimulator]:
    sim = BusSimulator(_sims(), request.param)
    await sim.start()
    yield sim
    await sim.stop()


def _bus(sim: BusSimulator, interval: float = 0.05, timeout: float = 0.15) -> ModbusBus:
    link = (SerialLink(sim.client_port, 19200) if sim.wiring == "serial"
            else TcpLink("127.0.0.1", sim.port))
    bus = ModbusBus(link, link_backoff=Backoff(0.05, 0.2, jitter=0.0),
                    dead_backoff=(0.3, 0.6))
    for unit in UNITS:
        bus.add_unit(f"p{unit}/plc", unit, PRESS_TAGS, interval, timeout, retries=1)
    return bus


async def _attach_all(bus: ModbusBus) -> tuple[dict[int, Recorder], list[asyncio.Task[None]]]:
    recorders = {u: Recorder() for u in UNITS}
    tasks = [asyncio.create_task(bus.attach(f"p{u}/plc", recorders[u])) for u in UNITS]
    return recorders, tasks


async def _detach(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    results = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 3.0)
    assert all(isinstance(r, asyncio.CancelledError) for r in results)


def _polls(rec: Recorder) -> list[PollResult]:
    return [e for e in rec.events if isinstance(e, PollResult)]


async def test_dead_unit_does_not_stall_the_others_and_comes_back(bus_sim: BusSimulator) -> None:
    bus_sim.set_dead(DEAD, True)
    bus = _bus(bus_sim)
    rec, tasks = await _attach_all(bus)
    try:
        down = await rec[DEAD].change(False)
        assert down.source == "p3/plc" and "unit 3" in down.reason
        # Let the dead unit cost the bus a few timeouts, then compare what the others got.
        while bus.units["p3/plc"].stats["timeouts"] < 3:
            await rec[1].poll()
        healthy = [len(_polls(rec[u])) for u in (1, 2)]
        attempts = bus.units["p3/plc"].stats["timeouts"]
        # Backed off: the dead unit is tried far less often than the others are polled.
        assert min(healthy) >= 4 * attempts, (healthy, attempts)
        for u in (1, 2):
            assert [c for c in rec[u].changes()] == [(True, "")]  # never offline
            last = _polls(rec[u])[-1]
            assert last.values["die_id"] == 10 * u and last.values["part_number"] == f"PART-{u}"
            assert last.errors == {}
        assert _polls(rec[DEAD]) == []

        bus_sim.set_dead(DEAD, False)
        up = await rec[DEAD].change(True)
        assert up.source == "p3/plc"
        back = await rec[DEAD].poll()
        assert back.values["die_id"] == 30
        assert rec[DEAD].changes() == [(False, down.reason), (True, "")]
        # Stroke count changes flow per unit, not mixed up between units.
        bus_sim.units[2].stroke(5)
        got = await rec[2].poll(lambda p: p.values["strokes"] == 5)
        assert got.source == "p2/plc"
        assert all(p.values["strokes"] == 0 for p in _polls(rec[1]))
    finally:
        await _detach(tasks)


async def test_exception_response_is_per_tag_with_name(bus_sim: BusSimulator) -> None:
    bus_sim.units[2].fail_with_exception("coil", range(0, 3), ExcCodes.DEVICE_FAILURE)
    bus = _bus(bus_sim)
    rec, tasks = await _attach_all(bus)
    try:
        bad = await rec[2].poll()
        assert bad.errors == {"setup_mode": "ServerDeviceFailure", "running":
                              "ServerDeviceFailure", "repair": "ServerDeviceFailure"}
        assert bad.values["die_id"] == 20  # the holding block of the same unit still reads
        good = await rec[1].poll()
        assert good.errors == {} and good.values["running"] is False
        assert rec[2].changes() == [(True, "")]  # an exception answer means the unit is alive
    finally:
        await _detach(tasks)


async def test_link_loss_takes_every_unit_offline_and_back() -> None:
    sim = BusSimulator(_sims(), "tcp")
    await sim.start()
    bus = _bus(sim)
    rec, tasks = await _attach_all(bus)
    try:
        for u in UNITS:
            await rec[u].change(True)
        await sim.stop()
        for u in UNITS:
            await rec[u].change(False)
        restarted = BusSimulator(sim.units, "tcp", port=sim.port)
        await restarted.start()
        try:
            for u in UNITS:
                await rec[u].change(True)
                assert (await rec[u].poll()).values["die_id"] == 10 * u
            assert bus.stats["reconnects"] >= 1
        finally:
            await restarted.stop()
    finally:
        await _detach(tasks)


async def test_missing_serial_port_reports_every_unit_offline(tmp_path) -> None:
    bus = ModbusBus(SerialLink(str(tmp_path / "ttyNOPE"), 9600),
                    link_backoff=Backoff(0.05, 0.1, jitter=0.0))
    bus.add_unit("p1/plc", 1, PRESS_TAGS, 0.05, 0.1)
    bus.add_unit("p2/plc", 2, PRESS_TAGS, 0.05, 0.1)
    rec = {1: Recorder(), 2: Recorder()}
    tasks = [asyncio.create_task(bus.attach(f"p{u}/plc", rec[u])) for u in (1, 2)]
    try:
        for u in (1, 2):
            change = await rec[u].change(False)
            assert "ttyNOPE" in change.reason
    finally:
        await _detach(tasks)


async def test_read_once_line_and_wrong_unit(bus_sim: BusSimulator) -> None:
    link = (SerialLink(bus_sim.client_port, 19200) if bus_sim.wiring == "serial"
            else TcpLink("127.0.0.1", bus_sim.port))
    bus_sim.units[1].fail_with_exception("holding", range(30, 32))
    got = await read_once_line(link, 1, PRESS_TAGS, timeout_s=0.3, max_gap=0)
    assert got["die_id"] == 10 and got["tonnage"] == TagError("IllegalDataAddress")
    with pytest.raises(ConnectionError, match="unit 9 did not answer"):
        await read_once_line(link, 9, PRESS_TAGS, timeout_s=0.1)


def test_unit_ids_unique_per_bus_and_gap() -> None:
    bus = ModbusBus(TcpLink("127.0.0.1", 1))
    bus.add_unit("p1/plc", 1, PRESS_TAGS, 0.1, 0.1)
    with pytest.raises(ValueError, match=r"unit 1 .* already used by p1/plc"):
        bus.add_unit("p2/plc", 1, PRESS_TAGS, 0.1, 0.1)
    assert rtu_gap_s(9600) == pytest.approx(0.00401, abs=1e-5)  # 3.5 chars of 11 bits
    assert rtu_gap_s(115200) == 0.00175
    assert ModbusBus(SerialLink("/dev/x", 9600)).inter_frame_s == rtu_gap_s(9600)
    assert isinstance(ConnectionChange("x", 0.0, True), ConnectionChange)
