"""Which event loop runs the daemon: uvloop when it is installed, else asyncio's own.

Why: under line load the daemon's CPU goes mostly to the event loop and socket I/O
(epoll, transports, Modbus and MQTT reads/writes), not to our code; uvloop does that
part in C (see bench/README.md, profile notes). ``PRESS_COLLECTOR_LOOP=asyncio`` forces
the standard loop (A/B comparisons, or a platform without uvloop).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Coroutine
from typing import Any, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")
LOOP_ENV = "PRESS_COLLECTOR_LOOP"


def run(coro: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` on uvloop if available and not disabled."""
    choice = os.environ.get(LOOP_ENV, "uvloop").strip().lower()
    if choice == "uvloop":
        try:
            import uvloop
        except ImportError:
            log.info("uvloop not installed: using the asyncio event loop")
        else:
            return uvloop.run(coro)
    elif choice != "asyncio":
        log.warning("%s=%r is not allowed (allowed: uvloop, asyncio); using asyncio",
                    LOOP_ENV, choice)
    return asyncio.run(coro)
