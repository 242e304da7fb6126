"""Nothing published can be unsaid (issue 12), against real SQLite files and WALs.

- the ordering rule that makes a power cut harmless: no row is visible to the publisher
  (``pending``, ``last_id``, listeners, flush waiters) before the fsync of the WAL that
  holds it and of the seq mark file that records its seq;
- a damaged WAL (torn last frame, garbage over valid frames) rolls SQLite back below
  what was published: detected at start against the seq mark file, logged, and those
  seqs are never issued again;
- an empty (0-byte) buffer file is refused (exit 4) until `buffer reset`, which archives
  it; the new buffer's seqs continue above the seq mark file;
- a buffer with corrupt pages and an intact header is refused (exit 4) and not written
  to; `buffer check` names the damage, `buffer salvage` copies every readable row;
- one process per buffer (the seq mark file's lock).
"""

from __future__ import annotations

import logging
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

import buffer.outbox_sync as outbox_sync
from buffer.seqmark import mark_path, read_marks
from buffer.store import BufferFileError, Committed, LostSeqs, Outbox, OutboxRow
from collector.cli import main as cli_main
from sim.demo import REPO_CONFIG

PAGE = 4096
WAL_HEADER = 32
FRAME = 24 + PAGE


def add(ob: Outbox, n: int, stream: str = "events", payload: bytes = b"{}",
        press: str = "p1") -> None:
    ob.add_many([OutboxRow(press, stream, ob.next_seq(press, stream), f"r/{press}/{stream}",
                           payload) for _ in range(n)])
    assert ob.flush_sync(timeout=10)


# ------------------------------------------------------------------ the ordering rule
class Gate:
    """Stands in front of the outbox's two syncs; holds the ``held`` one until released,
    then runs the real one (the real fdatasync on the real file)."""

    def __init__(self, held: str, real: dict[str, Callable[..., None]]) -> None:
        self.held, self.real = held, real
        self.entered, self.release = threading.Event(), threading.Event()
        self.done: list[str] = []

    def _run(self, which: str, *args: object) -> None:
        if which == self.held:
            self.entered.set()
            assert self.release.wait(10)
        self.real[which](*args)
        self.done.append(which)

    def wal(self, name: str) -> None:
        self._run("wal", name)

    def marks(self, last_id: int, seqs: dict[tuple[str, str], int]) -> None:
        self._run("marks", last_id, seqs)


def test_a_snapshot_taken_by_a_commit_in_progress_is_still_read(tmp_path: Path) -> None:
    """get_kv between the writer taking a snapshot from the queue and its commit: the
    value, not nothing (a press restarted by SIGHUP resumes from its last snapshot)."""
    with Outbox.open(tmp_path / "buffer.sqlite", commit_interval_s=0.001) as ob:
        ob.put_kv("snap:p1", {"state": "old"})
        assert ob.flush_sync(timeout=10)
        entered, release = threading.Event(), threading.Event()
        real = ob._commit

        def held(*args, **kwargs):  # type: ignore[no-untyped-def]
            entered.set()
            release.wait(10)
            return real(*args, **kwargs)

        ob._commit = held  # type: ignore[method-assign]
        try:
            ob.put_kv("snap:p1", {"state": "released"})
            assert entered.wait(10), "the writer never took the batch"
            assert ob.get_kv("snap:p1") == {"state": "released"}
        finally:
            release.set()
        assert ob.flush_sync(timeout=10)
        assert ob.get_kv("snap:p1") == {"state": "released"}


