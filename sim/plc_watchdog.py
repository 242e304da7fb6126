"""The PLC's side of the heartbeat (docs/outputs.md, "The PLC's part"), for tests and the
demo: what the few lines of structured text there do, scanned like a PLC program.

The collector counts a word up every second (``collector/outputs.py``). The PLC keeps a
timer running while the word stays the same; when it has not changed for ``timeout_s``
the collector is taken for dead (killed, hung, cable pulled, press lost) and the PLC
drops its own permissive, whatever the collector last wrote. This class is that
program: ``scan()`` is one PLC cycle, ``run()`` scans every ``scan_s`` until cancelled.
It starts "not alive" (a PLC that powers up before the collector does not release): only
a change of the word makes the collector alive.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any


class HeartbeatWatchdog:
    """``read()`` returns the heartbeat word as the PLC holds it (None: not written)."""

    def __init__(self, read: Callable[[], Any], timeout_s: float = 3.0,
                 scan_s: float = 0.05) -> None:
        self.read = read
        self.timeout_s = timeout_s
        self.scan_s = scan_s
        self.last: Any = 0  # LastHeartbeat: 0 at power-up, like the register
        self.changed_at = time.monotonic()
        self.changes = 0  # heartbeat changes seen
        self.alive = False  # CollectorAlive in the structured text
        self.became_alive = asyncio.Event()
        self.tripped = asyncio.Event()  # set when alive turned false (the permissive drops)

    def scan(self, now: float | None = None) -> bool:
        """One PLC cycle of the structured text in docs/outputs.md: a change of the word
        sets CollectorAlive, ``timeout_s`` without one (the TON's Q) clears it."""
        now = time.monotonic() if now is None else now
        value = self.read() or 0  # an output never written holds 0
        if value != self.last:
            self.last = value
            self.changed_at = now
            self.changes += 1
            if not self.alive:
                self.alive = True
                self.tripped.clear()
                self.became_alive.set()
        elif self.alive and now - self.changed_at >= self.timeout_s:
            self.alive = False
            self.became_alive.clear()
            self.tripped.set()
        return self.alive

    def permissive(self, release_permissive: bool) -> bool:
        """``PressPermissive := ReleasePermissive AND CollectorAlive``."""
        return bool(release_permissive) and self.alive

    async def run(self) -> None:
        while True:
            self.scan()
            await asyncio.sleep(self.scan_s)
