"""Stroke counters and role signals as PLCs really send them (issue 11), pure.

A 16/32-bit counter wraps and is counted across; a one-poll glitch to 0, a reset or a
jump beyond what the press can make at its maximum stroke rate is one
``counter_anomaly`` alarm and counts nothing; the count resumes with the next plausible
value. True/false roles read a PLC mode word through a map (values, a bit, enum names).
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest

from collector.domain import Characteristic, Event, Plan, RoleMap, WorkflowSettings
from collector.workflow import PressWorkflow

PLAN = Plan("P", "A", (Characteristic("C1", "w", Decimal("1.0"), Decimal("0.9"),
                                      Decimal("1.1"), gauge="g1"),),
            patrol_every_strokes=50)


class Press:
    def __init__(self, settings: WorkflowSettings, count: int) -> None:
        self.settings = settings
        self.wf = PressWorkflow("p1", settings, {"P": PLAN})
        self.ts = 1_000_000.0
        self.roles: dict[str, Any] = {"part_number": "P", "die_id": "D1",
                                      "stroke_count": count, "setup_mode": 0}
        self.wf.on_poll(self.ts, self.roles)
        self.wf.on_gauge(self.tick(1), "g1", None, "1.0", "mm")
        assert self.wf.state == "released"

    def tick(self, dt: float) -> float:
        self.ts += dt
        return self.ts

    def poll(self, dt: float = 1.0, **roles: Any) -> list[Event]:
        self.roles.update(roles)
        return self.wf.on_poll(self.tick(dt), self.roles)

    @property
    def count(self) -> int:
        return self.wf.context()["stroke_count"]


def anomalies(events: list[Event]) -> list[dict[str, Any]]:
    return [e.body for e in events if e.kind == "alarm" and e.body["cause"] == "counter_anomaly"]


WRAP32 = WorkflowSettings(stroke_counter_wrap=2**32, max_strokes_per_min=600)


def test_32_bit_wrap_is_counted_across() -> None:
    """Today 32 real strokes across the wrap counted as 0."""
    p = Press(WRAP32, 2**32 - 16)
    assert anomalies(p.poll(dt=4, stroke_count=16)) == []  # 32 strokes in 4 s at 600/min
    assert p.count == 2**32 - 16 + 32


def test_16_bit_wrap_is_counted_across_and_signed_too() -> None:
    p = Press(WorkflowSettings(stroke_counter_wrap=2**16), 65530)
    p.poll(stroke_count=4)
    assert p.count == 65530 + 10
    signed = Press(WorkflowSettings(stroke_counter_wrap=2**16), 32766)  # int16 tag
    signed.poll(stroke_count=-32767)  # 32766 -> 32767 -> -32768 -> -32767
    assert signed.count == 32766 + 3


def test_glitch_to_zero_is_an_anomaly_not_4_billion_strokes() -> None:
    p = Press(WRAP32, 1138)
    p.poll(stroke_count=1139)
    alarm = anomalies(p.poll(stroke_count=0))
    assert len(alarm) == 1
    evidence = alarm[0]["evidence"]
    assert (evidence["previous"], evidence["value"], evidence["reason"]) == (1139, 0, "decrease")
    assert evidence["max_increase"] == 11  # 600/min over 1 s, + 1
    assert alarm[0]["actions"] == [] and alarm[0]["characteristic"] is None
    assert p.count == 1139
    assert anomalies(p.poll(stroke_count=1140)) == []  # the glitch is over: resumes
    assert p.count == 1140


def test_glitch_to_zero_without_a_wrap_is_not_500001_strokes() -> None:
    p = Press(WorkflowSettings(max_strokes_per_min=600), 500_000)
    assert len(anomalies(p.poll(stroke_count=0))) == 1
    p.poll(stroke_count=500_001)
    assert p.count == 500_001
    assert p.wf.context()["unreleased_strokes"] == 0


def test_jump_beyond_the_stroke_rate_is_an_anomaly_once_then_resumes() -> None:
    p = Press(WRAP32, 1000)
    first = anomalies(p.poll(stroke_count=900_000))
    assert first[0]["evidence"]["reason"] == "jump"
    assert anomalies(p.poll(stroke_count=7)) == []  # still implausible: no second alarm
    assert p.count == 1000
    # the counter was really reset (to 7): the next value plausible after it counts on
    assert anomalies(p.poll(stroke_count=9)) == []
    assert p.count == 1002
    # a new episode raises a new alarm
    assert len(anomalies(p.poll(stroke_count=5_000_000))) == 1


def test_the_rate_allows_what_the_press_can_make_in_the_elapsed_time() -> None:
    p = Press(WRAP32, 0)
    assert anomalies(p.poll(dt=60, stroke_count=600)) == []  # 600 in a minute: ok
    assert anomalies(p.poll(dt=60, stroke_count=1300))  # 700 in a minute: not at 600/min
    assert p.count == 600


def test_patrol_counts_strokes_across_a_wrap() -> None:
    p = Press(WorkflowSettings(stroke_counter_wrap=2**16, max_strokes_per_min=6000), 65500)
    events = p.poll(dt=1, stroke_count=14)  # 50 strokes, 36 + 14 across the wrap
    assert [e.body["reason"] for e in events if e.kind == "measurement_due"] == ["strokes"]


def test_counter_state_survives_a_restart() -> None:
    p = Press(WRAP32, 1000)
    p.poll(stroke_count=0)  # anomaly open
    snap = json.loads(json.dumps(p.wf.snapshot()))
    p.wf = PressWorkflow.restore("p1", WRAP32, {"P": PLAN}, snap)
    assert p.wf.state == "released"
    assert anomalies(p.poll(stroke_count=2)) == []  # plausible after the suspect 0
    assert p.count == 1002
    # an older snapshot (version 1 before issue 11, no raw value): the count was the
    # PLC value
    m, fa = snap["machine"], snap["first_article"]
    old = {"version": 1, "press_id": "p1", "state": m["state"], "previous_state": None,
           "online": m["online"], "baselined": True, "ids": snap["setup"]["ids"],
           "setup_mode": None, "repair": None, "stroke_count": 1000,
           "last_stroke_ts": snap["counter"]["last_stroke_ts"], "attempt": fa["attempt"],
           "unreleased_strokes": fa["unreleased"], "patrol_last": -1,
           "first_article": None}
    q = PressWorkflow.restore("p1", WRAP32, {"P": PLAN}, old)
    assert q.state == "released"
    assert q.context()["stroke_count"] == 1000
    assert q.on_poll(p.ts, {"stroke_count": 1003, "part_number": "P", "die_id": "D1"}) \
        is not None
    assert q.context()["stroke_count"] == 1003


# ---- role maps ---------------------------------------------------------------------------

MODE = {"setup_mode": RoleMap(true_values=frozenset({1})),
        "running": RoleMap(true_values=frozenset({2}))}


def test_mode_word_drives_setup() -> None:
    """0 stopped / 1 setup / 2 production: without a map 2 would mean setup."""
    p = Press(WorkflowSettings(role_maps=MODE), 0)
    assert p.poll(setup_mode=2) == []  # production: not setup
    events = p.poll(setup_mode=1)
    assert [e.body["reasons"] for e in events if e.kind == "setup"] == [["die_change"]]
    assert p.wf.state == "setup"
    p.poll(setup_mode=2)
    assert p.wf.state == "awaiting_first_article"


def test_without_a_map_a_mode_word_of_2_is_setup_as_before() -> None:
    p = Press(WorkflowSettings(), 0)
    p.poll(setup_mode=2)
    assert p.wf.state == "setup"


@pytest.mark.parametrize(("mapping", "value", "expected"), [
    (RoleMap(bit=3), 0b1000, True),
    (RoleMap(bit=3), 0b0111, False),
    (RoleMap(bit=15), -32768, True),  # int16 with the top bit set
    (RoleMap(bit=0), "5", True),
    (RoleMap(bit=0), "x", None),
    (RoleMap(true_values=frozenset({1, 3})), 3, True),
    (RoleMap(true_values=frozenset({1, 3})), 3.0, True),
    (RoleMap(true_values=frozenset({1, 3})), 2, False),
    (RoleMap(true_values=frozenset({"Setup"})), " setup ", True),
    (RoleMap(true_values=frozenset({"Setup"})), "Production", False),
    (RoleMap(true_values=frozenset({"setup"}), names=("stopped", "setup", "production")),
     1, True),
    (RoleMap(true_values=frozenset({"setup"}), names=("stopped", "setup", "production")),
     2, False),
    (RoleMap(true_values=frozenset({"setup"}), names=("stopped", "setup", "production")),
     9, False),
    (RoleMap(true_values=frozenset({"setup"}), names=("stopped", "setup", "production")),
     "Setup", True),
    (RoleMap(true_values=frozenset({1})), None, None),
])
def test_role_map_reads(mapping: RoleMap, value: Any, expected: bool | None) -> None:
    assert mapping.read(value) == expected


def test_repair_bit_of_a_status_word() -> None:
    p = Press(WorkflowSettings(role_maps={"repair": RoleMap(bit=4)}), 0)
    assert p.poll(repair=0b0001) == []  # another bit: no repair
    events = p.poll(repair=0b10001)
    assert [e.body["reasons"] for e in events if e.kind == "setup"] == [["repair"]]


# ---- from the config files ----------------------------------------------------------------


def test_settings_from_config_files(tmp_path: Any) -> None:
    """Role maps and the counter wrap come from the press's tags (workflow_settings_for)."""
    import shutil
    from pathlib import Path

    from collector.config import load_config, workflow_settings_for

    cases = Path(__file__).resolve().parent / "config_cases"
    shutil.copytree(cases / "_base", tmp_path, dirs_exist_ok=True)
    press = tmp_path / "presses" / "p1.toml"
    text = press.read_text().replace('''[[plc.tags]]
name = "setup_mode"
area = "coil"
address = 0
role = "setup_mode"
''', '''[[plc.tags]]
name = "mode_setup"
address = 40
role = "setup_mode"
enum = ["stopped", "setup", "production"]
true_values = ["setup"]

[[plc.tags]]
name = "mode_running"
address = 40
role = "running"
true_values = [2]

[[plc.tags]]
name = "status"
address = 41
role = "repair"
true_bit = 3
''')
    press.write_text(text + "\n[workflow]\nmax_strokes_per_min = 120\n")
    cfg = load_config(tmp_path)
    settings = workflow_settings_for(cfg.presses["p1"])
    assert settings.role_maps == {
        "setup_mode": RoleMap(true_values=frozenset({"setup"}),
                              names=("stopped", "setup", "production")),
        "running": RoleMap(true_values=frozenset({2})),
        "repair": RoleMap(bit=3)}
    assert settings.stroke_counter_wrap == 2**32  # uint32 tag
    assert settings.max_strokes_per_min == 120
    assert settings.role_maps["setup_mode"].read(1) is True
    assert workflow_settings_for(cfg.presses["p2"]).role_maps == {}


def test_opcua_press_has_no_wrap_unless_configured() -> None:
    from pathlib import Path

    from collector.config import load_config, workflow_settings_for

    cfg = load_config(Path(__file__).resolve().parent.parent / "config")
    assert workflow_settings_for(cfg.presses["p4"]).stroke_counter_wrap is None
    assert workflow_settings_for(cfg.presses["p1"]).stroke_counter_wrap == 2**32
    assert workflow_settings_for(cfg.presses["p1"]).max_strokes_per_min == 600
