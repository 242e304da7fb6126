"""RTU shared bus: poll rate of healthy units with and without a dead unit on the bus.

    python -m bench.rtu_bus [--seconds 5] [--interval-ms 100] [--timeout-ms 200]

Three presses (units 1-3) on one RTU bus (pymodbus serial server on a socat pty pair,
19200 baud nominal; a pty does not pace bytes at the baud rate, so these are upper
bounds of what a real RS-485 line gives). Prints polls/s and mean period per unit for
two runs: all alive, then unit 3 dead. Asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import time

from drivers.base import PollResult
from drivers.modbus.engine import ModbusBus, SerialLink
from sim.bus import BusSimulator
from sim.press import PRESS_TAGS, PressSimulator


async def run(seconds: float, interval: float, timeout: float, dead: bool) -> dict[int, int]:
    sims = {u: PressSimulator(die=u, spm=0) for u in (1, 2, 3)}
    counts = dict.fromkeys(sims, 0)
    async with BusSimulator(sims, "serial") as sim:
        if dead:
            sim.set_dead(3, True)
        bus = ModbusBus(SerialLink(sim.client_port, 19200))
        tasks = []
        for u in sims:
            bus.add_unit(f"p{u}/plc", u, PRESS_TAGS, interval, timeout, retries=1)

            def sink(event: object, u: int = u) -> None:
                if isinstance(event, PollResult):
                    counts[u] += 1
            tasks.append(asyncio.create_task(bus.attach(f"p{u}/plc", sink)))
        await asyncio.sleep(seconds)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        late = {u: bus.units[f"p{u}/plc"].stats["late_polls"] for u in sims}
        timeouts = bus.units["p3/plc"].stats["timeouts"]
    print(f"  unit 3 {'dead' if dead else 'alive'}: " + ", ".join(
        f"unit {u}: {n / seconds:.1f} polls/s (period {1000 * seconds / max(n, 1):.0f} ms, "
        f"{late[u]} late slots)" for u, n in counts.items())
        + (f"; unit 3 timeouts: {timeouts}" if dead else ""))
    return counts


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--interval-ms", type=float, default=100.0)
    p.add_argument("--timeout-ms", type=float, default=200.0)
    a = p.parse_args()
    print(f"RTU bus, 3 units, period {a.interval_ms:g} ms, timeout {a.timeout_ms:g} ms, "
          f"1 retry, {a.seconds:g} s per run ({time.strftime('%Y-%m-%d %H:%M')})")
    for dead in (False, True):
        asyncio.run(run(a.seconds, a.interval_ms / 1000, a.timeout_ms / 1000, dead))


if __name__ == "__main__":
    main()
