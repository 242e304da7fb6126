"""Values JSON cannot carry as a PLC sends them (issue 11): a NaN or infinite float used
to be published as null (breaking the telemetry schema and losing which one), and a
string with bytes that are not UTF-8 crashed the OPC UA driver (orjson refused the
poll, the sink raised, the supervisor restarted it for ever). Now: "NaN"/"Infinity"/
"-Infinity" or U+FFFD in values, and a per-tag error; never a crash. Real peers: the
Modbus TCP press simulator, the independent RTU slave, the OPC UA press simulator."""

from __future__ import annotations

import asyncio
import math
import sqlite3
import struct
from pathlib import Path

import orjson
import pytest

from buffer.store import Outbox
from collector.contract import validate_message
from collector.domain import WorkflowSettings
from collector.messages import Topics
from collector.press import PressRuntime
from drivers.base import PollResult, json_safe
from drivers.modbus.codec import TagSpec, make_block, value_problems
from drivers.modbus.driver import ModbusPoller
from drivers.modbus.engine import ModbusBus, SerialLink
from drivers.opcua import OpcuaPoller, OpcuaTag
from sim.opcua import OpcuaPressSimulator, node_text
from sim.press import PRESS_TAGS, PressSimulator
from tests.support.rtu_slave import RtuSlave, Unit

ROOT = "plant/press-shop"


def f32_cdab(value: float) -> list[int]:
    hi, lo = struct.unpack(">2H", struct.pack(">f", value))
    return [lo, hi]


class Runtime:
    """A press runtime on a real outbox; its telemetry rows read back and validated."""

    def __init__(self, tmp_path: Path, roles: dict[str, str] | None = None) -> None:
        self.path = tmp_path / "buffer.sqlite"
        self.outbox = Outbox.open(self.path, commit_interval_s=0.005)
        self.runtime = PressRuntime("p1", roles or {}, WorkflowSettings(), {}, self.outbox,
                                    Topics(ROOT, "host1"))
        self.polls: asyncio.Queue[PollResult] = asyncio.Queue()

    def sink(self, event: object) -> None:
        self.runtime.sink(event)  # type: ignore[arg-type]
        if isinstance(event, PollResult):
            self.polls.put_nowait(event)

    async def poll(self, pred) -> PollResult:
        while True:
            got = await asyncio.wait_for(self.polls.get(), 10.0)
            if pred(got):
                return got

    def telemetry(self) -> list[dict]:
        self.outbox.flush_sync(5)
        conn = sqlite3.connect(self.path)
        try:
            rows = conn.execute("SELECT topic, payload FROM messages WHERE stream = "
                                "'telemetry' ORDER BY id").fetchall()
        finally:
            conn.close()
        out = []
        for topic, payload in rows:
            message = orjson.loads(payload)
            assert validate_message(topic, ROOT, message) == [], message
            out.append(message["data"])
        return out


@pytest.mark.parametrize(("value", "text"), [(math.nan, "NaN"), (math.inf, "Infinity"),
                                             (-math.inf, "-Infinity")])
async def test_modbus_tcp_non_finite_float(tmp_path: Path, value: float, text: str) -> None:
    rt = Runtime(tmp_path)
    sim = PressSimulator(spm=0, part="P-1")
    await sim.start()
    poller = ModbusPoller("p1/plc", "127.0.0.1", sim.port, 1, PRESS_TAGS, poll_interval_s=0.02,
                          timeout_s=0.5, max_gap=8)
    task = asyncio.create_task(poller.run(rt.sink))
    try:
        sim.set_registers(30, f32_cdab(value))  # tonnage, float32 CDAB
        got = await rt.poll(lambda p: "tonnage" in p.errors)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await sim.stop()
    assert got.values["tonnage"] == text and got.errors == {"tonnage": "NonFinite"}
    assert got.values["part_number"] == "P-1"
    last = rt.telemetry()[-1]
    assert last["values"]["tonnage"] == text and last["errors"] == {"tonnage": "NonFinite"}
    rt.outbox.close()


