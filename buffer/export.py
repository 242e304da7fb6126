"""Reading a buffer file for people: ``press-collector buffer export`` (JSON lines or CSV).

Built on sqlite-utils (``Database`` over a read-only connection, ``rows_where``), which
keeps the query side short and readable; the daemon's hot path (group-commit inserts,
delivery marks) stays on the standard library's sqlite3, because sqlite-utils costs about
twice as much per inserted row there and an import of ~50 ms and a few MB (figures and
the command in docs/DESIGN.md, "Buffer"; bench/sqlite_utils_vs_sqlite3.py).

The export opens the file read-only (``mode=ro``): it can run beside the daemon (WAL lets a
reader see the last committed state) and never changes the buffer. A file that is not a
press-collector buffer is refused (:class:`buffer.store.BufferFileError`), like ``buffer
stats`` refuses it.
"""

from __future__ import annotations

import csv
import io
import json
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from buffer.store import BufferFileError, Outbox

FIELDS = ("id", "press", "stream", "seq", "topic", "created", "delivered", "message")


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


def _message(payload: bytes) -> Any:
    """The payload as JSON when it is JSON (every event and telemetry message is), else
    as text, else as hex: an export never fails on one odd row."""
    try:
        return json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        try:
            return payload.decode("utf-8")
        except UnicodeDecodeError:
            return payload.hex()


def export_rows(path: Path, *, press: str | None = None, stream: str | None = None,
                pending: bool = False, since: float | None = None,
                limit: int | None = None) -> Iterator[dict[str, Any]]:
    """Rows of the outbox in id order (= acquisition order per stream), filtered. The file
    is checked at once (BufferFileError), the rows are read as they are consumed."""
    Outbox.open(path, readonly=True).close()  # refuses foreign / damaged / empty files
    return _rows(path, press, stream, pending, since, limit)


def _rows(path: Path, press: str | None, stream: str | None, pending: bool,
          since: float | None, limit: int | None) -> Iterator[dict[str, Any]]:
    import sqlite_utils  # only here: the daemon never imports it

    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        db = sqlite_utils.Database(conn, execute_plugins=False)
        where, args = [], {}
        if press is not None:
            where.append("press = :press")
            args["press"] = press
        if stream is not None:
            where.append("stream = :stream")
            args["stream"] = stream
        if pending:
            where.append("delivered IS NULL")
        if since is not None:
            where.append("created >= :since")
            args["since"] = since
        rows = db["messages"].rows_where(" AND ".join(where) or None, args, order_by="id",
                                         limit=limit)
        for row in rows:
            yield {"id": row["id"], "press": row["press"], "stream": row["stream"],
                   "seq": row["seq"], "topic": row["topic"], "created": _iso(row["created"]),
                   "delivered": _iso(row["delivered"]), "message": _message(row["payload"])}
    finally:
        conn.close()


def write_export(rows: Iterator[dict[str, Any]], out: TextIO, fmt: str = "jsonl") -> int:
    """Write rows as JSON lines or CSV (the message as JSON text); returns the row count."""
    count = 0
    if fmt == "csv":
        writer = csv.DictWriter(out, FIELDS)
        writer.writeheader()
        for row in rows:
            writer.writerow({**row, "message": json.dumps(row["message"],
                                                          separators=(",", ":"))})
            count += 1
        return count
    if fmt != "jsonl":
        raise ValueError(f"format {fmt!r} is not allowed (allowed: jsonl, csv)")
    for row in rows:
        out.write(json.dumps(row, separators=(",", ":"), ensure_ascii=False) + "\n")
        count += 1
    return count


def open_private(path: Path) -> TextIO:
    """An export file only its owner can read (it holds quality records): 0600 at creation,
    whatever the umask; an existing file is truncated and narrowed."""
    import os

    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    return io.open(fd, "w", encoding="utf-8", newline="")  # noqa: UP020 (fd, not a path)


__all__ = ["FIELDS", "BufferFileError", "export_rows", "open_private", "write_export"]
