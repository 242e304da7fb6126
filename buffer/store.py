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
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from buffer.files import private_dir, private_file
from buffer.seqmark import SeqMarkError, SeqMarks, mark_path
from buffer.streams import NO_POLICIES, Streams

log = logging.getLogger(__name__)

APPLICATION_ID = 0x50435342  # 'PCSB' press-collector store buffer
SCHEMA_VERSION = 1
PRUNE_CHUNK = 5000
BACKOFF_MIN_S = 0.05
BACKOFF_MAX_S = 5.0
# Delivery marks alone wait this long for a commit (they ride along with the next rows
# anyway): a mark lost to a crash only means a resend, so they need not cost a commit of
# their own after every PUBACK burst.
MARK_INTERVAL_S = 0.25
MAX_QUEUED_BYTES = 64 * 1024 * 1024
# Rows per transaction at most: a longer queue (a burst, a stall) is committed in several
# transactions back to back, so that one transaction's dirty pages stay well inside the
# page cache (``cache_mb``). A transaction that outgrows it spills to the WAL and evicts
# the index pages it needs next; measured on a 50M-reading buffer, one 50,000-row
# transaction inserted at 0.85x the rate of the same on a 1M-reading buffer (16 MB cache).
# WAL checkpoints run on a thread of their own (PASSIVE, own connection), not inside the
# writer's commit (SQLite's autocheckpoint): a checkpoint copies pages into the main file
# and syncs it, which costs more as the file grows (measured: commits on a 50M-reading
# buffer at 0.75x the 1M rate with autocheckpoint, 1.0x without). Triggered after this
# many payload bytes committed, or this often while anything was written.
CHECKPOINT_BYTES = 4 << 20
CHECKPOINT_INTERVAL_S = 1.0
MAX_COMMIT_ROWS = int(os.environ.get("PRESS_COLLECTOR_MAX_COMMIT_ROWS", "2000"))
# The start check of an existing buffer (:mod:`buffer.check`) stops after this long; what
# it has not reached by then is left to `press-collector buffer check`.
START_CHECK_S = 20.0
# `close()` gives up on a batch that cannot be written (disk full) after this long.
CLOSE_TIMEOUT_S = 5.0

_SCHEMA = """
CREATE TABLE messages (
    id        INTEGER PRIMARY KEY,
    press     TEXT NOT NULL,
    stream    TEXT NOT NULL,
    seq       INTEGER NOT NULL,
    topic     TEXT NOT NULL,
    payload   BLOB NOT NULL,
    created   REAL NOT NULL,
    delivered REAL
);
CREATE UNIQUE INDEX messages_stream_seq ON messages (press, stream, seq);
CREATE INDEX messages_pending ON messages (id) WHERE delivered IS NULL;
CREATE TABLE streams (
    press    TEXT NOT NULL,
    stream   TEXT NOT NULL,
    last_seq INTEGER NOT NULL,
    rows     INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (press, stream)
) WITHOUT ROWID;
CREATE TABLE counters (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE retained (
    press   TEXT PRIMARY KEY,
    topic   TEXT NOT NULL,
    payload BLOB NOT NULL,
    updated REAL NOT NULL
);
CREATE TABLE kv (
    key     TEXT PRIMARY KEY,
    value   TEXT NOT NULL,
    updated REAL NOT NULL
);
INSERT INTO counters (name, value) VALUES ('pending', 0), ('rows', 0);
"""
_TABLES = {"messages", "streams", "counters", "retained", "kv"}


class BufferFileError(Exception):
    """The buffer file is not a press-collector buffer (or is corrupt / too new)."""


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


Listener = Callable[[Committed], None]


@dataclass(slots=True)
class SizeReport:
    """What :meth:`Outbox.enforce_size` did."""

    used_bytes: int
    max_bytes: int
    history_deleted: int = 0
    telemetry_dropped: int = 0
    quality_only: bool = False  # still over the bound: only undelivered protected rows left


