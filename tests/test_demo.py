"""The demo command runs the whole pipeline and shows the workflow a plant would see,
and the quality story a quality engineer wants to see within a minute (issue 11)."""

from __future__ import annotations

import re
from pathlib import Path

from sim.demo import format_event, run_demo

EVENT_LINE = re.compile(r"^\d\d:\d\d:\d\d\.\d{3}\s+(p\d|collector)\s")


def seen_everything(history: list[dict]) -> bool:
    """The events the test below looks for have all arrived."""
    def count(press: str, kind: str, **data: object) -> int:
        return sum(1 for p in history if p["press"] == press
                   and p["schema"].endswith("/" + kind)
                   and all(p["data"].get(k) == v for k, v in data.items()))

    return (count("p1", "state_change", cause="quality_release") >= 1
            and count("p2", "first_article", verdict="pass") >= 1
            and count("p3", "first_article", verdict="pass") >= 2
            and all(count(p, "measurement", characteristic="C1") >= 1
                    for p in ("p1", "p2", "p3", "p4"))
            and all(count("p1", "measurement", characteristic=c) >= 3
                    for c in ("C1", "C2", "C3")))


async def test_demo_shows_setup_first_articles_die_change_and_measurements(tmp_path: Path) -> None:
    lines: list[str] = []
    logs: list[str] = []
    # pace 0.5: the operators' walking and measuring at double speed (the events are real);
    # the demo stops as soon as everything below has happened (at the latest after 90 s)
    assert await run_demo(duration=90, workdir=tmp_path, out=lines.append,
                          log_out=logs.append, pace=0.5, until=seen_everything) == 0
    text = "\n".join(lines)
    for press in ("p1", "p2", "p3", "p4"):  # p4 is the OPC UA press
        assert re.search(rf"{press}\s+#\d+\s+setup\s+reasons=job_start", text), press
        assert re.search(rf"{press}\s+#\d+\s+measurement\s+C1=", text), press
    assert re.search(r"p4\s+#\d+\s+first_article\s+attempt 1 -> PASS", text)
    assert re.search(r"p2\s+#\d+\s+first_article\s+attempt 1 -> FAIL", text)
    assert re.search(r"p2\s+#\d+\s+first_article\s+attempt 2 -> PASS", text)
    assert re.search(r"p3\s+#\d+\s+setup\s+reasons=die_change", text)
    # setup mode first, the die id a moment later: one setup, amended (issue 11)
    assert re.search(r"p3\s+#\d+\s+setup\s+reasons=die_change .*die=22 .*amends", text)
    assert len(re.findall(r"p3\s+#\d+\s+first_article\s+attempt 1 -> PASS", text)) == 2

    # patrol rotates through the plan's characteristics with varying values
    p1 = {c: set(re.findall(rf"p1\s+#\d+\s+measurement\s+{c}=(\S+)", text))
          for c in ("C1", "C2", "C3")}
    assert all(len(values) >= 3 for values in p1.values()), p1
    # the quality story on p1: limits, a drift, a rule signal, the reaction, a release
    story = [r"control_limits\s+C1 i_mr limits", r"alarm\s+rule C1: rule \d.* -> hold",
             r"state_change\s+released -> hold \(reaction_hold\)",
             r"command\s+release by Q7", r"state_change\s+hold -> released"]
    at = 0
    for step in story:
        found = re.compile(rf"p1\s+#\d+\s+{step}").search(text, at)
        assert found, step
        at = found.end()

    # streams: the event view on stdout, the demo's own lines on stderr
    assert all(EVENT_LINE.match(line) for line in lines), [
        line for line in lines if not EVENT_LINE.match(line)][:3]
    assert logs and all(line.startswith("demo: ") for line in logs)
    assert "p4 opcua simulator" in "\n".join(logs)
    assert any("drift" in line for line in logs)
    assert "demo: ran" in logs[-1] and "telemetry=" in logs[-1]


def test_event_view_never_cuts_a_value_mid_word() -> None:
    payload = {"schema": "press-collector/overdue", "ts": "2026-11-25T09:00:00.123Z",
               "press": "p1", "seq": 7,
               "data": {"due_id": "p1/due/3", "due_ts": 1764061200.5, "grace_min": 10,
                        "missing": ["C1", "C2"],
                        "reason": "patrol check not completed within 10 min of falling due "
                                  "(strokes) and a very long explanation that cannot fit"}}
    line = format_event(payload)
    assert len(line) <= 120 and line.endswith("…")
    assert "due_id=p1/due/3" in line and "missing=[2]" in line
    shown = line.split("reason=", 1)[1].removesuffix(" …")
    assert payload["data"]["reason"].startswith(shown) and payload["data"]["reason"][
        len(shown)] == " "  # cut at a word boundary
    command = format_event({"schema": "press-collector/command", "ts": "", "press": "p1",
                            "seq": 1, "data": {"command": "release", "operator": "Q7",
                                               "fields": {"why": "parts sorted, die "
                                                                 "re-shimmed after the drift "
                                                                 "of C1 was found"},
                                               "state_before": "hold"}})
    assert "why=parts sorted," in command and "(state was hold)" in command
