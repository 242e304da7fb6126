"""A flagged reading is a reading (issue 11): the gauge's own tolerance flag travels from
a real pty through the driver and the press runtime into the first_article and
measurement events (schema-valid); error codes and unusable records become gauge_error
events with their meaning, never silence."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import orjson
import pytest

from buffer.store import Outbox
from collector.contract import validate_message
from collector.domain import WorkflowSettings
from collector.messages import Topics
from collector.press import PressRuntime
from drivers.base import DriverEvent, GaugeError, GaugeValue, PollResult
from drivers.gauge.presets import make_parser
from drivers.gauge.reader import SerialGauge
from sim.gauge import GaugeSimulator
from tests.test_contract import PLAN
from tests.test_serial_gauge import fast_backoff

ROOT = "plant/press-shop"
T = 1_764_000_000.0
ROLES = {"part": "part_number", "die": "die_id", "lot": "material_lot",
         "strokes": "stroke_count", "setup": "setup_mode"}


class Line:
    """A press runtime on a real SQLite outbox, fed by a gauge on a real pty."""

    def __init__(self, tmp_path: Path, preset: str) -> None:
        self.path = tmp_path / "buffer.sqlite"
        self.outbox = Outbox.open(self.path, commit_interval_s=0.005)
        self.runtime = PressRuntime("p1", ROLES, WorkflowSettings(), {"BRK-100": PLAN},
                                    self.outbox, Topics(ROOT, "host1"))
        self.sim = GaugeSimulator(str(tmp_path / "gauge"), preset=preset)
        self.seen: asyncio.Queue[DriverEvent] = asyncio.Queue()
        self.preset = preset

    def sink(self, event: DriverEvent) -> None:
        self.runtime.sink(event)
        self.seen.put_nowait(event)

    async def wait(self, pred: Callable[[DriverEvent], bool]) -> DriverEvent:
        while True:
            event = await asyncio.wait_for(self.seen.get(), 5.0)
            if pred(event):
                return event

    def events(self, kind: str) -> list[dict]:
        self.outbox.flush_sync(5)
        conn = sqlite3.connect(self.path)
        try:
            got = conn.execute("SELECT topic, payload FROM messages WHERE stream = 'events' "
                               "ORDER BY id").fetchall()
        finally:
            conn.close()
        out = []
        for topic, payload in got:
            message = orjson.loads(payload)
            assert validate_message(topic, ROOT, message) == [], message
            if topic.endswith(f"/events/{kind}"):
                out.append(message["data"])
        return out


@contextlib.asynccontextmanager
async def line(tmp_path: Path, preset: str) -> AsyncIterator[Line]:
    rig = Line(tmp_path, preset)
    rig.sim.open()
    # A pty cannot do 7-bit characters: the 7E2 presets are read as 8N1 here.
    gauge = SerialGauge("p1/g1", rig.sim.path, make_parser(preset), bytesize=8, parity="N",
                        stopbits=1, reopen_backoff=fast_backoff())
    task = asyncio.create_task(gauge.run(rig.sink))
    try:
        await rig.wait(lambda e: getattr(e, "online", False))
        rig.runtime.sink(PollResult("p1/plc", T, {"part": "BRK-100", "die": 7, "lot": "L1",
                                                  "strokes": 10, "setup": False}))
        yield rig
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        rig.sim.close()
        rig.outbox.close()


async def test_metro_ng_readings_reach_first_article_and_measurement(tmp_path: Path) -> None:
    """Exactly the bad parts used to vanish: a Metro record flagged +NG was garbage."""
    async with line(tmp_path, "metro") as rig:
        rig.sim.send_value("25.200", channel=1, flag="+NG")  # C1 out of tolerance
        await rig.wait(lambda e: isinstance(e, GaugeValue))
        rig.sim.send_value("0.010", channel=1, flag="GO")
        await rig.wait(lambda e: isinstance(e, GaugeValue))
        rig.sim.send_value("24.900", channel=1, flag="-NG")  # second attempt, C1 low again
        await rig.wait(lambda e: isinstance(e, GaugeValue))
        rig.sim.send_value("0.020", channel=1, flag="MAX")  # a mode code, no verdict
        await rig.wait(lambda e: isinstance(e, GaugeValue))
        first = rig.events("first_article")
    assert [fa["verdict"] for fa in first] == ["fail", "fail"]
    flags = [[r.get("gauge_flag") for r in fa["results"]] for fa in first]
    assert flags == [
        [{"code": "+NG", "verdict": "above"}, {"code": "GO", "verdict": "within"}],
        [{"code": "-NG", "verdict": "below"}, {"code": "MAX", "verdict": None}],
    ]
    assert first[0]["results"][0]["verdict"] == "fail"  # the plan still judges


async def test_sylvac_flag_in_a_patrol_measurement(tmp_path: Path) -> None:
    async with line(tmp_path, "sylvac") as rig:
        for value in ("25.01", "0.01"):  # first article passes: released
            rig.sim.send_value(value, flag="=")
            await rig.wait(lambda e: isinstance(e, GaugeValue))
        rig.sim.send_value("25.06", flag=">")
        await rig.wait(lambda e: isinstance(e, GaugeValue))
        measurements = rig.events("measurement")
    assert [(m["value"], m["verdict"], m["gauge_flag"]) for m in measurements] == [
        ("25.06", "fail", {"code": ">", "verdict": "above"})]


@pytest.mark.parametrize(("preset", "record", "reason"), [
    ("sylvac", b"ERR7", "device_error: ERR7 (undocumented error code)"),
    ("metro", b"N41:E5", "device_error: N41:E5 (undocumented error code)"),
    ("millimar", b"1 ERR4", "device_error: feature 1 ERR4 (undocumented error code)"),
    ("millimar", b"1 +012:30:15 dms", "unsupported: feature 1 angle 012:30:15 dms "
                                      "(deg:min:s has no decimal resolution: set the "
                                      "C1202's unit to deg)"),
])
async def test_codes_outside_the_manual_are_gauge_error_events(
        tmp_path: Path, preset: str, record: bytes, reason: str) -> None:
    async with line(tmp_path, preset) as rig:
        rig.sim.send_raw(record + rig.sim.terminator)
        await rig.wait(lambda e: isinstance(e, GaugeError))
        errors = rig.events("gauge_error")
    assert [(e["gauge"], e["reason"]) for e in errors] == [("g1", reason)]


def test_schema_takes_gauge_flag_only_in_its_shape() -> None:
    """Contract: gauge_flag is {code, verdict} with verdict below/within/above/null."""
    from collector import messages
    from collector.contract import validation_errors
    from collector.workflow import PressWorkflow

    wf = PressWorkflow("p1", WorkflowSettings(), {"BRK-100": PLAN})
    wf.on_poll(T, {"part_number": "BRK-100", "die_id": 7, "material_lot": "L1",
                   "stroke_count": 10, "setup_mode": False})
    events = wf.on_gauge(T + 1, "g1", 1, "25.01", "mm", flag="=")
    events += wf.on_gauge(T + 2, "g1", 1, "0.01", "mm")
    fa = next(e for e in events if e.kind == "first_article")
    payload = orjson.loads(messages.encode_event(fa, "p1", 1, "host1"))
    assert validation_errors("first_article", payload) == []
    assert payload["data"]["results"][0]["gauge_flag"] == {"code": "=", "verdict": "within"}
    assert "gauge_flag" not in payload["data"]["results"][1]  # absent when none was sent
    payload["data"]["results"][0]["gauge_flag"] = {"code": "+NG", "verdict": "high"}
    assert validation_errors("first_article", payload)
    payload["data"]["results"][0]["gauge_flag"] = {"code": "", "verdict": None}
    assert validation_errors("first_article", payload)


# --------------------------------------------------------------------------- line settings

async def test_refused_7e2_names_the_setting_and_the_override(tmp_path: Path) -> None:
    """A Linux pty cannot do 7 data bits: the reason names the setting and the keys to
    try, not pyserial's "(22, 'Invalid argument')", and the port is not left held."""
    from drivers.serial_settings import port_problem

    sim = GaugeSimulator(str(tmp_path / "gauge"), preset="sylvac")
    sim.open()
    events: asyncio.Queue[DriverEvent] = asyncio.Queue()
    gauge = SerialGauge("p1/g3", sim.path, make_parser("sylvac"),  # preset default 4800 7E2
                        reopen_backoff=fast_backoff())
    task = asyncio.create_task(gauge.run(events.put_nowait))
    try:
        change = await asyncio.wait_for(events.get(), 5.0)
        assert not change.online  # type: ignore[union-attr]
        reason = change.reason  # type: ignore[union-attr]
        assert "Invalid argument" not in reason and "(22" not in reason
        assert f"serial port {sim.path} refuses bytesize 7" in reason
        assert "(line 4800 7E2)" in reason
        assert 'try bytesize = 8' in reason and "in [[gauges]] g3" in reason
        assert port_problem(sim.path) == ""  # neither busy nor held between attempts
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        sim.close()


async def test_gauge_probe_refused_settings_is_one_error_line(tmp_path: Path) -> None:
    from collector.probe import ProbeError
    from tests.test_probe import probe

    sim = GaugeSimulator(str(tmp_path / "gauge"), preset="millimar")
    sim.open()
    try:
        with pytest.raises(ProbeError) as info:
            await probe("gauge", sim.path, "--preset", "millimar", "--duration", "5")
    finally:
        sim.close()
    text = str(info.value)
    assert text.startswith(f"serial port {sim.path} refuses bytesize 7")
    assert "--bytesize 8" in text and "Invalid argument" not in text
