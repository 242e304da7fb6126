"""press-collector status (issue 14): the real CLI in its own process against a running
daemon's /health (press simulator, gauges on ptys, a real Mosquitto): all good, broker
gone, a gauge line gone, daemon gone, health switched off."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from collector.config import LoadedConfig
from collector.status import press_status, problems, render
from sim.local_broker import LocalBroker
from sim.ports import free_port
from tests.support.line import Line, wait_gauges_online

REPO = Path(__file__).resolve().parents[1]


async def status(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "collector.cli", "status", *args, cwd=REPO,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def until(check: Callable[[], bool], timeout: float = 15.0) -> None:
    """Wait for a condition of the daemon's own state (checked on every loop turn)."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.05)


def with_health(port: int) -> Callable[[LoadedConfig], LoadedConfig]:
    def adjust(config: LoadedConfig) -> LoadedConfig:
        col = config.collector
        col = col.model_copy(update={"metrics": col.metrics.model_copy(update={"port": port})})
        return config.model_copy(update={"collector": col})
    return adjust


async def test_status_from_a_running_daemon(tmp_path: Path, broker: LocalBroker) -> None:
    port = free_port()
    line = Line(tmp_path, broker, presses=("p1",), adjust=with_health(port))
    await line.start()
    try:
        await wait_gauges_online(line, "p1")
        assert line.daemon is not None
        daemon = line.daemon
        await until(lambda: daemon.presses["p1"].last_poll_ts is not None)
        code, out, err = await status("--port", str(port))
        assert code == 0, (out, err)
        assert f"broker 127.0.0.1:{broker.port}: connected" in out
        assert "gauge lines: 2 good, 0 bad" in out and "all good" in out
        row = next(ln for ln in out.splitlines() if ln.startswith("p1 "))
        assert "online" in row and "BRK-100" in row and "L2411-01" in row
        code, out, _ = await status("--port", str(port), "--json")
        doc: dict[str, Any] = json.loads(out)
        p1 = doc["presses"]["p1"]
        assert code == 0 and p1["plc_online"] and p1["last_reading_age_s"] < 5
        assert p1["gauges"]["g1"]["online"] and p1["gauges"]["g2"]["online"]
        assert p1["gauge_lines_good"] == 2 and p1["gauge_lines_bad"] == 0
        assert doc["daemon"]["broker"] == f"127.0.0.1:{broker.port}"

        # a gauge line goes away (the USB cable): bad, with the reason
        line.gauges["p1"]["g2"].close()
        await until(lambda: daemon.presses["p1"].gauge_lines["g2"]["online"] is False)
        # the broker goes away: events wait in the buffer
        broker.stop()
        await until(lambda: not daemon.health()["publisher"]["connected"])
        code, out, _ = await status("--port", str(port))
        assert code == 1
        assert f"broker 127.0.0.1:{broker.port}: NOT CONNECTED" in out
        assert "gauge lines: 1 good, 1 bad" in out
        assert "p1/g2: gauge line bad" in out and "needs attention" in out
        assert "broker not connected" in out
    finally:
        await line.close()
    # no daemon any more
    code, out, err = await status("--port", str(port))
    assert code == 2 and out == ""
    assert f"no daemon answering on 127.0.0.1:{port}" in err


async def test_status_says_when_health_is_off() -> None:
    code, _, err = await status("--config-dir", str(REPO / "config"))
    assert code == 2
    assert "the health endpoint is off ([metrics] port = 0" in err


def test_render_never_connected_gauge_and_unknown_fields() -> None:
    """A configured gauge that never opened is bad; the screen copes with a sparse doc."""
    now = time.time()
    press = press_status({"part_number": "BRK-100"}, now - 2.0, {}, ["g1"], now)
    assert press["gauges"]["g1"]["online"] is None and press["gauge_lines_bad"] == 1
    doc = {"presses": {"p1": {"state": "released", "plc_online": True, **press}},
           "publisher": {"connected": True}}
    text = render(doc)
    assert "never connected" in text and "gauge lines: 0 good, 1 bad" in text
    assert problems(doc) == ["p1/g1: gauge line bad (never connected)"]


@pytest.mark.parametrize("body", [b"not json", b'{"x": 1}'])
async def test_status_refuses_what_is_not_our_health(body: bytes) -> None:
    port = free_port()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while (await reader.readline()).strip():
            pass
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
                     % len(body) + body)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port)
    try:
        code, _, err = await status("--port", str(port))
    finally:
        server.close()
        await server.wait_closed()
    assert code == 2 and "not a press-collector health" in err
