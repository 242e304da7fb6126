"""Exports over big buffers: does memory stay flat while the rows grow?

Builds buffers of N rows (2 telemetry rows per patrol measurement event, realistic
payloads encoded by the real message code, 3 characteristics of BRK-100), then runs
``press-collector export csv`` and ``export qdas`` as their own processes and reports
wall time and peak RSS (the child's own VmHWM: the true peak, no sampling gaps).

    .venv/bin/python bench/export_bench.py                       # 100k and 1.5M rows
    .venv/bin/python bench/export_bench.py --rows 100000 300000  # quicker
    .venv/bin/python bench/export_bench.py --keep /tmp/exp       # reuse built buffers

Prints one JSON line per (rows, format) and a Markdown table; nothing is asserted (the
bounded-memory property is tested with tracemalloc in tests/test_exports.py).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from buffer.store import Outbox, OutboxRow
from collector.domain import Event
from collector.messages import encode_event, encode_telemetry

PART = "BRK-100"
T0 = datetime(2026, 12, 1, 6, 0, tzinfo=UTC).timestamp()
CHARS = (("C1", "Hole distance", "25.00", "24.95", "25.05"),
         ("C2", "Flange height", "12.50", "12.40", "12.60"),
         ("C3", "Burr height", "0", None, "0.05"))


def build(path: Path, rows: int) -> int:
    """A buffer of ``rows`` rows (1/3 measurement events); returns the values in it."""
    outbox = Outbox.open(path, commit_interval_s=0.05)
    values = rows // 3
    ctx = {"part_number": PART, "plan_revision": "B", "die_id": "D-114",
           "material_lot": "L2411-01", "heat_number": "H8812", "stroke_count": 0,
           "state": "released", "first_article_attempt": 1, "unreleased_strokes": 0,
           "phase": 1, "inspection_100": False, "unmeasured_pieces": None,
           "operator": "OP3"}
    tags = {f"load_{i:02d}": 1000 + i for i in range(40)}
    batch: list[OutboxRow] = []
    seq_t = 0
    for seq_e in range(1, values + 1):
        ts = T0 + seq_e * 2.0
        for k in range(2):
            seq_t += 1
            batch.append(OutboxRow("p1", "telemetry", seq_t, "plant/p1/telemetry",
                                   encode_telemetry("p1", seq_t, ts + k, "h", tags, {},
                                                    {"state": "released"}), delivered=True))
        cid, name, nominal, lsl, usl = CHARS[seq_e % 3]
        body = {"characteristic": cid, "name": name, "char_class": "critical", "unit": "mm",
                "resolution": "0.001", "nominal": nominal, "lsl": lsl, "usl": usl,
                "value": f"{float(nominal) + (seq_e % 21 - 10) / 1000:.3f}",
                "deviation": f"{(seq_e % 21 - 10) / 1000:.3f}", "verdict": "pass",
                "reading_id": f"p1/gauge/{seq_e}", "gauge": "g1", "channel": 1,
                "raw_value": "x", "raw_unit": "mm", "measured_ts": ts, "stroke_count": seq_e,
                "action": "none", "subgroup": {"id": f"{cid}/1/{seq_e}", "position": 1,
                                               "size": 1},
                "phase": 1, "due_id": None, "purpose": "patrol"}
        batch.append(OutboxRow("p1", "events", seq_e, "plant/p1/events/measurement",
                               encode_event(Event("measurement", ts, body,
                                                  {**ctx, "stroke_count": seq_e}),
                                            "p1", seq_e, "h"), delivered=True))
        if len(batch) >= 30_000:
            outbox.add_many(batch)
            outbox.flush_sync()
            batch = []
    outbox.add_many(batch)
    outbox.flush_sync()
    outbox.close()
    return values


# The child reports its own peak RSS (VmHWM of its address space, which exec starts
# afresh). ru_maxrss from wait4 would not do: Linux carries the parent's high-water mark
# over fork+exec, so the bench's own memory would show up as the export's.
CHILD = """
import sys
from collector.cli import main
code = main(sys.argv[1:])
for line in open("/proc/self/status"):
    if line.startswith("VmHWM:"):
        print("VMHWM_KB", line.split()[1], file=sys.stderr)
sys.exit(code)
"""


def run_export(buffer: Path, fmt: str, out: Path) -> dict[str, float]:
    args = [sys.executable, "-c", CHILD, "export", fmt, "--part", PART,
            "--buffer", str(buffer), "--out", str(out)]
    if fmt == "qdas":
        args += ["--description", "Bracket, left"]
    t0 = time.perf_counter()
    proc = subprocess.Popen(args, cwd=Path(__file__).resolve().parents[1],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    err = proc.stderr.read().decode() if proc.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"export failed: {err}")
    hwm = next(int(ln.split()[1]) for ln in err.splitlines() if ln.startswith("VMHWM_KB"))
    return {"wall_s": round(wall, 2), "peak_rss_mib": round(hwm / 1024, 1),
            "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
            "out_mib": round(out.stat().st_size / 2**20, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_500_000])
    parser.add_argument("--keep", type=Path, default=None,
                        help="directory for the buffers (reused when present)")
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="export-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    results = []
    for rows in args.rows:
        buffer = work / f"buffer-{rows}.sqlite"
        t0 = time.perf_counter()
        if not buffer.exists():
            build(buffer, rows)
        built = time.perf_counter() - t0
        for fmt in ("csv", "qdas"):
            r = {"rows": rows, "values": rows // 3, "format": fmt,
                 "buffer_mib": round(buffer.stat().st_size / 2**20, 1),
                 **run_export(buffer, fmt, work / f"out-{rows}.{fmt}")}
            r["values_per_s"] = round(r["values"] / r["wall_s"])
            r["build_s"] = round(built, 1)
            print(json.dumps(r), flush=True)
            results.append(r)
    print("\n| rows | values | format | buffer MiB | out MiB | wall s | values/s | "
          "peak RSS MiB |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['rows']:,} | {r['values']:,} | {r['format']} | {r['buffer_mib']} | "
              f"{r['out_mib']} | {r['wall_s']} | {r['values_per_s']:,} | "
              f"{r['peak_rss_mib']} |")
    if args.keep is None:
        for p in work.iterdir():
            p.unlink()
        work.rmdir()


if __name__ == "__main__":
    main()
