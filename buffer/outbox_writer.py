"""The outbox's writer thread: group commit of the memory queue (split out of
:mod:`buffer.store`, whose docstring describes the hot path and the error rules).

One thread owns the write connection and commits everything queued since its last commit
in one transaction (``executemany``), at most ``commit_interval_s`` after the first queued
item; a commit that holds anything that can leave the machine is synced
(:mod:`buffer.outbox_sync`) before its rows become visible. A failing commit keeps the
batch in memory, in order, and retries with capped backoff; over ``max_queued_bytes`` the
oldest queued sheddable rows are dropped (:meth:`WriterMixin._shed_locked`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import time
from collections.abc import Iterable
from typing import Any

from buffer.outbox_sync import BACKOFF_MAX_S, BACKOFF_MIN_S, SyncMixin
from buffer.outbox_types import Committed, OutboxRow

log = logging.getLogger("buffer.store")

# Delivery marks alone wait this long for a commit (they ride along with the next rows
# anyway): a mark lost to a crash only means a resend, so they need not cost a commit of
# their own after every PUBACK burst.
MARK_INTERVAL_S = 0.25
# Rows per transaction at most: a longer queue (a burst, a stall) is committed in several
# transactions back to back, so that one transaction's dirty pages stay well inside the
# page cache (``cache_mb``). A transaction that outgrows it spills to the WAL and evicts
# the index pages it needs next; measured on a 50M-reading buffer, one 50,000-row
# transaction inserted at 0.85x the rate of the same on a 1M-reading buffer (16 MB cache).
MAX_COMMIT_ROWS = int(os.environ.get("PRESS_COLLECTOR_MAX_COMMIT_ROWS", "2000"))


def _ranges(ids: Iterable[int]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for i in sorted(set(ids)):
        if out and out[-1][1] == i - 1:
            out[-1] = (out[-1][0], i)
        else:
            out.append((i, i))
    return out


class WriterMixin(SyncMixin):
    """The writer thread, its commit and the memory queue's bound."""

    def _queued(self, n: int, lazy: bool = False) -> None:  # caller holds _cond
        """Count queued ops; the first row of a window wakes the writer. Delivery marks
        (``lazy``) wake nobody: the writer finds them at its next turn, at the latest
        after ``MARK_INTERVAL_S`` (its idle wait is that long). A wake-up per PUBACK
        burst was ~5 % of the GIL time at 1,000 polls/s."""
        self._queued_ops += n
        if lazy:
            if self._first_mark_at is None:
                self._first_mark_at = time.monotonic()
        elif self._first_queued_at is None:
            self._first_queued_at = time.monotonic()
            self._cond.notify()

    def _shed_locked(self) -> None:
        """Over the memory bound (caller holds _cond): drop the oldest queued sheddable
        rows until 10 % under it. Never an event, a gauge reading or a command reply.
        When that is not enough (only protected rows left), the next attempt waits until
        another 10 % of the bound has queued up, so a full queue costs no scan per add."""
        target = self.max_queued_bytes * 0.9
        before = self._queued_bytes
        excess = self._queued_bytes - target
        keep_rows: list[OutboxRow] = []
        keep_created: list[float] = []
        shed = 0
        for r, ts in zip(self._rows, self._created, strict=True):
            if excess > 0 and r.stream in self.sheddable:
                excess -= len(r.payload)
                self._queued_bytes -= len(r.payload)
                shed += 1
                continue
            keep_rows.append(r)
            keep_created.append(ts)
        self._shed_at = max(self.max_queued_bytes,
                            self._queued_bytes + self.max_queued_bytes // 10)
        if not shed:
            return
        self._rows, self._created = keep_rows, keep_created
        self._stats["telemetry_shed"] += shed
        if not self._shed_episode:
            log.error("buffer: %d bytes queued in memory while the buffer cannot be written "
                      "(over the %d byte bound, buffer.memory_max_mb): dropping the oldest "
                      "queued telemetry rows (quality events are kept); counted in "
                      "telemetry_shed, summary when commits work again",
                      before, self.max_queued_bytes)
        self._shed_episode += shed

    def _writer(self) -> None:
        backoff = BACKOFF_MIN_S
        last_error: str | None = None
        while True:
            with self._cond:
                while True:
                    has_work = self._queued_ops > self._committed_ops
                    if self._closing and not has_work:
                        self._fail_waiters_locked()
                        return
                    if has_work and (self._flush_now or self._closing):
                        break
                    if has_work:
                        deadline = min(
                            self._first_queued_at + self.commit_interval_s
                            if self._first_queued_at is not None else float("inf"),
                            self._first_mark_at + max(self.commit_interval_s, MARK_INTERVAL_S)
                            if self._first_mark_at is not None else float("inf"))
                        wait = deadline - time.monotonic()
                        if wait <= 0:
                            break
                        self._cond.wait(min(wait, 1.0))
                    else:  # idle: look again for marks queued without a wake-up
                        self._cond.wait(MARK_INTERVAL_S)
                rows, created = self._rows, self._created
                marks, retained, kv = self._marks, self._retained_q, self._kv_q
                if len(rows) > MAX_COMMIT_ROWS:  # commit a head chunk, the rest right after
                    self._rows, self._created = rows[MAX_COMMIT_ROWS:], created[MAX_COMMIT_ROWS:]
                    rows, created = rows[:MAX_COMMIT_ROWS], created[:MAX_COMMIT_ROWS]
                    target = self._committed_ops  # waiters are released by the last chunk
                    self._flush_now = True
                else:
                    self._rows, self._created = [], []
                    target = self._queued_ops
                    self._first_queued_at = None
                    self._flush_now = False
                self._marks = []
                self._retained_q, self._kv_q = {}, {}
                self._kv_inflight = kv
                # payload bytes leaving the memory queue with this (possibly chunked) batch
                batch_bytes = sum(len(r.payload) for r in rows)
                self._queued_bytes = max(0, self._queued_bytes - batch_bytes)
                self._shed_at = self.max_queued_bytes
                self._first_mark_at = None
            try:
                info = self._commit(rows, created, marks, retained, kv, batch_bytes)
            except sqlite3.Error as exc:
                with self._cond:
                    # put the batch back in front of anything queued meanwhile
                    self._rows = rows + self._rows
                    self._created = created + self._created
                    self._queued_bytes += batch_bytes
                    self._failing = True
                    self._marks = marks + self._marks
                    self._retained_q = {**retained, **self._retained_q}
                    self._kv_q = {**kv, **self._kv_q}
                    self._kv_inflight = {}
                    if self._first_queued_at is None:
                        self._first_queued_at = time.monotonic()
                    self._stats["write_errors"] += 1
                    self._stats["last_write_error"] = str(exc)
                    if self._queued_bytes > self._shed_at:
                        self._shed_locked()
                    rows_kept = len(self._rows)
                    other_kept = len(self._marks) + len(self._retained_q) + len(self._kv_q)
                if str(exc) != last_error:
                    log.error("buffer commit failed (%s): %d rows and %d other updates kept "
                              "in memory, retrying with backoff up to %.0f s; nothing committed "
                              "is lost", exc, rows_kept, other_kept, BACKOFF_MAX_S)
                    last_error = str(exc)
                with self._cond:
                    if self._closing and (self._past_close_deadline()
                                          if self._close_deadline is not None
                                          else backoff >= BACKOFF_MAX_S):
                        self._give_up_locked(str(exc))
                        self._fail_waiters_locked()
                        return
                    wait = backoff
                    if self._closing and self._close_deadline is not None:
                        wait = max(0.0, min(wait, self._close_deadline - time.monotonic()))
                    self._cond.wait(wait)
                backoff = min(backoff * 2, BACKOFF_MAX_S)
                continue
            if last_error is not None:
                log.warning("buffer commit works again after error: %s", last_error)
                last_error = None
            backoff = BACKOFF_MIN_S
            with self._cond:
                self._failing = False
                self._kv_inflight = {}  # committed: the read connection sees it now
                if self._shed_episode:
                    log.warning("buffer: %d queued telemetry rows were dropped from memory "
                                "while the buffer could not be written", self._shed_episode)
                    self._shed_episode = 0
                self._committed_ops = target
                self._cond.notify_all()
                ready = [w for w in self._waiters if w[0] <= target]
                self._waiters = [w for w in self._waiters if w[0] > target]
            for _, loop, fut in ready:
                with contextlib.suppress(RuntimeError):  # loop closed
                    loop.call_soon_threadsafe(_resolve, fut)
            if info is not None:
                for listener in list(self._listeners):
                    try:
                        listener(info)
                    except Exception:
                        log.exception("outbox listener failed")

    def _give_up_locked(self, error: str) -> None:
        """Closing while the buffer cannot be written (caller holds _cond): say in the log
        what is lost (per stream: count and seq range; every event's payload, so a quality
        record can still be recovered from the journal), then take every seq handed out
        in the seq mark file (written in place: works on a full disk), so the next start
        reports the gap and never issues those seqs again."""
        per: dict[tuple[str, str], list[int]] = {}
        events: list[OutboxRow] = []
        for r in self._rows:
            acc = per.setdefault((r.press, r.stream), [r.seq, r.seq, 0])
            acc[0], acc[1], acc[2] = min(acc[0], r.seq), max(acc[1], r.seq), acc[2] + 1
            if r.durable and not r.delivered:
                events.append(r)
        log.error("buffer: stopping with %d rows that could not be written (%s): %s; "
                  "%d delivery marks not recorded (those rows will be sent again)",
                  len(self._rows), error,
                  ", ".join(f"{p}/{st} {n} rows seq {lo}..{hi}"
                            for (p, st), (lo, hi, n) in sorted(per.items())) or "none",
                  len(self._marks))
        for r in events[:200]:
            log.error("buffer: not written: %s/%s seq %d on %s: %s", r.press, r.stream, r.seq,
                      r.topic, r.payload.decode("utf-8", "backslashreplace"))
        if len(events) > 200:
            log.error("buffer: ... and %d more events not written", len(events) - 200)
        taken = dict(self._committed_seqs)
        for key, n in self._seq.items():
            if n > taken.get(key, 0):
                taken[key] = n
        if self._seqmark is not None and taken != self._seqmark.seqs:
            try:
                self._seqmark.write(self._last_id, taken)
                log.error("buffer: the seqs of the rows not written are taken in %s: the next "
                          "start reports them and never issues them again", self._seqmark.path)
            except OSError as exc:
                log.error("buffer: cannot record the lost seqs in %s either (%s)",
                          self._seqmark.path, exc)
        self._rows, self._created = [], []

    def _fail_waiters_locked(self) -> None:
        for _, loop, fut in self._waiters:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_fail, fut)
        self._waiters = []

    def _commit(self, rows: list[OutboxRow], created: list[float], marks: list[int],
                retained: dict[str, tuple[str, bytes, float]],
                kv: dict[str, tuple[str, float]], payload_bytes: int = -1) -> Committed | None:
        """One transaction; ``payload_bytes``: the rows' payload size, if the caller
        has it (the writer sums it once per batch for the memory bound)."""
        conn = self._wconn
        assert conn is not None
        durable = any(r.durable for r in rows)
        t0 = time.perf_counter()
        with self._writer_lock:
            conn.execute("BEGIN IMMEDIATE")
            try:
                first_id = last_id = None
                pending_rows = 0
                marked = 0
                per_stream: dict[tuple[str, str], list[int]] = {}
                if rows:
                    first_id = self._last_id + 1
                    conn.executemany(
                        "INSERT INTO messages (id, press, stream, seq, topic, payload, created, "
                        "delivered) VALUES (?,?,?,?,?,?,?,?)",
                        [(first_id + i, r.press, r.stream, r.seq, r.topic, r.payload, ts,
                          ts if r.delivered else None)
                         for i, (r, ts) in enumerate(zip(rows, created, strict=True))])
                    last_id = first_id + len(rows) - 1
                    for r in rows:
                        acc = per_stream.get((r.press, r.stream))
                        if acc is None:
                            per_stream[(r.press, r.stream)] = [r.seq, 1]
                        else:
                            acc[0] = max(acc[0], r.seq)
                            acc[1] += 1
                        if not r.delivered:
                            pending_rows += 1
                    conn.executemany(
                        "INSERT INTO streams (press, stream, last_seq, rows) VALUES (?,?,?,?) "
                        "ON CONFLICT (press, stream) DO UPDATE SET "
                        "last_seq = max(last_seq, excluded.last_seq), rows = rows + excluded.rows",
                        [(p, s, v[0], v[1]) for (p, s), v in per_stream.items()])
                if marks:
                    now = time.time()
                    cur = conn.executemany(
                        "UPDATE messages SET delivered = ? WHERE id BETWEEN ? AND ? "
                        "AND delivered IS NULL", [(now, lo, hi) for lo, hi in _ranges(marks)])
                    marked = max(0, cur.rowcount)
                if rows or marked:
                    conn.executemany("UPDATE counters SET value = value + ? WHERE name = ?",
                                     [(len(rows), "rows"), (pending_rows - marked, "pending")])
                if retained:
                    conn.executemany(
                        "INSERT INTO retained (press, topic, payload, updated) VALUES (?,?,?,?) "
                        "ON CONFLICT (press) DO UPDATE SET topic=excluded.topic, "
                        "payload=excluded.payload, updated=excluded.updated",
                        [(p, t, pl, ts) for p, (t, pl, ts) in retained.items()])
                if kv:
                    conn.executemany(
                        "INSERT INTO kv (key, value, updated) VALUES (?,?,?) "
                        "ON CONFLICT (key) DO UPDATE SET value=excluded.value, "
                        "updated=excluded.updated",
                        [(k, v, ts) for k, (v, ts) in kv.items()])
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:  # SQLite may have rolled back already (SQLITE_FULL)
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                raise
        # committed (not yet visible): ids and seqs are taken
        if last_id is not None:
            self._last_id = last_id
            seqs = self._committed_seqs
            for (p, st_name), (top, _) in per_stream.items():
                if top > seqs.get((p, st_name), 0):
                    seqs[(p, st_name)] = top
        # durable before visible: anything that can leave the machine is synced first
        synced = bool(durable or pending_rows or retained or kv)
        if synced:
            self._sync()
        # mirror in memory: from here the publisher may see it
        with self._lock:
            if synced or self._visible_id == 0:
                self._visible_id = self._last_id
            self._pending_committed += pending_rows - marked
            for p, (t, pl, _) in retained.items():
                self._retained[p] = (t, pl)
            st = self._stats
            st["commits"] += 1
            st["commits_full"] += int(synced)
            st["rows_written"] += len(rows)
        if rows:
            self._note_written(payload_bytes if payload_bytes >= 0
                               else sum(len(r.payload) for r in rows))
            st["marks_written"] += marked
            st["last_commit_ms"] = round((time.perf_counter() - t0) * 1000, 3)
        if rows or retained:
            fresh = ()
            if pending_rows and first_id is not None and self._listeners:
                fresh = tuple([(first_id + i, r.stream, r.topic, r.payload)
                               for i, r in enumerate(rows) if not r.delivered])
            return Committed(first_id, last_id, pending_rows, tuple(retained), durable, fresh)
        return None

    def _exec_in_writer(self, sql: str) -> list[Any]:
        """Run one statement on the writer's connection between transactions (tests and
        diagnostics: e.g. ``PRAGMA max_page_count`` to simulate a full disk)."""
        assert self._wconn is not None
        with self._writer_lock:
            return self._wconn.execute(sql).fetchall()


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


def _fail(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_exception(RuntimeError("outbox closed before the flush completed"))
