"""Give the heap that SQLite and Python freed back to the system (glibc ``malloc_trim``).

Why: glibc keeps freed memory in its arenas for reuse. The buffer's maintenance passes
(prune, size bound) open a connection, fill its page cache and close it; the cache is
freed but stays in the process's RSS, and whether a later pass reuses those pages or
takes new ones is luck: the daemon's RSS rose in ~2 MB steps every few prunes and was
never given back (issue 12, "Memory"; bench/README.md). ``malloc_trim(0)`` returns every
free page of every arena (``madvise(MADV_DONTNEED)``, glibc >= 2.8) and the free top of
the main heap. It walks the arenas under their locks: ~1 ms for the daemon's heap, so it
runs after a prune, off the event loop, not per commit.

Not glibc (musl, macOS): ``trim`` does nothing and says so once (``available``).
"""

from __future__ import annotations

import ctypes
import logging
import sys
import time
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)


def _malloc_trim() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        fn = libc.malloc_trim
    except (OSError, AttributeError):  # musl has no libc.so.6 / no malloc_trim
        return None
    fn.argtypes = [ctypes.c_size_t]
    fn.restype = ctypes.c_int
    return fn


_TRIM = _malloc_trim()


def available() -> bool:
    """True where ``trim`` can release memory (glibc)."""
    return _TRIM is not None


@dataclass(frozen=True, slots=True)
class Trimmed:
    """One trim: whether glibc released anything, and how long it held its arenas."""

    released: bool
    seconds: float


def trim(pad: int = 0) -> Trimmed | None:
    """``malloc_trim(pad)``: give free heap pages back, keeping ``pad`` bytes at the top
    of the main heap. None where glibc is not the allocator. Blocking: call it from a
    thread (``asyncio.to_thread``)."""
    if _TRIM is None:
        return None
    t0 = time.perf_counter()
    released = bool(_TRIM(pad))
    return Trimmed(released, time.perf_counter() - t0)
