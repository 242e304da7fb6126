"""`press-collector buffer export` (buffer/export.py, on sqlite-utils): every row as JSON
lines or CSV, filtered, read-only beside a running writer, foreign files refused, the
output file owner-only."""

from __future__ import annotations

import csv
import io
import json
import os
import sqlite3
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from buffer.export import export_rows, write_export
from buffer.store import BufferFileError, Outbox, OutboxRow

REPO = Path(__file__).resolve().parent.parent


def export(*args: str, umask: int | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "collector.cli", "buffer", "export", *args],
                          capture_output=True, text=True, timeout=60, cwd=REPO,
                          preexec_fn=(lambda: os.umask(umask)) if umask is not None else None)


async def filled(path: Path) -> tuple[Outbox, float]:
    """p1: 3 events (2 delivered) + 2 telemetry; p2: 1 event; one odd binary payload."""
    box = Outbox.open(path, commit_interval_s=0.001)
    before = time.time()
    rows = []
    for press, stream, n in (("p1", "events", 3), ("p1", "telemetry", 2), ("p2", "events", 1)):
        for _ in range(n):
            seq = box.next_seq(press, stream)
            payload = json.dumps({"press": press, "seq": seq, "data": {"v": "4.285"}}).encode()
            rows.append(OutboxRow(press, stream, seq, f"r/{press}/{stream}", payload,
                                  durable=stream == "events"))
    rows.append(OutboxRow("p2", "raw", box.next_seq("p2", "raw"), "r/p2/raw", b"\xff\x00",
                          durable=False))
    box.add_many(rows)
    await box.flush()
    box.mark_delivered([1, 2])
    await box.flush()
    return box, before


async def test_export_every_row_in_order_with_filters(tmp_path: Path) -> None:
    db = tmp_path / "buffer.sqlite"
    box, before = await filled(db)
    box.close()
    result = export(str(db))
    assert result.returncode == 0, result.stderr
    lines = [json.loads(x) for x in result.stdout.splitlines()]
    assert [(r["id"], r["press"], r["stream"], r["seq"]) for r in lines] == [
        (1, "p1", "events", 1), (2, "p1", "events", 2), (3, "p1", "events", 3),
        (4, "p1", "telemetry", 1), (5, "p1", "telemetry", 2), (6, "p2", "events", 1),
        (7, "p2", "raw", 1)]
    assert lines[0]["message"] == {"press": "p1", "seq": 1, "data": {"v": "4.285"}}
    assert lines[0]["delivered"].endswith("Z") and lines[2]["delivered"] is None
    assert lines[6]["message"] == "ff00"  # not JSON, not text: hex, never an error
    assert result.stderr.strip() == "7 rows exported"
    pending = [json.loads(x)["id"] for x in export(str(db), "--pending").stdout.splitlines()]
    assert pending == [3, 4, 5, 6, 7]
    p1_events = export(str(db), "--press", "p1", "--stream", "events", "--limit", "2")
    assert [json.loads(x)["seq"] for x in p1_events.stdout.splitlines()] == [1, 2]
    since_future = export(str(db), "--since", "2999-01-01T00:00:00Z")
    assert since_future.stdout == "" and since_future.returncode == 0
    since_before = export(str(db), "--since", time.strftime(
        "%Y-%m-%dT%H:%M:%S", time.gmtime(before - 1)))
    assert len(since_before.stdout.splitlines()) == 7
    table = list(csv.DictReader(io.StringIO(export(str(db), "--format", "csv").stdout)))
    assert [r["seq"] for r in table] == ["1", "2", "3", "1", "2", "1", "1"]
    assert json.loads(table[5]["message"])["press"] == "p2"


async def test_export_runs_beside_the_writer_and_changes_nothing(tmp_path: Path) -> None:
    db = tmp_path / "buffer.sqlite"
    box, _ = await filled(db)
    try:
        rows = list(export_rows(db))  # the daemon's writer still has the file open
        assert len(rows) == 7
        out = io.StringIO()
        assert write_export(iter(rows), out) == 7
        seq = box.next_seq("p1", "events")
        box.add(OutboxRow("p1", "events", seq, "r/p1/events", b"{}", durable=True))
        await box.flush()
        assert [r["seq"] for r in export_rows(db, press="p1", stream="events")] == [1, 2, 3, 4]
    finally:
        box.close()


async def test_export_file_is_private_and_foreign_files_are_refused(tmp_path: Path) -> None:
    db = tmp_path / "buffer.sqlite"
    box, _ = await filled(db)
    box.close()
    out = tmp_path / "export.jsonl"
    result = export(str(db), "--out", str(out), umask=0)
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert len(out.read_text().splitlines()) == 7
    foreign = tmp_path / "invoices.sqlite"
    conn = sqlite3.connect(foreign)
    conn.execute("create table invoices (n)")
    conn.commit()
    conn.close()
    refused = export(str(foreign), "--out", str(tmp_path / "never.jsonl"))
    assert refused.returncode == 2 and "invoices" in refused.stderr
    assert not (tmp_path / "never.jsonl").exists()
    with pytest.raises(BufferFileError):
        export_rows(foreign)
    bad_since = export(str(db), "--since", "yesterday")
    assert bad_since.returncode == 2 and "is not an ISO 8601 time" in bad_since.stderr
