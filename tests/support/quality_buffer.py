"""A real buffer file with a realistic quality history, made by the real workflow.

The repo's example config (press p1, plan BRK-100 rev B, plan BRK-200) runs through
:class:`collector.press.PressRuntime` into a real SQLite outbox; commands go through the
real command gate. The story: job start, first article, patrol values, a repeated
(voided) measurement, a die change with its first article, a material change, a quality
hold and release, then a job change to another part. Times are fixed (``T0``), so the
tests can cut periods.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from buffer.store import Outbox
from collector.command_gate import CommandGate, policy_from_config
from collector.config import load_config, to_workflow_settings
from collector.messages import Topics, iso_utc
from collector.press import PressRuntime
from collector.press_drivers import role_tags
from drivers.base import GaugeValue, PollResult

REPO_CONFIG = Path(__file__).resolve().parents[2] / "config"
ROOT = "plant/test"
PART = "BRK-100"
T0 = datetime(2026, 12, 1, 6, 0, tzinfo=UTC).timestamp()
# BRK-100 rev B: C1 on g1, C2 and C3 on g2 (in plan order)
FA_READINGS = (("g1", "25.010"), ("g2", "12.480"), ("g2", "0.020"))


@dataclass
class Story:
    path: Path
    runtime: PressRuntime
    outbox: Outbox
    ts: float = T0
    strokes: int = 10
    roles: dict[str, Any] = field(default_factory=lambda: {
        "die_id": 7, "part_number": PART, "material_lot": "L1", "setup_mode": False,
        "running": True, "spm": 60})
    marks: dict[str, float] = field(default_factory=dict)  # name -> ts (period cuts)
    n_cmd: int = 0

    def tick(self, dt: float = 7.0) -> float:
        self.ts += dt
        return self.ts

    def poll(self, **changes: Any) -> None:
        self.roles.update(changes)
        self.strokes += 5
        self.runtime.sink(PollResult("p1/plc", self.tick(), {"strokes": self.strokes,
                                                             **self.roles}))

    def gauge(self, gauge: str, value: str) -> None:
        self.runtime.sink(GaugeValue(gauge, self.tick(), value, "mm", channel=1))

    def readings(self, values: list[tuple[str, str]]) -> None:
        for g, v in values:
            self.gauge(g, v)

    def command(self, role: str, name: str, operator: str, **fields: str) -> None:
        self.n_cmd += 1
        ts = self.tick()
        payload = {"request_id": f"r-{self.n_cmd}", "operator": operator,
                   "issued_at": iso_utc(ts), **fields}
        result = self.runtime.command(ts, f"{ROOT}/p1/cmd/{role}/{name}", role, name,
                                      orjson.dumps(payload))
        assert result is not None and result.ok, (name, result)

    @property
    def state(self) -> str:
        return self.runtime.workflow.state


def build(path: Path) -> Story:
    """Write the story into a new buffer at ``path`` (closed when returned)."""
    config = load_config(REPO_CONFIG)
    press = config.presses["p1"]
    outbox = Outbox.open(path, commit_interval_s=0.01)
    topics = Topics(ROOT, "h1")
    gate = CommandGate("p1", ROOT, policy_from_config(press.workflow.commands), now=T0)
    runtime = PressRuntime("p1", role_tags(press), to_workflow_settings(press.workflow),
                           config.plans, outbox, topics, gate=gate)
    s = Story(path, runtime, outbox)
    s.poll()  # job start -> awaiting first article
    s.readings(list(FA_READINGS))
    assert s.state == "released", s.state
    s.marks["released_1"] = s.ts
    s.readings([("g1", "25.004"), ("g2", "12.510"), ("g2", "0.015"),
                ("g1", "24.998"), ("g2", "12.495"), ("g2", "0.018")])
    s.command("production", "repeat_measurement", "OP1", reason="part not seated")
    s.readings([("g2", "0.017")])  # the re-measurement of the voided value
    s.marks["before_die_change"] = s.tick(60)
    s.poll(die_id=8)  # die change -> setup + annotation, awaiting first article
    assert s.state == "awaiting_first_article", s.state
    s.readings([("g1", "25.020"), ("g2", "12.470"), ("g2", "0.025")])
    assert s.state == "released", s.state
    s.readings([("g1", "25.011"), ("g2", "12.505"), ("g2", "0.012")])
    s.poll(material_lot="L2")  # material change
    s.readings([("g1", "25.001"), ("g2", "12.500"), ("g2", "0.010")])  # first article
    assert s.state == "released", s.state
    s.readings([("g1", "25.003"), ("g2", "12.490"), ("g2", "0.011")])
    s.command("quality", "hold", "Q7", why="burr on C3")
    s.command("quality", "release", "Q7", why="sorted, ok")
    assert s.state == "released", s.state
    s.readings([("g1", "25.006"), ("g2", "12.502"), ("g2", "0.014")])
    s.marks["before_job_change"] = s.tick(60)
    s.poll(part_number="BRK-200", die_id=21)  # another part: not in a BRK-100 export
    s.readings([("g1", "40.010"), ("g2", "8.000")])
    outbox.flush_sync()
    outbox.close()
    return s
