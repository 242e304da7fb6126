"""SQLite store-and-forward outbox and local history.

`buffer` knows durability and nothing of MQTT: a row's topic and payload are opaque.

Hot path
--------
``next_seq`` and ``add`` are in-memory operations under one lock (no I/O), so a press
task never waits for the disk. A single writer thread owns the write connection and
commits everything queued since its last commit in *one* transaction (``executemany``),
at most ``commit_interval_s`` after the first queued item (group commit):

- the transaction itself runs with ``synchronous=NORMAL``; a commit that holds anything
  that can leave the machine (a row to publish, retained state, a ``durable`` row, a
  workflow snapshot) is then made durable before anyone is told (:meth:`_sync`): the
  WAL is ``fdatasync``-ed, then the seq mark file (:mod:`buffer.seqmark`) records the
  highest id and seq per stream and is ``fdatasync``-ed. Only then do the rows become
  visible: the publisher's reads (:meth:`pending` & co., :attr:`last_id`) never pass
  ``_visible_id``, flush waiters and listeners are released. So a row that left the
  machine is on disk (a power cut cannot take it back), and if the file is damaged
  anyway the mark file tells the next start which seqs are taken (group fsync: one per
  commit window, the queue grows in memory meanwhile). Commits of delivery marks or of
  history rows alone are not synced (a lost mark only means a resend);
- after a commit, listeners get a :class:`Committed` (id range, retained presses) —
  the publisher never sees uncommitted or unsynced rows (outbox pattern);
- ``mark_delivered`` is queued the same way and applied in the writer's next
  transaction (ids are folded into ranges: ``UPDATE .. WHERE id BETWEEN``).

Nothing scans the messages table, at start-up or at run time: sequence high-water marks
and counters live in small tables updated in the same transaction as the rows they
count; pending rows are found through a partial index (``delivered IS NULL``); prune
walks the oldest ids in bounded chunks.

Errors: a failing commit (disk full, read-only file, I/O error) rolls back, keeps the
batch in memory (in order), logs once per distinct error and retries with capped
exponential backoff; committed rows are never touched. ``stats()['write_errors']``
counts failures. The writer thread never dies of a database error.

Memory bound: while the disk stays full the queued batch grows. When its payload bytes
pass ``max_queued_bytes``, the oldest queued rows of the ``sheddable`` streams
(telemetry) are dropped until it is 10 % under the bound; quality events and history
rows are never dropped, so memory then grows only with the event rate. Dropped rows are
counted (``stats()['telemetry_shed']``), the first drop of an episode is logged, and the
episode's total is logged when commits work again; their seq numbers stay taken (a
visible gap in the telemetry stream, never in events).

Schema (``PRAGMA application_id`` = 0x50435342 'PCSB', ``PRAGMA user_version`` =
``SCHEMA_VERSION``): see ``_SCHEMA``. A file that is not ours (not SQLite, or SQLite with
another application id / foreign tables), an empty one (0 bytes, or SQLite with no
tables) and a damaged one (:mod:`buffer.check` at start) is refused with
:class:`BufferFileError` and left untouched. A new buffer is built under a temporary
name and renamed into place, so a half-created file never takes the buffer's name.

At start the buffer's high-water marks are compared with the seq mark file: a buffer
rolled back below what was published (damaged WAL, writes lost by the disk) is logged,
reported in :attr:`Outbox.rollback`, and its marks raised to the mark file's, so those
seqs are never issued again.

Layout (one job per module, all assembled into :class:`Outbox` here): the file, its
schema and its refusals (:mod:`buffer.outbox_file`), the plain values
(:mod:`buffer.outbox_types`), the shared fields (:mod:`buffer.outbox_state`), the writer
thread and the memory bound (:mod:`buffer.outbox_writer`), durability and checkpoints
(:mod:`buffer.outbox_sync`), reads (:mod:`buffer.outbox_reads`), prune and the size bound
(:mod:`buffer.outbox_bounds`). This module keeps opening, closing and the hot path, and
re-exports the public names (``from buffer.store import Outbox, OutboxRow, ...``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from buffer.files import private_dir, private_file
from buffer.outbox_bounds import PRUNE_CHUNK, BoundsMixin
from buffer.outbox_file import (
    _SCHEMA,
    _TABLES,
    APPLICATION_ID,
    RESET_HINT,
    SCHEMA_VERSION,
    BufferFileError,
    _check_ours,
    _create_new,
    create_schema,
)
from buffer.outbox_reads import ReadsMixin
from buffer.outbox_state import MAX_QUEUED_BYTES
from buffer.outbox_sync import (
    BACKOFF_MAX_S,
    BACKOFF_MIN_S,
    CHECKPOINT_BYTES,
    CHECKPOINT_INTERVAL_S,
)
from buffer.outbox_types import Committed, Listener, LostSeqs, OutboxRow, SizeReport
from buffer.outbox_writer import MARK_INTERVAL_S, MAX_COMMIT_ROWS, WriterMixin
from buffer.seqmark import SeqMarkError, SeqMarks, mark_path
from buffer.streams import NO_POLICIES, Streams

__all__ = [
    "APPLICATION_ID", "BACKOFF_MAX_S", "BACKOFF_MIN_S", "CHECKPOINT_BYTES",
    "CHECKPOINT_INTERVAL_S", "CLOSE_TIMEOUT_S", "MARK_INTERVAL_S", "MAX_COMMIT_ROWS",
    "MAX_QUEUED_BYTES", "PRUNE_CHUNK", "RESET_HINT", "SCHEMA_VERSION", "START_CHECK_S",
    "_SCHEMA", "_TABLES", "BufferFileError", "Committed", "Listener", "LostSeqs", "Outbox",
    "OutboxRow", "SizeReport", "_check_ours",
]

log = logging.getLogger(__name__)

# The start check of an existing buffer (:mod:`buffer.check`) stops after this long; what
# it has not reached by then is left to `press-collector buffer check`.
START_CHECK_S = 20.0
# `close()` gives up on a batch that cannot be written (disk full) after this long.
CLOSE_TIMEOUT_S = 5.0


class Outbox(WriterMixin, ReadsMixin, BoundsMixin):
    """SQLite WAL outbox + history. Create with :meth:`Outbox.open`."""

    # ------------------------------------------------------------------ open/close
    @classmethod
    def open(cls, path: str | os.PathLike[str], commit_interval_s: float = 0.05, *,
             readonly: bool = False, cache_mb: int = 4,
             max_queued_bytes: int = MAX_QUEUED_BYTES,
             check_budget_s: float | None = START_CHECK_S,
             streams: Streams = NO_POLICIES) -> Outbox:
        """Open (or create) the buffer at ``path``; refuse a file that is not ours, empty
        or damaged (``check_budget_s``: time bound of the start check, None = whole file).

        Read-write: takes the seq mark file's lock first (one process per buffer), checks
        the file, compares it with the marks (rollback detection), then starts the writer."""
        path = Path(path)
        self = cls(path, commit_interval_s, readonly, cache_mb, max_queued_bytes, streams)
        if readonly:
            if not path.exists():
                raise BufferFileError(f"{path}: no such buffer file")
            if _check_ours(path):
                raise BufferFileError(f"{path}: empty file, not a buffer")
            self._rconn = self._connect(readonly=True)
            self._load_state()
            self._visible_id = self._last_id
            return self
        private_dir(path.parent)  # 0700 whatever the umask (buffer/files.py)
        try:
            marks = SeqMarks.open(mark_path(path))
        except SeqMarkError as exc:
            raise BufferFileError(str(exc)) from exc
        try:
            new = _check_ours(path)
            if not new:
                from buffer.check import integrity

                report = integrity(path, check_budget_s)
                if report.problems:
                    raise BufferFileError(report.refusal())
                if not report.complete:
                    log.warning("%s: start check stopped after %.0f s (%s); the rest of the "
                                "file is checked by `press-collector buffer check`", path,
                                report.seconds, report.reached)
            else:
                _create_new(path, marks)
            self._seqmark = marks
            self._wconn = self._connect(readonly=False)
            self._rconn = self._connect(readonly=False)
            self._rconn.execute(f"PRAGMA cache_size=-{self._cache_kib // 4}")
            self._load_state()
            self._reconcile(marks)
            marks.ensure_allocated()
        except BaseException:
            if marks.state == "missing" and os.fstat(marks._fd).st_size == 0:
                with contextlib.suppress(OSError):  # created just now for a refused file
                    os.unlink(marks.path)
            marks.close()
            for conn in (self._wconn, self._rconn):
                if conn is not None:
                    conn.close()
            raise
        self._visible_id = self._last_id
        self._thread = threading.Thread(target=self._writer, name="outbox-writer",
                                        daemon=True)
        self._thread.start()
        self._ckpt_thread = threading.Thread(target=self._checkpointer,
                                             name="outbox-checkpoint", daemon=True)
        self._ckpt_thread.start()
        return self

    def _connect(self, readonly: bool) -> sqlite3.Connection:
        if readonly:
            conn = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True,
                                   isolation_level=None, check_same_thread=False)
        else:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            private_file(self.path)  # 0600 before WAL mode: -wal and -shm inherit it
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA wal_autocheckpoint=0")  # see CHECKPOINT_BYTES
        conn.execute("PRAGMA busy_timeout=5000")
        conn.execute(f"PRAGMA cache_size=-{self._cache_kib // 2}")
        # A transaction bigger than the cache (a backlog's chunk of MAX_COMMIT_ROWS) keeps
        # its dirty pages instead of spilling them into the WAL mid-transaction, where
        # they are written again at the commit: with a 2 MiB writer cache, spills made
        # 160k readings/s fall behind (p99 0.74 s vs 8 ms, bench/README.md "Ceiling commands").
        # The cache returns to its size once the commit has made the pages clean.
        conn.execute("PRAGMA cache_spill=OFF")
        return conn

    _create_schema = staticmethod(create_schema)  # buffer/tools.py builds copies

    def _load_state(self) -> None:
        assert self._rconn is not None
        c = self._rconn
        counters = dict(c.execute("SELECT name, value FROM counters").fetchall())
        self._pending_committed = int(counters.get("pending", 0))
        # ids continue above `id_floor` (set when a buffer starts above the seq marks)
        self._last_id = max(c.execute("SELECT max(id) FROM messages").fetchone()[0] or 0,
                            int(counters.get("id_floor", 0)))
        self._committed_seqs = {(p, st): int(n) for p, st, n in c.execute(
            "SELECT press, stream, last_seq FROM streams")}
        self._retained = {p: (t, bytes(pl)) for p, t, pl in
                          c.execute("SELECT press, topic, payload FROM retained")}

    def _reconcile(self, marks: SeqMarks) -> None:
        """Compare the buffer with the seq mark file (read-write open, before the writer
        runs): seqs the marks hold and the buffer does not were taken (published, then
        lost by a damaged WAL or a disk that dropped writes; or never written at a stop
        on a full disk). Log them, raise the buffer's marks (one synced transaction), so
        they are never issued again, and keep them in :attr:`rollback`."""
        if marks.state == "damaged":
            log.error("%s: both slots of the seq mark file are damaged; rebuilt from the "
                      "buffer (if the buffer was rolled back too, seqs above its marks may "
                      "be issued again)", marks.path)
        lost = [LostSeqs(p, st, self._committed_seqs.get((p, st), 0) + 1, n)
                for (p, st), n in sorted(marks.seqs.items())
                if n > self._committed_seqs.get((p, st), 0)]
        if lost or marks.last_id > self._last_id:
            log.error("%s: the buffer holds less than the seq mark file %s says was taken "
                      "(damaged or rolled-back WAL, writes lost by the disk, or rows not "
                      "written at a stop on a full disk). These seqs were issued and are "
                      "not in the buffer; they will never be issued again: %s", self.path,
                      marks.path, ", ".join(f"{x.press}/{x.stream} {x.first_seq}..{x.last_seq}"
                                            for x in lost) or "(ids only)")
            conn = self._wconn
            assert conn is not None
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany(
                    "INSERT INTO streams (press, stream, last_seq, rows) VALUES (?,?,?,0) "
                    "ON CONFLICT (press, stream) DO UPDATE SET "
                    "last_seq = max(last_seq, excluded.last_seq)",
                    [(x.press, x.stream, x.last_seq) for x in lost])
                conn.execute("INSERT INTO counters (name, value) VALUES ('id_floor', ?) "
                             "ON CONFLICT (name) DO UPDATE SET value = max(value, excluded.value)",
                             (marks.last_id,))
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            finally:
                conn.execute("PRAGMA synchronous=NORMAL")
            self.rollback = lost
            for x in lost:
                self._committed_seqs[(x.press, x.stream)] = x.last_seq
            self._last_id = max(self._last_id, marks.last_id)
        merged = {**marks.seqs, **self._committed_seqs}
        if marks.state != "ok" or merged != marks.seqs or marks.last_id != self._last_id:
            marks.write(self._last_id, merged)

    def close(self, timeout: float | None = CLOSE_TIMEOUT_S) -> None:
        """Commit everything queued, stop the writer, close the file. If the buffer cannot
        be written (disk full), give up after ``timeout`` seconds: the log says what was
        not written, and the seq mark file takes those seqs (a visible gap, never reused)."""
        if self._thread is not None:
            with self._cond:
                self._closing = True
                self._close_deadline = None if timeout is None else time.monotonic() + timeout
                self._flush_now = True
                self._cond.notify_all()
            self._thread.join()
            self._thread = None
        if self._ckpt_thread is not None:
            self._ckpt_wake.set()
            self._ckpt_thread.join()
            self._ckpt_thread = None
        if self._marks_thread is not None:
            self._marks_jobs.put(None)
            self._marks_thread.join()
            self._marks_thread = None
        for conn in (self._wconn, self._rconn):
            if conn is not None:
                with contextlib.suppress(sqlite3.Error):
                    conn.close()
        self._wconn = self._rconn = None
        if self._seqmark is not None:
            self._seqmark.close()
            self._seqmark = None

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ hot path
    def next_seq(self, press: str, stream: str) -> int:
        """Next sequence number of (press, stream): monotonic across restarts."""
        key = (press, stream)
        with self._lock:
            last = self._seq.get(key)
            if last is None:
                last = self._committed_last_seq(press, stream)
            last += 1
            self._seq[key] = last
            return last

    def last_seq(self, press: str, stream: str) -> int:
        """The last seq handed out for (press, stream) (0: none); does not take one."""
        with self._lock:
            last = self._seq.get((press, stream))
        return self._committed_last_seq(press, stream) if last is None else last

    def _committed_last_seq(self, press: str, stream: str) -> int:
        with self._read_lock:
            assert self._rconn is not None
            row = self._rconn.execute(
                "SELECT last_seq FROM streams WHERE press=? AND stream=?",
                (press, stream)).fetchone()
        return int(row[0]) if row else 0

    def add(self, row: OutboxRow) -> None:
        """Queue one row for the next group commit (cheap, thread-safe)."""
        self._check_writable()
        now = time.time()
        with self._lock:  # the Condition's own lock: one C-level call, no wrapper
            self._rows.append(row)
            self._created.append(now)
            self._queued_bytes += len(row.payload)
            self._queued(1)
            if self._queued_bytes > self._shed_at:
                self._shed_locked()

    def add_many(self, rows: Sequence[OutboxRow]) -> None:
        self._check_writable()
        if not rows:
            return
        now = time.time()
        with self._cond:
            self._rows.extend(rows)
            self._created.extend([now] * len(rows))
            self._queued_bytes += sum(len(r.payload) for r in rows)
            self._queued(len(rows))
            if self._queued_bytes > self._shed_at:
                self._shed_locked()

    def put_retained(self, press: str, topic: str, payload: bytes) -> None:
        """Latest retained state of a press (coalesced: only the last value is written)."""
        self._check_writable()
        with self._cond:
            self._retained_q[press] = (topic, payload, time.time())
            self._queued(1)

    def put_kv(self, key: str, value: Any) -> None:
        """Snapshot (JSON-able value) stored under ``key`` (coalesced)."""
        self._check_writable()
        text = json.dumps(value, separators=(",", ":"))
        with self._cond:
            self._kv_q[key] = (text, time.time())
            self._queued(1)

    def mark_delivered(self, ids: Iterable[int]) -> None:
        """Mark rows delivered (applied in the writer's next transaction)."""
        ids = list(ids)
        if not ids:
            return
        self._check_writable()
        with self._lock:
            self._marks.extend(ids)
            self._queued(len(ids), lazy=True)

    def write_health(self) -> dict[str, Any]:
        """In-memory writer figures, no I/O (the daemon reads them every second)."""
        with self._lock:
            return {"failing": self._failing, "write_errors": self._stats["write_errors"],
                    "last_write_error": self._stats["last_write_error"],
                    "telemetry_shed": self._stats["telemetry_shed"],
                    "queued_rows": len(self._rows), "queued_bytes": self._queued_bytes,
                    "checkpoint_failing": self._ckpt_error is not None,
                    "checkpoint_error": self._ckpt_error}

    # ------------------------------------------------------------------ flush
    def flush_sync(self, timeout: float | None = None) -> bool:
        """Block until everything queued so far is committed; False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            target = self._queued_ops
            self._flush_now = True
            self._cond.notify_all()
            while self._committed_ops < target:
                if self._thread is None:
                    return False
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._cond.wait(remaining)
        return True

    async def flush(self) -> None:
        """Wait until everything queued so far is committed (durable)."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        with self._cond:
            target = self._queued_ops
            if self._committed_ops >= target:
                return
            if self._thread is None:
                raise RuntimeError("outbox writer is not running")
            self._waiters.append((target, loop, fut))
            self._flush_now = True
            self._cond.notify_all()
        await fut

    # ------------------------------------------------------------------ listeners
    def add_listener(self, callback: Listener) -> None:
        """``callback(Committed)`` runs on the writer thread after each commit: keep it
        tiny (e.g. ``loop.call_soon_threadsafe``)."""
        self._listeners.append(callback)

    def remove_listener(self, callback: Listener) -> None:
        with contextlib.suppress(ValueError):
            self._listeners.remove(callback)
