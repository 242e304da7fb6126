"""late_polls for RTU and OPC UA presses (issue 11: always 0 in /health and /metrics).

A sink that stalls the event loop for several poll periods (a busy line PC) makes polls
end late; the skipped slots are counted by the driver, carried in every PollResult, and
reach the press runtime's stats (what /health and /metrics show). Real peers: the RTU
simulator on a pty pair, the OPC UA press simulator."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from buffer.store import Outbox
from collector.domain import WorkflowSettings
from collector.messages import Topics
from collector.press import PressRuntime
from drivers.base import DriverEvent, PollResult
from drivers.modbus.engine import ModbusBus, SerialLink
from drivers.opcua import OpcuaPoller, OpcuaTag
from sim.bus import BusSimulator
from sim.opcua import OpcuaPressSimulator, node_text
from sim.press import PRESS_TAGS, PressSimulator

# timing-sensitive: scripts/test runs it alone, after the parallel part
pytestmark = pytest.mark.serial


def stalling_sink(runtime: PressRuntime, period: float,
                  done: asyncio.Event) -> Callable[[DriverEvent], None]:
    polls: list[PollResult] = []

    def sink(event: DriverEvent) -> None:
        runtime.sink(event)
        if isinstance(event, PollResult):
            polls.append(event)
            if len(polls) == 3:
                time.sleep(5 * period)  # the loop stalls: the next slots are missed
            if len(polls) >= 6:
                done.set()
    return sink


def runtime_for(tmp_path: Path) -> tuple[PressRuntime, Outbox]:
    outbox = Outbox.open(tmp_path / "buffer.sqlite", commit_interval_s=0.01)
    return PressRuntime("p1", {}, WorkflowSettings(), {}, outbox, Topics("r", "h")), outbox


async def test_rtu_press_counts_late_polls(tmp_path: Path) -> None:
    runtime, outbox = runtime_for(tmp_path)
    done = asyncio.Event()
    async with BusSimulator({1: PressSimulator(spm=0)}, "serial") as sim:
        bus = ModbusBus(SerialLink(sim.client_port, 19200))
        bus.add_unit("p1/plc", 1, PRESS_TAGS, 0.03, 0.3)
        task = asyncio.create_task(bus.attach("p1/plc", stalling_sink(runtime, 0.03, done)))
        try:
            await asyncio.wait_for(done.wait(), 10)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    outbox.close()
    assert bus.units["p1/plc"].stats["late_polls"] >= 3
    assert runtime.stats["late_polls"] == bus.units["p1/plc"].stats["late_polls"]


async def test_opcua_polled_press_counts_late_polls(tmp_path: Path) -> None:
    runtime, outbox = runtime_for(tmp_path)
    done = asyncio.Event()
    async with OpcuaPressSimulator(spm=0) as sim:
        poller = OpcuaPoller("p1/plc", sim.url, [OpcuaTag("strokes", node_text("strokes"),
                                                          mode="poll")],
                             poll_interval_s=0.03, heartbeat_s=5.0)
        task = asyncio.create_task(poller.run(stalling_sink(runtime, 0.03, done)))
        try:
            await asyncio.wait_for(done.wait(), 10)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    outbox.close()
    assert poller.stats["late_polls"] >= 3
    assert runtime.stats["late_polls"] == poller.stats["late_polls"]
    assert runtime.timing.count >= 3
