"""Issue 12: how long the buffer's start check takes, by file size.

``python -m bench.check_cost [readings ...]`` fills a buffer per size with
``store_bench.fill`` (delivered history, 40 readings per row, realistic payloads), then
times :func:`buffer.check.integrity` three ways: the targeted part alone (small tables,
pending index, newest rows; budget 0), the start check as the daemon runs it
(``START_CHECK_S``), and the whole file without a bound (``buffer check``). Page cache
warm (the file was just written): a cold start after a reboot reads the file from disk
first. Prints one JSON line per size; asserts nothing.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from bench import store_bench
from buffer.check import integrity
from buffer.store import START_CHECK_S


def measure(readings: int, workdir: Path) -> dict[str, object]:
    path = workdir / f"b{readings}.sqlite"
    rows = store_bench.fill(path, readings)
    out: dict[str, object] = {"readings": readings, "rows": rows,
                              "file_mb": round(path.stat().st_size / 2**20, 1)}
    for name, budget in (("targeted_s", 0.0), ("start_check_s", START_CHECK_S),
                         ("full_check_s", None)):
        t0 = time.perf_counter()
        report = integrity(path, budget)
        out[name] = round(time.perf_counter() - t0, 2)
        if name != "targeted_s":
            out[name.replace("_s", "_complete")] = report.complete
        assert not report.problems, report.problems
    for suffix in ("", "-wal", "-shm", "-seqmark"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    return out


def main(argv: list[str]) -> int:
    sizes = [int(a) for a in argv] or [1_000_000, 10_000_000, 50_000_000]
    workdir = Path(tempfile.mkdtemp(prefix="press-collector-check-", dir="/var/tmp"))
    try:
        for readings in sizes:
            print(json.dumps(measure(readings, workdir)), flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
