"""Commissioning probes against the simulators: Modbus TCP press, RTU bus on a pty pair,
gauges on ptys. The probe coroutines run in-process with captured output; one test runs
the real CLI in a subprocess for the exit code and stderr."""

from __future__ import annotations

import asyncio
import contextlib
import io
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import serial

from collector.cli import build_parser
from collector.probe import EXIT_DEVICE_ERRORS, EXIT_OK, ProbeError, probe_press
from drivers.gauge.probe import probe_gauge
from drivers.modbus.probe import parse_address, probe_modbus
from sim.bus import BusSimulator
from sim.gauge import GaugeSimulator
from sim.ports import free_port
from sim.press import PressSimulator

REPO = Path(__file__).resolve().parent.parent
PROBES = {"modbus": probe_modbus, "gauge": probe_gauge, "press": probe_press}


async def probe(*argv: str) -> tuple[int, str]:
    args = build_parser().parse_args(["probe", *argv])
    out = io.StringIO()
    code = await PROBES[args.probe_command](args, out)
    return code, out.getvalue()


@pytest.fixture
async def press() -> AsyncIterator[PressSimulator]:
    sim = PressSimulator(part="4711-A", die=12, spm=0, tonnage_kn=812.5, seed=1)
    await sim.start()
    yield sim
    await sim.stop()


@pytest.fixture
async def rtu_bus() -> AsyncIterator[BusSimulator]:
    sims = {u: PressSimulator(die=10 * u, spm=0) for u in (1, 2)}
    async with BusSimulator(sims, "serial") as sim:
        yield sim


# --------------------------------------------------------------------------- addresses

@pytest.mark.parametrize(("text", "area", "address", "count"), [
    ("40001:10", "holding", 0, 10), ("400001", "holding", 0, 1), ("30005", "input", 4, 1),
    ("00001:3", "coil", 0, 3), ("10002", "discrete", 1, 1), ("hr:0:10", "holding", 0, 10),
    ("IR:7", "input", 7, 1), ("co:5", "coil", 5, 1), ("di:0:2", "discrete", 0, 2),
])
def test_parse_address(text: str, area: str, address: int, count: int) -> None:
    got = parse_address(text)
    assert (got.area, got.address, got.count) == (area, address, count)


@pytest.mark.parametrize("text", ["40000", "50001", "hr", "hr:x", "4001", "40001:0", "xx:1"])
def test_parse_address_refuses(text: str) -> None:
    with pytest.raises(ProbeError, match="--read"):
        parse_address(text)


# --------------------------------------------------------------------------- modbus

async def test_modbus_float_cdab_string_and_bits(press: PressSimulator) -> None:
    press.stroke()
    target = f"127.0.0.1:{press.port}"
    code, out = await probe("modbus", target, "--read", "40031", "--type", "float32",
                            "--order", "CDAB")
    assert code == EXIT_OK
    value = float(out.splitlines()[1].split()[2])
    assert abs(value - 812.5) < 50  # the simulator adds ~1 % noise per stroke
    code, out = await probe("modbus", target, "--read", "hr:10", "--type", "string",
                            "--length", "8")
    assert "'4711-A'" in out and "3437 3131 2d41" in out  # decoded and raw registers
    code, out = await probe("modbus", target, "--read", "40001:4")
    assert [line.split()[2] for line in out.splitlines()[1:]] == ["0", "1", "12", "0"]
    press.set_running(True)
    code, out = await probe("modbus", target, "--read", "00001:2")
    assert "co:1      True" in out and "co:0      False" in out


async def test_modbus_exception_is_named_per_value(press: PressSimulator) -> None:
    code, out = await probe("modbus", f"127.0.0.1:{press.port}", "--read", "40200:2")
    assert code == EXIT_DEVICE_ERRORS
    assert out.count("ERROR IllegalDataAddress") == 2


