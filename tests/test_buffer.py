"""buffer.store.Outbox against a real SQLite file: seq, group commit, fsync policy,
pending/delivered, foreign files, prune, failing commits."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path

import pytest

from buffer.store import (
    APPLICATION_ID,
    MAX_COMMIT_ROWS,
    SCHEMA_VERSION,
    BufferFileError,
    Committed,
    Outbox,
    OutboxRow,
)


def row(outbox: Outbox, press: str = "p1", stream: str = "events", payload: bytes = b"{}",
        durable: bool = False, delivered: bool = False) -> OutboxRow:
    seq = outbox.next_seq(press, stream)
    return OutboxRow(press, stream, seq, f"root/{press}/{stream}", payload, durable, delivered)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "buffer.sqlite"


def test_schema_is_recorded_and_file_opens_in_plain_sqlite(db: Path) -> None:
    Outbox.open(db).close()
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_schema WHERE type='table'")}
    assert {"messages", "retained", "kv", "streams", "counters"} <= tables
    plan = conn.execute("EXPLAIN QUERY PLAN SELECT id FROM messages WHERE delivered IS NULL "
                        "AND id > 5 ORDER BY id LIMIT 10").fetchall()
    assert "messages_pending" in str(plan)
    conn.close()


def test_seq_is_monotonic_per_stream_and_across_reopen(db: Path) -> None:
    with Outbox.open(db) as ob:
        assert [ob.next_seq("p1", "events") for _ in range(3)] == [1, 2, 3]
        assert ob.next_seq("p1", "telemetry") == 1
        assert ob.next_seq("p2", "events") == 1
        ob.add_many([OutboxRow("p1", "events", s, "t", b"x") for s in (1, 2, 3)])
        ob.add(OutboxRow("p1", "telemetry", 1, "t", b"x", delivered=True))
    with Outbox.open(db) as ob:
        assert ob.next_seq("p1", "events") == 4  # seq 4 was never committed: reused
        assert ob.next_seq("p1", "telemetry") == 2
        assert ob.next_seq("p2", "events") == 1  # handed out, never committed
        # survives prune of every delivered row too (high-water mark in `streams`)
        ob.add(OutboxRow("p1", "events", 4, "t", b"x", delivered=True))
        ob.add(OutboxRow("p1", "events", 5, "t", b"x", delivered=True))
        ob.mark_delivered([r[0] for r in ob.pending()])
        ob.flush_sync()
        assert ob.prune(0) >= 4
    with Outbox.open(db) as ob:
        assert ob.next_seq("p1", "events") == 6


def test_group_commit_batches_many_rows_in_one_transaction(db: Path) -> None:
    with Outbox.open(db, commit_interval_s=0.2) as ob:
        for i in range(2000):
            ob.add(row(ob, payload=b"%d" % i))
            ob.put_kv("workflow/p1", {"i": i})  # coalesced: the last value is written
            ob.put_retained("p1", "root/p1/state", b"%d" % i)
        ob.flush_sync()
        st = ob.stats()
        assert st["rows_written"] == 2000
        assert st["commits"] <= 2
        assert st["rows"] == 2000 and st["pending"] == 2000
        assert ob.get_kv("workflow/p1") == {"i": 1999}
        assert ob.get_retained("p1") == ("root/p1/state", b"1999")
    with Outbox.open(db) as ob:
        assert ob.get_kv("workflow/p1") == {"i": 1999}
        assert ob.get_kv("nothing", 7) == 7
        assert ob.get_retained_all() == {"p1": ("root/p1/state", b"1999")}


def test_a_long_queue_commits_in_bounded_transactions_in_order(db: Path) -> None:
    """A burst longer than MAX_COMMIT_ROWS goes in several transactions back to back (each
    inside the page cache), in order; a flush returns only when all of them are in."""
    n = MAX_COMMIT_ROWS * 2 + 7
    with Outbox.open(db, commit_interval_s=0.2) as ob:
        assert ob._exec_in_writer("PRAGMA wal_autocheckpoint") == [(0,)]  # checkpointer's job
        rows = [row(ob, stream="telemetry", payload=b"x" * 2000) for _ in range(n)]
        with ob._cond:  # queue everything before the writer may take any of it
            ob._rows.extend(rows)
            ob._created.extend([1.0] * n)
            ob._queued(n)
        ob.flush_sync()
        st = ob.stats()
        assert st["rows_written"] == n and st["commits"] == 3
        assert ob._rconn is not None
        seqs = [s for (s,) in ob._rconn.execute("SELECT seq FROM messages ORDER BY id")]
        assert seqs == list(range(1, n + 1))
    assert ob._stats["checkpoints"] >= 1  # the WAL went to the file on the checkpoint thread
    with Outbox.open(db) as again:
        assert again.stats()["rows"] == n


def test_commits_that_can_leave_the_machine_are_synced_history_and_marks_are_not(
        db: Path) -> None:
    """Sync policy (the ordering itself: tests/test_durability.py): a commit with a row to
    publish (telemetry or event) or a durable row is synced; history rows alone and
    delivery marks alone are not."""
    with Outbox.open(db, commit_interval_s=0.01) as ob:
        ob.add(row(ob, stream="gauge", delivered=True))  # local history only
        ob.flush_sync()
        assert ob.stats()["commits_full"] == 0
        ob.add(row(ob, stream="telemetry"))
        ob.flush_sync()
        assert ob.stats()["commits_full"] == 1
        ob.add(row(ob, durable=True))
        ob.flush_sync()
        assert ob.stats()["commits_full"] == 2
        ob.mark_delivered([r[0] for r in ob.pending()])
        ob.flush_sync()
        assert ob.stats()["commits_full"] == 2 and ob.stats()["pending"] == 0
        assert ob._exec_in_writer("PRAGMA synchronous")[0][0] == 1  # NORMAL + own fsync


def test_pending_in_id_order_and_mark_delivered(db: Path) -> None:
    with Outbox.open(db) as ob:
        rows = []
        for i in range(50):
            press = "p1" if i % 2 else "p2"
            rows.append(row(ob, press=press, payload=b"%d" % i, delivered=(i % 10 == 0)))
        ob.add_many(rows)
        assert ob.pending_count() == 45
        assert ob.pending() == []  # nothing committed yet: the publisher never sees it
        ob.flush_sync()
        pending = ob.pending(0, 1000)
        assert [p[2] for p in pending] == [b"%d" % i for i in range(50) if i % 10]
        ids = [p[0] for p in pending]
        assert ids == sorted(ids)
        assert ob.pending(ids[9], 5) == pending[10:15]
        ob.mark_delivered([*ids[:20], ids[0]])  # a repeated id does no harm
        ob.flush_sync()
        assert ob.pending(0, 1000) == pending[20:]
        assert ob.pending_count() == 25
        st = ob.stats()
        assert st["pending"] == 25 and st["rows"] == 50
        assert st["streams"]["p1/events"]["rows"] == 25
        assert sum(s.get("pending", 0) for s in st["streams"].values()) == 25
        assert st["oldest_pending_age_s"] is not None
    with Outbox.open(db) as ob:
        assert ob.pending_count() == 25
        assert ob.last_id == 50


async def test_async_flush_and_commit_notification(db: Path) -> None:
    loop = asyncio.get_running_loop()
    seen: list[Committed] = []
    got = asyncio.Event()

    def listener(info: Committed) -> None:
        assert threading.current_thread().name == "outbox-writer"
        seen.append(info)
        loop.call_soon_threadsafe(got.set)

    ob = Outbox.open(db, commit_interval_s=0.5)
    try:
        ob.add_listener(listener)
        ob.add_many([row(ob) for _ in range(10)])
        ob.put_retained("p1", "root/p1/state", b"s")
        await asyncio.wait_for(ob.flush(), 2)  # flush does not wait for the interval
        await asyncio.wait_for(got.wait(), 2)
        assert seen[0].first_id == 1 and seen[0].last_id == 10
        assert seen[0].pending_rows == 10 and seen[0].retained == ("p1",)
        assert len(ob.pending()) == 10
        await ob.flush()  # nothing queued: returns at once
    finally:
        ob.close()


@pytest.mark.parametrize("content", [b"hello, I am a text file\n" * 10, b"SQLite format 3\x00junk"])
def test_refuses_a_non_buffer_file_without_touching_it(db: Path, content: bytes) -> None:
    db.write_bytes(content)
    with pytest.raises(BufferFileError):
        Outbox.open(db)
    assert db.read_bytes() == content
    assert not Path(str(db) + "-wal").exists()


def test_refuses_a_foreign_sqlite_database_without_touching_it(db: Path) -> None:
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, amount REAL)")
    conn.execute("INSERT INTO invoices VALUES (1, 9.5)")
    conn.commit()
    conn.close()
    before = db.read_bytes()
    with pytest.raises(BufferFileError, match="another application"):
        Outbox.open(db)
    assert db.read_bytes() == before
    assert not Path(str(db) + "-wal").exists()
    assert not Path(str(db) + "-seqmark").exists()  # nothing of ours left beside it


def test_refuses_a_newer_schema(db: Path) -> None:
    Outbox.open(db).close()
    conn = sqlite3.connect(db)
    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(BufferFileError, match="newer"):
        Outbox.open(db)


def test_readonly_open_for_stats(db: Path) -> None:
    with Outbox.open(db) as ob:
        ob.add(row(ob))
    ro = Outbox.open(db, readonly=True)
    try:
        assert ro.stats()["rows"] == 1
        with pytest.raises(BufferFileError):
            ro.add(row(ro))
    finally:
        ro.close()
    with pytest.raises(BufferFileError):
        Outbox.open(db.with_name("missing.sqlite"), readonly=True)


def test_prune_deletes_old_delivered_history_in_chunks_keeps_pending(db: Path) -> None:
    with Outbox.open(db) as ob:
        ob.add_many([row(ob, payload=b"%d" % i, delivered=i < 30) for i in range(100)])
        ob.flush_sync()
        ids = [p[0] for p in ob.pending(0, 1000)]
        ob.mark_delivered(ids[:30])  # ids 31..60
        ob.flush_sync()
        assert ob.prune(3600) == 0  # younger than retention
        assert ob.prune(0, chunk=7, max_chunks=2) == 14
        assert ob.prune(0, chunk=7) == 46
        st = ob.stats()
        assert st["rows"] == 40 and st["pending"] == 40
        assert st["streams"]["p1/events"]["rows"] == 40
        assert [p[2] for p in ob.pending(0, 1000)] == [b"%d" % i for i in range(60, 100)]
        assert ob.next_seq("p1", "events") == 101


def test_failing_commit_keeps_the_batch_and_recovers(db: Path,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    with Outbox.open(db, commit_interval_s=0.01) as ob:
        ob.add_many([row(ob, payload=b"a" * 100) for _ in range(10)])
        ob.flush_sync()
        pages = ob._exec_in_writer("PRAGMA page_count")[0][0]
        ob._exec_in_writer(f"PRAGMA max_page_count={pages}")  # the disk is "full"
        ob.add_many([row(ob, payload=b"b" * 4000, durable=True) for _ in range(50)])
        assert not ob.flush_sync(timeout=0.5)
        st = ob.stats()
        assert st["write_errors"] >= 2
        assert "full" in st["last_write_error"]
        assert st["rows"] == 10 and st["unflushed"] == 50
        assert len(ob.pending()) == 10  # committed rows untouched
        errors = [r for r in caplog.records if "commit failed" in r.getMessage()]
        assert len(errors) == 1  # logged once, not per retry
        ob.add(row(ob, payload=b"c"))  # still accepting while failing
        ob._exec_in_writer("PRAGMA max_page_count=1073741823")  # space again
        assert ob.flush_sync(timeout=10)
        payloads = [p[2][:1] for p in ob.pending(0, 1000)]
        assert payloads == [b"a"] * 10 + [b"b"] * 50 + [b"c"]
        assert ob.next_seq("p1", "events") == 62
