"""Reading one stream of the buffer page by page, beside a running daemon.

What the exports (``press-collector export qdas|csv``) stand on: they must read a buffer
of millions of rows while the daemon keeps writing it, in memory that does not grow with
the file. So:

- the file is opened read-only through a URI (``mode=ro``): nothing the reader does can
  change the buffer, and WAL lets it see the last committed state while the writer goes
  on (the file is checked first, like ``buffer stats``: a foreign or damaged file is
  refused with :class:`buffer.store.BufferFileError`);
- rows are read by keyset pages over the ``(press, stream, seq)`` index: each page is one
  short read transaction (``seq > last LIMIT n``), so the reader never holds a snapshot
  open for minutes (a long reader would keep the daemon's WAL from being checkpointed
  and the -wal file would grow) and never walks the telemetry rows of other streams;
- at most one page per press is in memory at a time.

Built on sqlite-utils (``Database.query``), like ``buffer export``; the daemon never
imports it. Knows nothing of the payloads: bytes in, bytes out (the message contract is
the collector's business).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

from buffer.store import BufferFileError, Outbox

PAGE_ROWS = 500


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True,
                           isolation_level=None)
    conn.execute("PRAGMA busy_timeout=5000")
    conn.execute("PRAGMA cache_size=-4096")  # 4 MiB: pages stream by, nothing to keep
    return conn


def check_buffer(path: Path) -> None:
    """Refuse at once what is not a press-collector buffer (BufferFileError)."""
    Outbox.open(path, readonly=True).close()


def stream_presses(path: Path, stream: str) -> list[str]:
    """Presses that have rows in ``stream`` (from the small ``streams`` table)."""
    import sqlite_utils

    check_buffer(path)
    conn = _connect(path)
    try:
        db = sqlite_utils.Database(conn, execute_plugins=False)
        return [r["press"] for r in db.query(
            "SELECT press FROM streams WHERE stream = :s ORDER BY press", {"s": stream})]
    finally:
        conn.close()


def read_stream(path: Path, press: str, stream: str, after_seq: int = 0,
                page_rows: int = PAGE_ROWS) -> Iterator[tuple[int, bytes]]:
    """``(seq, payload)`` of one press's stream in seq order, read ``page_rows`` at a time.

    Each page is its own read transaction: rows committed while the reader runs are seen
    by the later pages (the export is a consistent read of every row committed before it
    reached them, never of a half-written batch: the writer commits whole batches)."""
    import sqlite_utils

    conn = _connect(path)
    try:
        db = sqlite_utils.Database(conn, execute_plugins=False)
        last = after_seq
        while True:
            page = [(int(r["seq"]), bytes(r["payload"])) for r in db.query(
                "SELECT seq, payload FROM messages INDEXED BY messages_stream_seq "
                "WHERE press = :press AND stream = :stream AND seq > :last "
                "ORDER BY seq LIMIT :n",
                {"press": press, "stream": stream, "last": last, "n": page_rows})]
            if not page:
                return
            yield from page
            last = page[-1][0]
            if len(page) < page_rows:
                return
    finally:
        conn.close()


__all__ = ["PAGE_ROWS", "BufferFileError", "check_buffer", "read_stream", "stream_presses"]


def read_range(path: Path, press: str, stream: str, first_seq: int, last_seq: int
               ) -> list[tuple[int, bytes]]:
    """``(seq, payload)`` of one press's stream from ``first_seq`` to ``last_seq``, in seq
    order, in one short read transaction. Plain ``sqlite3``: the daemon's line-side screen
    reads its recent history with it at start, and the daemon never imports sqlite-utils."""
    conn = _connect(path)
    try:
        return [(int(seq), bytes(payload)) for seq, payload in conn.execute(
            "SELECT seq, payload FROM messages INDEXED BY messages_stream_seq "
            "WHERE press = ? AND stream = ? AND seq BETWEEN ? AND ? ORDER BY seq",
            (press, stream, first_seq, last_seq))]
    finally:
        conn.close()