async def test_modbus_unreachable_wrong_unit_and_wrong_type(press: PressSimulator) -> None:
    with pytest.raises(ProbeError, match="cannot reach the device"):
        await probe("modbus", f"127.0.0.1:{free_port()}", "--read", "40001")
    press.set_silent(True)
    with pytest.raises(ProbeError, match=r"no answer from unit 5 within 0.2 s: wrong unit id"):
        await probe("modbus", f"127.0.0.1:{press.port}", "--unit", "5", "--read", "40001",
                    "--timeout", "0.2")
    with pytest.raises(ProbeError, match="not possible for coils"):
        await probe("modbus", f"127.0.0.1:{press.port}", "--read", "co:0", "--type", "float32")
    with pytest.raises(ProbeError, match="needs --length"):
        await probe("modbus", f"127.0.0.1:{press.port}", "--read", "hr:0", "--type", "string")
    with pytest.raises(SystemExit):  # argparse names the allowed types
        build_parser().parse_args(["probe", "modbus", "h", "--read", "40001", "--type", "real"])


async def test_modbus_rtu_on_a_pty_bus(rtu_bus: BusSimulator) -> None:
    port = rtu_bus.client_port
    code, out = await probe("modbus", "--rtu", port, "--baud", "19200", "--parity", "N",
                            "--unit", "2", "--read", "40003")
    assert code == EXIT_OK and out.splitlines()[1].split()[2] == "20"
    assert "19200 8N1 unit 2" in out
    with pytest.raises(ProbeError, match="no answer from unit 9"):
        await probe("modbus", "--rtu", port, "--parity", "N", "--unit", "9", "--read", "40001",
                    "--timeout", "0.1")


async def test_serial_port_missing_or_busy(tmp_path: Path, rtu_bus: BusSimulator) -> None:
    with pytest.raises(ProbeError, match="does not exist"):
        await probe("modbus", "--rtu", str(tmp_path / "ttyUSB9"), "--read", "40001")
    with pytest.raises(ProbeError, match="does not exist"):
        await probe("gauge", str(tmp_path / "ttyUSB9"), "--preset", "sylvac")
    holder = serial.Serial(rtu_bus.client_port, exclusive=True)
    try:
        with pytest.raises(ProbeError, match="busy"):
            await probe("modbus", "--rtu", rtu_bus.client_port, "--read", "40001")
        with pytest.raises(ProbeError, match="busy"):
            await probe("gauge", rtu_bus.client_port, "--preset", "mitutoyo")
    finally:
        holder.close()


# --------------------------------------------------------------------------- gauge

@contextlib.contextmanager
def gauge_sim(tmp_path: Path, preset: str, **kw) -> GaugeSimulator:
    sim = GaugeSimulator(str(tmp_path / "gauge"), preset, **kw)
    sim.open()
    try:
        yield sim
    finally:
        sim.close()


async def test_gauge_probe_polls_sylvac_and_shows_raw_and_parsed(tmp_path: Path) -> None:
    with gauge_sim(tmp_path, "sylvac", power_on_line=b"SY289") as sim:
        sim.answer_polls()
        sim.set_value("12.345", flag="=")
        code, out = await probe("gauge", sim.path, "--preset", "sylvac", "--poll",
                                "--interval", "0.05", "--count", "2", "--duration", "5",
                                "--bytesize", "8", "--parity", "N", "--stopbits", "1")
    assert code == EXIT_OK
    assert "polling [b'?\\r'] every 0.05 s" in out
    assert out.count("raw b' 12.345='") == 2 and "-> 12.345 mm flag =" in out
    assert out.splitlines()[-1].startswith("2 values, 0 errors")


