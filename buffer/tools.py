"""The technician's buffer tools: check, reset, salvage (`press-collector buffer ...`).

All three work on a stopped daemon's buffer: they take the seq mark file's lock (the
daemon holds it while it runs) and refuse when it is held. None of them deletes
anything: a file that is replaced is *archived* (renamed to
``<buffer>.<what>-<UTC stamp>``, with its ``-wal`` and ``-shm``), and the seq mark file
stays, so the next buffer's seqs go on above everything ever published.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from buffer.check import CheckReport, integrity
from buffer.seqmark import SeqMarkError, SeqMarks, mark_path, read_marks
from buffer.store import APPLICATION_ID, BufferFileError, Outbox, _check_ours

SIDE_FILES = ("-wal", "-shm")


def _stamp() -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[SeqMarks]:
    try:
        marks = SeqMarks.open(mark_path(path))
    except SeqMarkError as exc:
        raise BufferFileError(str(exc)) from exc
    try:
        yield marks
    finally:
        marks.close()


def archive(path: Path, what: str) -> Path:
    """Rename ``path`` (and its -wal / -shm, which belong to it) to
    ``<path>.<what>-<stamp>``; the directory is synced. Returns the new name."""
    target = Path(f"{path}.{what}-{_stamp()}")
    for suffix in SIDE_FILES:  # WAL first: the main file must not meet a foreign WAL
        side = Path(f"{path}{suffix}")
        if side.exists():
            os.rename(side, f"{target}{suffix}")
    os.rename(path, target)
    _sync_dir(path.parent)
    return target


def _adopt(path: Path, like: os.stat_result) -> None:
    """Give a file the tools created (as root, usually) the owner and mode of the buffer
    it replaces, so the daemon (user press-collector) can open it."""
    if os.geteuid() == 0:
        os.chown(path, like.st_uid, like.st_gid)
    os.chmod(path, like.st_mode & 0o666)


def _sync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------- check
@dataclass
class FullCheck:
    """`buffer check`: the file, its integrity and how it stands against the marks."""

    path: Path
    verdict: str  # ok / damaged / refused / missing
    problems: list[str] = field(default_factory=list)
    report: CheckReport | None = None
    marks_state: str = "missing"
    behind_marks: list[str] = field(default_factory=list)  # streams rolled back
    stats: dict[str, Any] = field(default_factory=dict)

    def lines(self) -> list[str]:
        out = [f"{self.path}: {self.verdict}"]
        out += [f"  problem: {p}" for p in self.problems]
        if self.report is not None:
            out.append(f"  quick_check: {'complete' if self.report.complete else 'partial'}"
                       f" in {self.report.seconds:.1f} s")
        out.append(f"  seq mark file {mark_path(self.path)}: {self.marks_state}")
        out += [f"  behind the seq mark file (rolled back, fixed at the next start): {b}"
                for b in self.behind_marks]
        for key in ("rows", "pending", "file_bytes"):
            if key in self.stats:
                out.append(f"  {key}: {self.stats[key]}")
        if self.verdict == "damaged":
            out.append(f"  -> `press-collector buffer salvage {self.path}` copies every "
                       "readable row to a new buffer (this file is kept, archived)")
        if self.verdict == "refused":
            out.append(f"  -> `press-collector buffer reset {self.path}` archives it and "
                       "starts a fresh buffer (seqs continue above the seq mark file)")
        return out


def check(path: Path, budget_s: float | None = None) -> FullCheck:
    """Everything the daemon checks at start, with no time bound, read-only."""
    _, marks, marks_state = read_marks(mark_path(path))
    if not path.exists():
        return FullCheck(path, "missing", marks_state=marks_state)
    try:
        _check_ours(path)
    except BufferFileError as exc:
        return FullCheck(path, "refused", [str(exc)], marks_state=marks_state)
    report = integrity(path, budget_s)
    result = FullCheck(path, "damaged" if report.problems else "ok", list(report.problems),
                       report, marks_state)
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            have = {(p, s): n for p, s, n in conn.execute(
                "SELECT press, stream, last_seq FROM streams")}
            counters = dict(conn.execute("SELECT name, value FROM counters").fetchall())
        finally:
            conn.close()
        result.stats = {"rows": counters.get("rows"), "pending": counters.get("pending"),
                        "file_bytes": path.stat().st_size}
        result.behind_marks = [f"{p}/{s} {have.get((p, s), 0) + 1}..{n}"
                               for (p, s), n in sorted(marks.items())
                               if n > have.get((p, s), 0)]
    except sqlite3.DatabaseError as exc:
        result.problems.append(f"streams/counters unreadable: {exc}")
        result.verdict = "damaged"
    return result


# ---------------------------------------------------------------------------- reset
def reset(path: Path) -> Path | None:
    """Start fresh: archive the buffer (whatever it holds: empty, damaged, foreign) as
    ``<path>.reset-<stamp>``; the seq mark file stays (raised to the old buffer's own
    marks when they are readable), so the next start creates a new buffer whose seqs go
    on above everything published. Returns the archive's name (None: no file)."""
    with _locked(path) as marks:
        if not path.exists():
            return None
        _adopt(marks.path, path.stat())
        seqs, last_id = dict(marks.seqs), marks.last_id
        with contextlib.suppress(sqlite3.DatabaseError, OSError):
            conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
            try:
                if conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID:
                    for p, s, n in conn.execute("SELECT press, stream, last_seq FROM streams"):
                        seqs[(p, s)] = max(seqs.get((p, s), 0), int(n))
                    top = conn.execute("SELECT max(id) FROM messages").fetchone()[0] or 0
                    last_id = max(last_id, int(top))
            finally:
                conn.close()
        if seqs != marks.seqs or last_id != marks.last_id or marks.state != "ok":
            marks.ensure_allocated()
            marks.write(last_id, seqs)
        return archive(path, "reset")


