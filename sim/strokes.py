"""What every press simulator shares: the stroke generator and the command-line options.

The Modbus and the OPC UA simulator differ only in how they serve values; a press strokes
the same way on both, so the demo and the tests see the same behaviour whichever
protocol a press speaks.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from collections.abc import Callable


async def stroke_loop(wake: asyncio.Event, stroking: Callable[[], bool],
                      spm: Callable[[], float], stroke: Callable[[], None]) -> None:
    """Stroke at ``spm()`` on the monotonic clock while ``stroking()``; ``wake`` is set on
    every state change so that a new rate or a stop takes effect at once, not at the next
    stroke."""
    next_at: float | None = None
    while True:
        wake.clear()
        if not stroking():
            next_at = None
            await wake.wait()
            continue
        period = 60.0 / spm()
        now = time.monotonic()
        if next_at is None or next_at - now > period:
            next_at = now + period
        if next_at > now:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), next_at - now)
                continue  # state changed: re-evaluate before stroking
        stroke()
        next_at = max(next_at + period, time.monotonic())


def press_arguments(prog: str, description: str | None, port: int) -> argparse.ArgumentParser:
    """The options of ``python -m sim.*``: where to listen and the starting job."""
    p = argparse.ArgumentParser(prog=prog, description=description,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=port)
    p.add_argument("--part", default="4711-A")
    p.add_argument("--lot", default="LOT-0001")
    p.add_argument("--die", type=int, default=1)
    p.add_argument("--spm", type=int, default=30)
    p.add_argument("--stopped", action="store_true", help="start with running=False")
    p.add_argument("--setup", action="store_true", help="start in setup mode")
    return p
