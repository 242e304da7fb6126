"""Containment (issue 14), pure: the suspect range of a failing patrol value or a holding
reaction (strokes and times since the last passing check, parts to isolate), the open
containment in the context, and the release that must carry its disposition."""

from __future__ import annotations

import json
from typing import Any

from collector.domain import SpcOptions, WorkflowSettings
from collector.workflow import PressWorkflow
from tests.test_quality_workflow import PART, SETTINGS, Press, kinds, one, plan

NO_SPC = SpcOptions(enabled=False)


def at(p: Press, strokes: int) -> None:
    """Stroke the press up to ``strokes`` on the counter."""
    p.poll(stroke_count=strokes)


def c1(p: Press, strokes: int, value: str) -> list[Any]:
    at(p, strokes)
    return p.gauge("g1", value)


def test_a_failing_value_names_its_range_and_the_release_needs_the_disposition() -> None:
    p = Press().release()  # released at stroke 0
    c1(p, 10, "10.000")  # C1's passing check at stroke 10
    first_ts = p.ts
    events = c1(p, 30, "10.060")  # out of tolerance: hold (and 100 %)
    assert kinds(events) == ["measurement", "alarm", "alarm", "state_change"]
    suspect = one(events, "measurement").body["containment"]
    assert suspect == {
        "id": "p1/containment/1", "characteristics": ["C1"], "causes": ["out_of_tolerance"],
        "first_stroke": 10, "last_stroke": 30, "since": first_ts, "until": p.ts,
        "parts": 20, "last_good": {"source": "patrol", "subgroup": "C1/1/1"},
        "detected_ts": p.ts, "detected_stroke": 30, "range_open": True}
    alarms = [e for e in events if e.kind == "alarm"]
    assert alarms[0].body["containment"] == suspect
    assert alarms[1].body["cause"] == "rule"  # beyond 3 sigma too: same start
    assert alarms[1].body["containment"]["first_stroke"] == 10
    change = events[-1]  # taken when the first alarm held the press
    assert change.context["containment"]["id"] == "p1/containment/1"
    assert change.context["containment"]["parts"] == 20
    assert p.wf.context()["containment"]["causes"] == ["out_of_tolerance", "rule"]

    # the press keeps stamping on hold: those parts are suspect too
    at(p, 36)
    live = p.wf.context()["containment"]
    assert (live["last_stroke"], live["parts"], live["until"]) == (36, 26, p.ts)

    missing = p.cmd("release", why="sorted")
    assert (missing.ok, missing.code) == (False, "missing_field")
    assert "p1/containment/1 (strokes 10..36, 26 parts; C1)" in missing.message
    assert "sorted_good, reworked, scrapped missing" in missing.message
    short = p.cmd("release", why="sorted", sorted_good="20", reworked="0", scrapped="2")
    assert (short.ok, short.code) == (False, "invalid_field")
    assert "accounts for 22 of the 26 suspect parts" in short.message
    bad = p.cmd("release", why="sorted", sorted_good="-1", reworked="0", scrapped="2")
    assert (bad.ok, bad.code) == (False, "invalid_field")
    assert p.wf.state == "hold" and p.wf.context()["containment"]["id"] == "p1/containment/1"

    done = p.cmd("release", why="sorted", sorted_good="23", reworked="1", scrapped="2")
    assert done.ok and kinds(done.events) == ["command", "state_change"]
    effect = done.events[0].body["effect"]
    assert effect["containment"]["parts"] == 26 and effect["containment"]["range_open"] is False
    assert effect["containment"]["disposition"] == effect["disposition"] == {
        "sorted_good": 23, "reworked": 1, "scrapped": 2, "accounted": 26,
        "suspect_parts": 26, "note": None}
    assert "containment" not in done.events[-1].context
    assert p.wf.state == "released"
    # the release is the new start: the next failure is suspect from here
    nxt = one(c1(p, 50, "10.060"), "measurement").body["containment"]
    assert (nxt["first_stroke"], nxt["last_good"]["source"], nxt["id"]) == (
        36, "release", "p1/containment/2")


def test_a_rule_signal_is_suspect_from_before_its_window() -> None:
    """Two of three beyond 2 sigma (Nelson 5): the process moved at the first point of the
    window, so the range starts at the check before it, not at the last passing one."""
    p = Press(plan(spc=SpcOptions(limits="fixed", center=plan().characteristics[0].nominal,
                                  sigma=plan().characteristics[0].spc.sigma, rules=(5,))))
    p.release()
    for strokes, value in ((10, "10.000"), (20, "10.000"), (30, "10.025"), (40, "10.000")):
        assert one(c1(p, strokes, value), "measurement").body["verdict"] == "pass"
    events = c1(p, 50, "10.025")
    alarm = one(events, "alarm")
    assert alarm.body["evidence"]["rules"][0]["subgroups"] == ["C1/1/3", "C1/1/4", "C1/1/5"]
    assert alarm.body["containment"]["first_stroke"] == 20  # C1/1/2, before the window
    assert alarm.body["containment"]["last_good"]["subgroup"] == "C1/1/2"
    assert alarm.body["containment"]["parts"] == 30
    assert "containment" not in one(events, "measurement").body  # the value itself passed
    assert p.wf.state == "hold" and p.wf.context()["containment"]["causes"] == ["rule"]


def test_a_check_is_a_whole_subgroup() -> None:
    """Subgroups of two: a passing first value does not make the check pass."""
    p = Press(plan(spc=NO_SPC, subgroup_size=2)).release()
    c1(p, 10, "10.000")
    c1(p, 12, "10.001")  # C1/1/1 complete and passing: stroke 12
    c1(p, 20, "10.002")  # first value of C1/1/2 passes
    suspect = one(c1(p, 22, "10.060"), "measurement").body["containment"]
    assert (suspect["first_stroke"], suspect["last_good"]["subgroup"]) == (12, "C1/1/1")
    assert suspect["parts"] == 10


