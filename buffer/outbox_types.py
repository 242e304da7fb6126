"""Plain values the outbox takes and hands out (rows, commit notices, reports).

Split out of :mod:`buffer.store` so the writer, the bounds and the callers share them
without importing the :class:`~buffer.store.Outbox` class itself.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class LostSeqs:
    """Seqs of one stream that the seq mark file says were taken but the buffer does not
    hold (found at start): never issued again."""

    press: str
    stream: str
    first_seq: int
    last_seq: int


@dataclass(slots=True)
class OutboxRow:
    press: str
    stream: str
    seq: int
    topic: str
    payload: bytes
    durable: bool = False
    delivered: bool = False  # stored as history only, never published


@dataclass(frozen=True, slots=True)
class Committed:
    """What one writer transaction made visible (passed to listeners)."""

    first_id: int | None  # id range of the rows inserted (None: no rows)
    last_id: int | None
    pending_rows: int  # rows in that range that wait for delivery
    retained: tuple[str, ...]  # presses whose retained state changed
    durable: bool
    # the rows of that range that wait for delivery, ``(id, stream, topic, payload)`` in id
    # order: the publisher takes them from here instead of reading them back from SQLite
    rows: tuple[tuple[int, str, str, bytes], ...] = ()


Listener = Callable[[Committed], None]


@dataclass(slots=True)
class SizeReport:
    """What :meth:`Outbox.enforce_size` did."""

    used_bytes: int
    max_bytes: int
    history_deleted: int = 0
    telemetry_dropped: int = 0
    quality_only: bool = False  # still over the bound: only undelivered protected rows left