async def test_gauge_probe_push_and_garbage(tmp_path: Path) -> None:
    with gauge_sim(tmp_path, "mitutoyo") as sim:
        async def press_data_key() -> None:
            while True:
                sim.send_raw(b"garbage\r")
                sim.send_value("0.123", channel=3)
                await asyncio.sleep(0.02)

        keys = asyncio.create_task(press_data_key())
        try:
            code, out = await probe("gauge", sim.path, "--preset", "mitutoyo", "--count", "2",
                                    "--duration", "5")
        finally:
            keys.cancel()
    assert code == EXIT_OK
    assert "waiting for DATA key" in out
    assert "raw b'01A+0000.123'" not in out and "raw b'03A+0000.123'" in out
    assert "-> 0.123 mm ch 3" in out and "-> garbage" in out


async def test_gauge_probe_silent_gauge_and_bad_preset(tmp_path: Path) -> None:
    with gauge_sim(tmp_path, "chicago") as sim:
        code, out = await probe("gauge", sim.path, "--preset", "chicago", "--poll",
                                "--interval", "0.05", "--duration", "0.3")
        assert code == EXIT_DEVICE_ERRORS and "0 values" in out
        last = out.splitlines()[-1]
        assert last.endswith("unanswered polls") and not last.endswith(" 0 unanswered polls")
        with pytest.raises(ProbeError, match=r"unknown .*allowed: mitutoyo"):
            await probe("gauge", sim.path, "--preset", "keyence")
        with pytest.raises(ProbeError, match="no poll command"):
            await probe("gauge", sim.path, "--preset", "mitutoyo", "--poll")


# --------------------------------------------------------------------------- press

PRESS_FILE = """
id = "p7"
[plc]
{plc}
timeout_ms = 200
poll_interval_ms = 20
[[plc.tags]]
name = "strokes"
address = 0
type = "uint32"
role = "stroke_count"
[[plc.tags]]
name = "tonnage"
address = 30
type = "float32"
order = "CDAB"
[[plc.tags]]
name = "running"
area = "coil"
address = 1
role = "running"
"""


async def test_press_probe_once_and_watch(tmp_path: Path, press: PressSimulator) -> None:
    path = tmp_path / "p7.toml"
    path.write_text(PRESS_FILE.format(plc=f'host = "127.0.0.1"\nport = {press.port}'))
    press.stroke(3)
    code, out = await probe("press", str(path))
    assert code == EXIT_OK
    lines = out.splitlines()
    assert lines[0] == f"press p7 (modbus_tcp 127.0.0.1:{press.port} unit 1), 3 tags"
    assert lines[1].split() == ["strokes", "stroke_count", "holding:0", "uint32", "3"]
    assert lines[3].split() == ["running", "running", "coil:1", "bool", "False"]
    code, out = await probe("press", str(path), "--watch", "--count", "2", "--interval", "0.01")
    assert out.count("-- ") == 2 and out.count("stroke_count") == 2


async def test_press_probe_rtu_and_errors(tmp_path: Path, rtu_bus: BusSimulator) -> None:
    path = tmp_path / "p7.toml"
    path.write_text(PRESS_FILE.format(plc=f'protocol = "modbus_rtu"\nport = '
                                          f'"{rtu_bus.client_port}"\nparity = "N"\nunit = 2'))
    rtu_bus.units[2].stroke(7)
    code, out = await probe("press", str(path))
    assert code == EXIT_OK and out.splitlines()[1].split()[-1] == "7"
    rtu_bus.set_dead(2, True)
    with pytest.raises(ProbeError, match="no answer from unit 2"):
        await probe("press", str(path))
    path.write_text(PRESS_FILE.format(plc='host = "127.0.0.1"\nunit = 300'))
    with pytest.raises(ProbeError, match=r"p7.toml: plc.unit: 300 is out of range"):
        await probe("press", str(path))
    with pytest.raises(ProbeError, match="file not found"):
        await probe("press", str(tmp_path / "nope.toml"))


async def test_cli_exit_code_and_stderr() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "collector.cli", "probe", "modbus", f"127.0.0.1:{free_port()}",
        "--read", "40001", cwd=REPO, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 2 and out == b""
    assert err.decode().startswith("error: cannot reach the device")