def test_a_voided_value_is_no_passing_check() -> None:
    p = Press(plan(spc=NO_SPC)).release()
    c1(p, 10, "10.000")
    c1(p, 20, "10.001")
    assert p.cmd("repeat_measurement", operator="OP1", reason="not seated").ok
    suspect = one(c1(p, 25, "10.060"), "measurement").body["containment"]
    assert suspect["first_stroke"] == 10  # not 20: that check was voided


def test_the_range_ends_at_the_next_release_and_a_second_hold_widens_it() -> None:
    p = Press(plan(spc=NO_SPC)).release()
    c1(p, 10, "10.000")
    c1(p, 30, "10.060")  # hold: suspect from 10
    at(p, 35)
    p.gauge("g1", "10.000")  # a reading on hold: a new first article ...
    p.gauge("g2", "5.00")  # ... passes: production released at stroke 35
    assert p.wf.state == "released"
    at(p, 45)
    frozen = p.wf.context()["containment"]
    assert (frozen["last_stroke"], frozen["parts"], frozen["range_open"]) == (35, 25, False)
    # a second failure before the disposition: one containment, never fewer parts
    c1(p, 50, "10.000")
    c1(p, 60, "10.060")
    widened = p.wf.context()["containment"]
    assert widened["id"] == "p1/containment/1"
    assert (widened["first_stroke"], widened["last_stroke"], widened["parts"]) == (10, 60, 50)
    assert widened["range_open"] is True
    assert p.cmd("release", why="sorted", sorted_good="50", reworked="0", scrapped="0").ok


def test_released_production_releases_the_parts_with_a_disposition_later() -> None:
    """Out of the hold by a new first article: the containment stays until quality gives
    the disposition with a release while the press runs (no state change)."""
    p = Press(plan(spc=NO_SPC)).release()
    c1(p, 10, "10.000")
    c1(p, 30, "10.060")
    p.gauge("g1", "10.000")
    p.gauge("g2", "5.00")
    assert p.wf.state == "released"
    assert not p.cmd("release", why="sorted").ok  # needs the disposition
    done = p.cmd("release", why="sorted", sorted_good="18", reworked="0", scrapped="2")
    assert done.ok and kinds(done.events) == ["command"]  # no state change
    assert done.events[0].body["effect"]["containment"]["parts"] == 20
    assert "containment" not in p.wf.context()
    refused = p.cmd("release", why="again")
    assert (refused.ok, refused.code) == (False, "not_allowed")
    assert "no open containment" in refused.message


def test_a_failing_value_without_a_hold_only_reports_its_range() -> None:
    quiet = plan(spc=NO_SPC, reactions={})
    p = Press(quiet).release()
    c1(p, 10, "10.000")
    events = c1(p, 14, "10.060")
    suspect = one(events, "measurement").body["containment"]
    assert suspect["id"] is None and suspect["parts"] == 4 and suspect["range_open"] is False
    assert one(events, "alarm").body["containment"] == suspect
    assert p.wf.state == "released" and "containment" not in p.wf.context()
    assert p.cmd("release", why="x").code == "not_allowed"


def test_without_a_stroke_counter_the_range_is_in_time_only() -> None:
    p = Press(plan(spc=NO_SPC))
    del p.roles["stroke_count"]
    p.release()
    p.gauge("g1", "10.000")
    good_ts = p.ts
    p.gauge("g1", "10.060")
    suspect = p.wf.context()["containment"]
    assert (suspect["first_stroke"], suspect["last_stroke"], suspect["parts"]) == (
        None, None, None)
    assert (suspect["since"], suspect["until"]) == (good_ts, p.ts)
    missing = p.cmd("release", why="x")
    assert "no stroke counter" in missing.message
    done = p.cmd("release", why="x", sorted_good=5, reworked=0, scrapped=0)  # JSON numbers
    assert done.ok and done.effect is not None
    assert done.effect["disposition"]["suspect_parts"] is None


def test_hold_on_measurement_fail_opens_it_too_and_a_manual_hold_does_not() -> None:
    settings = WorkflowSettings(authorized=SETTINGS.authorized, hold_on_measurement_fail=True)
    p = Press(plan(spc=NO_SPC, reactions={}))
    p.wf = PressWorkflow("p1", settings, {PART: p.plan})
    p.release()
    c1(p, 10, "10.000")
    events = c1(p, 12, "10.060")
    assert events[-1].kind == "state_change" and events[-1].context["containment"]["parts"] == 2
    assert p.cmd("release", why="x", sorted_good="2", reworked="0", scrapped="0").ok
    assert p.cmd("hold", why="audit").ok  # no characteristic failed: nothing suspect
    assert "containment" not in p.wf.context()
    assert p.cmd("release", why="audit done").ok


def test_an_open_containment_survives_a_restart() -> None:
    p = Press(plan(spc=NO_SPC)).release()
    c1(p, 10, "10.000")
    c1(p, 30, "10.060")
    snap = json.loads(json.dumps(p.wf.snapshot()))
    restored = PressWorkflow.restore("p1", SETTINGS, {PART: p.plan}, snap)
    assert restored.context() == p.wf.context()
    assert restored.snapshot() == snap
    p.wf = restored
    at(p, 40)
    assert p.wf.context()["containment"]["parts"] == 30
    # a snapshot from before issue 14 has no section: nothing open, nothing invented
    del snap["containment"], snap["sign_off"]
    old = PressWorkflow.restore("p1", SETTINGS, {PART: p.plan}, snap)
    assert old.state == "hold" and "containment" not in old.context()
    assert old.containment.base is None
