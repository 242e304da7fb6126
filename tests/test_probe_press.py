"""``press-collector probe press`` for every protocol (issue 11): the shipped OPC UA
press file used to crash with a traceback; an RTU press on a shared bus with a slave
that frames by silence got no answer for its second read; refused line settings were a
traceback. Real peers: the OPC UA press simulator, the independent RTU slave on a pty."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from collector.probe import EXIT_OK, ProbeError
from sim.opcua import OpcuaPressSimulator
from tests.support.rtu_slave import RtuSlave
from tests.test_probe import probe
from tests.test_rtu_line import UNITS, make_unit

REPO = Path(__file__).resolve().parent.parent


async def test_probe_press_reads_the_shipped_opcua_press(tmp_path: Path) -> None:
    async with OpcuaPressSimulator(part="4711-A", lot="L-9", die=12, spm=0) as sim:
        sim.stroke(5)
        text = (REPO / "config" / "presses" / "p4.toml").read_text()
        path = tmp_path / "p4.toml"
        path.write_text(text.replace("opc.tcp://127.0.0.1:5024/press", sim.url))
        code, out = await probe("press", str(path), "--watch", "--count", "2",
                                "--interval", "0.01")
    assert code == EXIT_OK, out
    lines = out.splitlines()
    assert lines[0] == f"press p4 (opcua {sim.url}, security None/None), 7 tags"
    assert out.count("-- ") == 2
    rows = {line.split()[0]: line.split() for line in lines if line.startswith("  ")}
    assert rows["strokes"][1:] == ["stroke_count", "nsu=urn:press-sim;s=Press.Strokes", "5"]
    assert rows["part_number"][-1] == "'4711-A'" and rows["material_lot"][-1] == "'L-9'"
    assert rows["tonnage"][1] == "nsu=urn:press-sim;s=Press.Tonnage"  # no role: blank


async def test_probe_press_opcua_errors_are_one_line(tmp_path: Path) -> None:
    text = (REPO / "config" / "presses" / "p4.toml").read_text()
    path = tmp_path / "p4.toml"
    path.write_text(text.replace("opc.tcp://127.0.0.1:5024/press",
                                 "opc.tcp://127.0.0.1:1/press"))
    with pytest.raises(ProbeError, match=r"cannot open a session with "
                                         r"opc\.tcp://127\.0\.0\.1:1/press: connection refused"):
        await probe("press", str(path))


PRESS = """
id = "p{unit}"
[plc]
protocol = "modbus_rtu"
port = "{port}"
baudrate = 19200
bytesize = {bytesize}
parity = "N"
unit = {unit}
timeout_ms = 200
[[plc.tags]]
name = "strokes"
address = 0
type = "uint32"
role = "stroke_count"
[[plc.tags]]
name = "die"
address = 2
role = "die_id"
[[plc.tags]]
name = "lot"
address = 40
type = "string"
length = 4
role = "material_lot"
[[plc.tags]]
name = "running"
area = "coil"
address = 1
role = "running"
"""


async def test_probe_press_rtu_on_a_shared_bus(tmp_path: Path) -> None:
    """Three units on one line, a slave that drops a request breaking the silence."""
    async with RtuSlave({u: make_unit(u) for u in UNITS}, enforce_silence=True) as slave:
        for unit in UNITS:
            path = tmp_path / f"p{unit}.toml"
            path.write_text(PRESS.format(unit=unit, port=slave.client_port, bytesize=8))
            code, out = await probe("press", str(path), "--watch", "--count", "2",
                                    "--interval", "0.01")
            assert code == EXIT_OK, out
            values = [line.split()[-1] for line in out.splitlines()[-4:]]
            assert values == [str(1000 * unit + 7), str(100 + unit), f"'LOT-{unit}'",
                              str(unit % 2 == 1)]
        assert slave.glued == 0


async def test_probe_press_rtu_refused_settings_name_the_key(tmp_path: Path) -> None:
    async with RtuSlave({1: make_unit(1)}) as slave:
        path = tmp_path / "p1.toml"
        path.write_text(PRESS.format(unit=1, port=slave.client_port, bytesize=7))
        with pytest.raises(ProbeError) as info:
            await probe("press", str(path))
    assert re.search(r"refuses bytesize 7 .*try bytesize = 8 in \[plc\] of p1\.toml",
                     str(info.value)), str(info.value)
