"""Daemon wiring for RTU buses and polled gauges: presses naming one bus share one
ModbusBus; a gauge with ``poll_on = ["stroke"]`` is polled when the stroke count steps.
Real peers: the RTU simulator on a socat pty pair and on TCP, a Chicago gauge on a pty."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from collector.config import load_config
from collector.gauge_triggers import GaugeTriggers
from collector.press_drivers import build_drivers
from drivers.base import GaugeValue, PollResult
from drivers.modbus.engine import ModbusBus
from sim.bus import BusSimulator
from sim.gauge import GaugeSimulator
from sim.press import PressSimulator
from tests.test_modbus_tcp import Recorder

BASE = Path(__file__).resolve().parent / "config_cases" / "_base"

PRESS = """
id = "{id}"

[plc]
protocol = "{protocol}"
{link}
unit = {unit}
poll_interval_ms = 50
timeout_ms = 150
retries = 0

[[plc.tags]]
name = "strokes"
address = 0
type = "uint32"
role = "stroke_count"

[[plc.tags]]
name = "die"
address = 2
role = "die_id"
{gauges}
"""

GAUGE = """
[[gauges]]
id = "g1"
port = "{port}"
preset = "chicago"
bytesize = 8
parity = "N"
stopbits = 1
poll_on = ["stroke"]
calibration_due = "2000-01-01"
"""


@pytest.fixture
async def serial_bus() -> AsyncIterator[BusSimulator]:
    sims = {u: PressSimulator(die=100 + u, spm=0) for u in (1, 2)}
    async with BusSimulator(sims, "serial") as sim:
        yield sim


def _config_dir(tmp_path: Path, presses: dict[str, str]) -> Path:
    root = tmp_path / "config"
    shutil.copytree(BASE, root)
    shutil.rmtree(root / "plans")
    for path in (root / "presses").glob("*.toml"):
        path.unlink()
    for press_id, text in presses.items():
        (root / "presses" / f"{press_id}.toml").write_text(text, encoding="utf-8")
    return root


async def test_presses_on_one_port_share_one_bus_and_stroke_polls_gauge(
        tmp_path: Path, serial_bus: BusSimulator) -> None:
    gauge_sim = GaugeSimulator(str(tmp_path / "gauge"), "chicago")
    gauge_sim.open()
    link = f'port = "{serial_bus.client_port}"\nbaudrate = 19200\nparity = "N"'
    root = _config_dir(tmp_path, {
        "p1": PRESS.format(id="p1", protocol="modbus_rtu", link=link, unit=1,
                           gauges=GAUGE.format(port=gauge_sim.path)),
        "p2": PRESS.format(id="p2", protocol="modbus_rtu", link=link, unit=2, gauges=""),
    })
    config = load_config(root)
    assert config.presses["p1"].gauges[0].calibration_due == date(2000, 1, 1)
    shared: dict[str, Any] = {}  # what the daemon shares between presses
    rec = {"p1": Recorder(), "p2": Recorder()}
    drivers = {}
    for press_id in ("p1", "p2"):
        drivers.update(build_drivers(config.presses[press_id], rec[press_id], shared))
    buses: dict[str, ModbusBus] = shared["modbus"]
    assert list(buses) == [serial_bus.client_port]  # one bus for both presses
    assert set(buses[serial_bus.client_port].units) == {"p1/plc", "p2/plc"}
    tasks = [asyncio.create_task(factory(), name=name) for name, factory in drivers.items()]
    try:
        gauge_sim.answer_polls()
        gauge_sim.set_value("0.500")
        first = {p: await rec[p].poll() for p in ("p1", "p2")}
        assert first["p1"].values["die"] == 101 and first["p2"].values["die"] == 102
        assert gauge_sim.polls_received == 0  # no stroke yet: no poll
        serial_bus.units[1].stroke()
        await rec["p1"].poll(lambda p: p.values["strokes"] == 1)
        reading = await rec["p1"].next(lambda e: isinstance(e, GaugeValue))
        assert isinstance(reading, GaugeValue)
        assert (reading.gauge, reading.value, reading.unit) == ("g1", "0.500", "mm")
        assert reading.calibration_overdue is True
        assert gauge_sim.polls_received == 1
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        gauge_sim.close()


async def test_rtu_over_tcp_config(tmp_path: Path) -> None:
    sims = {u: PressSimulator(die=200 + u, spm=0) for u in (3, 4)}
    async with BusSimulator(sims, "tcp") as sim:
        link = f'host = "127.0.0.1"\nport = {sim.port}'
        root = _config_dir(tmp_path, {
            f"p{u}": PRESS.format(id=f"p{u}", protocol="modbus_rtu_tcp", link=link, unit=u,
                                  gauges="") for u in (3, 4)})
        config = load_config(root)
        shared: dict[str, Any] = {}
        rec = {u: Recorder() for u in (3, 4)}
        tasks = []
        for u in (3, 4):
            for factory in build_drivers(config.presses[f"p{u}"], rec[u], shared).values():
                tasks.append(asyncio.create_task(factory()))
        buses: dict[str, ModbusBus] = shared["modbus"]
        try:
            assert list(buses) == [f"127.0.0.1:{sim.port}"]
            for u in (3, 4):
                assert (await rec[u].poll()).values["die"] == 200 + u
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


class _Gauge:
    def __init__(self) -> None:
        self.polls = 0

    async def poll(self) -> bool:
        self.polls += 1
        return True


def test_trigger_rules_edges_and_steps() -> None:
    triggers = GaugeTriggers({"strokes": "stroke_count"})
    stroke_gauge, fixture_gauge = _Gauge(), _Gauge()
    triggers.add(stroke_gauge, ["stroke"])
    triggers.add(fixture_gauge, ["part_in_fixture"])

    def due(values: dict) -> list:
        return triggers.due(PollResult("p1/plc", 0.0, values))

    assert due({"strokes": 5, "part_in_fixture": True}) == []  # first result: reference only
    assert due({"strokes": 5, "part_in_fixture": True}) == []  # no change
    assert due({"strokes": 6, "part_in_fixture": False}) == [stroke_gauge]
    assert due({"strokes": 6}) == []  # tag missing (read error): neither fires nor resets
    assert due({"strokes": 6, "part_in_fixture": True}) == [fixture_gauge]  # rising edge
    assert due({"strokes": 0, "part_in_fixture": True}) == []  # counter reset is no stroke
    with pytest.raises(ValueError, match="stroke_count"):
        GaugeTriggers({}).add(_Gauge(), ["stroke"])
