"""The command log: which command request ids a press has answered, and the reply.

MQTT delivers a command at least once, an operator terminal retries after a timeout, and
someone on the plant network may replay a captured command. A command is therefore
executed once per (press, request id): a repeat gets the first reply again, byte for
byte, and changes nothing. The log keeps a digest of the command too, so the same
request id reused for a *different* command is told so instead of being answered with
an unrelated reply.

Durable: one small table, ``command_log``, in the buffer file itself (it shares the
file's permissions, backups and life cycle; the outbox ignores tables it does not own).
Its own connection commits each entry with ``synchronous=FULL`` before the reply is
queued: commands are rare (rate limited per press) and an fsync per command is cheap
next to the guarantee that a restart does not execute a delivered command again.
Bounded: at most ``max_per_press`` entries per press and none older than ``max_age_s``;
the gate's issue-time check (a command older than a few minutes is refused anyway)
makes an evicted request id harmless.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS command_log (
    press TEXT NOT NULL,
    request_id TEXT NOT NULL,
    digest TEXT NOT NULL,
    ts REAL NOT NULL,
    reply BLOB NOT NULL,
    PRIMARY KEY (press, request_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS command_log_age ON command_log (press, ts)
"""
PRUNE_EVERY = 64  # puts between two bound checks
MAX_PER_PRESS = 10_000
MAX_AGE_S = 7 * 86400.0


@dataclass(frozen=True, slots=True)
class Answered:
    """A request id already answered: the command's digest and the reply sent."""

    digest: str
    ts: float
    reply: bytes


class CommandLog:
    """``get`` / ``put`` by (press, request id); see the module docstring."""

    def __init__(self, conn: sqlite3.Connection, max_per_press: int = MAX_PER_PRESS,
                 max_age_s: float = MAX_AGE_S) -> None:
        self._conn = conn
        self.max_per_press = max_per_press
        self.max_age_s = max_age_s
        self._puts = 0

    @classmethod
    def open(cls, path: str | os.PathLike[str] | None, max_per_press: int = MAX_PER_PRESS,
             max_age_s: float = MAX_AGE_S) -> CommandLog:
        """The log inside the buffer file at ``path`` (opened by the Outbox first, which
        checks that the file is ours); ``None``: in memory (tests, tools)."""
        if path is None:
            conn = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
        else:
            conn = sqlite3.connect(Path(path), isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA busy_timeout=5000")
            conn.execute("PRAGMA synchronous=FULL")
        conn.executescript(_SCHEMA)
        return cls(conn, max_per_press, max_age_s)

    def get(self, press: str, request_id: str) -> Answered | None:
        row = self._conn.execute(
            "SELECT digest, ts, reply FROM command_log WHERE press = ? AND request_id = ?",
            (press, request_id)).fetchone()
        return None if row is None else Answered(row[0], row[1], bytes(row[2]))

    def put(self, press: str, request_id: str, digest: str, ts: float, reply: bytes) -> None:
        """Record the answer (committed, fsync) before the caller sends it."""
        self._conn.execute("INSERT OR REPLACE INTO command_log VALUES (?, ?, ?, ?, ?)",
                           (press, request_id, digest, ts, reply))
        self._puts += 1
        if self._puts % PRUNE_EVERY == 0:
            self.prune(press)

    def prune(self, press: str, now: float | None = None) -> int:
        """Drop entries past the age bound and beyond the count bound of ``press``."""
        now = time.time() if now is None else now
        cur = self._conn.execute("DELETE FROM command_log WHERE press = ? AND ts < ?",
                                 (press, now - self.max_age_s))
        dropped = cur.rowcount
        cur = self._conn.execute(
            "DELETE FROM command_log WHERE press = ? AND request_id IN (SELECT request_id "
            "FROM command_log WHERE press = ? ORDER BY ts DESC LIMIT -1 OFFSET ?)",
            (press, press, self.max_per_press))
        return dropped + cur.rowcount

    def count(self, press: str | None = None) -> int:
        if press is None:
            return int(self._conn.execute("SELECT count(*) FROM command_log").fetchone()[0])
        return int(self._conn.execute("SELECT count(*) FROM command_log WHERE press = ?",
                                      (press,)).fetchone()[0])

    def close(self) -> None:
        self._conn.close()
