"""A driver that fails repeatedly publishes its press offline (issue 11): a connection
event and the retained state ``plc_online: false``; before, a crash-looping driver left
the press silent while its retained state said online. When the driver runs again its
first good poll brings the press back online. Real peers: the Modbus TCP press
simulator, the RTU simulator on a pty pair, the OPC UA press simulator; a real outbox."""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path

import orjson

from buffer.store import Outbox
from collector.domain import WorkflowSettings
from collector.messages import Topics
from collector.press import PressRuntime
from collector.press_drivers import supervise
from drivers.base import Backoff, DriverEvent, PollResult
from drivers.modbus.driver import ModbusPoller
from drivers.modbus.engine import ModbusBus, SerialLink
from drivers.opcua import OpcuaPoller, OpcuaTag
from sim.bus import BusSimulator
from sim.opcua import OpcuaPressSimulator, node_text
from sim.press import PRESS_TAGS, PressSimulator

ROOT = "plant/press-shop"


class Buggy:
    """The press runtime behind a sink with a bug that can be switched on and off."""

    def __init__(self, tmp_path: Path) -> None:
        self.path = tmp_path / "buffer.sqlite"
        self.outbox = Outbox.open(self.path, commit_interval_s=0.005)
        self.runtime = PressRuntime("p1", {}, WorkflowSettings(), {}, self.outbox,
                                    Topics(ROOT, "host1"))
        self.broken = False
        self.changed = asyncio.Event()

    def sink(self, event: DriverEvent) -> None:
        if self.broken and isinstance(event, PollResult):
            raise RuntimeError("bug in the collector")
        self.runtime.sink(event)
        self.changed.set()

    async def until(self, pred: Callable[[], bool]) -> None:
        async with asyncio.timeout(10):
            while not pred():
                self.changed.clear()
                try:
                    async with asyncio.timeout(0.05):  # failures are counted elsewhere
                        await self.changed.wait()
                except TimeoutError:
                    pass

    def connection_events(self) -> list[dict]:
        self.outbox.flush_sync(5)
        conn = sqlite3.connect(self.path)
        try:
            rows = conn.execute("SELECT payload FROM messages WHERE topic LIKE "
                                "'%/events/connection' ORDER BY id").fetchall()
            retained = conn.execute("SELECT payload FROM retained WHERE press = 'p1'"
                                    ).fetchone()
        finally:
            conn.close()
        self.retained = orjson.loads(retained[0])
        return [orjson.loads(r[0])["data"] for r in rows]


async def crash_loop(tmp_path: Path, factory: Callable[[Buggy], Callable[[], Awaitable[None]]],
                     ) -> tuple[Buggy, dict[str, int]]:
    rig = Buggy(tmp_path)
    failures: dict[str, int] = {}
    task = asyncio.create_task(supervise("p1/plc", factory(rig), failures,
                                         Backoff(0.05, 0.1, jitter=0.0)))
    try:
        await rig.until(lambda: rig.runtime.plc_online)
        rig.broken = True
        await rig.until(lambda: failures.get("p1/plc", 0) >= 3)
        assert not rig.runtime.plc_online
        down = rig.connection_events()
        assert rig.retained["plc_online"] is False
        rig.broken = False
        await rig.until(lambda: rig.runtime.plc_online)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    events = rig.connection_events()
    assert rig.retained["plc_online"] is True
    rig.outbox.close()
    # Each restart connects (online) and dies at its first poll (offline): between the
    # restarts, i.e. nearly all the time, the press is offline, with the reason.
    assert down[-1]["online"] is False
    offline = [e for e in down if e["online"] is False]
    assert {e["reason"] for e in offline} == {"driver failed: RuntimeError: bug in the "
                                              "collector"}
    flags = [e["online"] for e in events]
    assert flags[0] is True and flags[-2:] == [False, True]
    assert all(a != b for a, b in itertools.pairwise(flags))  # each change once
    return rig, failures


async def test_crash_looping_modbus_tcp_driver_publishes_the_press_offline(
        tmp_path: Path) -> None:
    sim = PressSimulator(spm=0)
    await sim.start()
    # The daemon's factory shape: the same driver object is run again after a crash.
    poller = ModbusPoller("p1/plc", "127.0.0.1", sim.port, 1, PRESS_TAGS,
                          poll_interval_s=0.02, timeout_s=0.5, max_gap=8)
    try:
        await crash_loop(tmp_path, lambda rig: lambda: poller.run(rig.sink))
    finally:
        await sim.stop()


async def test_crash_looping_rtu_press_publishes_the_press_offline(tmp_path: Path) -> None:
    async with BusSimulator({1: PressSimulator(spm=0)}, "serial") as sim:
        bus = ModbusBus(SerialLink(sim.client_port, 19200))
        bus.add_unit("p1/plc", 1, PRESS_TAGS, 0.02, 0.3)
        await crash_loop(tmp_path, lambda rig: lambda: bus.attach("p1/plc", rig.sink))


async def test_crash_looping_opcua_driver_publishes_the_press_offline(tmp_path: Path) -> None:
    async with OpcuaPressSimulator(spm=0) as sim:
        poller = OpcuaPoller("p1/plc", sim.url, [OpcuaTag("strokes", node_text("strokes"))],
                             publishing_interval_s=0.02, heartbeat_s=0.05)
        await crash_loop(tmp_path, lambda rig: lambda: poller.run(rig.sink))
