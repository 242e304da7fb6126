"""Every gauge preset on a real pty (GaugeSimulator): push and poll, Sylvac echo and
power-on line, Millimar features, Metro channel polling, calibration flag."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import date
from pathlib import Path

import pytest

from drivers.base import ConnectionChange, GaugeError, GaugeValue
from drivers.gauge.presets import make_parser
from drivers.gauge.reader import SerialGauge
from sim.gauge import GaugeSimulator, format_record
from tests.test_serial_gauge import Rig, fast_backoff

PUSH_PRESETS = ["mitutoyo", "sylvac", "millimar", "mahr_optors", "chicago", "metro"]


@contextlib.asynccontextmanager
async def rig_for(tmp_path: Path, preset: str, *, sim_kwargs: dict | None = None,
                  **gauge_kwargs) -> AsyncIterator[Rig]:
    sim = GaugeSimulator(str(tmp_path / "gauge"), preset=preset, **(sim_kwargs or {}))
    sim.open()
    # A Linux pty refuses parity and 7-bit characters (tcsetattr EINVAL on reopen): the
    # 7E2 presets are read as 8N1 here; the preset defaults themselves are asserted in
    # test_gauge_presets.py.
    gauge_kwargs = {"bytesize": 8, "parity": "N", "stopbits": 1, **gauge_kwargs}
    gauge = SerialGauge("p1/g1", sim.path, make_parser(preset), reopen_backoff=fast_backoff(),
                        **gauge_kwargs)
    rig = Rig(sim, gauge)
    task = asyncio.create_task(gauge.run(rig.events.put_nowait))
    try:
        online = await rig.next(ConnectionChange)
        assert isinstance(online, ConnectionChange) and online.online
        sim.answer_polls()
        yield rig
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        sim.close()


@pytest.mark.parametrize("preset", PUSH_PRESETS)
async def test_push_every_preset(tmp_path: Path, preset: str) -> None:
    async with rig_for(tmp_path, preset) as rig:
        rig.sim.send_value("-1.250", channel=2)
        got = await rig.next(GaugeValue)
    assert isinstance(got, GaugeValue)
    shown = "-1.250000" if preset == "metro" else "-1.250"  # Metro always sends 6 decimals
    assert (got.value, got.unit) == (shown, "mm")
    if preset in ("mitutoyo", "millimar", "metro"):
        assert got.channel == 2
    assert got.raw == format_record(preset, "-1.250", 2)


@pytest.mark.parametrize(("preset", "expected"), [
    ("sylvac", b"?\r"), ("millimar", b"?\r"), ("mahr_optors", b"?\r"), ("chicago", b"R\r")])
async def test_poll_every_polled_preset(tmp_path: Path, preset: str, expected: bytes) -> None:
    async with rig_for(tmp_path, preset) as rig:
        rig.sim.set_value("12.345", flag="<" if preset in ("sylvac", "millimar") else "")
        assert rig.gauge.poll_commands == [expected]
        assert await rig.gauge.poll()
        got = await rig.next(GaugeValue)
    assert isinstance(got, GaugeValue) and got.value == "12.345"
    assert rig.sim.polls_received == 1 and rig.gauge.stats["poll_timeouts"] == 0
    if preset in ("sylvac", "millimar"):
        assert got.flag == "<"


async def test_sylvac_echo_power_on_line_and_errors(tmp_path: Path) -> None:
    async with rig_for(tmp_path, "sylvac", sim_kwargs={"power_on_line": b"SY289 OPTO-RS"},
                       dtr=True, rts=False) as rig:
        rig.sim.set_value("-0.0020", flag="=")
        await rig.gauge.poll()
        got = await rig.next(GaugeValue)
        assert isinstance(got, GaugeValue) and (got.value, got.flag) == ("-0.0020", "=")
        rig.sim.error = b"ERR3"
        await rig.gauge.poll()
        err = await rig.next(GaugeError)
        assert isinstance(err, GaugeError) and err.reason == "device_error: ERR3 (over range)"
    stats = rig.gauge.stats
    assert stats["echoes"] == 2 and stats["ignored"] == 1 and stats["garbage"] == 0
    assert rig.gauge.echo and rig.gauge.dtr is True and rig.gauge.rts is False


async def test_millimar_poll_gives_one_value_per_feature(tmp_path: Path) -> None:
    async with rig_for(tmp_path, "millimar") as rig:
        rig.sim.set_value("12.34", channel=1)
        rig.sim.set_value("-0.05", channel=2, flag=">")
        await rig.gauge.poll()
        first, second = await rig.next(GaugeValue), await rig.next(GaugeValue)
    assert [(v.channel, v.value, v.flag) for v in (first, second)] == [  # type: ignore[union-attr]
        (1, "12.34", None), (2, "-0.05", ">")]


async def test_metro_polls_each_channel_by_digit(tmp_path: Path) -> None:
    async with rig_for(tmp_path, "metro", channels=(1, 3)) as rig:
        rig.sim.set_value("1.5", channel=1)
        rig.sim.set_value("-2.25", channel=3)
        assert rig.gauge.poll_commands == [b"1", b"3"]
        await rig.gauge.poll()
        a, b = await rig.next(GaugeValue), await rig.next(GaugeValue)
    assert [(v.channel, v.value) for v in (a, b)] == [(1, "1.500000"), (3, "-2.250000")]  # type: ignore[union-attr]


async def test_scheduled_poll_and_silent_gauge(tmp_path: Path) -> None:
    async with rig_for(tmp_path, "chicago", poll_interval_s=0.05, poll_timeout_s=0.1) as rig:
        rig.sim.set_value("0.500")
        for _ in range(3):
            got = await rig.next(GaugeValue)
            assert isinstance(got, GaugeValue) and got.value == "0.500"
        rig.sim.values.clear()  # the gauge stops answering: polls time out, nothing invented
        before = rig.gauge.stats["poll_timeouts"]
        while rig.gauge.stats["poll_timeouts"] < before + 2:
            await asyncio.sleep(0.05)
        assert rig.events.qsize() <= 1  # at most one answer was already in flight


async def test_push_only_gauge_has_nothing_to_poll(tmp_path: Path) -> None:
    async with rig_for(tmp_path, "mitutoyo") as rig:
        assert await rig.gauge.poll() is False


@pytest.mark.parametrize(("today", "overdue"), [
    (date(2026, 11, 24), False), (date(2026, 11, 25), False), (date(2026, 11, 26), True)])
async def test_calibration_overdue_flag(tmp_path: Path, today: date, overdue: bool) -> None:
    async with rig_for(tmp_path, "mitutoyo", calibration_due=date(2026, 11, 25),
                       today=lambda: today) as rig:
        rig.sim.send_value("0.100")
        got = await rig.next(GaugeValue)
    assert isinstance(got, GaugeValue) and got.calibration_overdue is overdue
