"""The outbox's reads: pending rows for the publisher, snapshots, stats (split out of
:mod:`buffer.store`).

Every read goes through the one reader connection under ``_read_lock`` and never passes
``_visible_id``: the publisher sees committed *and* synced rows only (durable before
visible, see :mod:`buffer.outbox_sync`). Pending rows are found through the partial index
``messages_pending``; nothing here scans the history.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Sequence
from typing import Any

from buffer.outbox_state import OutboxState


class ReadsMixin(OutboxState):
    """Reads of committed state (any thread)."""

    # the publisher's live reads, one statement each (prepared once, cached by sqlite3)
    _PENDING = ("SELECT {} FROM messages INDEXED BY messages_pending "
                "WHERE delivered IS NULL AND id > ? AND id <= ? ORDER BY id LIMIT ?")
    _PENDING_SQL = _PENDING.format("id, topic, payload")
    _PENDING_LANE_SQL = _PENDING.format("id, stream, topic, payload")

    def _pending_rows(self, sql: str, after_id: int, limit: int) -> list[Any]:
        with self._read_lock:
            assert self._rconn is not None
            return self._rconn.execute(sql, (after_id, self._visible_id, limit)).fetchall()

    def pending(self, after_id: int = 0, limit: int = 1000) -> list[tuple[int, str, bytes]]:
        """Committed, undelivered rows with id > after_id, in id order."""
        return self._pending_rows(self._PENDING_SQL, after_id, limit)

    def pending_lane(self, after_id: int = 0, limit: int = 1000
                     ) -> list[tuple[int, str, str, bytes]]:
        """Like :meth:`pending` with the stream: ``(id, stream, topic, payload)``; the
        publisher's backlog lane sorts rows by stream (live telemetry vs replay)."""
        return self._pending_rows(self._PENDING_LANE_SQL, after_id, limit)

    def pending_streams(self, streams: Sequence[str], after_id: int = 0, limit: int = 1000,
                        exclude: bool = False, upto: int | None = None
                        ) -> list[tuple[int, str, bytes]]:
        """Pending rows of the given streams (``exclude``: of every other stream) with
        after_id < id (<= upto), in id order. Walks the pending index from ``after_id``
        (only rows committed after it, at most up to ``upto``), never the history."""
        marks = ",".join("?" * len(streams))
        with self._read_lock:
            assert self._rconn is not None
            return self._rconn.execute(
                "SELECT id, topic, payload FROM messages INDEXED BY messages_pending "
                f"WHERE delivered IS NULL AND id > ? AND id <= ? AND stream "
                f"{'NOT ' if exclude else ''}IN ({marks}) ORDER BY id LIMIT ?",
                (after_id, self._visible_id if upto is None else min(upto, self._visible_id),
                 *streams, limit)
            ).fetchall()

    def latest(self, press: str, stream: str) -> tuple[int, bytes] | None:
        """The newest visible row of one press's stream, delivered or not: ``(id,
        payload)`` (the Sparkplug births carry each press's newest values)."""
        with self._read_lock:
            assert self._rconn is not None
            row = self._rconn.execute(
                "SELECT id, payload FROM messages WHERE press = ? AND stream = ? AND id <= ? "
                "ORDER BY seq DESC LIMIT 1", (press, stream, self._visible_id)).fetchone()
        return None if row is None else (int(row[0]), bytes(row[1]))

    def pending_count(self) -> int:
        """Rows waiting for delivery (committed ones minus queued marks, plus queued rows)."""
        with self._lock:
            queued = sum(1 for r in self._rows if not r.delivered)
            return max(0, self._pending_committed + queued - len(self._marks))

    @property
    def last_id(self) -> int:
        """Highest message id the publisher may see: committed *and* synced (see
        :meth:`_sync`); rows above it are not returned by :meth:`pending` & co. yet."""
        return self._visible_id

    def queued_rows(self) -> int:
        """Rows added but not committed yet."""
        with self._lock:
            return len(self._rows)

    def unflushed(self) -> int:
        with self._lock:
            return self._queued_ops - self._committed_ops

    def get_kv(self, key: str, default: Any = None) -> Any:
        with self._lock:  # queued, or taken by a commit not yet finished
            queued = self._kv_q.get(key) or self._kv_inflight.get(key)
        if queued is not None:
            return json.loads(queued[0])
        with self._read_lock:
            assert self._rconn is not None
            row = self._rconn.execute("SELECT value FROM kv WHERE key=?", (key,)).fetchone()
        return default if row is None else json.loads(row[0])

    def get_retained_all(self) -> dict[str, tuple[str, bytes]]:
        """Committed retained state: press -> (topic, payload)."""
        return dict(self._retained)

    def get_retained(self, press: str) -> tuple[str, bytes] | None:
        return self._retained.get(press)

    def stats(self) -> dict[str, Any]:
        """Counters and a few cheap queries (the pending-per-stream figure walks the
        pending index, i.e. the backlog, never the history)."""
        with self._read_lock:
            assert self._rconn is not None
            c = self._rconn
            counters = dict(c.execute("SELECT name, value FROM counters").fetchall())
            streams = {f"{p}/{s}": {"rows": n, "last_seq": last}
                       for p, s, last, n in c.execute(
                           "SELECT press, stream, last_seq, rows FROM streams")}
            for p, s, n in c.execute(
                    "SELECT press, stream, count(*) FROM messages INDEXED BY messages_pending "
                    "WHERE delivered IS NULL GROUP BY press, stream"):
                streams.setdefault(f"{p}/{s}", {"rows": 0, "last_seq": 0})["pending"] = n
            oldest = c.execute("SELECT created FROM messages INDEXED BY messages_pending "
                               "WHERE delivered IS NULL ORDER BY id LIMIT 1").fetchone()
        size = 0
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(OSError):
                size += os.path.getsize(str(self.path) + suffix)
        with self._lock:
            writer = dict(self._stats)
            unflushed = self._queued_ops - self._committed_ops
        return {
            "path": str(self.path),
            "rows": int(counters.get("rows", 0)),
            "pending": int(counters.get("pending", 0)),
            "oldest_pending_age_s": None if oldest is None else max(0.0, time.time() - oldest[0]),
            "streams": streams,
            "retained": len(self._retained),
            "file_bytes": size,
            "unflushed": unflushed,
            **writer,
        }
