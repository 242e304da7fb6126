"""The buffer file itself: its schema, its identity and its creation.

Split out of :mod:`buffer.store` (one job per module): everything here works on a path
or a bare connection, before an :class:`~buffer.store.Outbox` exists. A file that is not
ours (not SQLite, or SQLite with another application id / foreign tables), an empty one
and a too-new one is refused with :class:`BufferFileError` and left untouched; a new
buffer is built under a temporary name and renamed into place, so a half-created file
never takes the buffer's name.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
from pathlib import Path

from buffer.seqmark import SeqMarks

log = logging.getLogger("buffer.store")

APPLICATION_ID = 0x50435342  # 'PCSB' press-collector store buffer
SCHEMA_VERSION = 1

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


def create_schema(conn: sqlite3.Connection, seqs: dict[tuple[str, str], int] | None = None,
                  id_floor: int = 0) -> None:
    """Create the tables in an empty database (one transaction); seqs and ids start above
    ``seqs`` / ``id_floor`` (the seq mark file's, for a buffer replacing another)."""
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
        create_schema(conn, marks.seqs, marks.last_id)
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
