"""Durable before visible, and the WAL checkpoints (split out of :mod:`buffer.store`).

After a commit that holds anything that can leave the machine, :meth:`SyncMixin._sync`
``fdatasync``-s the WAL and, at the same time on the ``outbox-marks`` thread, writes and
syncs the seq mark file (:mod:`buffer.seqmark`); only then does the writer make the rows
visible. Checkpoints (WAL -> main file) run PASSIVE on a thread of their own with their
own connection, never inside the writer's commit: a checkpoint copies pages into the main
file and syncs it, which costs more as the file grows (measured: commits on a 50M-reading
buffer at 0.75x the 1M rate with SQLite's autocheckpoint, 1.0x without).
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time

from buffer.outbox_state import MarksJob, OutboxState

log = logging.getLogger("buffer.store")

BACKOFF_MIN_S = 0.05
BACKOFF_MAX_S = 5.0
# A checkpoint is triggered after this many payload bytes committed, or this often while
# anything was written.
CHECKPOINT_BYTES = 4 << 20
CHECKPOINT_INTERVAL_S = 1.0


class SyncMixin(OutboxState):
    """The writer's durability half: WAL fdatasync, seq marks, checkpoints."""

    def _note_written(self, payload_bytes: int) -> None:
        """Rows were committed (writer thread): the checkpointer has work; wake it early
        once ``CHECKPOINT_BYTES`` of payload piled up."""
        self._ckpt_dirty = True
        self._ckpt_bytes += payload_bytes
        if self._ckpt_bytes >= CHECKPOINT_BYTES:
            self._ckpt_bytes = 0
            self._ckpt_wake.set()

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

    def _marks_start(self) -> MarksJob | None:
        """Hand the seq mark write to the marks thread (started on first use)."""
        if self._seqmark is None:
            return None
        if self._marks_thread is None:
            self._marks_thread = threading.Thread(target=self._marks_worker,
                                                  name="outbox-marks", daemon=True)
            self._marks_thread.start()
        done = threading.Lock()
        done.acquire()  # released by the marks thread when the write is on disk
        job: MarksJob = (done, [])
        self._marks_jobs.put((self._last_id, dict(self._committed_seqs), job))
        return job

    @staticmethod
    def _marks_wait(job: MarksJob | None) -> None:
        if job is None:
            return
        job[0].acquire()
        if job[1]:
            raise job[1][0]

    def _marks_worker(self) -> None:
        while True:
            item = self._marks_jobs.get()
            if item is None:
                return
            last_id, seqs, (done, errors) = item
            try:
                assert self._seqmark is not None
                self._seqmark.write(last_id, seqs)
            except BaseException as exc:  # handed back to the writer
                errors.append(exc)
            done.release()

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