async def test_rtu_string_bytes_that_are_not_utf8_and_nan(tmp_path: Path) -> None:
    """A material lot with a stray 0xFF byte: U+FFFD, a per-tag error, and the lot never
    reaches the workflow (no false material change); a NaN float beside it."""
    rt = Runtime(tmp_path, roles={"lot": "material_lot"})
    unit = Unit()
    raw = b"L\xff7\x00"
    unit.holding[10], unit.holding[11] = raw[0] << 8 | raw[1], raw[2] << 8 | raw[3]
    unit.holding[12], unit.holding[13] = struct.unpack(">2H", struct.pack(">f", math.nan))
    tags = [TagSpec("lot", "holding", 10, "string", length=2),
            TagSpec("force", "holding", 12, "float32")]
    async with RtuSlave({1: unit}) as slave:
        bus = ModbusBus(SerialLink(slave.client_port, 19200))
        bus.add_unit("p1/plc", 1, tags, 0.05, 0.3)
        task = asyncio.create_task(bus.attach("p1/plc", rt.sink))
        try:
            got = await rt.poll(lambda p: bool(p.values))
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    assert got.values == {"lot": "L\ufffd7", "force": "NaN"}
    assert got.errors == {"lot": "InvalidUTF8", "force": "NonFinite"}
    assert rt.runtime.workflow.context()["material_lot"] is None
    assert rt.telemetry()[-1]["errors"] == got.errors
    rt.outbox.close()


async def test_opcua_nan_and_invalid_utf8_string_never_crash_the_driver(
        tmp_path: Path) -> None:
    rt = Runtime(tmp_path)
    async with OpcuaPressSimulator(spm=0, lot="L-1") as sim:
        tags = [OpcuaTag("tonnage", node_text("tonnage")),
                OpcuaTag("material_lot", node_text("material_lot")),
                OpcuaTag("strokes", node_text("strokes"))]
        poller = OpcuaPoller("p1/plc", sim.url, tags, publishing_interval_s=0.02,
                             heartbeat_s=0.2)
        task = asyncio.create_task(poller.run(rt.sink))
        try:
            await rt.poll(lambda p: p.values.get("material_lot") == "L-1")
            sim.set_raw("tonnage", -math.inf)
            sim.set_raw("material_lot", "L\udcff2")  # the bytes b"L\xff2" on the wire
            got = await rt.poll(lambda p: len(p.errors) == 2)
            sim.set_raw("tonnage", 812.5)
            sim.set_raw("material_lot", "L-3")
            back = await rt.poll(lambda p: p.values.get("material_lot") == "L-3"
                                 and not p.errors)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    assert got.values["tonnage"] == "-Infinity" and got.values["material_lot"] == "L\ufffd2"
    assert got.errors == {"tonnage": "NonFinite", "material_lot": "InvalidUTF8"}
    assert back.values["tonnage"] == 812.5
    assert poller.stats["sessions"] == 1  # one session throughout: never crashed
    assert all(row["values"] for row in rt.telemetry())
    rt.outbox.close()


def test_value_problems_and_json_safe_units() -> None:
    block = make_block("holding", [TagSpec("f", "holding", 0, "float32"),
                                   TagSpec("i", "holding", 2, "int16", scale=0.5),
                                   TagSpec("n", "holding", 3, "uint16")])
    assert block.floats == ("f", "i") and block.texts == ()
    values = {"f": math.nan, "i": 1.5, "n": 7}
    assert value_problems(block, values) == {"f": "NonFinite"}
    assert values == {"f": "NaN", "i": 1.5, "n": 7}
    assert json_safe([1.0, math.inf]) == ([1.0, "Infinity"], "NonFinite")
    assert json_safe("ok") == ("ok", None) and json_safe(3) == (3, None)
