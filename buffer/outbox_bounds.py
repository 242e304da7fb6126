"""Prune and the size bound of the buffer (split out of :mod:`buffer.store`).

Both run on connections of their own, in short transactions of bounded chunks, so the
writer is never blocked for long; prune walks the oldest ids, never the whole table.
Undelivered quality events are never deleted here.
"""

from __future__ import annotations

import contextlib
import logging
import math
import sqlite3
import time
from collections.abc import Sequence
from typing import Any

from buffer.outbox_state import OutboxState
from buffer.outbox_types import SizeReport

log = logging.getLogger("buffer.store")

PRUNE_CHUNK = 5000


class BoundsMixin(OutboxState):
    """Deletes: retention (prune) and the file size bound (enforce_size)."""

    def prune(self, retention_s: float, chunk: int = PRUNE_CHUNK,
              max_chunks: int | None = None) -> int:
        """Delete delivered rows created more than ``retention_s`` ago, oldest ids first,
        in transactions of at most ``chunk`` ids (the writer is never blocked for long).
        Pending rows are kept whatever their age. Returns the number of rows deleted."""
        self._check_writable()
        cutoff = time.time() - retention_s
        conn = sqlite3.connect(self.path, isolation_level=None, timeout=5.0)
        conn.execute(f"PRAGMA cache_size=-{self._cache_kib // 8}")
        deleted = 0
        try:
            conn.execute("PRAGMA synchronous=NORMAL")
            lo = conn.execute("SELECT min(id) FROM messages").fetchone()[0]
            # the newest row always stays, so max(id) (and the next id) never goes back
            top = (conn.execute("SELECT max(id) FROM messages").fetchone()[0] or 0) - 1
            chunks = 0
            while lo is not None and lo <= top and (max_chunks is None or chunks < max_chunks):
                chunks += 1
                hi = min(lo + chunk - 1, top)
                conn.execute("BEGIN IMMEDIATE")
                try:
                    victims = ("FROM messages WHERE id BETWEEN ? AND ? "
                               "AND delivered IS NOT NULL AND created < ?")
                    args = (lo, hi, cutoff)
                    per_stream = conn.execute(
                        f"SELECT press, stream, count(*) {victims} GROUP BY press, stream",
                        args).fetchall()
                    n = conn.execute(f"DELETE {victims}", args).rowcount
                    if n:
                        conn.executemany(
                            "UPDATE streams SET rows = rows - ? WHERE press=? AND stream=?",
                            [(k, p, s) for p, s, k in per_stream])
                        conn.execute("UPDATE counters SET value = value - ? WHERE name='rows'",
                                     (n,))
                    # stop at the first row young enough to keep (ids follow creation)
                    young = conn.execute(
                        "SELECT 1 FROM messages WHERE id BETWEEN ? AND ? AND created >= ? "
                        "LIMIT 1", (lo, hi, cutoff)).fetchone()
                    nxt = conn.execute("SELECT min(id) FROM messages WHERE id > ?",
                                       (hi,)).fetchone()[0]
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:  # SQLITE_FULL: SQLite may have rolled back
                        with contextlib.suppress(sqlite3.Error):
                            conn.execute("ROLLBACK")
                    raise
                deleted += n
                if young is not None:
                    break
                lo = nxt
        finally:
            conn.close()
        if deleted:
            log.info("pruned %d delivered rows older than %.0f s", deleted, retention_s)
        return deleted

    # ------------------------------------------------------------------ size bound
    def used_bytes(self) -> int:
        """Bytes of live pages in the main file (freed pages are reused before it grows)."""
        with self._read_lock:
            assert self._rconn is not None
            c = self._rconn
            pages = c.execute("PRAGMA page_count").fetchone()[0]
            free = c.execute("PRAGMA freelist_count").fetchone()[0]
            size = c.execute("PRAGMA page_size").fetchone()[0]
        return int((pages - free) * size)

    def enforce_size(self, max_bytes: int, protected: Sequence[str] | None = None,
                     chunk: int = 500) -> SizeReport:
        """Bring the live size under ``max_bytes``: delivered history first (oldest ids,
        whatever their age), then the oldest *undelivered* rows of the sheddable streams
        (telemetry, by the stream policies) or, when ``protected`` is given, of every
        stream not in it. Other undelivered rows (quality and workflow events, command
        replies) are never deleted: the report says ``quality_only`` and the caller raises
        the alarm. The newest row always stays (ids never go back)."""
        self._check_writable()
        report = SizeReport(self.used_bytes(), max_bytes)
        if report.used_bytes <= max_bytes:
            return report
        if protected is None:
            shed = tuple(sorted(self.sheddable))
            undelivered = (f"delivered IS NULL AND stream IN ({','.join('?' * len(shed))})"
                           if shed else "0")
            args: tuple[str, ...] = shed
        else:
            marks = ",".join("?" * len(protected)) or "''"
            undelivered = f"delivered IS NULL AND stream NOT IN ({marks})"
            args = tuple(protected)
        steps = (("history", "delivered IS NOT NULL", ()), ("telemetry", undelivered, args))
        conn = sqlite3.connect(self.path, isolation_level=None, timeout=5.0)
        conn.execute(f"PRAGMA cache_size=-{self._cache_kib // 8}")
        try:
            conn.execute("PRAGMA synchronous=NORMAL")
            for name, where, args in steps:
                while (used := self.used_bytes()) > max_bytes:
                    # about as many rows as the excess holds (average row size), so a small
                    # excess does not cost a whole chunk of telemetry
                    total = conn.execute("SELECT value FROM counters WHERE name='rows'"
                                         ).fetchone()[0]
                    per_row = used / max(1, total)
                    want = min(chunk, max(1, math.ceil((used - max_bytes) / per_row)))
                    n, pending = self._delete_oldest(conn, where, args, want)
                    if n == 0:
                        break
                    if name == "history":
                        report.history_deleted += n
                    else:
                        report.telemetry_dropped += n
                    if pending:
                        with self._lock:
                            self._pending_committed -= pending
                            self._stats["dropped_undelivered"] = \
                                self._stats.get("dropped_undelivered", 0) + pending
        finally:
            conn.close()
        report.used_bytes = self.used_bytes()
        report.quality_only = report.used_bytes > max_bytes
        if report.history_deleted or report.telemetry_dropped:
            log.warning("buffer over %d bytes: deleted %d delivered rows and %d undelivered "
                        "telemetry rows (oldest first)", max_bytes, report.history_deleted,
                        report.telemetry_dropped)
        return report

    def _delete_oldest(self, conn: sqlite3.Connection, where: str, args: tuple[Any, ...],
                       chunk: int) -> tuple[int, int]:
        """Delete up to ``chunk`` oldest rows matching ``where``; (deleted, of them pending)."""
        conn.execute("BEGIN IMMEDIATE")
        try:
            top = conn.execute("SELECT max(id) FROM messages").fetchone()[0] or 0
            ids = [r[0] for r in conn.execute(
                f"SELECT id FROM messages WHERE {where} AND id < ? ORDER BY id LIMIT ?",
                (*args, top, chunk))]
            if not ids:
                conn.execute("COMMIT")
                return 0, 0
            lo, hi = ids[0], ids[-1]
            victims = f"FROM messages WHERE id BETWEEN ? AND ? AND {where}"
            vargs = (lo, hi, *args)
            per_stream = conn.execute(
                f"SELECT press, stream, count(*), sum(delivered IS NULL) {victims} "
                "GROUP BY press, stream", vargs).fetchall()
            n = conn.execute(f"DELETE {victims}", vargs).rowcount
            pending = sum(int(k) for *_, k in per_stream)
            conn.executemany("UPDATE streams SET rows = rows - ? WHERE press=? AND stream=?",
                             [(k, p, st) for p, st, k, _ in per_stream])
            conn.executemany("UPDATE counters SET value = value - ? WHERE name = ?",
                             [(n, "rows"), (pending, "pending")])
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:  # SQLITE_FULL: SQLite may have rolled back already
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            raise
        return n, pending
