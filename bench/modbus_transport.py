"""Modbus TCP framing cost: pymodbus's async client vs the collector's own MBAP master.

Both read the same 40 holding registers (the bench presses' load block) from the same
press simulator, which runs in its own process (``python -m sim.press``) so that
only the client side's CPU is measured (``time.process_time`` of this process). Each
transport does ``--requests`` reads back to back on one connection, three rounds
interleaved (pymodbus, own, pymodbus, own ...) so that a busy machine hurts both alike;
the best round of each is reported: CPU microseconds per request and requests per
second of wall time.

    .venv/bin/python -m bench.modbus_transport --requests 5000

This decided ``drivers/modbus/tcp.py`` (docs/modbus.md, "TCP framing").
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            _r, w = await asyncio.open_connection("127.0.0.1", port)
            w.close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)


async def _pymodbus(port: int, n: int) -> tuple[float, float]:
    from pymodbus.client import AsyncModbusTcpClient

    client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=1.0, retries=0,
                                  reconnect_delay=0)
    await client.connect()
    try:
        cpu, wall = time.process_time(), time.perf_counter()
        for _ in range(n):
            r = await client.read_holding_registers(40, count=40, device_id=1)
            assert not r.isError() and len(r.registers) == 40
        return time.process_time() - cpu, time.perf_counter() - wall
    finally:
        client.close()


async def _own(port: int, n: int) -> tuple[float, float]:
    from drivers.modbus.tcp import TcpMaster

    master = TcpMaster("127.0.0.1", port)
    await master.open()
    try:
        cpu, wall = time.process_time(), time.perf_counter()
        for _ in range(n):
            regs = await master.read(1, "holding", 40, 40, 1.0)
            assert len(regs) == 40
        return time.process_time() - cpu, time.perf_counter() - wall
    finally:
        await master.close()


async def measure(requests: int, rounds: int) -> dict[str, object]:
    logging.getLogger("pymodbus").setLevel(logging.ERROR)
    port = _free_port()
    sim = subprocess.Popen([sys.executable, "-m", "sim.press", "--port", str(port)],
                           cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        await _wait_port(port)
        best: dict[str, tuple[float, float]] = {}
        for _ in range(rounds):
            for name, run in (("pymodbus", _pymodbus), ("own_mbap", _own)):
                cpu, wall = await run(port, requests)
                if name not in best or cpu < best[name][0]:
                    best[name] = (cpu, wall)
    finally:
        sim.terminate()
        sim.wait(5)
    out: dict[str, object] = {"requests": requests, "rounds": rounds}
    for name, (cpu, wall) in best.items():
        out[f"{name}_cpu_us_per_request"] = round(cpu / requests * 1e6, 1)
        out[f"{name}_requests_per_s"] = round(requests / wall)
    out["cpu_ratio_pymodbus_over_own"] = round(best["pymodbus"][0] / best["own_mbap"][0], 2)
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=5000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--asyncio", action="store_true",
                   help="the standard event loop (default: uvloop, as the daemon runs)")
    args = p.parse_args(argv)
    if not args.asyncio:
        import uvloop

        uvloop.install()
    result = asyncio.run(measure(args.requests, args.rounds))
    result["loop"] = "asyncio" if args.asyncio else "uvloop"
    print(json.dumps(result))


if __name__ == "__main__":
    main()
