"""The press simulator: register map on the wire, behaviour, faults, restart, CLI."""

from __future__ import annotations

import asyncio
import socket
import struct
import sys
import time
from collections.abc import AsyncIterator, Callable

import pytest
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusIOException

from sim.ports import free_port
from sim.press import LOAD_TAGS, PRESS_TAGS, PressSimulator, _parse_args

WAIT_S = 3.0


async def wait_until(cond: Callable[[], bool], timeout: float = WAIT_S) -> None:
    """Bounded wait for a condition that has no event to await (e.g. a counter)."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        await asyncio.sleep(0.005)


@pytest.fixture
async def sim() -> AsyncIterator[PressSimulator]:
    press = PressSimulator(part="4711-A", lot="LOT-77", die=12, spm=0, seed=1)
    await press.start()
    yield press
    await press.stop()


@pytest.fixture
async def client(sim: PressSimulator) -> AsyncIterator[AsyncModbusTcpClient]:
    c = AsyncModbusTcpClient("127.0.0.1", port=sim.port, timeout=0.3, retries=0,
                             reconnect_delay=0)
    assert await c.connect()
    yield c
    c.close()


async def hr(client: AsyncModbusTcpClient, address: int, count: int) -> list[int]:
    r = await client.read_holding_registers(address, count=count, device_id=1)
    assert not r.isError(), r
    return r.registers


async def test_register_map_on_the_wire(sim: PressSimulator, client) -> None:
    sim.stroke(0x12345)
    sim.set_spm(25)
    sim.set_temperature(-3.5)
    regs = await hr(client, 0, 80)
    assert regs[0:2] == [0x0001, 0x2345]  # uint32 ABCD
    assert regs[2] == 12 and regs[3] == 25
    assert struct.pack(">8H", *regs[10:18]).rstrip(b"\0") == b"4711-A"
    assert struct.pack(">8H", *regs[20:28]).rstrip(b"\0") == b"LOT-77"
    tonnage = struct.unpack(">f", struct.pack(">2H", regs[31], regs[30]))[0]  # CDAB
    assert 700 < tonnage < 900
    assert struct.unpack(">h", struct.pack(">H", regs[32]))[0] == -35  # °C * 10
    assert all(regs[a] == 0 for a in (*range(4, 10), 18, 19, 28, 29, *range(33, 40)))
    # input registers mirror holding registers, for configs that use the input area
    r = await client.read_input_registers(0, count=80, device_id=1)
    assert r.registers == regs


async def test_coils_and_discrete_inputs(sim: PressSimulator, client) -> None:
    sim.set_setup_mode(True)
    sim.set_repair(True)
    r = await client.read_coils(0, count=3, device_id=7)
    assert r.bits[:3] == [True, False, True]
    sim.set_setup_mode(False)
    sim.set_running(True)
    r = await client.read_discrete_inputs(0, count=3, device_id=7)
    assert r.bits[:3] == [False, True, True]  # repair still on


async def test_any_unit_id_answers(sim: PressSimulator, client) -> None:
    for unit in (0, 1, 17, 247):
        r = await client.read_holding_registers(2, count=1, device_id=unit)
        assert r.registers == [12]


async def test_outside_map_and_writes_are_refused(sim: PressSimulator, client) -> None:
    r = await client.read_holding_registers(99, count=2, device_id=1)
    assert r.isError() and r.exception_code == 2
    r = await client.read_coils(16, count=1, device_id=1)
    assert r.isError()
    r = await client.write_register(2, 99, device_id=1)  # the press owns its values
    assert r.isError() and r.exception_code == 2
    assert (await hr(client, 2, 1)) == [12]
    r = await client.write_coil(1, True, device_id=1)
    assert r.isError() and not sim.running
    r = await client.write_registers(98, [1, 2, 3], device_id=1)  # crosses the outputs' end
    assert r.isError()


async def test_outputs_take_writes(sim: PressSimulator, client) -> None:
    """HR 90-99 and coils 8-15 are the outputs a collector may write (issue 14)."""
    assert not (await client.write_register(90, 7, device_id=1)).isError()
    assert not (await client.write_registers(92, [1, 2], device_id=1)).isError()
    assert not (await client.write_coil(8, True, device_id=1)).isError()
    assert not (await client.write_coils(9, [False, True], device_id=1)).isError()
    assert sim.output_registers(90, 4) == [7, 0, 1, 2]
    assert (sim.coil(8), sim.coil(9), sim.coil(10)) == (True, False, True)
    assert (await hr(client, 90, 4)) == [7, 0, 1, 2]
    assert sim.writes == 4


async def test_register_map_comes_from_the_example_press_file() -> None:
    """The simulator plays the values of config/presses/p1.toml, found by role or name."""
    from sim.press import PRESS_FILE, press_tags

    by_name = {t.name: t for t in press_tags(PRESS_FILE)}
    assert (by_name["strokes"].address, by_name["strokes"].type) == (0, "uint32")
    assert (by_name["tonnage"].order, by_name["die_temp"].scale) == ("CDAB", 0.1)
    assert (by_name["running"].area, by_name["running"].address) == ("coil", 1)


async def test_stroke_updates_counter_tonnage_and_load(sim: PressSimulator, client) -> None:
    before = await hr(client, 0, 80)
    sim.stroke()
    after = await hr(client, 0, 80)
    assert after[0:2] == [0, 1]
    assert after[30:32] != before[30:32]
    assert all(a != b for a, b in zip(after[40:80], before[40:80], strict=True))
    sim.stroke(2**32 - 1)  # the counter wraps like a real uint32
    assert (await hr(client, 0, 2)) == [0, 0]


async def test_generator_strokes_while_running_only(sim: PressSimulator) -> None:
    sim.set_spm(3000)  # 50 strokes/s keeps the test short
    await asyncio.sleep(0.05)
    assert sim.strokes == 0  # not running
    sim.set_running(True)
    await wait_until(lambda: sim.strokes >= 3)
    sim.set_setup_mode(True)
    await asyncio.sleep(0)
    frozen = sim.strokes
    await asyncio.sleep(0.1)
    assert sim.strokes == frozen  # setup mode: no strokes
    sim.set_setup_mode(False)
    await wait_until(lambda: sim.strokes >= frozen + 3)
    sim.set_running(False)
    await asyncio.sleep(0)
    stopped = sim.strokes
    await asyncio.sleep(0.1)
    assert sim.strokes == stopped


async def test_generator_rate_follows_spm(sim: PressSimulator) -> None:
    sim.set_spm(1200)  # 20/s
    sim.set_running(True)
    t0 = time.monotonic()
    await wait_until(lambda: sim.strokes >= 6)
    elapsed = time.monotonic() - t0
    assert 0.25 <= elapsed < 1.0  # 6 strokes at 50 ms apart


async def test_faults_and_clear(sim: PressSimulator, client) -> None:
    sim.fail_with_exception("holding", range(30, 32), 4)
    r = await client.read_holding_registers(0, count=40, device_id=1)
    assert r.isError() and r.exception_code == 4
    assert (await hr(client, 0, 4))[2] == 12  # outside the faulty range still answers
    sim.fail_with_exception("coil", range(2, 3), 6)
    r = await client.read_coils(0, count=3, device_id=1)
    assert r.isError() and r.exception_code == 6
    sim.clear_faults()
    assert len(await hr(client, 0, 40)) == 40


async def test_silent_accepts_but_never_answers(sim: PressSimulator, client) -> None:
    sim.set_silent(True)
    with pytest.raises(ModbusIOException):
        await client.read_holding_registers(0, count=1, device_id=1)
    assert client.connected  # the connection stays up: a hung PLC, not a dead one
    sim.set_silent(False)
    client.close()
    assert await client.connect()
    assert (await hr(client, 2, 1)) == [12]


async def test_stop_drops_clients_and_restarts_on_same_port(sim: PressSimulator,
                                                            client) -> None:
    port = sim.port
    await sim.stop()
    await wait_until(lambda: not client.connected)
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0  # nobody listens
    sim.set_die(5)
    await sim.start()
    assert sim.port == port
    assert await client.connect()
    assert (await hr(client, 2, 1)) == [5]
    assert sim.connections == 2
    assert sim.requests["holding"] == 1


async def test_published_tag_specs_match_map() -> None:
    names = [t.name for t in PRESS_TAGS + LOAD_TAGS]
    assert len(names) == len(set(names)) == 50
    assert {t.address for t in LOAD_TAGS} == set(range(40, 80))


def test_cli_arguments() -> None:
    args = _parse_args(["--port", "5021", "--part", "P-1", "--die", "4"])
    assert (args.port, args.part, args.die, args.lot) == (5021, "P-1", 4, "LOT-0001")


async def test_cli_serves_a_press() -> None:
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sim.press", "--port", str(port), "--part", "CLI-9",
        "--die", "3", "--stopped", stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 10)
        assert f":{port}" in line.decode()
        c = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=1, retries=0,
                                 reconnect_delay=0)
        assert await c.connect()
        regs = await hr(c, 0, 18)
        c.close()
        assert regs[2] == 3
        assert struct.pack(">8H", *regs[10:18]).rstrip(b"\0") == b"CLI-9"
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 10)
