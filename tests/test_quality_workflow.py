"""The quality workflow (issue 5), pure: patrol due/overdue, subgroups, SPC alarms and
reactions, capability, commands, last piece, snapshot. Time is data, events are returned."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from collector.domain import Characteristic, Event, Plan, Reaction, SpcOptions, WorkflowSettings
from collector.workflow import PressWorkflow

D = Decimal
PART = "Q-1"


def plan(**kw: Any) -> Plan:
    spc = kw.pop("spc", SpcOptions(limits="fixed", center=D("10.000"), sigma=D("0.010")))
    chars = (
        Characteristic("C1", "width", D("10.000"), D("9.950"), D("10.050"), gauge="g1",
                       char_class="critical", spc=spc),
        Characteristic("C2", "height", D("5.00"), D("4.90"), D("5.10"), gauge="g2"),
    )
    base: dict[str, Any] = dict(patrol_every_strokes=100, patrol_every_min=60.0,
                                overdue_grace_min=10.0, subgroup_size=1,
                                reactions={"critical": Reaction(
                                    out_of_tolerance=("hold", "inspection_100"),
                                    rule=("hold",), low_capability=("inspection_100",))})
    base.update(kw)
    return Plan(PART, "A", chars, **base)


SETTINGS = WorkflowSettings(authorized={"production": ("*",), "quality": ("Q7",)})


class Press:
    def __init__(self, p: Plan | None = None) -> None:
        self.plan = p or plan()
        self.wf = PressWorkflow("p1", SETTINGS, {PART: self.plan})
        self.roles: dict[str, Any] = {"stroke_count": 0, "die_id": "D1", "part_number": PART,
                                      "material_lot": "L1", "setup_mode": False}
        self.ts = 1_000_000.0
        self.n = 0

    def poll(self, dt: float = 1.0, **changes: Any) -> list[Event]:
        self.ts += dt
        self.roles.update(changes)
        return self.wf.on_poll(self.ts, dict(self.roles))

    def strokes(self, n: int) -> list[Event]:
        return self.poll(stroke_count=self.roles["stroke_count"] + n)

    def gauge(self, g: str, value: str, dt: float = 1.0) -> list[Event]:
        self.ts += dt
        self.n += 1
        return self.wf.on_gauge(self.ts, g, None, value, "mm", reading_id=f"r{self.n}")

    def cmd(self, name: str, **payload: Any) -> Any:
        self.ts += 1
        payload.setdefault("request_id", f"req-{name}")
        payload.setdefault("operator", "Q7")
        return self.wf.on_command(self.ts, name, payload)

    def release(self) -> Press:
        self.poll()
        self.gauge("g1", "10.000")
        self.gauge("g2", "5.00")
        assert self.wf.state == "released"
        return self


def kinds(events: list[Event]) -> list[str]:
    return [e.kind for e in events]


def one(events: list[Event], kind: str) -> Event:
    found = [e for e in events if e.kind == kind]
    assert len(found) == 1, kinds(events)
    return found[0]


def test_patrol_due_by_strokes_then_overdue_with_reason() -> None:
    p = Press().release()
    assert p.strokes(99) == []
    due = one(p.strokes(1), "measurement_due")
    assert due.body["reason"] == "strokes" and due.body["characteristics"] == ["C1", "C2"]
    assert p.strokes(500) == []  # one open due at a time
    assert p.wf.on_tick(p.ts + 599) == []
    overdue = one(p.wf.on_tick(p.ts + 601), "overdue")
    assert overdue.body["due_id"] == due.body["due_id"]
    assert overdue.body["missing"] == ["C1", "C2"] and "10 min" in overdue.body["reason"]
    assert p.wf.on_tick(p.ts + 700) == []  # the missed check is recorded once


def test_patrol_due_by_time_and_closed_by_a_complete_check() -> None:
    p = Press().release()
    assert p.wf.on_tick(p.ts + 3599) == []
    due = one(p.wf.on_tick(p.ts + 3601), "measurement_due")
    assert due.body["reason"] == "time"
    m = one(p.gauge("g1", "10.001"), "measurement")
    assert m.body["due_id"] == due.body["due_id"]
    assert m.body["subgroup"] == {"id": "C1/1/1", "position": 1, "size": 1}
    p.gauge("g2", "5.00")
    assert p.wf.snapshot()["patrol"]["due"] is None
    assert p.wf.on_tick(p.ts + 601) == []  # nothing overdue: the check was done


def test_out_of_tolerance_alarm_holds_and_starts_100_percent_until_release() -> None:
    p = Press().release()
    events = p.gauge("g1", "10.060")
    # out of tolerance, and beyond the plan's control limits (Nelson 1) too
    assert kinds(events) == ["measurement", "alarm", "alarm", "state_change"]
    assert [e.body["cause"] for e in events if e.kind == "alarm"] == [
        "out_of_tolerance", "rule"]
    alarm = events[1]
    assert alarm.body["cause"] == "out_of_tolerance"
    assert alarm.body["actions"] == ["hold", "inspection_100"]
    assert alarm.body["evidence"]["value"] == "10.060" and alarm.body["reading_ids"] == ["r3"]
    assert one(events, "measurement").body["action"] == "hold_and_inspection_100"
    assert alarm.context["state"] == "hold" and alarm.context["inspection_100"] is True
    # a non-critical characteristic out of tolerance: alarm only
    bad = Press().release()
    assert one(bad.gauge("g2", "5.20"), "alarm").body["actions"] == []
    assert bad.wf.state == "released"
    # release by an authorised quality operator
    refused = p.cmd("release", operator="OP1", why="checked")
    assert (refused.ok, refused.code) == (False, "unauthorized")
    assert p.wf.state == "hold"
    # the hold opened a containment: the release carries the disposition (issue 14)
    missing = p.cmd("release", why="sorted")
    assert (missing.ok, missing.code) == (False, "missing_field")
    assert "sorted_good, reworked, scrapped missing" in missing.message
    result = p.cmd("release", why="sorted 40 parts, all good", sorted_good="0",
                   reworked="0", scrapped="0")
    assert result.ok and kinds(result.events) == ["command", "state_change"]
    audit = result.events[0]
    assert audit.body["operator"] == "Q7"
    assert audit.body["fields"] == {"why": "sorted 40 parts, all good", "sorted_good": "0",
                                    "reworked": "0", "scrapped": "0"}
    assert audit.body["effect"]["ended_inspection_100"] is True
    assert p.wf.state == "released" and p.wf.context()["inspection_100"] is False
    assert p.wf.context()["operator"] == "Q7"


def test_rule_break_on_fixed_limits_alarms_with_evidence() -> None:
    p = Press().release()
    events: list[Event] = []
    for v in ("10.025", "10.000", "10.025"):  # Nelson 5: two of three beyond 2 sigma
        events = p.gauge("g1", v)
        if p.wf.state == "released":
            p.gauge("g2", "5.00")
    alarm = one(events, "alarm")
    assert alarm.body["cause"] == "rule"
    rule = alarm.body["evidence"]["rules"][0]
    assert rule["rule"] == 5 and len(rule["subgroups"]) == 3
    assert alarm.body["evidence"]["limits"]["ucl"] == 10.03
    assert alarm.body["actions"] == ["hold"] and p.wf.state == "hold"


def test_baseline_limits_freeze_after_k_subgroups_then_judge() -> None:
    p = Press(plan(spc=SpcOptions(baseline_subgroups=5), subgroup_size=2,
                   patrol_every_strokes=None, patrol_every_min=None))
    p.release()
    frozen: list[Event] = []
    values = ["10.000", "10.004", "9.998", "10.002", "10.001", "9.999", "10.003", "9.997",
              "10.000", "10.002"]
    for v in values:
        frozen += [e for e in p.gauge("g1", v) if e.kind == "control_limits"]
        p.gauge("g2", "5.00")
    assert len(frozen) == 1
    limits = frozen[0].body["limits"]
    assert limits["chart"] == "xbar_r" and limits["subgroups"] == 5
    events = p.gauge("g1", "10.040") + p.gauge("g2", "5.00") + p.gauge("g1", "10.040")
    assert [a.body["cause"] for a in events if a.kind == "alarm"] == ["rule"]


def test_phase_restarts_on_die_change_with_annotation() -> None:
    p = Press().release()
    p.gauge("g1", "10.000")
    events = p.poll(die_id="D2")
    note = one(events, "annotation")
    assert note.body["type"] == "die_change" and note.body["phase"] == 2
    assert p.wf.context()["phase"] == 2
    assert p.wf.snapshot()["spc"]["chars"]["C1"]["groups"] == []


def test_repeat_measurement_voids_and_keeps() -> None:
    p = Press().release()
    p.gauge("g1", "10.010")
    result = p.cmd("repeat_measurement", operator="OP1", reason="part not seated")
    assert result.ok
    assert result.events[0].body["effect"]["voided"]["reading_id"] == "r3"
    assert p.wf.snapshot()["spc"]["chars"]["C1"]["groups"] == []
    again = one(p.gauge("g1", "10.000"), "measurement")
    assert again.body["characteristic"] == "C1" and again.body["subgroup"]["id"] == "C1/1/1"
    twice = p.cmd("repeat_measurement", reason="again")
    assert twice.ok  # the re-measurement itself can be voided
    assert p.cmd("repeat_measurement", reason="again").code == "not_allowed"


def test_bad_commands_change_nothing() -> None:
    p = Press().release()
    before = json.dumps(p.wf.snapshot(), sort_keys=True)
    cases = [
        ("release", {"request_id": "1", "operator": "Q7", "why": "x"}, "not_allowed"),
        ("launch", {"request_id": "1", "operator": "Q7"}, "unknown_command"),
        ("hold", {"request_id": "1", "operator": "Q7"}, "missing_field"),
        ("hold", {"request_id": "1", "why": "x"}, "missing_field"),
        ("hold", {"request_id": "1", "operator": "OP1", "why": "x"}, "unauthorized"),
        ("hold", {"request_id": "1", "operator": "Q7", "why": 5.5}, "invalid_field"),
        ("hold", {"request_id": "1", "operator": "Q7", "why": "x", "extra": 1}, "invalid_field"),
        ("start_setup", {"request_id": "1", "operator": "Q7", "reason": "lunch"},
         "invalid_field"),
        ("set_material", {"request_id": "1", "operator": "Q7", "lot": "L9"}, "not_allowed"),
        ("hold", ["not", "an", "object"], "malformed"),
    ]
    for name, payload, code in cases:
        result = p.wf.on_command(p.ts, name, payload)
        assert (result.ok, result.code, result.events) == (False, code, []), name
    assert json.dumps(p.wf.snapshot(), sort_keys=True) == before


def test_hold_command_and_start_setup_for_repair() -> None:
    p = Press().release()
    held = p.cmd("hold", why="burr seen")
    assert held.ok and p.wf.state == "hold"
    setup = p.cmd("start_setup", operator="OP1", reason="repair")
    assert setup.ok
    assert kinds(setup.events) == ["command", "setup", "annotation", "state_change"]
    assert setup.events[1].body["reasons"] == ["repair"]
    assert setup.events[2].body["type"] == "die_repair"
    assert p.wf.state == "awaiting_first_article"


def test_set_material_on_a_press_without_lot_tag_is_a_material_change() -> None:
    p = Press()
    del p.roles["material_lot"]
    p.release()
    first = p.cmd("set_material", operator="OP1", lot="L5", heat="H5")
    assert first.ok and kinds(first.events) == ["command"]  # learning, not a change
    assert p.wf.context()["material_lot"] == "L5"
    change = p.cmd("set_material", operator="OP1", lot="L6")
    assert "setup" in kinds(change.events)
    assert one(change.events, "annotation").body["type"] == "material_lot_change"


def test_last_piece_then_comparison_at_next_setup_of_the_die() -> None:
    p = Press().release()
    assert p.cmd("start_last_piece", operator="OP1").ok
    assert p.gauge("g1", "10.012") == []
    lp = one(p.gauge("g2", "5.02"), "last_piece")
    assert lp.body["die_id"] == "D1" and lp.body["stored"] is True
    p.poll(die_id="D2")
    p.poll(die_id="D1")  # the die comes back
    p.gauge("g1", "10.002")
    events = p.gauge("g2", "5.00")
    comparison = one(events, "last_piece_comparison")
    items = {i["characteristic"]: i for i in comparison.body["items"]}
    assert items["C1"]["last_value"] == "10.012" and items["C1"]["first_value"] == "10.002"
    assert items["C1"]["difference"] == "-0.010"
    # the snapshot keeps the last piece per die
    snap = p.wf.snapshot()
    assert snap["last_piece"]["stored"]["D1"]["values"]["C1"] == "10.012"


def test_capability_on_request_and_review_suggestion() -> None:
    p = Press(plan(spc=SpcOptions(limits="fixed", center=D("10.000"), sigma=D("0.002")),
                   capability_min_values=4, capability_every=1000, patrol_every_strokes=None,
                   patrol_every_min=None))
    p.release()
    for v in ("10.001", "9.999", "10.000", "10.002", "9.998"):
        p.gauge("g1", v)
        p.gauge("g2", "5.00")
    result = p.cmd("request_capability", operator="OP1", characteristic="C1")
    assert result.ok
    cap = one(result.events, "capability")
    assert cap.body["trigger"] == "request" and cap.body["n"] == 5
    # sigma within from the fixed plan limits
    assert abs(cap.body["cpk"] - 0.05 / (3 * 0.002)) < 1e-6
    assert cap.body["verdict"] == "review"
    review = one(result.events, "capability_review")
    assert review.body["review_threshold"] == 3.0 and "does not change" in review.body["suggestion"]


def test_low_capability_applies_the_reaction() -> None:
    p = Press(plan(spc=SpcOptions(limits="fixed", center=D("10.000"), sigma=D("0.030")),
                   capability_min_values=4, capability_every=4, patrol_every_strokes=None,
                   patrol_every_min=None))
    p.release()
    events: list[Event] = []
    for v in ("10.010", "9.990", "10.000", "10.005"):
        events = p.gauge("g1", v)
        p.gauge("g2", "5.00")
    alarm = one(events, "alarm")
    assert alarm.body["cause"] == "low_capability" and alarm.body["actions"] == ["inspection_100"]
    assert one(events, "capability").body["verdict"] == "below_minimum"


def test_first_article_sample_size_two() -> None:
    p = Press(plan(first_article_sample_size=2))
    p.poll()
    for g, v in (("g1", "10.000"), ("g2", "5.00"), ("g1", "10.001")):
        assert "first_article" not in kinds(p.gauge(g, v))
    fa = one(p.gauge("g2", "5.01"), "first_article")
    assert [(r["characteristic"], r["piece"]) for r in fa.body["results"]] == [
        ("C1", 1), ("C2", 1), ("C1", 2), ("C2", 2)]


def test_snapshot_round_trip_keeps_quality_state() -> None:
    p = Press().release()
    p.gauge("g1", "10.010")
    p.cmd("start_last_piece", operator="OP1")
    snap = p.wf.snapshot()
    json.dumps(snap)
    wf = PressWorkflow.restore("p1", SETTINGS, {PART: p.plan}, snap)
    assert wf.snapshot() == snap
    broken = {**snap, "spc": {**snap["spc"], "phase": "x"}}
    fresh = PressWorkflow.restore("p1", SETTINGS, {PART: p.plan}, broken)
    assert fresh.state == "released"  # the press state survives a bad quality block
    assert fresh.snapshot()["spc"]["chars"]["C1"]["groups"] == []


# ---- 100 % inspection, missed-check reasons, plan change (issue 5, second part) ------

I100 = WorkflowSettings(authorized={"production": ("*",), "quality": ("Q7",)},
                        inspection_100_max_unmeasured=3)


def i100_press(**kw: Any) -> Press:
    """C1 out of tolerance -> 100 % inspection only (production stays released)."""
    kw = {"patrol_every_strokes": None, "patrol_every_min": None, **kw}
    p = Press(plan(reactions={"critical": Reaction(out_of_tolerance=("inspection_100",))},
                   **kw))
    p.wf = PressWorkflow("p1", I100, {PART: p.plan})
    return p.release()


def test_100_percent_inspection_counts_strokes_against_measured_pieces() -> None:
    p = i100_press()
    assert p.wf.context()["unmeasured_pieces"] is None  # mode off
    alarm = next(e for e in p.gauge("g1", "10.060") if e.kind == "alarm")
    assert alarm.body["actions"] == ["inspection_100"] and p.wf.state == "released"
    assert alarm.context["unmeasured_pieces"] == 0
    assert p.strokes(2) == [] and p.wf.context()["unmeasured_pieces"] == 2
    m = one(p.gauge("g1", "10.000"), "measurement")
    assert m.body["purpose"] == "inspection_100" and m.context["unmeasured_pieces"] == 2
    assert one(p.gauge("g2", "5.00"), "measurement").context["unmeasured_pieces"] == 1
    assert p.strokes(2) == []  # 4 strokes, 1 piece: 3 unmeasured, at the tolerance
    gap = one(p.strokes(1), "alarm")  # 4 > 3
    assert gap.body["cause"] == "unmeasured_pieces" and gap.body["characteristic"] is None
    ev = gap.body["evidence"]
    assert (ev["strokes"], ev["pieces_measured"], ev["unmeasured_pieces"]) == (5, 1, 4)
    assert ev["per_characteristic"] == {"C1": 1, "C2": 1} and ev["max_unmeasured"] == 3
    assert gap.context["unmeasured_pieces"] == 4
    assert p.strokes(5) == []  # raised once while the gap stays open
    for g, v in (("g1", "10.000"), ("g2", "5.00")) * 7:  # catch up: 8 pieces, 10 strokes
        p.gauge(g, v)
    assert p.wf.context()["unmeasured_pieces"] == 2  # within the tolerance: re-armed
    assert p.strokes(1) == []
    assert one(p.strokes(1), "alarm").body["evidence"]["alarms"] == 2
    # a voided value is not a measured piece
    before = p.wf.context()["unmeasured_pieces"]
    p.gauge("g1", "10.000")
    p.gauge("g2", "5.00")
    assert p.wf.context()["unmeasured_pieces"] == before - 1
    voided = p.cmd("repeat_measurement", operator="OP1", reason="not seated")
    assert p.wf.context()["unmeasured_pieces"] == before
    assert kinds(voided.events) == ["command", "alarm"]  # back above the tolerance
    # the quality release reports the totals and ends the mode
    result = p.cmd("release", why="sorted, all measured")
    totals = result.events[0].body["effect"]["inspection_100"]
    assert result.effect is not None and result.effect["inspection_100"] == totals
    assert (totals["strokes"], totals["pieces_measured"], totals["alarms"]) == (12, 8, 3)
    assert totals["unmeasured_pieces"] == 4 and totals["per_characteristic"] == {
        "C1": 9, "C2": 8}  # the voided C2 value is not counted
    assert p.wf.context()["unmeasured_pieces"] is None
    assert p.strokes(50) == []  # no longer counted


def test_100_percent_inspection_survives_a_restart_and_counts_only_released_strokes() -> None:
    p = i100_press()
    p.gauge("g1", "10.060")
    p.strokes(2)
    snap = p.wf.snapshot()
    p.wf = PressWorkflow.restore("p1", I100, {PART: p.plan}, snap)
    assert p.wf.snapshot() == snap and p.wf.context()["unmeasured_pieces"] == 2
    assert p.cmd("hold", why="containment").ok
    p.strokes(10)  # strokes on hold are unreleased strokes, not unmeasured pieces
    assert p.wf.context()["unmeasured_pieces"] == 2
    assert p.wf.context()["unreleased_strokes"] == 10


def test_missed_check_reason_attaches_to_the_overdue_record() -> None:
    p = Press().release()
    refused = p.cmd("missed_check_reason", operator="OP1", reason="coil change")
    assert (refused.ok, refused.code) == (False, "not_allowed")  # nothing missed yet
    first = one(p.strokes(100), "measurement_due").body["due_id"]
    one(p.wf.on_tick(p.ts + 601), "overdue")
    p.ts += 601
    for g, v in (("g1", "10.000"), ("g2", "5.00")):
        p.gauge(g, v)  # the late check closes the due
    second = one(p.strokes(100), "measurement_due").body["due_id"]
    one(p.wf.on_tick(p.ts + 601), "overdue")
    before = json.dumps(p.wf.snapshot(), sort_keys=True)
    for payload, code in (({"due_id": "p1/due/99", "reason": "x"}, "invalid_field"),
                          ({"due_id": second}, "missing_field"),  # no reason
                          ({"due_id": second, "reason": " "}, "missing_field"),
                          ({"due_id": second, "reason": "x", "extra": "1"}, "invalid_field")):
        bad = p.cmd("missed_check_reason", operator="OP1", **payload)
        assert (bad.ok, bad.code, bad.events) == (False, code, []), payload
    assert json.dumps(p.wf.snapshot(), sort_keys=True) == before
    last = p.cmd("missed_check_reason", operator="OP1", reason="die jam, press stopped")
    assert last.ok and kinds(last.events) == ["command"]
    effect = last.events[0].body["effect"]
    assert effect["due_id"] == second and effect["missing"] == ["C1", "C2"]
    assert effect["reason"] == "die jam, press stopped" and effect["previous_reason"] is None
    earlier = p.cmd("missed_check_reason", operator="OP2", due_id=first, reason="gauge broken")
    assert earlier.ok and earlier.events[0].body["effect"]["due_id"] == first
    assert earlier.events[0].context["operator"] == "OP2"
    again = p.cmd("missed_check_reason", operator="OP2", due_id=first, reason="gauge at lab")
    assert again.events[0].body["effect"]["previous_reason"] == "gauge broken"
    snap = p.wf.snapshot()
    assert [r["operator_reason"] for r in snap["patrol"]["missed"]] == [
        "gauge at lab", "die jam, press stopped"]
    assert PressWorkflow.restore("p1", SETTINGS, {PART: p.plan}, snap).snapshot() == snap


def test_plan_revision_change_at_restart_annotates_and_events_name_the_new_revision() -> None:
    p = Press().release()
    p.gauge("g1", "10.001")
    assert p.wf.context()["plan_revision"] == "A"
    revised = Plan(PART, "B", p.plan.characteristics, patrol_every_strokes=100)
    p.wf = PressWorkflow.restore("p1", SETTINGS, {PART: revised}, p.wf.snapshot())
    events = p.poll()
    note = one(events, "annotation")
    assert note.body["type"] == "plan_change" and note.body["source"] == "config"
    assert note.body["previous"] == {"plan_revision": "A"}
    assert note.body["new"] == {"plan_revision": "B"} and note.context["plan_revision"] == "B"
    assert p.wf.state == "released" and p.poll() == []  # annotated once
    m = one(p.gauge("g1", "10.002"), "measurement")
    assert m.context["plan_revision"] == "B" and m.context["phase"] == 2
    assert m.body["subgroup"]["id"] == "C1/2/1"  # a new phase: statistics start afresh


def test_plans_replaced_while_running_annotate_and_restart_an_open_first_article() -> None:
    p = Press()
    p.poll()
    p.gauge("g1", "10.000")  # first article open, judged by rev A so far
    revised = Plan(PART, "B", p.plan.characteristics)
    p.wf.set_plans({PART: revised})
    events = p.gauge("g2", "5.00")
    note = one(events, "annotation")
    assert note.body["type"] == "plan_change" and note.body["new"] == {"plan_revision": "B"}
    assert "first_article" not in kinds(events)  # C1 must be measured again under rev B
    fa = one(p.gauge("g1", "10.000"), "first_article")
    assert fa.context["plan_revision"] == "B" and fa.body["attempt"] == 1
    p.wf.set_plans({PART: Plan(PART, "C", p.plan.characteristics)})
    tick = p.wf.on_tick(p.ts + 1)  # the daemon's clock annotates without waiting for input
    assert one(tick, "annotation").body["previous"] == {"plan_revision": "B"}