def test_no_row_reaches_the_publisher_before_the_fsync_that_covers_it(tmp_path: Path) -> None:
    """Each of the two syncs (the WAL's fdatasync, the seq mark file's write + fdatasync)
    is held open in turn: while either is unfinished the row is committed in SQLite (a
    plain connection sees it) but invisible to everything the publisher reads."""
    db = tmp_path / "buffer.sqlite"
    seen: list[Committed] = []
    with Outbox.open(db, commit_interval_s=0.005) as ob:
        add(ob, 3)
        ob.add_listener(seen.append)
        assert ob._seqmark is not None
        real = {"wal": ob._fsync_file, "marks": ob._seqmark.write}
        for held in ("wal", "marks"):
            gate = Gate(held, real)
            ob._fsync_file = gate.wal  # type: ignore[method-assign]
            ob._seqmark.write = gate.marks  # type: ignore[method-assign]
            entered, release, done = gate.entered, gate.release, gate.done
            before, n_seen = ob.last_id, len(seen)
            seq = ob.next_seq("p1", "telemetry")
            ob.add(OutboxRow("p1", "telemetry", seq, "r/p1/telemetry", b'{"v":%d}' % seq))
            assert entered.wait(10), f"the commit never went through the {held} sync"
            try:
                other = sqlite3.connect(db)  # committed in SQLite ...
                assert other.execute("SELECT max(seq) FROM messages WHERE stream='telemetry'"
                                     ).fetchone()[0] == seq
                other.close()
                # ... but not on disk yet: invisible to the publisher
                assert ob.pending(before) == [] and ob.pending_lane(before) == []
                assert ob.pending_streams(("telemetry",), before) == []
                assert ob.last_id == before and len(seen) == n_seen
                assert not ob.flush_sync(timeout=0.2)
                if held == "marks":
                    assert read_marks(mark_path(db))[1].get(("p1", "telemetry"), 0) < seq
            finally:
                release.set()
            assert ob.flush_sync(timeout=10)
            assert sorted(done) == ["marks", "wal"]
            # visible only now, with the seq mark file on disk covering it
            assert [r[2] for r in ob.pending(before)] == [b'{"v":%d}' % seq]
            assert ob.last_id == before + 1 and len(seen) == n_seen + 1
            # the notice carrying the row itself (the publisher's drain) came after both
            assert [r[3] for r in seen[-1].rows] == [b'{"v":%d}' % seq]
            last_id, seqs, state = read_marks(mark_path(db))
            assert state == "ok" and seqs[("p1", "telemetry")] == seq
            assert last_id == ob.last_id


# ------------------------------------------------------------------ damaged WAL
def crash_image(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, int]:
    """A buffer whose commits all sit in the WAL (no checkpoint), copied while open (the
    files a crash leaves): 40 events in 4 commits. Returns (copy, WAL frames)."""
    monkeypatch.setattr(outbox_sync, "CHECKPOINT_INTERVAL_S", 3600.0)
    monkeypatch.setattr(outbox_sync, "CHECKPOINT_BYTES", 1 << 40)
    db = tmp_path / "live" / "buffer.sqlite"
    with Outbox.open(db, commit_interval_s=0.005) as ob:
        for _ in range(4):
            add(ob, 10, payload=b'{"x":"' + b"e" * 300 + b'"}')
        copy = tmp_path / "crash" / "buffer.sqlite"
        copy.parent.mkdir()
        for suffix in ("", "-wal", "-seqmark"):
            shutil.copyfile(f"{db}{suffix}", f"{copy}{suffix}")
    frames = (os.path.getsize(f"{copy}-wal") - WAL_HEADER) // FRAME
    assert frames >= 8
    return copy, frames


