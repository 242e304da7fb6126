"""Joint setup verification (issue 14), pure: a plan whose first article production and
quality must both confirm; each confirmation a command of its role; released when every
role confirmed, with a sign_off event naming who and when."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from collector.domain import WorkflowSettings
from collector.workflow import PressWorkflow
from tests.test_quality_workflow import PART, Press, kinds, one, plan

SETTINGS = WorkflowSettings(authorized={"production": ("OP1", "OP2", "Q7"),
                                        "quality": ("Q7", "Q8")})
BOTH = ("production", "quality")


def joint(roles: tuple[str, ...] = BOTH, **kw: Any) -> Press:
    p = Press(plan(first_article_confirm_roles=roles, **kw))
    p.wf = PressWorkflow("p1", SETTINGS, {PART: p.plan})
    return p


def first_article(p: Press, c1: str = "10.000") -> list[Any]:
    p.poll()
    return p.gauge("g1", c1) + p.gauge("g2", "5.00")


def confirm(p: Press, role: str | None, operator: str, **fields: Any) -> Any:
    p.ts += 1
    payload = {"request_id": f"c-{p.ts}", "operator": operator, **fields}
    return p.wf.on_command(p.ts, "confirm_first_article", payload, role)


def test_released_only_when_production_and_quality_confirmed() -> None:
    p = joint()
    events = first_article(p)
    fa = one(events, "first_article")
    assert fa.body["verdict"] == "pass" and fa.body["confirm_roles"] == ["production",
                                                                         "quality"]
    assert events[-1].body == {"from": "first_article", "to": "awaiting_confirmation",
                               "cause": "first_article_pass_to_confirm"}
    judged = p.ts
    assert p.wf.context()["confirmations"] == {
        "attempt": 1, "judged_ts": judged, "required": ["production", "quality"],
        "received": [], "pending": ["production", "quality"]}
    # waiting: not released, strokes are unreleased, readings are not taken
    p.strokes(4)
    assert p.wf.context()["unreleased_strokes"] == 4
    unassigned = one(p.gauge("g1", "10.000"), "unassigned_reading")
    assert unassigned.body["reason"] == "state:awaiting_confirmation"

    first = confirm(p, "production", "OP1")
    assert first.ok and kinds(first.events) == ["command"]
    assert first.effect == {"attempt": 1, "role": "production", "confirmed": ["production"],
                            "pending": ["quality"]}
    assert first.events[0].body["class"] == "production"
    assert p.wf.state == "awaiting_confirmation"
    # the same role twice, the same person for the other role, someone not on the list
    again = confirm(p, "production", "OP2")
    assert (again.ok, again.code) == (False, "not_allowed") and "confirmed already" in \
        again.message
    assert confirm(p, "quality", "OP1").code == "unauthorized"
    p2 = joint()  # Q7 is on both lists: still one person, one role
    first_article(p2)
    assert confirm(p2, "production", "Q7").ok
    alone = confirm(p2, "quality", "Q7")
    assert (alone.ok, alone.code) == (False, "not_allowed")
    assert "another person" in alone.message
    stale = confirm(p, "quality", "Q8", attempt="7")
    assert (stale.ok, stale.code) == (False, "invalid_field")

    last = confirm(p, "quality", "Q8", attempt="1", note="record signed")
    assert last.ok and kinds(last.events) == ["command", "sign_off", "state_change"]
    sign_off = last.events[1]
    assert sign_off.body == {
        "attempt": 1, "part_number": PART, "plan_revision": "A", "judged_ts": judged,
        "required": ["production", "quality"],
        "confirmations": [
            {"role": "production", "operator": "OP1", "ts": first.events[0].ts,
             "request_id": first.events[0].body["request_id"], "note": None},
            {"role": "quality", "operator": "Q8", "ts": last.events[0].ts,
             "request_id": last.events[0].body["request_id"], "note": "record signed"}]}
    assert last.events[2].body == {"from": "awaiting_confirmation", "to": "released",
                                   "cause": "confirmed"}
    assert "confirmations" not in last.events[2].context
    assert p.wf.state == "released" and "confirmations" not in p.wf.context()
    assert confirm(p, "quality", "Q7").code == "not_allowed"  # nothing waits


def test_only_the_roles_the_plan_names_confirm() -> None:
    p = joint(roles=("quality",))
    first_article(p)
    wrong = confirm(p, "production", "OP1")
    assert (wrong.ok, wrong.code) == (False, "not_allowed") and "not production" in \
        wrong.message
    assert confirm(p, None, "OP1").code == "not_allowed"  # no role: the command's own
    done = confirm(p, "quality", "Q7")
    assert done.ok and p.wf.state == "released"


def test_a_plan_without_confirm_roles_releases_at_once() -> None:
    p = joint(roles=())
    events = first_article(p)
    assert "confirm_roles" not in one(events, "first_article").body
    assert events[-1].body["to"] == "released"
    assert confirm(p, "quality", "Q7").code == "not_allowed"


def test_quality_can_refuse_and_a_hold_before_verification_is_not_released() -> None:
    p = joint()
    first_article(p)
    assert confirm(p, "production", "OP1").ok
    held = p.cmd("hold", why="burr on the edge")
    assert held.ok and p.wf.state == "hold" and "confirmations" not in p.wf.context()
    refused = p.cmd("release", why="it is fine")
    assert (refused.ok, refused.code) == (False, "not_allowed")
    assert "not verified" in refused.message and "production and quality" in refused.message
    # measured again (a reading on hold starts attempt 2): both confirm again
    p.gauge("g1", "10.001")
    p.gauge("g2", "5.01")
    assert p.wf.state == "awaiting_confirmation"
    assert p.wf.context()["confirmations"]["attempt"] == 2
    assert p.wf.context()["confirmations"]["received"] == []
    assert confirm(p, "quality", "Q8").ok and confirm(p, "production", "OP2").ok
    assert p.wf.state == "released"


def test_a_failed_first_article_is_not_released_by_quality_alone() -> None:
    p = joint()
    first_article(p, c1="10.080")
    assert p.wf.state == "hold"
    assert p.cmd("release", why="deviation approved").code == "not_allowed"
    # without confirm roles the quality release stays as it was (issue 5)
    q = Press()
    q.poll()
    q.gauge("g1", "10.080")
    q.gauge("g2", "5.00")
    assert q.wf.state == "hold" and q.cmd("release", why="deviation approved").ok


def test_measure_again_or_a_setup_discards_the_waiting_round() -> None:
    p = joint()
    first_article(p)
    assert confirm(p, "production", "OP1").ok
    again = p.cmd("start_first_article", operator="OP1", why="wrong gauge")
    assert again.ok and p.wf.state == "awaiting_first_article"
    assert "confirmations" not in p.wf.context()
    first_article(p)
    assert p.wf.context()["confirmations"]["received"] == []
    p.poll(die_id="D2")  # a die change: a new setup
    assert p.wf.state == "awaiting_first_article" and "confirmations" not in p.wf.context()


def test_the_round_survives_an_outage_and_a_restart() -> None:
    p = joint()
    first_article(p)
    assert confirm(p, "production", "OP1").ok
    p.ts += 1
    p.wf.on_connection(p.ts, False, "timeout")
    assert p.wf.state == "offline"
    assert confirm(p, "quality", "Q8").code == "not_allowed"  # offline: nothing taken
    snap = json.loads(json.dumps(p.wf.snapshot()))
    restored = PressWorkflow.restore("p1", SETTINGS, {PART: p.plan}, snap)
    assert restored.context() == p.wf.context() and restored.snapshot() == snap
    p.wf = restored
    p.poll()  # back online where it was
    assert p.wf.state == "awaiting_confirmation"
    assert p.wf.context()["confirmations"]["pending"] == ["quality"]
    assert confirm(p, "quality", "Q8").ok and p.wf.state == "released"


def test_a_damaged_round_is_measured_and_confirmed_again() -> None:
    p = joint()
    first_article(p)
    snap = json.loads(json.dumps(p.wf.snapshot()))
    snap["sign_off"]["open"]["roles"] = ["setter"]
    restored = PressWorkflow.restore("p1", SETTINGS, {PART: p.plan}, snap)
    assert restored.state == "awaiting_first_article"  # never released without them
    assert "confirmations" not in restored.context()
    # the plan reloaded without confirm roles: the waiting round keeps its own
    lax = dataclasses.replace(p.plan, first_article_confirm_roles=())
    p.wf.set_plans({PART: lax})
    assert p.wf.context()["confirmations"]["pending"] == ["production", "quality"]
