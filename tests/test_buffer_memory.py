"""The buffer's memory is bounded by ``buffer.cache_mb`` (issue 12, "Memory").

SQLite's page caches were the daemon's only memory growth (bench/README.md, "Memory"):
16 MB per connection, filled as the file grew and never given back. ``cache_mb`` is now
the budget of all the buffer's connections together. Checked with a real file: after
writing and reading back a buffer several times the size of the budget, the memory
SQLite holds (``sqlite3_memory_used``, the library's own counter, read through the
same libsqlite3 that Python's sqlite3 module uses) grew by no more than the budget plus a
small allowance for schema and statements.
"""

from __future__ import annotations

import _sqlite3
import ctypes
import sqlite3
from pathlib import Path

from buffer.store import Outbox, OutboxRow

CACHE_MB = 4
SLACK_MB = 1.5  # schema, prepared statements, lookaside: not page cache


def sqlite_memory_used() -> int:
    lib = ctypes.CDLL(_sqlite3.__file__)  # resolves to the libsqlite3 the module links
    lib.sqlite3_memory_used.restype = ctypes.c_int64
    return int(lib.sqlite3_memory_used())


async def write_rows(outbox: Outbox, count: int, payload: bytes) -> None:
    """``count`` telemetry rows of ``payload`` in one add (one transaction, or chunks of
    ``MAX_COMMIT_ROWS``), committed."""
    rows = []
    for _ in range(count):
        seq = outbox.next_seq("p1", "telemetry")
        rows.append(OutboxRow("p1", "telemetry", seq, "t/p1/telemetry", payload))
    outbox.add_many(rows)
    await outbox.flush()


async def test_page_caches_stay_inside_cache_mb_all_connections_together(tmp_path: Path) -> None:
    before = sqlite_memory_used()
    outbox = Outbox.open(tmp_path / "b.sqlite", commit_interval_s=0.002, cache_mb=CACHE_MB)
    try:
        for _ in range(40):  # 40,000 rows of ~1 kB: a 45 MB file, 10x the budget
            await write_rows(outbox, 1000, b"x" * 1000)
        after_id = 0
        while rows := outbox.pending(after_id, 2000):  # the publisher's reads, all of it
            after_id = rows[-1][0]
        outbox.prune(0.0)  # nothing delivered: walks, deletes nothing
        grown = (sqlite_memory_used() - before) / 2**20
        assert grown <= CACHE_MB + SLACK_MB, f"SQLite holds {grown:.1f} MB more"
        # and each connection got its share of the budget
        assert outbox._exec_in_writer("PRAGMA cache_size") == [(-CACHE_MB * 1024 // 2,)]
        assert outbox.pending_count() == 40_000
    finally:
        outbox.close()
    with sqlite3.connect(tmp_path / "b.sqlite") as conn:
        assert conn.execute("SELECT count(*) FROM messages").fetchone()[0] == 40_000


async def test_a_transaction_bigger_than_the_cache_gives_its_pages_back(tmp_path: Path) -> None:
    """The writer does not spill a big transaction into the WAL (``cache_spill=OFF``: a
    backlog's chunk would be written twice); the pages it held beyond its share are freed
    once the commit made them clean, so the budget holds again after the commit."""
    before = sqlite_memory_used()
    outbox = Outbox.open(tmp_path / "b.sqlite", commit_interval_s=0.002, cache_mb=CACHE_MB)
    try:
        assert outbox._exec_in_writer("PRAGMA cache_spill") == [(0,)]
        for _ in range(3):  # 3 transactions of 2,000 rows x 2 kB: twice the writer's share
            await write_rows(outbox, 2000, b"y" * 2000)
        grown = (sqlite_memory_used() - before) / 2**20
        assert grown <= CACHE_MB + SLACK_MB, f"SQLite holds {grown:.1f} MB more"
        assert outbox.pending_count() == 6_000
    finally:
        outbox.close()
