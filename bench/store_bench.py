"""Buffer cost curves: insert and drain rate with the buffer already holding N readings.

The buffer is filled synthetically (raw SQL in large transactions, realistic 40-value
telemetry payloads, counters kept consistent) because polling 50M readings would take
hours; the measured part then goes through the real code: ``Outbox.add`` + group commit
for the insert rate, ``Publisher`` to a local Mosquitto for the drain rate.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

from buffer.store import Outbox, OutboxRow
from collector import messages
from collector.publisher import Publisher
from sim.local_broker import LocalBroker

TAGS = 40
ROOT = "bench/pc"


def payload(press: str, seq: int, ts: float) -> bytes:
    values = {f"load_{k:02d}": (seq * (k + 1) + k) & 0xFFFF for k in range(TAGS)}
    return messages.encode_telemetry(press, seq, ts, "bench", values, {},
                                     {"state": "released", "part_number": "BRK-100",
                                      "die_id": "7", "material_lot": "L2411-01"})


def fill(path: Path, readings: int, presses: int = 10, pending: bool = False,
         chunk: int = 50_000) -> int:
    """Add ``readings`` / 40 telemetry rows (delivered history, or pending) fast."""
    Outbox.open(path).close()  # schema
    rows = readings // TAGS
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=OFF")
    start_id = (conn.execute("SELECT max(id) FROM messages").fetchone()[0] or 0) + 1
    now = time.time() - rows / (presses * 10)
    seqs = [0] * presses
    done = 0
    sample = payload("p1", 1, now)  # same size as the real thing; content barely matters
    while done < rows:
        n = min(chunk, rows - done)
        batch = []
        for i in range(n):
            p = (done + i) % presses
            seqs[p] += 1
            ts = now + (done + i) / (presses * 10)
            batch.append((start_id + done + i, f"p{p + 1}", "telemetry", seqs[p],
                          f"{ROOT}/p{p + 1}/telemetry", sample, ts, None if pending else ts))
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO messages VALUES (?,?,?,?,?,?,?,?)", batch)
        conn.execute("COMMIT")
        done += n
    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO streams (press, stream, last_seq, rows) VALUES (?,?,?,?) "
        "ON CONFLICT (press, stream) DO UPDATE SET last_seq = excluded.last_seq, "
        "rows = rows + excluded.rows",
        [(f"p{p + 1}", "telemetry", seqs[p], seqs[p]) for p in range(presses)])
    conn.execute("UPDATE counters SET value = value + ? WHERE name='rows'", (rows,))
    if pending:
        conn.execute("UPDATE counters SET value = value + ? WHERE name='pending'", (rows,))
    conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    os.sync()  # no kernel writeback of the fill competing with the measurement
    return rows


def insert_rate(path: Path, rows: int, presses: int = 10) -> float:
    """Readings/s through Outbox.add (one row per poll) + group commit, to pending."""
    outbox = Outbox.open(path)
    try:
        seqs = {f"p{p + 1}": outbox.next_seq(f"p{p + 1}", "telemetry") for p in range(presses)}
        body = payload("p1", 1, time.time())
        t0 = time.perf_counter()
        for i in range(rows):
            press = f"p{i % presses + 1}"
            seq = seqs[press] = outbox.next_seq(press, "telemetry")
            outbox.add(OutboxRow(press, "telemetry", seq, f"{ROOT}/{press}/telemetry", body))
        outbox.flush_sync()
        return rows * TAGS / (time.perf_counter() - t0)
    finally:
        outbox.close()


async def _drain(path: Path, broker: LocalBroker, rows: int, max_inflight: int) -> float:
    outbox = Outbox.open(path)
    publisher = Publisher(outbox, broker.host, broker.port, client_id="bench-drain",
                          topic_status=f"{ROOT}/_collector/bench/status",
                          max_inflight=max_inflight)
    task = asyncio.create_task(publisher.run())
    try:
        t0 = time.perf_counter()
        while outbox.pending_count() > 0:
            await asyncio.sleep(0.05)
        return rows * TAGS / (time.perf_counter() - t0)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        outbox.close()


def curve(workdir: Path, sizes: list[int], batch_rows: int = 20_000,
          max_inflight: int = 200) -> list[dict[str, Any]]:
    """One point per size: insert and drain rate of ``batch_rows`` rows on top of it."""
    out = []
    workdir.mkdir(parents=True, exist_ok=True)
    for size in sizes:
        path = workdir / f"store-{size}.sqlite"
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        t0 = time.perf_counter()
        fill(path, size)
        fill_s = time.perf_counter() - t0
        ins = insert_rate(path, batch_rows)
        broker = LocalBroker(data_dir=workdir / f"mosq-{size}", persistence=False).start()
        try:
            drain = asyncio.run(_drain(path, broker, batch_rows, max_inflight))
        finally:
            broker.stop()
        out.append({"stored_readings": size, "fill_s": round(fill_s, 1),
                    "file_bytes": path.stat().st_size,
                    "insert_readings_per_s": round(ins), "drain_readings_per_s": round(drain)})
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
    return out
