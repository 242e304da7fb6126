"""Bench simulators in their own process: N press PLCs and G gauges on ptys.

Kept out of the daemon's process so that the CPU and RSS sampled for the daemon are
the daemon's alone. Writes ``--ready`` (JSON: ports, gauge paths) once everything
listens; on SIGTERM writes ``--stats`` (reads served per press, gauge lines sent).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
from pathlib import Path

from sim.gauge import GaugeSimulator
from sim.press import PressSimulator

PART, DIE, LOT = "BRK-100", 7, "L2411-01"
# per gauge id: values cycled (inside the BRK-100 plan's tolerances; g2 serves C2 and C3)
GAUGE_VALUES = {"g1": ("25.00", "25.01", "24.99"), "g2": ("12.50", "0.01", "12.51", "0.02")}


async def serve(args: argparse.Namespace) -> None:
    sims = [PressSimulator(part=PART, lot=LOT, die=DIE, spm=args.spm, seed=i)
            for i in range(args.presses)]
    for sim in sims:
        sim.set_running(True)
        await sim.start()
    gauges: dict[str, GaugeSimulator] = {}
    for press in range(1, args.gauge_presses + 1):
        for gid in ("g1", "g2"):
            g = GaugeSimulator(str(Path(args.gauge_dir) / f"p{press}-{gid}"), "mitutoyo")
            g.open()
            gauges[f"p{press}/{gid}"] = g
    Path(args.ready).write_text(json.dumps({
        "ports": [s.port for s in sims], "gauges": {k: g.path for k, g in gauges.items()}}))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    period = 1.0 / args.gauge_rate if args.gauge_rate > 0 else None
    n = 0
    while not stop.is_set():
        if period is None or not gauges:
            await stop.wait()
            break
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), period)
        for key, g in gauges.items():
            values = GAUGE_VALUES[key.rsplit("/", 1)[1]]
            g.send_value(values[n % len(values)])
        n += 1
    Path(args.stats).write_text(json.dumps({
        "reads": [s.requests["holding"] for s in sims],
        "gauge_lines": sum(1 for _ in range(n)) * len(gauges)}))
    for g in gauges.values():
        g.close()
    for sim in sims:
        await sim.stop()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--presses", type=int, required=True)
    p.add_argument("--gauge-presses", type=int, default=0, help="presses with g1+g2")
    p.add_argument("--gauge-rate", type=float, default=1.0, help="lines/s per gauge")
    p.add_argument("--gauge-dir", default="/tmp")
    p.add_argument("--spm", type=int, default=120)
    p.add_argument("--ready", required=True)
    p.add_argument("--stats", required=True)
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    try:
        import uvloop
        uvloop.run(serve(args))
    except ImportError:
        asyncio.run(serve(args))


if __name__ == "__main__":
    main()
