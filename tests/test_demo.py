"""The demo command runs the whole pipeline and shows the workflow a plant would see."""

from __future__ import annotations

import re
from pathlib import Path

from collector.demo import run_demo


async def test_demo_shows_setup_first_articles_die_change_and_measurements(tmp_path: Path) -> None:
    lines: list[str] = []
    assert await run_demo(duration=22, workdir=tmp_path, out=lines.append) == 0
    text = "\n".join(lines)
    for press in ("p1", "p2", "p3", "p4"):  # p4 is the OPC UA press
        assert re.search(rf"{press}\s+#\d+\s+setup\s+reasons=job_start", text), press
        assert re.search(rf"{press}\s+#\d+\s+measurement\s+C1=", text), press
    assert "p4 opcua simulator" in text
    assert re.search(r"p4\s+#\d+\s+first_article\s+attempt 1 -> PASS", text)
    assert re.search(r"p2\s+#\d+\s+first_article\s+attempt 1 -> FAIL", text)
    assert re.search(r"p2\s+#\d+\s+first_article\s+attempt 2 -> PASS", text)
    assert re.search(r"p3\s+#\d+\s+setup\s+reasons=die_change", text)
    assert len(re.findall(r"p3\s+#\d+\s+first_article\s+attempt 1 -> PASS", text)) == 2
    assert "demo: ran" in lines[-1] and "telemetry=" in lines[-1]
