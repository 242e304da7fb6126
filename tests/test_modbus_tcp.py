"""ModbusPoller against the real press simulator on 127.0.0.1 (free ports)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import pytest
import uvloop

from drivers.base import Backoff, ConnectionChange, DriverEvent, PollResult
from drivers.link import POLL_EARLY_S
from drivers.modbus.codec import TagSpec
from drivers.modbus.driver import ModbusPoller, TagError, read_once
from drivers.modbus.engine import ModbusBus
from sim.ports import free_port
from sim.press import LOAD_TAGS, PRESS_TAGS, PressSimulator

WAIT_S = 3.0


class Recorder:
    """Sink that queues every event so that tests await them instead of sleeping."""

    def __init__(self) -> None:
        self.events: list[DriverEvent] = []
        self._queue: asyncio.Queue[DriverEvent] = asyncio.Queue()

    def __call__(self, event: DriverEvent) -> None:
        self.events.append(event)
        self._queue.put_nowait(event)

    async def next(self, match: Callable[[DriverEvent], bool], timeout: float = WAIT_S):
        """The next event (after those already consumed) that ``match`` accepts."""
        async with asyncio.timeout(timeout):
            while True:
                event = await self._queue.get()
                if match(event):
                    return event

    async def poll(self, match: Callable[[PollResult], bool] = lambda _: True) -> PollResult:
        return await self.next(lambda e: isinstance(e, PollResult) and match(e))

    async def change(self, online: bool) -> ConnectionChange:
        return await self.next(lambda e: isinstance(e, ConnectionChange) and e.online is online)

    def changes(self) -> list[tuple[bool, str]]:
        return [(e.online, e.reason) for e in self.events if isinstance(e, ConnectionChange)]


@pytest.fixture
async def sim() -> AsyncIterator[PressSimulator]:
    press = PressSimulator(part="4711-A", lot="LOT-77", die=12, spm=0, seed=1)
    await press.start()
    yield press
    await press.stop()


def poller_for(sim: PressSimulator, tags=PRESS_TAGS, **kw) -> ModbusPoller:
    kw.setdefault("poll_interval_s", 0.02)
    kw.setdefault("timeout_s", 0.2)
    kw.setdefault("max_gap", 8)
    kw.setdefault("backoff", Backoff(initial=0.02, maximum=0.1, jitter=0.0))
    return ModbusPoller("p1", "127.0.0.1", sim.port, 1, list(tags), **kw)


async def running(poller: ModbusPoller, sink: Recorder) -> asyncio.Task[None]:
    return asyncio.create_task(poller.run(sink))


async def cancel(task: asyncio.Task[None]) -> None:
    """Cancel and prove the task ends promptly with CancelledError (no stuck tasks)."""
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 1.0)


async def test_values_decode_and_follow_the_press(sim: PressSimulator) -> None:
    sim.set_tonnage(1000.0)  # reported from the next stroke on
    sim.stroke(70_000)
    sim.set_temperature(42.5)
    sim.set_running(True)
    sim.set_repair(True)
    rec = Recorder()
    task = await running(poller_for(sim, PRESS_TAGS + LOAD_TAGS), rec)
    try:
        assert (await rec.change(True)).online
        result = await rec.poll()
        v = result.values
        assert result.errors == {}
        assert v["strokes"] == 70_000 and isinstance(v["strokes"], int)
        assert (v["die_id"], v["spm"]) == (12, 0)
        assert (v["part_number"], v["material_lot"]) == ("4711-A", "LOT-77")
        assert v["die_temp"] == pytest.approx(42.5)
        assert 900 < v["tonnage"] < 1100
        assert (v["setup_mode"], v["running"], v["repair"]) == (False, True, True)
        assert len(v) == len(PRESS_TAGS) + len(LOAD_TAGS)
        assert abs(result.ts - time.time()) < 1.0

        sim.set_die(13)
        sim.set_part("4711-B")
        sim.set_setup_mode(True)
        sim.stroke()
        later = await rec.poll(lambda r: r.values["die_id"] == 13)
        assert later.values["part_number"] == "4711-B"
        assert later.values["setup_mode"] is True
        assert later.values["strokes"] == 70_001
        assert later.values["load_05"] != v["load_05"]
    finally:
        await cancel(task)
    assert rec.changes() == [(True, "")]


async def test_block_reads_are_coalesced(sim: PressSimulator) -> None:
    poller = poller_for(sim, PRESS_TAGS + LOAD_TAGS, max_gap=8)
    assert [(b.area, b.start, b.count) for b in poller.blocks] == [
        ("holding", 0, 80), ("coil", 0, 3)]
    rec = Recorder()
    task = await running(poller, rec)
    try:
        for _ in range(5):
            await rec.poll()
    finally:
        await cancel(task)
    polls = poller.stats["polls"]
    assert polls >= 5
    # one request per block per poll (+1 if cancelled mid-poll)
    assert polls <= sim.requests["holding"] <= polls + 1
    assert polls <= sim.requests["coil"] <= polls + 1
    assert poller.stats["errors"] == 0
    # without gap bridging the same tags need more round trips
    assert len(poller_for(sim, PRESS_TAGS + LOAD_TAGS, max_gap=0).blocks) == 6


async def test_restarted_plc_goes_offline_then_online(sim: PressSimulator) -> None:
    sim.stroke(5)
    rec = Recorder()
    poller = poller_for(sim)
    task = await running(poller, rec)
    try:
        await rec.change(True)
        await sim.stop()
        offline = await rec.change(False)
        assert offline.reason
        sim.stroke(1)
        await sim.start()
        await rec.change(True)
        result = await rec.poll()
        assert result.values["strokes"] == 6
    finally:
        await cancel(task)
    assert [online for online, _ in rec.changes()] == [True, False, True]
    assert poller.stats["reconnects"] >= 1


async def test_exception_response_lands_in_errors(sim: PressSimulator) -> None:
    tags = [*PRESS_TAGS, TagSpec("beyond_map", "holding", 100, "uint16")]
    sim.fail_with_exception("holding", range(30, 32), 2)
    rec = Recorder()
    poller = poller_for(sim, tags, max_gap=1)  # blocks 0-3, 10-17, 20-27, 30-32, 100
    task = await running(poller, rec)
    try:
        result = await rec.poll()
        assert result.errors == {
            "tonnage": "IllegalDataAddress",
            "die_temp": "IllegalDataAddress",  # same block as tonnage
            "beyond_map": "IllegalDataAddress",
        }
        assert result.values["strokes"] == 0
        assert result.values["part_number"] == "4711-A"
        assert "tonnage" not in result.values
        sim.clear_faults()
        sim.fail_with_exception("coil", range(0, 3), 6)
        busy = await rec.poll(lambda r: "tonnage" in r.values)
        assert busy.errors["running"] == "ServerDeviceBusy"
    finally:
        await cancel(task)
    assert rec.changes() == [(True, "")]  # exception responses are not an outage
    assert poller.stats["errors"] >= 3


async def test_silent_plc_times_out_to_offline(sim: PressSimulator) -> None:
    rec = Recorder()
    poller = poller_for(sim, timeout_s=0.1)
    task = await running(poller, rec)
    try:
        await rec.change(True)
        sim.set_silent(True)
        t0 = time.monotonic()
        offline = await rec.change(False)
        assert offline.reason == "timeout"
        assert time.monotonic() - t0 < 1.0
        sim.set_silent(False)
        await rec.change(True)
        await rec.poll()
        sim.set_silent(True)
        await rec.change(False)
    finally:
        await cancel(task)  # cancelling while a request hangs must not get stuck
    await asyncio.sleep(0)
    leftovers = [t for t in asyncio.all_tasks()
                 if t is not asyncio.current_task() and t.get_name() != "sim-press-strokes"]
    assert leftovers == []
    assert [online for online, _ in rec.changes()] == [True, False, True, False]


async def test_refused_connection_reports_offline_once() -> None:
    port = free_port()
    rec = Recorder()
    poller = ModbusPoller("p9", "127.0.0.1", port, 1, list(PRESS_TAGS), 0.02, 0.2, 8,
                          backoff=Backoff(initial=0.01, maximum=0.02, jitter=0.0))
    task = asyncio.create_task(poller.run(rec))
    try:
        change = await rec.change(False)
        assert "connect" in change.reason
        while poller.stats["reconnects"] < 3:
            await asyncio.sleep(0.01)
        # the PLC comes up on that port later: polling starts on its own
        async with PressSimulator(port=port) as late_sim:
            assert late_sim.port == port
            await rec.change(True)
            await rec.poll()
    finally:
        await cancel(task)
    assert [online for online, _ in rec.changes()][:2] == [False, True]


async def test_schedule_does_not_drift(sim: PressSimulator) -> None:
    rec = Recorder()
    interval = 0.01
    poller = poller_for(sim, poll_interval_s=interval)
    late_at: list[int] = []

    def sink(event: DriverEvent) -> None:
        rec(event)
        if isinstance(event, PollResult):
            late_at.append(poller.stats["late_polls"])

    task = await running(poller, sink)
    try:
        results = [await rec.poll() for _ in range(20)]
    finally:
        await cancel(task)
    # the first poll at once, then slots on the shared grid: multiples of the interval
    anchor = (results[0].scheduled // interval) * interval
    slots = [round((r.scheduled - anchor) / interval) for r in results[1:]]
    # every poll sits exactly on the grid anchor + k * interval (no accumulated error) ...
    assert [r.scheduled for r in results[1:]] == [anchor + k * interval for k in slots]
    # ... and slots only advance; any gap is a skip that late_polls counted
    assert slots == sorted(set(slots)) and slots[0] >= 1
    assert slots[-1] - slots[0] - (len(slots) - 1) == late_at[19] - late_at[1]
    for r in results:  # never before its slot (a poll due within POLL_EARLY_S is served)
        assert r.started >= r.scheduled - POLL_EARLY_S


def test_one_wait_per_poll_on_uvloop(monkeypatch: pytest.MonkeyPatch) -> None:
    """The daemon runs on uvloop, whose timers fire up to ~1 ms early and round a wait
    under 0.5 ms to "call soon": waiting again for that rest spun the event loop (~20
    waits per 10 ms poll). The engine serves a poll due within POLL_EARLY_S instead."""
    waits = 0
    real_sleep = ModbusBus._sleep

    async def counting_sleep(self: ModbusBus, delay: float) -> None:
        nonlocal waits
        waits += 1
        await real_sleep(self, delay)

    monkeypatch.setattr(ModbusBus, "_sleep", counting_sleep)

    async def scenario() -> list[PollResult]:
        press = PressSimulator(part="4711-A", lot="LOT-77", die=12, spm=0, seed=1)
        await press.start()
        try:
            rec = Recorder()
            task = await running(poller_for(press, poll_interval_s=0.01), rec)
            try:
                return [await rec.poll() for _ in range(40)]
            finally:
                await cancel(task)
        finally:
            await press.stop()

    results = uvloop.run(scenario())
    assert len(results) == 40
    assert waits <= 2 * len(results), f"{waits} waits for {len(results)} polls"


async def test_presses_started_apart_poll_on_one_grid(sim: PressSimulator) -> None:
    """Two pollers of one interval started at different moments poll in the same
    instants after their first poll (one commit window for both in the daemon)."""
    interval = 0.05
    recs = [Recorder(), Recorder()]
    tasks = [await running(poller_for(sim, poll_interval_s=interval), recs[0])]
    await recs[0].poll()
    await asyncio.sleep(interval * 0.37)  # a second press connecting a little later
    tasks.append(await running(poller_for(sim, poll_interval_s=interval), recs[1]))
    try:
        polls = [[await rec.poll() for _ in range(4)] for rec in recs]
    finally:
        for task in tasks:
            await cancel(task)
    phases = {round((r.scheduled / interval) % 1.0, 6) % 1.0 for p in polls for r in p[1:]}
    assert phases == {0.0}, phases


async def test_late_poll_skips_missed_slots(sim: PressSimulator) -> None:
    interval = 0.01
    rec = Recorder()
    poller = poller_for(sim, poll_interval_s=interval)
    late_at: list[int] = []

    def slow_sink(event: DriverEvent) -> None:
        rec(event)
        if isinstance(event, PollResult):
            late_at.append(poller.stats["late_polls"])
            if len(late_at) == 1:
                time.sleep(0.055)  # the collector blocks the loop for ~5 periods

    task = await running(poller, slow_sink)
    try:
        first = await rec.poll()
        second = await rec.poll()
    finally:
        await cancel(task)
    anchor = (first.scheduled // interval) * interval  # the first poll is at once
    skipped = round((second.scheduled - anchor) / interval) - 1
    assert skipped >= 4
    assert late_at[1] - late_at[0] == skipped
    assert second.scheduled == anchor + (skipped + 1) * interval


async def test_read_once(sim: PressSimulator) -> None:
    sim.stroke(3)
    tags = [*PRESS_TAGS, TagSpec("nothing", "holding", 200, "uint16")]
    values = await read_once("127.0.0.1", sim.port, 1, tags, timeout_s=0.5)
    assert values["strokes"] == 3
    assert values["part_number"] == "4711-A"
    assert values["nothing"] == TagError("IllegalDataAddress")
    with pytest.raises(ConnectionError):
        await read_once("127.0.0.1", free_port(), 1, tags, timeout_s=0.2)
    sim.set_silent(True)
    with pytest.raises(ConnectionError, match="timeout"):
        await read_once("127.0.0.1", sim.port, 1, tags, timeout_s=0.1)


def test_poller_rejects_bad_settings() -> None:
    with pytest.raises(ValueError):
        ModbusPoller("p", "h", 502, 1, list(PRESS_TAGS), 0, 1.0, 8)
    with pytest.raises(ValueError, match="duplicate"):
        ModbusPoller("p", "h", 502, 1, [PRESS_TAGS[0], PRESS_TAGS[0]], 0.1, 1.0, 8)
