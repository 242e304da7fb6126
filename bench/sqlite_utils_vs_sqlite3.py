"""Why the buffer's hot path stays on sqlite3 while exports use sqlite-utils.

Inserts outbox-shaped rows (the real ``messages`` table and indexes of buffer/store.py,
realistic 40-value telemetry payloads) into a fresh WAL file, one transaction per batch,
the way the group-commit writer does: with the standard library (``executemany``, what
the writer does) and with sqlite-utils (``Table.insert_all`` from dicts). Also the cost
of importing sqlite_utils (time, RSS) in a fresh interpreter, and the read side
(``rows_where`` vs a plain cursor) that ``buffer export`` uses.

    .venv/bin/python -m bench.sqlite_utils_vs_sqlite3 --rows 100000

Prints one JSON line; asserts nothing (figures go in docs/DESIGN.md, "Buffer").
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.store_bench import payload
from buffer.store import _SCHEMA

COLUMNS = ("id", "press", "stream", "seq", "topic", "payload", "created", "delivered")


def fresh(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    for stmt in _SCHEMA.split(";"):
        if stmt.strip():
            conn.execute(stmt)
    return conn


def rows(n: int) -> list[tuple]:
    body = payload("p1", 1, time.time())
    now = time.time()
    return [(i + 1, f"p{i % 10 + 1}", "telemetry", i // 10 + 1, f"bench/p{i % 10 + 1}/telemetry",
             body, now + i * 0.01, None) for i in range(n)]


def with_sqlite3(path: Path, data: list[tuple], batch: int) -> float:
    conn = fresh(path)
    sql = f"INSERT INTO messages VALUES ({','.join('?' * len(COLUMNS))})"
    start = time.perf_counter()
    for i in range(0, len(data), batch):
        conn.execute("BEGIN")
        conn.executemany(sql, data[i:i + batch])
        conn.execute("COMMIT")
    took = time.perf_counter() - start
    conn.close()
    return took


def with_sqlite_utils(path: Path, data: list[tuple], batch: int) -> float:
    import sqlite_utils

    conn = fresh(path)
    db = sqlite_utils.Database(conn, execute_plugins=False)
    table = db["messages"]
    start = time.perf_counter()
    for i in range(0, len(data), batch):
        records = [dict(zip(COLUMNS, row, strict=True)) for row in data[i:i + batch]]
        conn.execute("BEGIN")
        table.insert_all(records, batch_size=batch)
        conn.execute("COMMIT")
    took = time.perf_counter() - start
    conn.close()
    return took


def read_side(path: Path) -> dict[str, float]:
    import sqlite_utils

    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    start = time.perf_counter()
    n1 = sum(1 for _ in conn.execute("SELECT * FROM messages ORDER BY id"))
    plain = time.perf_counter() - start
    start = time.perf_counter()
    n2 = sum(1 for _ in sqlite_utils.Database(conn, execute_plugins=False)["messages"]
             .rows_where(order_by="id"))
    utils = time.perf_counter() - start
    conn.close()
    assert n1 == n2
    return {"read_sqlite3_rows_per_s": round(n1 / plain),
            "read_sqlite_utils_rows_per_s": round(n2 / utils)}


def import_cost() -> dict[str, float]:
    code = ("import re, time, sqlite3\n"
            "def rss(): return int(re.search(r'VmRSS:\\s+(\\d+)', "
            "open('/proc/self/status').read())[1])\n"
            "r0 = rss(); t = time.perf_counter(); import sqlite_utils\n"
            "print(time.perf_counter() - t, rss() - r0)")
    runs = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           check=True).stdout.split() for _ in range(5)]
    secs = sorted(float(r[0]) for r in runs)
    kib = sorted(int(r[1]) for r in runs)
    return {"import_sqlite_utils_ms": round(secs[2] * 1000, 1),
            "import_sqlite_utils_rss_mib": round(kib[2] / 1024, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--batches", default="1,40,2000", help="rows per transaction")
    args = ap.parse_args()
    data = rows(args.rows)
    out: dict[str, object] = {"scenario": "sqlite_utils_vs_sqlite3", "rows": args.rows,
                              "payload_bytes": len(data[0][5])}
    with tempfile.TemporaryDirectory() as tmp:
        for batch in (int(b) for b in args.batches.split(",")):
            n = min(args.rows, 20_000) if batch == 1 else args.rows  # 1 per commit is slow
            a = with_sqlite3(Path(tmp) / f"a{batch}.sqlite", data[:n], batch)
            b = with_sqlite_utils(Path(tmp) / f"b{batch}.sqlite", data[:n], batch)
            out[f"batch_{batch}"] = {"sqlite3_us_per_row": round(a / n * 1e6, 2),
                                     "sqlite_utils_us_per_row": round(b / n * 1e6, 2),
                                     "sqlite_utils_over_sqlite3": round(b / a, 2)}
        out.update(read_side(Path(tmp) / f"a{args.batches.split(',')[-1]}.sqlite"))
    out.update(import_cost())
    print(json.dumps(out))


if __name__ == "__main__":
    main()
