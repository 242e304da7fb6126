"""The outbox side shared by the MQTT outputs (publisher, Sparkplug edge node).

Why a module: both outputs wake on the outbox writer's commits and both offer a
``drain(timeout)``; written once here, the two stay the same (they were copies).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable

from buffer.store import Committed, Outbox


class CommitWake:
    """One ``call_soon_threadsafe`` per burst of outbox commits, not one per commit.

    The writer thread commits every few milliseconds; while a wake-up is already on its
    way to the event loop, further commits only run ``on_commit`` (under ``lock``, in the
    writer thread: keep it tiny) and join that wake-up."""

    def __init__(self, outbox: Outbox, on_wake: Callable[[], None],
                 on_commit: Callable[[Committed], None] | None = None) -> None:
        self.outbox = outbox
        self.lock = threading.Lock()
        self._on_wake = on_wake
        self._on_commit = on_commit
        self._loop: asyncio.AbstractEventLoop | None = None
        self._scheduled = False

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.outbox.add_listener(self._threadsafe)

    def detach(self) -> None:
        self.outbox.remove_listener(self._threadsafe)

    def _threadsafe(self, info: Committed) -> None:
        loop = self._loop
        if loop is None:
            return
        with self.lock:
            if self._on_commit is not None:
                self._on_commit(info)
            if self._scheduled:
                return
            self._scheduled = True
        with contextlib.suppress(RuntimeError):  # loop closed during shutdown
            loop.call_soon_threadsafe(self._wake)

    def _wake(self) -> None:
        with self.lock:
            self._scheduled = False
        self._on_wake()


async def wait_drained(drained: Callable[[], bool], kick: Callable[[], None],
                       idle: asyncio.Event, timeout: float) -> bool:
    """Until ``drained()`` (True) or ``timeout`` (False); ``kick()`` pumps, and the
    output sets ``idle`` whenever it has nothing more to do right now."""
    try:
        async with asyncio.timeout(timeout):
            while not drained():
                idle.clear()
                kick()
                await idle.wait()
        return True
    except TimeoutError:
        return False