# ---------------------------------------------------------------------------- salvage
@dataclass
class SalvageReport:
    archived: Path
    rows_copied: int = 0
    rows_unreadable: int = 0  # ids in ranges that could not be read
    retained: int = 0
    kv: int = 0
    notes: list[str] = field(default_factory=list)


def _readable_rows(conn: sqlite3.Connection, lo: int, hi: int,
                   report: SalvageReport) -> Iterator[tuple[Any, ...]]:
    """Rows with lo <= id <= hi; a range that fails is split in halves down to single
    ids, so one bad page costs only the rows on it."""
    stack = [(lo, hi)]
    while stack:
        a, b = stack.pop()
        try:
            rows = conn.execute(
                "SELECT id, press, stream, seq, topic, payload, created, delivered "
                "FROM messages WHERE id BETWEEN ? AND ? ORDER BY id", (a, b)).fetchall()
        except sqlite3.DatabaseError:
            if a == b:
                report.rows_unreadable += 1
                continue
            mid = (a + b) // 2
            stack.append((mid + 1, b))
            stack.append((a, mid))
            continue
        yield from rows


def salvage(path: Path, chunk: int = 5000) -> SalvageReport:
    """Copy every readable row of a damaged buffer into a new buffer, archive the old one
    as ``<path>.damaged-<stamp>`` (kept for analysis) and put the new one in its place.
    Seqs in the new buffer go on above the old buffer's marks and the seq mark file."""
    with _locked(path) as marks:
        if not path.exists():
            raise BufferFileError(f"{path}: no such buffer file")
        src = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        new_path = Path(f"{path}.salvaging")
        for suffix in ("", *SIDE_FILES):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f"{new_path}{suffix}")
        report = SalvageReport(archived=path)
        seqs: dict[tuple[str, str], int] = dict(marks.seqs)
        try:
            with contextlib.suppress(sqlite3.DatabaseError):
                for p, s, n in src.execute("SELECT press, stream, last_seq FROM streams"):
                    seqs[(p, s)] = max(seqs.get((p, s), 0), int(n))
            top = marks.last_id
            try:
                top = max(top, src.execute("SELECT max(id) FROM messages").fetchone()[0] or 0)
            except sqlite3.DatabaseError as exc:
                report.notes.append(f"max(id) unreadable ({exc}); walking ids up to the "
                                    f"seq mark file's {top}")
            dst = sqlite3.connect(new_path, isolation_level=None)
            try:
                dst.execute("PRAGMA journal_mode=WAL")
                Outbox._create_schema(dst)
                dst.execute("BEGIN")
                per: dict[tuple[str, str], list[int]] = {}
                pending = 0
                for lo in range(1, top + 1, chunk):
                    batch = list(_readable_rows(src, lo, min(lo + chunk - 1, top), report))
                    dst.executemany("INSERT INTO messages (id, press, stream, seq, topic, "
                                    "payload, created, delivered) VALUES (?,?,?,?,?,?,?,?)",
                                    batch)
                    for r in batch:
                        acc = per.setdefault((r[1], r[2]), [0, 0])
                        acc[0], acc[1] = max(acc[0], r[3]), acc[1] + 1
                        pending += r[7] is None
                    report.rows_copied += len(batch)
                for key, (n, _) in per.items():
                    seqs[key] = max(seqs.get(key, 0), n)
                dst.executemany("INSERT INTO streams (press, stream, last_seq, rows) "
                                "VALUES (?,?,?,?)",
                                [(p, s, n, per.get((p, s), [0, 0])[1])
                                 for (p, s), n in seqs.items()])
                dst.executemany("UPDATE counters SET value = ? WHERE name = ?",
                                [(report.rows_copied, "rows"), (pending, "pending")])
                dst.execute("INSERT INTO counters (name, value) VALUES ('id_floor', ?)",
                            (top,))
                for table, cols in (("retained", "press, topic, payload, updated"),
                                    ("kv", "key, value, updated")):
                    try:
                        got = src.execute(f"SELECT {cols} FROM {table}").fetchall()
                    except sqlite3.DatabaseError as exc:
                        report.notes.append(f"{table} unreadable ({exc}): not copied")
                        continue
                    marks_q = ",".join("?" * len(cols.split(",")))
                    dst.executemany(f"INSERT INTO {table} ({cols}) VALUES ({marks_q})", got)
                    setattr(report, table, len(got))
                dst.execute("COMMIT")
            finally:
                dst.close()
        finally:
            src.close()
        fd = os.open(new_path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        old_stat = path.stat()
        _adopt(new_path, old_stat)
        _adopt(marks.path, old_stat)
        marks.ensure_allocated()
        marks.write(max(top, marks.last_id), seqs)
        report.archived = archive(path, "damaged")
        os.rename(new_path, path)
        _sync_dir(path.parent)
        return report
