"""Health/metrics endpoint on a real loopback socket, poll timing histogram, and the
late-poll counter of the Modbus poller (logged once per burst, carried in PollResult)."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from collector.metrics import PollTiming, prometheus_text, serve
from drivers.base import PollResult
from drivers.modbus.driver import ModbusPoller
from sim.ports import free_port
from sim.press import LOAD_TAGS, PressSimulator


def test_poll_timing_quantiles() -> None:
    timing = PollTiming()
    assert timing.summary()["jitter_p99_ms"] is None
    for _ in range(98):
        timing.add(0.0004)  # 0.4 ms
    timing.add(0.0052)
    timing.add(2.0)  # beyond the last bucket: counted there, max kept exactly
    s = timing.summary()
    assert s["polls"] == 100
    assert s["jitter_p50_ms"] == pytest.approx(0.5)
    assert s["jitter_p99_ms"] == pytest.approx(5.3)
    assert s["jitter_max_ms"] == pytest.approx(2000.0)


HEALTH = {"presses": {"p1": {"polls": 7, "late_polls": 2, "jitter_p99_ms": 1.5,
                             "state": "released", "plc_online": True}},
          "outbox": {"pending": 3, "path": "/x"}, "publisher": {"connected": True},
          "task_failures": {"p1/plc": 1}}


def test_prometheus_text_has_numbers_only() -> None:
    text = prometheus_text(HEALTH)
    assert 'press_collector_press_late_polls{press="p1"} 2' in text
    assert "# TYPE press_collector_press_late_polls counter" in text
    assert "press_collector_outbox_pending 3" in text
    assert "press_collector_publisher_connected 1" in text
    assert 'press_collector_task_failures{task="p1/plc"} 1' in text
    assert "released" not in text and "/x" not in text


async def _get(port: int, path: str) -> tuple[str, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    await writer.drain()
    data = await reader.read()
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return head.decode().splitlines()[0], body


async def test_endpoint_serves_health_and_metrics() -> None:
    port = free_port()
    server = await serve(lambda: HEALTH, port)
    try:
        status, body = await _get(port, "/health")
        assert status == "HTTP/1.1 200 OK"
        assert b'"late_polls": 2' in body
        status, body = await _get(port, "/metrics")
        assert status == "HTTP/1.1 200 OK" and b"press_collector_press_polls" in body
        status, _ = await _get(port, "/nope")
        assert status == "HTTP/1.1 404 Not Found"
    finally:
        server.close()
        await server.wait_closed()


async def test_late_polls_counted_logged_once_per_burst(caplog) -> None:
    sim = PressSimulator(spm=0)
    await sim.start()
    results: list[PollResult] = []
    slow = asyncio.Event()
    recovered = asyncio.Event()

    def sink(event) -> None:
        if not isinstance(event, PollResult):
            return
        results.append(event)
        if len(results) in (3, 4, 5):
            time.sleep(0.12)  # a sink that stalls the loop: 3 polls of a 20 ms period
            slow.set()
        elif slow.is_set() and len(results) >= 8:
            recovered.set()

    poller = ModbusPoller("p1/plc", "127.0.0.1", sim.port, 1, LOAD_TAGS[:4],
                          poll_interval_s=0.02, timeout_s=0.5, max_gap=8)
    task = asyncio.create_task(poller.run(sink))
    try:
        with caplog.at_level(logging.INFO, logger="drivers.link"):
            async with asyncio.timeout(10):
                await recovered.wait()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await sim.stop()
    assert poller.stats["late_polls"] >= 3
    assert results[-1].late_polls == poller.stats["late_polls"]
    warnings = [r for r in caplog.records if "slot(s) skipped" in r.getMessage()
                and r.levelno == logging.WARNING]
    assert len(warnings) == 1  # one burst, one warning (not one per late poll)
    assert any("on time again" in r.getMessage() for r in caplog.records)
