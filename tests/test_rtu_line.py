"""Modbus RTU as real buses behave (issue 11), against an independent RTU slave on a
socat pty pair (tests/support/rtu_slave.py, not pymodbus): three units on one line.

A late answer is never another request's values; an answer longer than asked, or from
another unit, is a per-tag error; the 3.5-character silence (or ``inter_frame_ms``) is
kept between every two frames; a port whose line settings cannot be applied is that
bus's error, released and retried, never a crash."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator

import pytest

from drivers.base import Backoff, PollResult
from drivers.modbus.codec import TagSpec
from drivers.modbus.engine import ModbusBus, SerialLink
from drivers.serial_settings import port_problem
from tests.support.rtu_slave import RtuSlave, Unit, set_string, set_u32
from tests.test_modbus_tcp import Recorder

# timing-sensitive: scripts/test runs it alone, after the parallel part
pytestmark = pytest.mark.serial

UNITS = (1, 2, 3)
# Two holding blocks of the same size (max_gap 8): a late answer to the first has the
# shape of an answer to the second, which is exactly how a lot number went astray.
TAGS = [TagSpec("strokes", "holding", 0, "uint32"), TagSpec("die", "holding", 2, "uint16"),
        TagSpec("spare", "holding", 3, "uint16"),
        TagSpec("lot", "holding", 40, "string", length=4),
        TagSpec("running", "coil", 1, "bool")]


def own_values(u: int) -> dict[str, object]:
    return {"strokes": 1000 * u + 7, "die": 100 + u, "spare": 0, "lot": f"LOT-{u}",
            "running": u % 2 == 1}


def make_unit(u: int, **kw: object) -> Unit:
    unit = Unit(**kw)  # type: ignore[arg-type]
    set_u32(unit.holding, 0, 1000 * u + 7)
    unit.holding[2] = 100 + u
    set_string(unit.holding, 40, f"LOT-{u}".encode(), 4)
    unit.coils[1] = u % 2 == 1
    return unit


@pytest.fixture
async def slave(request: pytest.FixtureRequest) -> AsyncIterator[RtuSlave]:
    options: dict[int, dict] = getattr(request, "param", {})
    units = {u: make_unit(u, **options.get(u, {})) for u in UNITS}
    async with RtuSlave(units, enforce_silence=True) as sim:
        yield sim


def bus_for(slave: RtuSlave, interval: float = 0.05, timeout: float = 0.15,
            retries: int = 1, **kw: object) -> ModbusBus:
    bus = ModbusBus(SerialLink(slave.client_port, slave.baudrate),
                    link_backoff=Backoff(0.05, 0.2, jitter=0.0), dead_backoff=(0.3, 0.6),
                    **kw)  # type: ignore[arg-type]
    for u in UNITS:
        bus.add_unit(f"p{u}/plc", u, TAGS, interval, timeout, retries=retries)
    return bus


async def run_bus(bus: ModbusBus, until: asyncio.Future[object] | float,
                  ) -> dict[int, Recorder]:
    recorders = {u: Recorder() for u in UNITS}
    tasks = [asyncio.create_task(bus.attach(f"p{u}/plc", recorders[u])) for u in UNITS]
    try:
        if isinstance(until, float):
            await asyncio.sleep(until)  # a stretch of bus time to look at, not a sync point
        else:
            await asyncio.wait_for(until, 10.0)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return recorders


def polls(rec: Recorder) -> list[PollResult]:
    return [e for e in rec.events if isinstance(e, PollResult)]


def assert_only_own_values(u: int, rec: Recorder) -> None:
    mine = own_values(u)
    for poll in polls(rec):
        for name, value in poll.values.items():
            assert value == mine[name], (u, name, value, poll)


@pytest.mark.parametrize("slave", [{2: {"delay_s": 0.22}}], indirect=True)
async def test_late_answer_is_never_taken_for_another_request(slave: RtuSlave) -> None:
    """Unit 2 answers after the 150 ms timeout. Its late answer used to be read as the
    answer to the next request: another block's values, another press's lot."""
    bus = bus_for(slave)
    done = asyncio.get_running_loop().create_future()

    async def enough() -> None:
        while bus.units["p2/plc"].stats["polls"] < 2 or slave.units[2].requests < 6:
            await asyncio.sleep(0.02)
        done.set_result(None)

    watcher = asyncio.create_task(enough())
    rec = await run_bus(bus, done)
    watcher.cancel()
    for u in UNITS:
        assert_only_own_values(u, rec[u])
    for u in (1, 3):  # the healthy neighbours: never an error, never offline
        assert polls(rec[u]) and all(p.errors == {} for p in polls(rec[u]))
        assert rec[u].changes() == [(True, "")]
    assert bus.master is not None
    stats = bus.master.stats
    assert stats["timeouts"] > 0 and stats["guard_waits"] > 0
    assert stats["discarded_bytes"] > 0  # the late answers were dropped, not read


@pytest.mark.parametrize("slave", [{3: {"extra_registers": 1}, 1: {"answer_as": 7}}],
                         indirect=True)
async def test_answer_that_does_not_match_the_request_is_a_per_tag_error(
        slave: RtuSlave) -> None:
    """A register answer longer than asked used to be cut down and published; an answer
    from another unit id is not this unit's answer either."""
    bus = bus_for(slave)
    recorders = {u: Recorder() for u in UNITS}
    tasks = [asyncio.create_task(bus.attach(f"p{u}/plc", recorders[u])) for u in UNITS]
    try:
        bad3 = await recorders[3].poll()
        bad1 = await recorders[1].poll()
        good2 = await recorders[2].poll()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    holding = {"strokes", "die", "spare", "lot"}
    assert bad3.errors == dict.fromkeys(holding, "BadResponse")
    assert bad3.values == {"running": True}  # the coil answer is right: kept
    assert set(bad1.errors) == holding | {"running"}
    assert set(bad1.errors.values()) == {"BadResponse"} and bad1.values == {}
    assert good2.errors == {} and good2.values == own_values(2)
    assert recorders[3].changes() == [(True, "")]  # it answers: it is online
    assert bus.units["p3/plc"].stats["errors"] >= 1