def test_torn_last_wal_frame_is_detected_and_its_seqs_never_issued_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    copy, frames = crash_image(tmp_path, monkeypatch)
    wal = Path(f"{copy}-wal")
    with open(wal, "r+b") as fh:  # the last frame half written
        fh.truncate(WAL_HEADER + (frames - 1) * FRAME + FRAME // 2)
    caplog.set_level(logging.ERROR, logger="buffer.store")
    with Outbox.open(copy) as ob:
        assert ob.stats()["streams"]["p1/events"]["rows"] == 30  # SQLite lost the last commit
        assert ob.rollback == [LostSeqs("p1", "events", 31, 40)]
        assert ob.next_seq("p1", "events") == 41  # never 31 again
    assert any("31..40" in r.getMessage() and "never be issued again" in r.getMessage()
               for r in caplog.records)
    with Outbox.open(copy) as ob:  # the raised marks are in the file: reported once
        assert ob.rollback == [] and ob.next_seq("p1", "events") == 41


def test_garbage_over_valid_wal_frames_is_detected_and_seqs_never_issued_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    copy, frames = crash_image(tmp_path, monkeypatch)
    wal = Path(f"{copy}-wal")
    with open(wal, "r+b") as fh:  # garbage over a frame in the middle; later frames intact
        fh.seek(WAL_HEADER + (frames // 2) * FRAME + 100)
        fh.write(os.urandom(1000))
    with Outbox.open(copy) as ob:
        kept = ob.stats()["streams"]["p1/events"]["rows"]
        assert kept < 40
        assert ob.rollback == [LostSeqs("p1", "events", kept + 1, 40)]
        add(ob, 1)
        assert ob.pending()[-1][0] > 40  # ids go on too
        seqs = [s for (s,) in ob._rconn.execute(  # type: ignore[union-attr]
            "SELECT seq FROM messages ORDER BY id")]
        assert seqs == [*range(1, kept + 1), 41]


# ------------------------------------------------------------------ empty file, reset
def run_daemon(cfg: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "collector.cli", "run", "--config-dir",
                           str(cfg)], capture_output=True, text=True, timeout=60)


@pytest.fixture
def cfg(tmp_path: Path) -> Path:
    out = tmp_path / "cfg"
    shutil.copytree(REPO_CONFIG, out)
    return out


def test_zero_byte_buffer_is_refused_until_reset_then_seqs_go_on(
        cfg: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = cfg / "buffer.sqlite"  # the example config's buffer.path
    with Outbox.open(db) as ob:
        add(ob, 5)
    db.write_bytes(b"")  # truncated by a file system repair, a bad copy, ...
    for junk in ("-wal", "-shm"):
        Path(f"{db}{junk}").unlink(missing_ok=True)
    result = run_daemon(cfg)
    assert result.returncode == 4, result.stderr
    assert f"{db}: empty file (0 bytes)" in result.stderr and "buffer reset" in result.stderr
    assert db.read_bytes() == b""  # untouched
    assert cli_main(["buffer", "check", str(db)]) == 1
    assert "refused" in capsys.readouterr().out
    assert cli_main(["buffer", "reset", str(db)]) == 0
    out = capsys.readouterr().out
    archived = [p for p in cfg.iterdir() if p.name.startswith("buffer.sqlite.reset-")]
    assert len(archived) == 1 and archived[0].read_bytes() == b"" and str(archived[0]) in out
    with Outbox.open(db) as ob:
        assert ob.rollback == []
        assert ob.next_seq("p1", "events") == 6  # above everything published, not 1


def test_sqlite_file_without_tables_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "buffer.sqlite"
    sqlite3.connect(db).execute("PRAGMA user_version=0").connection.close()
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE x (a)")
    conn.execute("DROP TABLE x")
    conn.close()
    with pytest.raises(BufferFileError, match="without tables"):
        Outbox.open(db)


def test_a_missing_buffer_with_a_seq_mark_file_goes_on_above_it(tmp_path: Path) -> None:
    db = tmp_path / "buffer.sqlite"
    with Outbox.open(db) as ob:
        add(ob, 7, stream="telemetry")
    db.unlink()  # someone deleted the buffer (and its WAL is gone with the last close)
    with Outbox.open(db) as ob:
        assert ob.next_seq("p1", "telemetry") == 8
        add(ob, 1, stream="telemetry")
        assert ob.pending()[-1][0] == 8  # ids as well


def test_one_process_per_buffer(tmp_path: Path) -> None:
    db = tmp_path / "buffer.sqlite"
    with Outbox.open(db):
        with pytest.raises(BufferFileError, match="in use by another process"):
            Outbox.open(db)
        assert cli_main(["buffer", "reset", str(db)]) == 2
    assert db.exists()


# ------------------------------------------------------------------ damaged pages
def damaged_buffer(tmp_path: Path, rows: int = 3000) -> tuple[Path, int]:
    """A closed buffer with one leaf page of `messages` overwritten with garbage (header
    intact). Returns (path, the row id found on that page)."""
    db = tmp_path / "buffer.sqlite"
    with Outbox.open(db, commit_interval_s=0.005) as ob:
        ob.add_many([OutboxRow("p1", "telemetry", ob.next_seq("p1", "telemetry"), "t",
                               b"ROW%06d" % i + b"." * 400) for i in range(1, rows + 1)])
        assert ob.flush_sync(timeout=30)
    data = bytearray(db.read_bytes())
    at = data.index(b"ROW%06d" % (rows // 2))
    page = at // PAGE
    data[page * PAGE:(page + 1) * PAGE] = os.urandom(PAGE)
    db.write_bytes(bytes(data))
    return db, rows // 2


def test_corrupt_pages_are_refused_untouched_then_check_and_salvage(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db, hit = damaged_buffer(tmp_path)
    before = db.read_bytes()
    with pytest.raises(BufferFileError) as refused:
        Outbox.open(db)
    text = str(refused.value)
    assert str(db) in text and "damaged buffer" in text and "buffer salvage" in text
    assert db.read_bytes() == before  # never written to
    assert not Path(f"{db}-wal").exists() or Path(f"{db}-wal").stat().st_size == 0

    assert cli_main(["buffer", "check", str(db)]) == 1
    out = capsys.readouterr().out
    assert f"{db}: damaged" in out and "problem:" in out

    assert cli_main(["buffer", "salvage", str(db)]) == 0
    out = capsys.readouterr().out
    archived = [p for p in tmp_path.iterdir() if p.name.startswith("buffer.sqlite.damaged-")
                and not p.name.endswith(("-wal", "-shm"))]
    assert len(archived) == 1 and archived[0].read_bytes() == before and "rows copied" in out
    with Outbox.open(db) as ob:  # the salvaged buffer passes the start check
        ids = [r[0] for r in ob.pending(0, 10_000)]
        assert 2900 < len(ids) < 3000 and hit not in ids  # only the bad page's rows are gone
        assert ob.next_seq("p1", "telemetry") == 3001  # seqs go on above the old ones
    assert cli_main(["buffer", "check", str(db)]) == 0
