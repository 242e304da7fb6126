"""The daemon as a process (``python -m collector.cli run``), its log read line by line.

For tests that send it signals (SIGHUP, SIGTERM) and wait for what it logs: every output
line is kept (and written to ``log_path`` for a failing test's reader); ``wait_line``
wakes on each new line, no polling.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


class DaemonProcess:
    def __init__(self, config_dir: Path, log_path: Path) -> None:
        self.config_dir = config_dir
        self.log_path = log_path
        self.lines: list[str] = []
        self.proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._new_line = asyncio.Event()

    async def start(self) -> DaemonProcess:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "collector.cli", "run", "--config-dir", str(self.config_dir),
            cwd=REPO, env=env, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT)
        self._reader = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        with open(self.log_path, "a", encoding="utf-8") as log:
            async for raw in self.proc.stdout:
                line = raw.decode(errors="replace").rstrip("\n")
                self.lines.append(line)
                log.write(line + "\n")
                log.flush()
                self._new_line.set()
        self._new_line.set()  # the process ended: waiters look one last time

    async def wait_line(self, pattern: str, after: int = 0, timeout: float = 20.0
                        ) -> tuple[int, str]:
        """The first line from index ``after`` on matching ``pattern`` (re.search): its
        index and text. TimeoutError names the pattern; a dead process fails at once."""
        regex = re.compile(pattern)
        async with asyncio.timeout(timeout):
            while True:
                self._new_line.clear()
                for i in range(after, len(self.lines)):
                    if regex.search(self.lines[i]):
                        return i, self.lines[i]
                assert self.proc is not None
                if self._reader is not None and self._reader.done():
                    raise AssertionError(f"daemon exited ({self.proc.returncode}) before "
                                         f"logging {pattern!r}; log: {self.log_path}")
                await self._new_line.wait()

    def hup(self) -> int:
        """SIGHUP; returns the number of lines logged before it (for ``wait_line``)."""
        assert self.proc is not None
        mark = len(self.lines)
        self.proc.send_signal(signal.SIGHUP)
        return mark

    async def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM and wait: the exit code (killed after ``timeout``)."""
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), timeout)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        if self._reader is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._reader, 5)
        assert self.proc.returncode is not None
        return self.proc.returncode
