"""The rows of the latest outbox commits, kept for the publisher's one-lane drain.

Why: at 1,000 msgs/s the publisher was told of every commit (``Committed``) and then read
the very rows it was told about back from SQLite (``Outbox.pending``: a query on the
pending index and a copy of every payload), ~10 % of the daemon's Python time. The
writer's notice now carries those rows (``Committed.rows``); this keeps them, in id
order, until the publisher's cursor takes them.

Durable before visible holds: the writer sends a notice only after the fsync covering
its rows and after raising ``last_id`` (``buffer.outbox_writer``), and :meth:`take` never
returns a row above the ``hi`` snapshot the publisher read from ``last_id``.

It is only a shortcut: :meth:`take` answers None whenever it cannot vouch for the whole
id range asked for (the cursor is behind the rows kept: a backlog, an outage, a start
with rows in the buffer; or the newest commit's notice has not arrived yet), and the
publisher reads SQLite as before. At most ``cap`` rows are kept (the oldest go first, so
a long outage costs no memory). Only the publisher marks its rows delivered, so a kept row
is still pending when taken.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterable

from buffer.store import Committed

Row = tuple[int, str, bytes]  # (id, topic, payload), as Outbox.pending returns


class FreshRows:
    """Pending rows with ``base`` < id <= ``top``, complete for that range.

    ``add`` runs in the outbox writer thread, ``take`` on the event loop; ``lock`` guards
    both (the publisher passes its commit-wake lock, already held around ``add``)."""

    def __init__(self, cap: int, skip_streams: Iterable[str] = (),
                 lock: threading.Lock | None = None) -> None:
        if cap < 1:
            raise ValueError("cap must be >= 1")
        self.cap = cap
        self.skip = frozenset(skip_streams)
        self.lock = lock or threading.Lock()
        self._rows: deque[Row] = deque()
        self._base = 0
        self._top = 0
        self._valid = False  # False: nothing vouched for (start, or after clear())

    def add(self, info: Committed) -> None:
        """One commit's notice (caller holds ``lock``). A notice that does not follow the
        last one (the first notice, or one lost to a listener failure) starts afresh."""
        if info.first_id is None or info.last_id is None:
            return
        if not self._valid or info.first_id != self._top + 1:
            self._rows.clear()
            self._base = info.first_id - 1
            self._valid = True
        skip = self.skip
        if skip:
            self._rows.extend((i, topic, payload) for i, stream, topic, payload in info.rows
                              if stream not in skip)
        else:
            self._rows.extend((i, topic, payload) for i, _, topic, payload in info.rows)
        self._top = info.last_id
        rows = self._rows
        while len(rows) > self.cap:
            self._base = rows.popleft()[0]

    def clear(self) -> None:
        with self.lock:
            self._rows.clear()
            self._valid = False

    def take(self, after: int, hi: int, limit: int) -> tuple[list[Row], int] | None:
        """Pending rows with ``after`` < id <= ``hi`` (at most ``limit``) and the cursor
        after them, exactly as a read of the outbox would give; None when the rows kept
        do not cover that range (read the outbox instead)."""
        with self.lock:
            if not self._valid or after < self._base:
                return None
            rows = self._rows
            while rows and rows[0][0] <= after:
                rows.popleft()
            self._base = max(self._base, after)
            if hi > self._top:
                return None  # a commit made visible whose notice is still on its way
            out: list[Row] = []
            while rows and rows[0][0] <= hi and len(out) < limit:
                out.append(rows.popleft())
            if out:
                self._base = out[-1][0]
            if len(out) < limit:
                return out, max(after, hi)
            return out, out[-1][0]
