"""Containment, disposition and joint sign-off in the exports (issue 14), from a real
buffer file written by the real press runtime and command gate: the Q-DAS file and the
CSV are parsed back and compared with the buffer's own events."""

from __future__ import annotations

import csv
import dataclasses
import io
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from buffer.event_reader import read_stream
from buffer.store import Outbox
from collector.cli import main
from collector.command_gate import CommandGate, policy_from_config
from collector.config import load_config, to_workflow_settings
from collector.domain import Reaction
from collector.export.measurements import CATALOGUE
from collector.messages import Topics
from collector.press import PressRuntime
from collector.press_drivers import role_tags
from tests.support.quality_buffer import FA_READINGS, PART, REPO_CONFIG, ROOT, T0, Story
from tests.test_exports import parse_dfq


@pytest.fixture(autouse=True)
def plant_time(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TZ", "Asia/Shanghai")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def build(path: Path) -> Story:
    """BRK-100 confirmed by production and quality; a critical value out of tolerance
    holds the press; the release gives the disposition."""
    config = load_config(REPO_CONFIG)
    plan = dataclasses.replace(config.plans[PART],
                               first_article_confirm_roles=("production", "quality"),
                               reactions={"critical": Reaction(out_of_tolerance=("hold",))})
    press = config.presses["p1"]
    outbox = Outbox.open(path, commit_interval_s=0.01)
    gate = CommandGate("p1", ROOT, policy_from_config(press.workflow.commands), now=T0)
    runtime = PressRuntime("p1", role_tags(press), to_workflow_settings(press.workflow),
                           {**config.plans, PART: plan}, outbox, Topics(ROOT, "h1"),
                           gate=gate)
    s = Story(path, runtime, outbox)
    s.poll()
    s.readings(list(FA_READINGS))
    assert s.state == "awaiting_confirmation", s.state
    s.command("production", "confirm_first_article", "OP1")
    s.command("quality", "confirm_first_article", "Q12")
    assert s.state == "released", s.state
    s.poll()
    s.readings([("g1", "25.004"), ("g2", "12.510"), ("g2", "0.015")])  # passing check
    s.poll()
    s.poll()
    s.readings([("g1", "25.090")])  # out of tolerance: hold, containment
    assert s.state == "hold", s.state
    s.poll()  # stamped on hold: suspect too
    parts = runtime.workflow.context()["containment"]["parts"]
    s.command("quality", "release", "Q7", why="sorted at the bench",
              sorted_good=str(parts - 3), reworked="2", scrapped="1")
    assert s.state == "released", s.state
    s.readings([("g1", "25.002"), ("g2", "12.500"), ("g2", "0.012")])
    outbox.flush_sync()
    outbox.close()
    return s


@pytest.fixture(scope="module")
def story(tmp_path_factory: pytest.TempPathFactory) -> Story:
    return build(tmp_path_factory.mktemp("buf") / "buffer.sqlite")


def events(path: Path, kind: str) -> list[dict[str, Any]]:
    out = []
    for _, payload in read_stream(path, "p1", "events"):
        doc = orjson.loads(payload)
        if doc["schema"] == f"press-collector/{kind}":
            out.append(doc)
    return out


def test_disposition_and_sign_off_are_event_codes_in_qdas_and_csv(story: Story,
                                                                    tmp_path: Path) -> None:
    release = next(e for e in events(story.path, "command")
                   if e["data"]["command"] == "release")
    closed = release["data"]["effect"]["containment"]
    d = closed["disposition"]
    assert (d["reworked"], d["scrapped"], d["accounted"]) == (2, 1, closed["parts"])
    span = f"strokes {closed['first_stroke']}..{closed['last_stroke']} ({closed['parts']} parts)"
    sign_off = events(story.path, "sign_off")[0]
    assert [c["operator"] for c in sign_off["data"]["confirmations"]] == ["OP1", "Q12"]

    out = tmp_path / "brk100.dfq"
    assert main(["export", "qdas", "--part", PART, "--buffer", str(story.path),
                 "--config-dir", str(REPO_CONFIG), "--out", str(out)]) == 0
    _, chars, values = parse_dfq(out.read_bytes())
    number = {c[2001]: i for i, c in chars.items()}
    c1 = [v for v in values if v["char"] == str(number["C1"])]
    # first article, the patrol check after the sign-off, the failing value, the value
    # after the release
    assert [v[1] for v in c1] == ["25.010", "25.004", "25.090", "25.002"]
    assert c1[1][5] == str(CATALOGUE["sign_off"][0])
    assert "sign_off attempt 1 confirmed by production OP1, quality Q12" in c1[1][9]
    # in the order of the event log: hold, the release command, the state change
    assert c1[3][5] == ",".join(str(CATALOGUE[n][0]) for n in (
        "hold", "containment_disposition", "release"))  # 110,112,111
    assert f"containment_disposition {closed['id']} C1 {span}: good {d['sorted_good']}, " \
           "reworked 2, scrapped 1" in c1[3][9]
    # every characteristic's next value carries the markers
    c2 = [v for v in values if v["char"] == str(number["C2"])]
    assert c2[-1][5] == c1[3][5]

    csv_out = tmp_path / "brk100.csv"
    assert main(["export", "csv", "--part", PART, "--buffer", str(story.path),
                 "--out", str(csv_out)]) == 0
    rows = list(csv.DictReader(io.StringIO(csv_out.read_bytes().decode("utf-8-sig"),
                                           newline="")))
    last_c1 = [r for r in rows if r["characteristic"] == "C1"][-1]
    assert last_c1["event_codes"] == "110 112 111"
    assert f"{closed['id']} C1 {span}: good {d['sorted_good']}, reworked 2, scrapped 1" in \
        last_c1["events"]
    hold = next(e for e in events(story.path, "state_change") if e["data"]["to"] == "hold")
    at_hold = hold["context"]["containment"]
    assert (f"hold reaction_hold; suspect C1 strokes {at_hold['first_stroke']}.."
            f"{at_hold['last_stroke']} ({at_hold['parts']} parts)") in last_c1["events"]
