"""The bench must not rot: a seconds-long line run produces its JSON lines.

Asserts the shape of the output only, never a figure (figures are bench/README.md's job).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

LINE_KEYS = {"scenario", "delivered_readings_per_s", "latency_p50_ms", "latency_p99_ms",
             "latency_max_ms", "poll_jitter_p50_ms", "poll_jitter_p99_ms", "cpu_pct",
             "rss_peak_mb", "bytes_per_reading", "fsyncs_per_s", "lost", "duplicates",
             "late_polls"}
QUALITY_KEYS = {"scenario", "events", "first_article", "measurement", "latency_p50_ms",
                "latency_p99_ms"}


def test_line_scenario_prints_its_json(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bench.run", "line", "--quick", "--duration", "2",
         "--presses", "2", "--workdir", str(tmp_path / "work"),
         "--results", str(tmp_path / "results")],
        cwd=REPO, capture_output=True, text=True, timeout=90, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [json.loads(x) for x in proc.stdout.splitlines() if x.startswith("{")]
    by_name = {x["scenario"]: x for x in lines}
    assert set(by_name["line"]) >= LINE_KEYS
    assert set(by_name["quality"]) >= QUALITY_KEYS
    assert by_name["line"]["delivered_readings_per_s"] > 0
    assert "| line | cpu_pct |" in proc.stdout
    assert len(list((tmp_path / "results").glob("*.jsonl"))) == 1
