"""The outbox's shared state (split out of :mod:`buffer.store`).

:class:`~buffer.store.Outbox` is assembled from mixins, one job each: the writer thread
and its commit (:mod:`buffer.outbox_writer`), durability before visibility and the WAL
checkpoints (:mod:`buffer.outbox_sync`), the publisher's reads and stats
(:mod:`buffer.outbox_reads`), prune and the size bound (:mod:`buffer.outbox_bounds`). They
all work on the fields defined here; the locking rules are in :mod:`buffer.store`.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path
from queue import SimpleQueue
from typing import Any

from buffer.outbox_file import BufferFileError
from buffer.outbox_types import Listener, LostSeqs, OutboxRow
from buffer.seqmark import SeqMarks
from buffer.streams import NO_POLICIES, Streams

MAX_QUEUED_BYTES = 64 * 1024 * 1024
# One seq mark write handed to the marks thread: a Lock held until the write is done,
# and the error it raised (if any), for the writer to re-raise.
MarksJob = tuple[Any, list[BaseException]]


class OutboxState:
    """Every field of an :class:`~buffer.store.Outbox`, in one place: the locks, the
    memory queue, the committed state mirrored in memory and the threads. The job mixins
    (writer, sync, reads, bounds) subclass it, so each sees the same typed attributes."""

    def __init__(self, path: Path, commit_interval_s: float, readonly: bool,
                 cache_mb: int, max_queued_bytes: int = MAX_QUEUED_BYTES,
                 streams: Streams = NO_POLICIES) -> None:
        self.path = path
        self.max_queued_bytes = max_queued_bytes
        self.streams = streams  # per-stream policies (buffer/streams.py), from the caller
        self.sheddable = frozenset(streams.sheddable())
        self._queued_bytes = 0  # payload bytes of self._rows (guarded by _lock)
        self._shed_at = max_queued_bytes  # next shed check (raised when only events are left)
        self._failing = False  # the last commit failed (the disk is full / unwritable)
        self._shed_episode = 0  # rows shed since the last successful commit
        self.commit_interval_s = commit_interval_s
        self.readonly = readonly
        # page-cache budget, all connections together: writer 1/2, reader 1/4, checkpointer
        # and prune / size-bound passes 1/8 each (SQLite's caches were the daemon's only
        # memory growth; the OS page cache holds the file anyway)
        self._cache_kib = cache_mb * 1024
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        # queued, not yet committed (all guarded by _lock)
        self._rows: list[OutboxRow] = []
        self._created: list[float] = []
        self._marks: list[int] = []
        self._retained_q: dict[str, tuple[str, bytes, float]] = {}
        self._kv_q: dict[str, tuple[str, float]] = {}
        # taken by the writer, not yet committed: get_kv looks here between the two
        self._kv_inflight: dict[str, tuple[str, float]] = {}
        self._queued_ops = 0  # total ops ever queued
        self._committed_ops = 0  # total ops ever committed
        self._first_queued_at: float | None = None
        self._first_mark_at: float | None = None  # marks only: lazy deadline
        self._flush_now = False
        self._closing = False
        self._seq: dict[tuple[str, str], int] = {}
        self._waiters: list[tuple[int, asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self._listeners: list[Listener] = []
        # committed state mirrored in memory
        self._retained: dict[str, tuple[str, bytes]] = {}
        self._pending_committed = 0
        self._last_id = 0
        self._stats: dict[str, Any] = {"commits": 0, "commits_full": 0, "rows_written": 0,
                                       "marks_written": 0, "write_errors": 0,
                                       "last_write_error": None, "last_commit_ms": 0.0,
                                       "telemetry_shed": 0, "checkpoints": 0}
        self._read_lock = threading.Lock()
        self._rconn: sqlite3.Connection | None = None
        self._wconn: sqlite3.Connection | None = None
        self._writer_lock = threading.Lock()  # held by the writer during a transaction
        self._thread: threading.Thread | None = None
        self._ckpt_thread: threading.Thread | None = None
        self._ckpt_wake = threading.Event()
        self._ckpt_bytes = 0  # payload bytes committed since the last checkpoint request
        self._ckpt_dirty = False  # anything written since the last checkpoint
        self._ckpt_error: str | None = None  # the checkpointer's last error (episode)
        # durability before visibility (see the module docstring)
        self._seqmark: SeqMarks | None = None
        self._visible_id = 0  # rows with id <= this are synced and may be published
        self._committed_seqs: dict[tuple[str, str], int] = {}  # per stream, committed
        self._sync_error: str | None = None
        self._close_deadline: float | None = None
        self.rollback: list[LostSeqs] = []  # found at start, for the caller's alarm
        self._marks_thread: threading.Thread | None = None
        # jobs for the marks thread: (last id, seqs, job) or None (stop). A SimpleQueue
        # and a plain Lock per job (released when done): both C-level, no Python
        # Condition per commit (Event.set/wait were ~3 % of the GIL time at 1,000 polls/s)
        self._marks_jobs: SimpleQueue[tuple[int, dict[tuple[str, str], int], MarksJob]
                                      | None] = SimpleQueue()

    def _check_writable(self) -> None:
        if self.readonly:
            raise BufferFileError(f"{self.path}: opened read-only")
        if self._closing:
            raise RuntimeError("outbox is closed")
