"""Integrity check of a buffer file: at start (time-bounded) and for the technician.

Why at start: SQLite opens a file with damaged pages as long as its header is intact;
the damage shows only when a statement reaches a bad page, e.g. the periodic prune five
minutes later, after the daemon has already written into the file. So before the file is
opened read-write, :func:`integrity` checks it read-only, in this order:

1. the small tables the daemon relies on (``streams``, ``counters``, ``retained``, ``kv``)
   and the schema, each with ``PRAGMA quick_check(<table>)`` (cheap);
2. the pages the daemon reads first: the pending index (the backlog) and the newest
   ``TAIL_ROWS`` rows (where a power cut or a torn write lands);
3. then ``PRAGMA quick_check`` of the whole file (every b-tree page, both tables and
   indexes), until the time budget runs out (a progress handler stops it).

``quick_check`` skips the index-vs-table consistency that ``integrity_check`` adds, which
is what makes it linear in the file size; `press-collector buffer check` runs it with no
time bound. Measured figures: docs/delivery.md.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path

SMALL_TABLES = ("streams", "counters", "retained", "kv")
TAIL_ROWS = 20_000
MAX_PROBLEMS = 20
_PROGRESS_OPS = 10_000  # VM instructions between two looks at the clock


@dataclass
class CheckReport:
    """What :func:`integrity` found."""

    path: Path
    problems: list[str] = field(default_factory=list)
    complete: bool = True  # the whole-file quick_check ran to its end
    seconds: float = 0.0
    reached: str = ""  # how far a bounded check got (for the log)

    def refusal(self) -> str:
        """The message of the refusal (exit 4): names the file, the damage, the tools."""
        shown = "; ".join(self.problems[:3])
        more = f" (and {len(self.problems) - 3} more)" if len(self.problems) > 3 else ""
        return (f"{self.path}: damaged buffer: {shown}{more}. Refused and left untouched. "
                f"`press-collector buffer check {self.path}` lists the damage; "
                f"`press-collector buffer salvage {self.path}` copies every readable row "
                "to a new buffer and keeps this file")


def _ro(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True,
                           isolation_level=None)


def integrity(path: Path, budget_s: float | None) -> CheckReport:
    """Check ``path`` read-only (never writes to it); ``budget_s`` bounds step 3
    (None: the whole file)."""
    t0 = time.monotonic()
    report = CheckReport(path)
    conn = _ro(path)
    try:
        for table in SMALL_TABLES:
            _quick(conn, report, f"PRAGMA quick_check({table})", table)
        try:
            conn.execute("SELECT count(*) FROM messages INDEXED BY messages_pending "
                         "WHERE delivered IS NULL").fetchone()
        except sqlite3.DatabaseError as exc:
            report.problems.append(f"pending index unreadable ({exc})")
        try:
            top = conn.execute("SELECT max(id) FROM messages").fetchone()[0] or 0
            conn.execute("SELECT count(*), sum(length(payload)), sum(length(topic)) "
                         "FROM messages WHERE id > ?", (top - TAIL_ROWS,)).fetchone()
        except sqlite3.DatabaseError as exc:
            report.problems.append(f"newest rows unreadable ({exc})")
        if report.problems:
            report.complete = False
            report.seconds = time.monotonic() - t0
            return report
        deadline = None if budget_s is None else t0 + budget_s
        if deadline is not None:
            def stop() -> int:
                return int(time.monotonic() > deadline)
            conn.set_progress_handler(stop, _PROGRESS_OPS)
        try:
            _quick(conn, report, f"PRAGMA quick_check({MAX_PROBLEMS})", "file")
        except sqlite3.OperationalError as exc:
            if "interrupt" not in str(exc):
                raise
            report.complete = False
            report.reached = (f"whole-file quick_check of {path.stat().st_size / 2**20:.0f} "
                              "MiB not finished; small tables, pending index and newest "
                              "rows checked")
        finally:
            conn.set_progress_handler(None, 0)
    except sqlite3.DatabaseError as exc:
        report.problems.append(str(exc))
    finally:
        conn.close()
    report.seconds = time.monotonic() - t0
    return report


def _quick(conn: sqlite3.Connection, report: CheckReport, sql: str, what: str) -> None:
    try:
        rows = [r[0] for r in conn.execute(sql)]
    except sqlite3.OperationalError as exc:
        if "interrupt" in str(exc):
            raise
        report.problems.append(f"{what}: {exc}")
        return
    except sqlite3.DatabaseError as exc:
        report.problems.append(f"{what}: {exc}")
        return
    if rows != ["ok"]:
        report.problems += [f"{what}: {r}" for r in rows[:MAX_PROBLEMS]]