def _ranges(ids: Iterable[int]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for i in sorted(set(ids)):
        if out and out[-1][1] == i - 1:
            out[-1] = (out[-1][0], i)
        else:
            out.append((i, i))
    return out


class Outbox:
    """SQLite WAL outbox + history. Create with :meth:`Outbox.open`."""

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
        self._marks_jobs: deque[tuple[int, dict[tuple[str, str], int],
                                      tuple[threading.Event, list[BaseException]]]] = deque()
        self._marks_wake = threading.Event()

    # ------------------------------------------------------------------ open/close
    @classmethod
    def open(cls, path: str | os.PathLike[str], commit_interval_s: float = 0.05, *,
             readonly: bool = False, cache_mb: int = 16,
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
        return conn

    @staticmethod
    def _create_schema(conn: sqlite3.Connection, seqs: dict[tuple[str, str], int] | None = None,
                       id_floor: int = 0) -> None:
        conn.execute("BEGIN IMMEDIATE")
        try:
            if conn.execute("SELECT count(*) FROM sqlite_schema").fetchone()[0]:
                raise BufferFileError("refusing to initialise a non-empty database")
            for stmt in _SCHEMA.split(";"):
                if stmt.strip():
                    conn.execute(stmt)
            conn.executemany("INSERT INTO streams (press, stream, last_seq) VALUES (?,?,?)",
                             [(p, st, n) for (p, st), n in (seqs or {}).items()])
            if id_floor:
                conn.execute("INSERT INTO counters (name, value) VALUES ('id_floor', ?)",
                             (id_floor,))
            conn.execute(f"PRAGMA application_id={APPLICATION_ID}")
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

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
            self._marks_jobs.append((-1, {}, (threading.Event(), [])))
            self._marks_wake.set()
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
        with self._cond:
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
        with self._cond:
            self._marks.extend(ids)
            self._queued(len(ids), lazy=True)

    def _queued(self, n: int, lazy: bool = False) -> None:  # caller holds _cond
        self._queued_ops += n
        if lazy:
            if self._first_mark_at is None:
                self._first_mark_at = time.monotonic()
                self._cond.notify()
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

    def write_health(self) -> dict[str, Any]:
        """In-memory writer figures, no I/O (the daemon reads them every second)."""
        with self._lock:
            return {"failing": self._failing, "write_errors": self._stats["write_errors"],
                    "last_write_error": self._stats["last_write_error"],
                    "telemetry_shed": self._stats["telemetry_shed"],
                    "queued_rows": len(self._rows), "queued_bytes": self._queued_bytes,
                    "checkpoint_failing": self._ckpt_error is not None,
                    "checkpoint_error": self._ckpt_error}

    def _check_writable(self) -> None:
        if self.readonly:
            raise BufferFileError(f"{self.path}: opened read-only")
        if self._closing:
            raise RuntimeError("outbox is closed")

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

    # ------------------------------------------------------------------ reads
    def pending(self, after_id: int = 0, limit: int = 1000) -> list[tuple[int, str, bytes]]:
        """Committed, undelivered rows with id > after_id, in id order."""
        with self._read_lock:
            assert self._rconn is not None
            return self._rconn.execute(
                "SELECT id, topic, payload FROM messages INDEXED BY messages_pending "
                "WHERE delivered IS NULL AND id > ? AND id <= ? ORDER BY id LIMIT ?",
                (after_id, self._visible_id, limit)).fetchall()

    def pending_lane(self, after_id: int = 0, limit: int = 1000
                     ) -> list[tuple[int, str, str, bytes]]:
        """Like :meth:`pending` with the stream: ``(id, stream, topic, payload)``; the
        publisher's backlog lane sorts rows by stream (live telemetry vs replay)."""
        with self._read_lock:
            assert self._rconn is not None
            return self._rconn.execute(
                "SELECT id, stream, topic, payload FROM messages INDEXED BY messages_pending "
                "WHERE delivered IS NULL AND id > ? AND id <= ? ORDER BY id LIMIT ?",
                (after_id, self._visible_id, limit)).fetchall()

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
        with self._lock:
            queued = self._kv_q.get(key)
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

    # ------------------------------------------------------------------ prune
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

    # ------------------------------------------------------------------ writer
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
                    else:
                        self._cond.wait()
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
                # payload bytes leaving the memory queue with this (possibly chunked) batch
                batch_bytes = sum(len(r.payload) for r in rows)
                self._queued_bytes = max(0, self._queued_bytes - batch_bytes)
                self._shed_at = self.max_queued_bytes
                self._first_mark_at = None
            try:
                info = self._commit(rows, created, marks, retained, kv)
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
                kv: dict[str, tuple[str, float]]) -> Committed | None:
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
            self._ckpt_dirty = True
            self._ckpt_bytes += sum(len(r.payload) for r in rows)
            if self._ckpt_bytes >= CHECKPOINT_BYTES:
                self._ckpt_bytes = 0
                self._ckpt_wake.set()
            st["marks_written"] += marked
            st["last_commit_ms"] = round((time.perf_counter() - t0) * 1000, 3)
        if rows or retained:
            return Committed(first_id, last_id, pending_rows, tuple(retained), durable)
        return None

    def _sync(self) -> None:
        """Make everything committed so far durable and record the marks, both before the
        rows become visible: ``fdatasync`` of the WAL (every commit is in it; the main file
        changes only at checkpoints, which sync it) on this thread, and the seq mark file
        on the ``outbox-marks`` thread at the same time (two fdatasyncs in parallel cost
        about one: the file system commits them together). Their order does not matter:
        marks on disk without the rows (a cut between the two) only report seqs that were
        never published as lost. Retried with backoff until it works (or the close
        deadline passes): the rows stay invisible meanwhile. After a failed fdatasync
        Linux may have dropped the dirty pages, so a later success does not prove the
        rows reached the disk; the mark file still keeps their seqs from being issued
        again."""
        backoff = BACKOFF_MIN_S
        while True:
            t0 = time.perf_counter()
            try:
                marks = self._marks_start()
                try:
                    self._fsync_file(f"{self.path}-wal")
                finally:
                    self._marks_wait(marks)
            except OSError as exc:
                with self._cond:
                    self._stats["write_errors"] += 1
                    self._stats["last_write_error"] = f"sync: {exc}"
                    self._failing = True
                    if str(exc) != self._sync_error:
                        self._sync_error = str(exc)
                        log.error("buffer sync failed (%s): the last commit stays unpublished "
                                  "until it works; retrying with backoff", exc)
                    if self._closing and self._past_close_deadline():
                        log.error("buffer: closing with the last commit not synced (%s)", exc)
                        return
                    self._cond.wait(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX_S)
                continue
            if self._sync_error is not None:
                log.warning("buffer sync works again after error: %s", self._sync_error)
                self._sync_error = None
            ms = (time.perf_counter() - t0) * 1000
            st = self._stats
            st["last_sync_ms"] = round(ms, 3)
            st["sync_ms_total"] = round(st.get("sync_ms_total", 0.0) + ms, 3)
            return

    def _marks_start(self) -> tuple[threading.Event, list[BaseException]] | None:
        """Hand the seq mark write to the marks thread (started on first use)."""
        if self._seqmark is None:
            return None
        if self._marks_thread is None:
            self._marks_thread = threading.Thread(target=self._marks_worker,
                                                  name="outbox-marks", daemon=True)
            self._marks_thread.start()
        job = (threading.Event(), [])
        self._marks_jobs.append((self._last_id, dict(self._committed_seqs), job))
        self._marks_wake.set()
        return job

    @staticmethod
    def _marks_wait(job: tuple[threading.Event, list[BaseException]] | None) -> None:
        if job is None:
            return
        job[0].wait()
        if job[1]:
            raise job[1][0]

    def _marks_worker(self) -> None:
        while True:
            self._marks_wake.wait()
            self._marks_wake.clear()
            while self._marks_jobs:
                last_id, seqs, (done, errors) = self._marks_jobs.popleft()
                if last_id < 0:
                    return
                try:
                    assert self._seqmark is not None
                    self._seqmark.write(last_id, seqs)
                except BaseException as exc:  # handed back to the writer
                    errors.append(exc)
                done.set()

    @staticmethod
    def _fsync_file(name: str) -> None:
        """fdatasync one file by name (a fresh descriptor: always the current inode)."""
        try:
            fd = os.open(name, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return  # no WAL (not in WAL mode yet): nothing of ours to sync
        try:
            os.fdatasync(fd)
        finally:
            os.close(fd)

    def _past_close_deadline(self) -> bool:
        deadline = self._close_deadline
        return deadline is not None and time.monotonic() >= deadline

    def _checkpointer(self) -> None:
        """WAL -> main file, off the commit path (PASSIVE: never blocks the writer).

        Survives any error of its own: the WAL stays valid, so a failed checkpoint is
        retried at the next wake (the WAL grows meanwhile). Logged once per episode,
        visible in :meth:`write_health` (``checkpoint_failing``) for the daemon's alarm."""
        conn: sqlite3.Connection | None = None
        try:
            while True:
                self._ckpt_wake.wait(CHECKPOINT_INTERVAL_S)
                self._ckpt_wake.clear()
                closing = self._thread is None or self._closing
                if self._ckpt_dirty:
                    self._ckpt_dirty = False
                    try:
                        if conn is None:
                            conn = sqlite3.connect(self.path, isolation_level=None,
                                                   check_same_thread=False)
                            conn.execute("PRAGMA busy_timeout=5000")
                            conn.execute(f"PRAGMA cache_size=-{self._cache_kib // 8}")
                        conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                        with self._lock:
                            self._stats["checkpoints"] += 1
                        if self._ckpt_error is not None:
                            log.warning("buffer checkpoint works again after error: %s",
                                        self._ckpt_error)
                            self._ckpt_error = None
                    except Exception as exc:  # the thread must live on
                        self._ckpt_dirty = True  # try again at the next wake
                        with self._lock:
                            self._stats["checkpoint_errors"] = \
                                self._stats.get("checkpoint_errors", 0) + 1
                        if str(exc) != self._ckpt_error:
                            log.error("buffer checkpoint failed (%s); the WAL keeps the rows "
                                      "and grows until it works; retrying", exc)
                        self._ckpt_error = str(exc)
                if closing:
                    return
        finally:
            if conn is not None:
                conn.close()

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


RESET_HINT = ("`press-collector buffer reset {path}` archives it and starts a fresh buffer "
              "whose seqs continue above everything published (seq mark file)")


def _check_ours(path: Path) -> bool:
    """True if ``path`` is absent (create a new buffer); ours -> False; else raise.

    Opened read-only through a URI, so a foreign file is never modified (no WAL switch,
    no journal, no schema). An empty file (0 bytes, or SQLite without tables) is refused
    too: a buffer is created under a temporary name and renamed into place, so an empty
    file under the buffer's name is never a half-created buffer of ours but a truncated
    one (or someone's placeholder); taking it as new would restart every seq at 1."""
    if not path.exists():
        return True
    if path.is_dir():
        raise BufferFileError(f"{path}: is a directory, not a buffer file")
    if path.stat().st_size == 0:
        raise BufferFileError(f"{path}: empty file (0 bytes), not a buffer; refusing to take "
                              "it as a new buffer (its seqs would restart at 1). "
                              + RESET_HINT.format(path=path))
    with open(path, "rb") as fh:
        header = fh.read(16)
    if header != b"SQLite format 3\x00":
        raise BufferFileError(f"{path}: not an SQLite file; refusing to use or overwrite it")
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            app_id = conn.execute("PRAGMA application_id").fetchone()[0]
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            tables = {r[0] for r in conn.execute(
                "SELECT name FROM sqlite_schema WHERE type='table'")}
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        raise BufferFileError(f"{path}: unreadable SQLite file ({exc}); refusing to use it") \
            from exc
    if app_id == 0 and not tables:
        raise BufferFileError(f"{path}: SQLite file without tables, not a buffer; refusing "
                              "to take it as a new buffer (its seqs would restart at 1). "
                              + RESET_HINT.format(path=path))
    if app_id != APPLICATION_ID:
        raise BufferFileError(
            f"{path}: SQLite file of another application (application_id={app_id:#x}, "
            f"tables: {', '.join(sorted(tables)) or 'none'}); refusing to use or overwrite it")
    if version > SCHEMA_VERSION:
        raise BufferFileError(f"{path}: buffer schema version {version} is newer than this "
                              f"program's ({SCHEMA_VERSION})")
    if version < 1 or not tables >= _TABLES:
        raise BufferFileError(f"{path}: damaged buffer (schema version {version}, missing "
                              f"tables {sorted(_TABLES - tables)})")
    return False


def _create_new(path: Path, marks: SeqMarks) -> None:
    """A new buffer at ``path``, built under ``<path>.creating`` and renamed into place
    (then the directory is synced): the name never points at a half-made file. Its seqs
    and ids start above the seq mark file's (a buffer that replaces an archived one goes
    on where the old one stopped)."""
    tmp = Path(f"{path}.creating")
    for suffix in ("", "-wal", "-shm", "-journal"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"{tmp}{suffix}")  # left by a start that died while creating
    conn = sqlite3.connect(tmp, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        Outbox._create_schema(conn, marks.seqs, marks.last_id)
    finally:
        conn.close()  # the last connection: checkpointed into the file, WAL removed
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, path)
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
    if marks.seqs or marks.last_id:
        log.warning("%s: new buffer; seqs continue above the seq mark file %s (%d streams)",
                    path, marks.path, len(marks.seqs))