async def test_silence_is_kept_between_every_two_frames(slave: RtuSlave) -> None:
    """Two blocks per press: the second read used to follow 0.9 ms after the answer,
    and a slave that frames by silence dropped it (2 polls/s became 0.3, no error)."""
    bus = bus_for(slave, interval=0.05)
    rec = await run_bus(bus, 1.0)
    assert slave.glued == 0 and slave.crc_errors == 0
    assert slave.min_gap >= slave.t35
    for u in UNITS:
        got = polls(rec[u])
        assert len(got) >= 8, (u, len(got))  # 3 units x 2 blocks at 50 ms share the line
        assert all(p.errors == {} for p in got) and rec[u].changes() == [(True, "")]
        assert_only_own_values(u, rec[u])


async def test_inter_frame_ms_applies_to_every_frame(slave: RtuSlave) -> None:
    bus = bus_for(slave, interval=0.05, inter_frame_s=0.02)
    await run_bus(bus, 0.6)
    assert slave.answers >= 6
    assert slave.min_gap >= 0.02 * 0.95, slave.min_gap


async def test_refused_line_settings_are_the_bus_error_and_the_port_is_released(
        slave: RtuSlave) -> None:
    """7 data bits on a pty: every press on the bus offline with the setting named,
    the port released between attempts, retried with backoff, no task crashed."""
    bus = ModbusBus(SerialLink(slave.client_port, 19200, bytesize=7, parity="E"),
                    link_backoff=Backoff(0.05, 0.1, jitter=0.0))
    for u in UNITS:
        bus.add_unit(f"p{u}/plc", u, TAGS, 0.05, 0.1)
    recorders = {u: Recorder() for u in UNITS}
    tasks = [asyncio.create_task(bus.attach(f"p{u}/plc", recorders[u])) for u in UNITS]
    try:
        for u in UNITS:
            change = await recorders[u].change(False)
            assert f"serial port {slave.client_port} refuses bytesize 7" in change.reason
            assert "bytesize = 8" in change.reason and "Invalid argument" not in change.reason
        while bus.stats["link_errors"] < 3:  # retried with backoff, not crashed
            await asyncio.sleep(0.02)
        assert port_problem(slave.client_port) == ""  # not held by the daemon itself
        assert not any(t.done() for t in tasks)
    finally:
        for task in tasks:
            task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(r, asyncio.CancelledError) for r in results)


async def test_probe_modbus_rtu_refused_settings_prints_one_error_line(
        slave: RtuSlave) -> None:
    from collector.cli import build_parser
    from collector.probe import EXIT_UNREACHABLE, run_probe
    from drivers.modbus.probe import probe_modbus

    args = build_parser().parse_args(["probe", "modbus", "--rtu", slave.client_port,
                                      "--bytesize", "7", "--unit", "1", "--read", "40001"])
    out, err = io.StringIO(), io.StringIO()
    code = await asyncio.to_thread(run_probe, probe_modbus, args, out, err)
    assert code == EXIT_UNREACHABLE and out.getvalue() == ""
    lines = err.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert "refuses bytesize 7" in lines[0] and "--bytesize 8" in lines[0]
