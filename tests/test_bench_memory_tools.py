"""The memory bench's tools do not rot: the curve script reads a ``bench/run memory``
result and writes its table and chart; the probe's figures come from the real libraries
(libsqlite3's counter, glibc's mallinfo2, /proc)."""

from __future__ import annotations

import json
import sqlite3
import xml.etree.ElementTree as ET
from pathlib import Path

from bench import memory_curve, memprobe


def test_curve_table_and_svg_from_run_files(tmp_path: Path) -> None:
    up, down = tmp_path / "up.jsonl", tmp_path / "down.jsonl"
    up.write_text(json.dumps({"scenario": "memory", "rss_mb_by_minute": [60.0, 61.5, 61.5]})
                  + "\n")
    down.write_text(json.dumps({"scenario": "line"}) + "\n" + json.dumps(
        {"scenario": "memory", "rss_mb_by_minute": [60.0, 62.0, 62.5, 70.25]}) + "\n")
    out = tmp_path / "c.svg"
    assert memory_curve.main([str(up), str(down), "--label", "up", "--svg", str(out)]) == 0
    runs = [("up", memory_curve.load(up)), ("down", memory_curve.load(down))]
    lines = memory_curve.table(runs).splitlines()
    assert lines[0] == "| minute | up | down |"
    assert lines[2] == "| 0 | 60.0 | 60.0 |" and lines[-1] == "| 3 |  | 70.2 |"
    chart = ET.fromstring(out.read_text())
    polylines = chart.findall("{http://www.w3.org/2000/svg}polyline")
    assert [len(p.get("points", "").split()) for p in polylines] == [3, 4]


def test_probe_reads_sqlite_glibc_and_proc(tmp_path: Path) -> None:
    sqlite_lib, libc = memprobe._libs()
    assert sqlite_lib is not None and libc is not None
    before = memprobe.sample(0.0, sqlite_lib, libc)
    conn = sqlite3.connect(tmp_path / "x.sqlite")
    conn.execute("PRAGMA cache_size=-4096")
    conn.execute("CREATE TABLE t (v BLOB)")
    conn.executemany("INSERT INTO t VALUES (?)", [(b"x" * 1000,) for _ in range(3000)])
    conn.commit()
    after = memprobe.sample(0.0, sqlite_lib, libc)
    try:
        assert after["sqlite_mb"] - before["sqlite_mb"] > 1.0  # the connection's cache
        assert after["rss_mb"] > 0 and after["malloc_used_mb"] > 0
    finally:
        conn.close()


def test_probe_names_a_growing_container_and_its_holder() -> None:
    class Holder:
        def __init__(self) -> None:
            self.items: list[int] = list(range(40))

    h = Holder()
    old = memprobe.container_sizes()
    h.items.extend(range(1000, 1100))
    text = memprobe._containers_text(memprobe.container_sizes(), old, 50)
    line = next(x for x in text.splitlines() if "Holder.items" in x)
    assert line.split()[:2] == ["+100", "140"]
