"""SerialGauge on real ptys (GaugeSimulator): values, garbage, framing, unplug/replug.

Every wait is on an event from the sink (asyncio.Queue + wait_for), never a bare sleep.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.base import Backoff, ConnectionChange, DriverEvent, GaugeError, GaugeValue
from drivers.gauge.presets import make_parser
from drivers.gauge.reader import BurstLog, Frame, LineFramer, SerialGauge
from sim.gauge import GaugeSimulator

TIMEOUT = 3.0
LOGGER = "drivers.gauge.reader"


def fast_backoff() -> Backoff:
    return Backoff(initial=0.02, maximum=0.1, jitter=0.0)


@dataclass
class Rig:
    """A simulator, a gauge reading it, and the queue its sink fills."""

    sim: GaugeSimulator
    gauge: SerialGauge
    events: asyncio.Queue[DriverEvent] = field(default_factory=asyncio.Queue)

    async def next(self, kind: type | None = None) -> DriverEvent:
        """The next event; with ``kind``, fail if the next event is of another kind."""
        event = await asyncio.wait_for(self.events.get(), TIMEOUT)
        if kind is not None:
            assert isinstance(event, kind), event
        return event

    async def until_value(self) -> tuple[GaugeValue, list[DriverEvent]]:
        """Events up to and including the next GaugeValue."""
        seen: list[DriverEvent] = []
        while True:
            event = await self.next()
            if isinstance(event, GaugeValue):
                return event, seen
            seen.append(event)


@contextlib.asynccontextmanager
async def running(tmp_path: Path, preset: str = "mitutoyo", *, plugged: bool = True,
                  **gauge_kwargs) -> AsyncIterator[Rig]:
    pattern = gauge_kwargs.pop("pattern", None)
    errors = gauge_kwargs.pop("error_strings", ())
    sim_terminator = gauge_kwargs.pop("sim_terminator", None)
    sim = GaugeSimulator(str(tmp_path / "by-id" / "gauge-1"), preset=preset,
                         terminator=sim_terminator)
    if plugged:
        sim.open()
    parser = make_parser(preset, pattern=pattern, error_strings=errors)
    gauge = SerialGauge("p1/g1", sim.path, parser, reopen_backoff=fast_backoff(),
                        **gauge_kwargs)
    rig = Rig(sim, gauge)
    task = asyncio.create_task(gauge.run(rig.events.put_nowait))
    try:
        if plugged:
            online = await rig.next(ConnectionChange)
            assert isinstance(online, ConnectionChange) and online.online
        yield rig
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        sim.close()


# --------------------------------------------------------------------------- on ptys

async def test_values_arrive_parsed_with_unit_from_config(tmp_path: Path) -> None:
    async with running(tmp_path, unit_default="in") as rig:
        rig.sim.send_value("0.123")
        rig.sim.send_raw(b"02A-001.2340\r")
        first = await rig.next(GaugeValue)
        second = await rig.next(GaugeValue)
    assert isinstance(first, GaugeValue) and isinstance(second, GaugeValue)
    # the gauge's config id, as plans route by it; the source id is "p1/g1"
    assert (first.gauge, first.value, first.unit, first.channel, first.raw) == (
        "g1", "0.123", "in", 1, b"01A+0000.123")
    assert (second.value, second.channel) == ("-1.2340", 2)
    assert first.ts <= second.ts
    assert rig.gauge.stats["values"] == 2 and rig.gauge.stats["garbage"] == 0


async def test_generic_unit_from_record_else_config(tmp_path: Path) -> None:
    pattern = r"^(?P<value>[+-]?\d+(\.\d+)?)\s*(?P<unit>mm|in|um)?$"
    async with running(tmp_path, "generic", pattern=pattern, unit_default="mm") as rig:
        rig.sim.send_value("4.285", unit="in")
        rig.sim.send_raw(b"-0.50\r\n")
        with_unit = await rig.next(GaugeValue)
        without = await rig.next(GaugeValue)
    assert isinstance(with_unit, GaugeValue) and isinstance(without, GaugeValue)
    assert (with_unit.value, with_unit.unit, with_unit.raw) == ("4.285", "in", b"4.285 in")
    assert (without.value, without.unit) == ("-0.50", "mm")


async def test_device_errors_are_gauge_errors_with_raw_bytes(tmp_path: Path) -> None:
    async with running(tmp_path, error_strings=("ERR",)) as rig:
        rig.sim.send_raw(b"ERR3\r")
        error = await rig.next(GaugeError)
    assert isinstance(error, GaugeError)
    assert (error.reason, error.raw) == ("device_error: ERR3", b"ERR3")
    assert rig.gauge.stats["errors"] == 1 and rig.gauge.stats["garbage"] == 0


async def test_garbage_partial_and_huge_lines_never_become_values(tmp_path: Path) -> None:
    async with running(tmp_path, max_line=64) as rig:
        rig.sim.send_raw(b"\x00\xff\x13junk\r")                 # noise
        rig.sim.send_raw(b"01A+00x0.123\r")                     # embedded garbage
        rig.sim.send_raw(b"01A+0000.1" + b"9" * 100 + b"\r")     # a record grown too long
        rig.sim.send_raw(b"X" * 500 + b"01A+0000.999\r")        # valid tail of a huge line
        rig.sim.send_raw(b"01A++0000.123\r\r\n\n")              # two signs, empty lines
        rig.sim.send_value("0.555")                             # the only real value
        value, before = await rig.until_value()
        stats = rig.gauge.stats
    assert value.value == "0.555"
    reasons = [e.reason for e in before if isinstance(e, GaugeError)]
    assert reasons == ["garbage", "garbage", "too_long", "too_long", "garbage"]
    too_long = [e for e in before if isinstance(e, GaugeError) and e.reason == "too_long"]
    assert all(len(e.raw) == 64 for e in too_long)
    assert stats["garbage"] == 5 and stats["too_long"] == 2 and stats["values"] == 1
    assert stats["lines"] == 6


@pytest.mark.parametrize("sent", [b"\r", b"\n", b"\r\n"])
async def test_cr_lf_and_crlf_all_frame_one_line(tmp_path: Path, sent: bytes) -> None:
    async with running(tmp_path, terminator=b"\r", sim_terminator=sent) as rig:
        for value in ("0.001", "0.002", "0.003"):
            rig.sim.send_value(value)
        got = [await rig.next(GaugeValue) for _ in range(3)]
        # A CRLF split between two writes is still one terminator.
        rig.sim.send_raw(b"01A+0000.004\r")
        rig.sim.send_raw(b"\n01A+0000.005\r\n")
        got += [await rig.next(GaugeValue), await rig.next(GaugeValue)]
        stats = rig.gauge.stats
    assert [v.value for v in got if isinstance(v, GaugeValue)] == [
        "0.001", "0.002", "0.003", "0.004", "0.005"]
    assert stats["garbage"] == 0 and stats["lines"] == 5


async def test_unplug_reports_offline_replug_online_and_values_flow(tmp_path: Path) -> None:
    async with running(tmp_path) as rig:
        rig.sim.send_raw(b"01A+0000.100\r01A+0000.5")   # one value, then half a record
        await rig.next(GaugeValue)
        await _until(lambda: rig.gauge.framer.pending > 0)
        rig.sim.unplug()
        offline = await rig.next(ConnectionChange)
        assert isinstance(offline, ConnectionChange) and not offline.online
        assert offline.reason and offline.source == "p1/g1"
        assert not Path(rig.sim.path).exists()
        rig.sim.replug()
        online = await rig.next(ConnectionChange)
        assert isinstance(online, ConnectionChange) and online.online
        rig.sim.send_raw(b"55\r")                       # the other "half" must not join
        rig.sim.send_value("0.200")
        value, before = await rig.until_value()
        stats = rig.gauge.stats
    assert value.value == "0.200"
    assert [e.reason for e in before if isinstance(e, GaugeError)] == ["garbage"]
    assert stats["partial_dropped"] == 1 and stats["reopens"] == 1


async def test_port_missing_at_start_then_appears(tmp_path: Path) -> None:
    async with running(tmp_path, plugged=False) as rig:
        offline = await rig.next(ConnectionChange)
        assert isinstance(offline, ConnectionChange) and not offline.online
        assert offline.reason == "No such file or directory"
        rig.sim.open()
        online = await rig.next(ConnectionChange)
        assert isinstance(online, ConnectionChange) and online.online
        rig.sim.send_value("1.000")
        value = await rig.next(GaugeValue)
        assert rig.gauge.stats["open_failures"] >= 1
    assert isinstance(value, GaugeValue) and value.value == "1.000"


async def test_many_garbage_lines_give_few_log_records(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    async with running(tmp_path) as rig:
        for i in range(300):
            rig.sim.send_raw(b"noise %d\r" % i)
        rig.sim.send_value("0.321")
        value, before = await rig.until_value()
        stats = rig.gauge.stats
    assert value.value == "0.321" and len(before) == 300
    assert stats["garbage"] == 300
    records = [r for r in caplog.records if r.name == LOGGER and r.levelno >= logging.WARNING]
    assert len(records) == 2, [r.getMessage() for r in records]
    assert "299 more bad lines" in records[1].getMessage()


async def test_cancel_releases_the_port(tmp_path: Path) -> None:
    async with running(tmp_path) as rig:
        path = rig.sim.path
        task_free = SerialGauge("p1/g2", path, "mitutoyo", reopen_backoff=fast_backoff())
        events: asyncio.Queue[DriverEvent] = asyncio.Queue()
        other = asyncio.create_task(task_free.run(events.put_nowait))
        busy = await asyncio.wait_for(events.get(), TIMEOUT)   # exclusive: port is taken
        assert isinstance(busy, ConnectionChange) and not busy.online
        other.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await other
        # after cancelling, the first reader still works
        rig.sim.send_value("0.010")
        assert isinstance(await rig.next(GaugeValue), GaugeValue)


async def test_sink_bugs_are_not_swallowed(tmp_path: Path) -> None:
    sim = GaugeSimulator(str(tmp_path / "g"))
    sim.open()
    got: list[DriverEvent] = []

    def sink(event: DriverEvent) -> None:
        got.append(event)
        if isinstance(event, GaugeValue):
            raise RuntimeError("collector bug")

    gauge = SerialGauge("p1/g1", sim.path, "mitutoyo", reopen_backoff=fast_backoff())
    task = asyncio.create_task(gauge.run(sink))
    try:
        await _until(lambda: bool(got))
        sim.send_value("0.1")
        with pytest.raises(RuntimeError, match="collector bug"):
            await asyncio.wait_for(task, TIMEOUT)
    finally:
        task.cancel()
        sim.close()


async def _until(condition: Callable[[], bool]) -> None:
    """Poll a cheap condition the driver has no event for (a byte in its buffer)."""
    async with asyncio.timeout(TIMEOUT):
        while not condition():
            await asyncio.sleep(0.005)


# --------------------------------------------------------------------------- framing (pure)

def test_framer_cap_is_inclusive_and_discards_to_the_next_terminator() -> None:
    framer = LineFramer(max_line=4)
    assert framer.feed(b"abcd\r") == [Frame(b"abcd")]
    assert framer.feed(b"abcde") == [Frame(b"abcd", too_long=True)]
    assert framer.feed(b"fghij") == []
    assert framer.feed(b"k\rok\n") == [Frame(b"ok")]


def test_framer_drop_partial() -> None:
    framer = LineFramer(max_line=16)
    assert framer.feed(b"01A+0") == []
    assert framer.pending == 5
    assert framer.drop_partial() is True
    assert framer.feed(b"55\r") == [Frame(b"55")]
    assert framer.drop_partial() is False


@given(st.lists(st.sampled_from([b"01A+0000.123", b"x", b"", b"\r", b"\n", b"\r\n", b"y" * 40]),
                max_size=30),
       st.lists(st.integers(1, 50), min_size=1, max_size=10))
def test_framer_does_not_depend_on_how_bytes_are_chunked(pieces: list[bytes],
                                                          cuts: list[int]) -> None:
    stream = b"".join(pieces)
    whole = LineFramer(max_line=20).feed(stream)
    framer = LineFramer(max_line=20)
    chunked: list[Frame] = []
    pos, i = 0, 0
    while pos < len(stream):
        size = cuts[i % len(cuts)]
        chunked += framer.feed(stream[pos:pos + size])
        pos, i = pos + size, i + 1
    assert chunked == whole
    assert all(f.data and b"\r" not in f.data and b"\n" not in f.data for f in whole)


def test_burst_log_summarises_every_n_seconds(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    now = [0.0]
    burst = BurstLog("g", every=10.0, clock=lambda: now[0])
    for _ in range(100):
        burst.bad("garbage", b"x")
        now[0] += 0.5          # 50 s of garbage
    burst.good()
    burst.good()
    messages = [r.getMessage() for r in caplog.records]
    # first line at t=0, summaries at t=10, 20, 30, 40, last one when the burst ends
    assert len(messages) == 1 + 4 + 1 and "garbage line" in messages[0]
    assert sum(int(m.split()[1]) for m in messages[1:]) == 99
