"""Property tests of PressWorkflow: random sequences of polls, gauge readings and
connection changes with increasing time, and snapshot/restore at random points.

Checked after every input: nothing raises; the state is one of STATES; state_change
events chain (each starts where the last ended and the last ends in ``state``);
first-article attempts count 1, 2, 3... within a setup; every first_article event has
exactly one result per characteristic of the part's plan, in plan order; ``released`` is
only entered through a passing first article (or back from ``stopped`` / ``offline``
after one); unreleased strokes never go negative and only drop on a setup event; every
event is durable, JSON-able and stamped with the input's time. A restore from the JSON
snapshot gives the same context and snapshot, and the restored workflow then behaves
exactly like the original for the rest of the run.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from collector import event_kinds
from collector.domain import STATES, Characteristic, Event, Plan, WorkflowSettings
from collector.workflow import EVENT_KINDS, SETUP_REASONS, PressWorkflow


def _char(cid: str, nominal: str, lsl: str | None, usl: str | None, unit: str = "mm",
          gauge: str | None = None, channel: int | None = None) -> Characteristic:
    return Characteristic(
        id=cid, name=cid, nominal=Decimal(nominal),
        lsl=None if lsl is None else Decimal(lsl), usl=None if usl is None else Decimal(usl),
        unit=unit, gauge=gauge, channel=channel,
    )


PLANS = {
    "4711-A": Plan("4711-A", "C", (
        _char("C1", "25.00", "24.95", "25.05", gauge="g1", channel=1),
        _char("C2", "10.0", "9.9", "10.1", gauge="g1", channel=2),
        _char("C3", "3.00", "2.90", "3.10"),
    )),
    "ONE": Plan("ONE", "A", (_char("K1", "1.000", "0.990", "1.010"),)),
    "IN": Plan("IN", "B", (
        _char("I1", "0.9843", None, "0.9862", unit="in", gauge="g2"),
        _char("I2", "25000", "24900", None, unit="um"),
    )),
    "E": Plan("E", "1", ()),
    # issue 14: joint sign-off (and a critical class that holds: containment)
    "JOINT": Plan("JOINT", "1", (_char("J1", "2.00", "1.95", "2.05", gauge="g1"),),
                  first_article_confirm_roles=("production", "quality")),
}

PARTS = [None, "", " 4711-A ", "4711-A", "ONE", "IN", "E", "NOPLAN", "JOINT", "JOINT"]
IDS = [None, "", "D1", "D2", 1, 1.0, " D1 "]
LOTS = [None, "", "L1", "L2"]
BOOLS = [None, False, True, 0, 1, "1", "false", "maybe"]
VALUES = ["25.00", "24.95", "25.05", "25.06", "10.0", "10.2", "3.00", "3.2", "1.000",
          "0.98425", "0.9862", "25000", "24899", "", "garbage", "NaN", "-0", "1e5", "+3"]
UNITS = ["mm", "mm", "mm", "in", "um", "MM", "", "furlong"]

dts = st.floats(min_value=0.0, max_value=120.0, allow_nan=False)


class WorkflowMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.ts = 1_700_000_000.0
        self.roles: dict[str, Any] = {}
        self.count = 0
        self.twin: PressWorkflow | None = None  # the original, after a restore

    @initialize(hold=st.booleans(), long_stop=st.sampled_from([30.0, 200.0]),
                part=st.sampled_from(PARTS), setup_mode=st.sampled_from(BOOLS))
    def start(self, hold: bool, long_stop: float, part: Any, setup_mode: Any) -> None:
        self.settings = WorkflowSettings(long_stop_s=long_stop, stopped_after_s=10.0,
                                         hold_on_measurement_fail=hold,
                                         authorized={"production": ("*",),
                                                     "quality": ("Q7", "Q8")})
        self.wf = PressWorkflow("p1", self.settings, PLANS)
        self.roles = {"part_number": part, "die_id": "D1", "material_lot": "L1",
                      "heat_number": "H1", "setup_mode": setup_mode, "repair": False,
                      "stroke_count": self.count}
        self.seen_state = self.wf.state
        self.verified = False
        self.signed = False  # a sign_off since the last setup (plans with confirm roles)
        self.last_attempt = 0
        self.last_unreleased = 0

    # ---- feeding ---------------------------------------------------------------------

    def feed(self, call: str, *args: Any) -> list[Event]:
        events = getattr(self.wf, call)(self.ts, *args)
        if self.twin is not None:
            twin_events = getattr(self.twin, call)(self.ts, *args)
            assert twin_events == events
            assert self.twin.snapshot() == self.wf.snapshot()
        self.check(events)
        return events

    def check(self, events: list[Event]) -> None:
        had_setup = False
        for i, e in enumerate(events):
            assert e.kind in EVENT_KINDS
            assert event_kinds.problems(e.kind, e.body) == []  # its registered type
            assert e.ts == self.ts
            assert e.durable is True
            json.dumps(e.body, allow_nan=False)
            json.dumps(e.context, allow_nan=False)
            assert e.context["unreleased_strokes"] >= 0
            self.check_issue14(e, events[:i])
            if e.kind == "setup":
                had_setup = True
                assert e.body["reasons"]
                assert set(e.body["reasons"]) <= set(SETUP_REASONS)
                assert len(set(e.body["reasons"])) == len(e.body["reasons"])
                assert e.context["first_article_attempt"] == 0
                self.verified = False
                self.signed = False
                self.last_attempt = 0
            elif e.kind == "sign_off":
                self.signed = True
            elif e.kind == "first_article":
                assert e.body["attempt"] == self.last_attempt + 1
                self.last_attempt = e.body["attempt"]
                plan = PLANS[e.context["part_number"]]
                ids = [r["characteristic"] for r in e.body["results"]]
                assert ids == [c.id for c in plan.characteristics]
                assert e.body["verdict"] in ("pass", "fail")
                assert (e.body["verdict"] == "pass") == all(
                    r["verdict"] == "pass" for r in e.body["results"])
                self.verified = e.body["verdict"] == "pass"
            elif e.kind == "state_change":
                assert e.body["from"] == self.seen_state
                assert e.body["to"] in STATES
                assert e.body["to"] != e.body["from"]
                self.seen_state = e.body["to"]
                if e.body["to"] == "released":
                    if e.body["from"] == "first_article":
                        assert e.body["cause"] == "first_article_pass"
                        assert events[i - 1].kind == "first_article"
                        assert events[i - 1].body["verdict"] == "pass"
                        assert "confirm_roles" not in events[i - 1].body
                    elif e.body["from"] == "awaiting_confirmation":
                        assert e.body["cause"] == "confirmed"
                        assert events[i - 1].kind == "sign_off"
                    elif e.body["from"] == "hold":
                        assert e.body["cause"] == "quality_release"
                        self.verified = True  # quality's word after a containment
                    else:
                        assert e.body["from"] in ("stopped", "offline")
                    assert self.verified
                    if PLANS.get(str(e.context["part_number"])) is PLANS["JOINT"]:
                        assert self.signed  # never released without the joint sign-off
                if e.body["to"] == "hold":
                    self.verified = False
            if e.context["state"] in ("first_article",):
                assert e.context["first_article_attempt"] >= 1
        assert self.seen_state == self.wf.state
        unreleased = self.wf.context()["unreleased_strokes"]
        if not had_setup:
            assert unreleased >= self.last_unreleased
        self.last_unreleased = unreleased

    def check_issue14(self, e: Event, before: list[Event]) -> None:
        """Containment and sign-off: ranges add up, a hold by a failing value or a
        reaction names its range, a sign-off names every role once, by different people."""
        for where in (e.body.get("containment"), e.context.get("containment")):
            if where is None:
                continue
            first, last = where["first_stroke"], where["last_stroke"]
            if first is not None and last is not None:
                assert where["parts"] == last - first >= 0
            else:
                assert where["parts"] is None
        if e.kind == "state_change" and e.body["cause"] in ("measurement_fail",
                                                           "reaction_hold"):
            assert e.context["containment"]["id"] is not None
        if e.kind == "sign_off":
            roles = [c["role"] for c in e.body["confirmations"]]
            people = [c["operator"] for c in e.body["confirmations"]]
            assert sorted(roles) == sorted(e.body["required"])
            assert len(set(people)) == len(people)
        if e.context["state"] == "awaiting_confirmation":  # the sign-off: none pending
            assert bool(e.context["confirmations"]["pending"]) != (e.kind == "sign_off")
        elif e.kind != "sign_off" and e.context["state"] != "offline":  # offline: kept
            assert "confirmations" not in e.context

    # ---- rules -----------------------------------------------------------------------

    @rule(role=st.sampled_from(["die_id", "part_number", "material_lot", "heat_number",
                                "setup_mode", "repair"]),
          data=st.data())
    def change_tag(self, role: str, data: st.DataObject) -> None:
        choices = {"die_id": IDS, "part_number": PARTS, "material_lot": LOTS,
                   "heat_number": LOTS, "setup_mode": BOOLS, "repair": BOOLS}[role]
        self.roles[role] = data.draw(st.sampled_from(choices))

    @rule(role=st.sampled_from(["die_id", "material_lot", "setup_mode", "stroke_count"]))
    def drop_tag(self, role: str) -> None:
        self.roles.pop(role, None)

    @rule(dt=dts, action=st.sampled_from(["same", "same", "stroke", "stroke", "reset",
                                          "missing", "garbage"]),
          n=st.integers(min_value=1, max_value=5))
    def poll(self, dt: float, action: str, n: int) -> None:
        self.ts += dt
        roles = dict(self.roles)
        if action == "stroke":
            self.count += n
        elif action == "reset":
            self.count = 0
        roles["stroke_count"] = {"missing": None, "garbage": "x?"}.get(action, self.count)
        self.feed("on_poll", roles)

    @rule(dt=dts, gauge=st.sampled_from(["g1", "g1", "g2", "gX"]),
          channel=st.sampled_from([None, 1, 2, 3]),
          value=st.one_of(st.sampled_from(VALUES),
                          st.decimals(min_value=-1, max_value=30, places=3).map(str)),
          unit=st.sampled_from(UNITS), reading_id=st.one_of(st.none(), st.uuids().map(str)))
    def gauge(self, dt: float, gauge: str, channel: int | None, value: str, unit: str,
              reading_id: str | None) -> None:
        self.ts += dt
        self.feed("on_gauge", gauge, channel, value, unit, reading_id)

    @rule(dt=dts, data=st.data())
    def good_reading(self, dt: float, data: st.DataObject) -> None:
        """A reading that fits the current plan (random sequences alone rarely pass)."""
        self.ts += dt
        plan = self.wf.plan()
        if plan is None or not plan.characteristics:
            self.feed("on_gauge", "g1", 1, "25.00", "mm", None)
            return
        c = data.draw(st.sampled_from(plan.characteristics))
        self.feed("on_gauge", c.gauge or "gX", c.channel, str(c.nominal), c.unit, None)

    @rule(dt=dts)
    def good_first_piece(self, dt: float) -> None:
        """Every characteristic of the current plan measured in tolerance, in order."""
        plan = self.wf.plan()
        for c in plan.characteristics if plan is not None else ():
            self.ts += dt / 4
            self.feed("on_gauge", c.gauge or "gX", c.channel, str(c.nominal), c.unit, None)

    @rule(dt=dts, online=st.sampled_from([True, True, False]), reason=st.text(max_size=5))
    def connection(self, dt: float, online: bool, reason: str) -> None:
        self.ts += dt
        self.feed("on_connection", online, reason)

    @rule(dt=dts, name=st.sampled_from(["confirm_first_article", "confirm_first_article",
                                        "release", "hold", "start_first_article"]),
          role=st.sampled_from([None, "production", "quality"]),
          operator=st.sampled_from(["OP1", "Q7", "Q8"]),
          counts=st.one_of(st.none(), st.tuples(*[st.integers(0, 40)] * 3)))
    def command(self, dt: float, name: str, role: str | None, operator: str,
                counts: tuple[int, int, int] | None) -> None:
        """Issue 14's commands: confirmations by any role and person, releases with and
        without a disposition."""
        self.ts += dt
        payload: dict[str, Any] = {"request_id": f"r{self.ts}", "operator": operator,
                                   "why": "x"}
        if name == "confirm_first_article":
            del payload["why"]
        if name == "release" and counts is not None:
            payload.update(sorted_good=counts[0], reworked=counts[1], scrapped=counts[2],
                           note="prop")
        open_before = self.wf.containment.open is not None
        result = self.wf.on_command(self.ts, name, payload, role)
        if self.twin is not None:
            twin = self.twin.on_command(self.ts, name, dict(payload), role)
            assert (twin.ok, twin.code, twin.events) == (result.ok, result.code,
                                                         result.events)
            assert self.twin.snapshot() == self.wf.snapshot()
        if result.ok and name == "release" and open_before:
            assert counts is not None  # a containment is released with its disposition
            assert result.effect is not None and result.effect["containment"][
                "disposition"]["accounted"] == sum(counts)
        if not result.ok:
            assert result.events == []
        self.check(result.events)

    @rule()
    def restart(self) -> None:
        snap = json.loads(json.dumps(self.wf.snapshot(), allow_nan=False))
        restored = PressWorkflow.restore("p1", self.settings, PLANS, snap)
        assert restored.context() == self.wf.context()
        assert restored.state == self.wf.state
        assert restored.snapshot() == snap
        self.twin = self.wf
        self.wf = restored

    # ---- invariants ------------------------------------------------------------------

    @invariant()
    def state_is_known(self) -> None:
        if hasattr(self, "wf"):
            ctx = self.wf.context()
            assert self.wf.state in STATES
            assert ctx["state"] == self.wf.state
            assert ctx["unreleased_strokes"] >= 0
            assert ctx["first_article_attempt"] >= 0
            # telemetry's cheap per-poll context is the same four fields of the full one
            assert self.wf.telemetry_context() == {
                k: ctx[k] for k in ("state", "part_number", "die_id", "material_lot")}
            if self.wf.state in ("released", "stopped"):
                assert self.verified


WorkflowMachine.TestCase.settings = settings(
    max_examples=150, stateful_step_count=60, deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestWorkflowMachine = WorkflowMachine.TestCase


# ---- garbage in, no exception out -------------------------------------------------------

anything = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=8),
    st.binary(max_size=8), st.decimals(), st.lists(st.integers(), max_size=2),
    st.sampled_from([Decimal("sNaN"), float("nan"), float("inf"), "1e999999", 2**70]),
)
ROLE_NAMES = ["stroke_count", "die_id", "part_number", "material_lot", "heat_number",
              "setup_mode", "running", "repair", "unknown_role"]


@settings(max_examples=200, deadline=None)
@given(steps=st.lists(st.tuples(
    st.floats(min_value=0, max_value=1e4, allow_nan=False),
    st.integers(min_value=0, max_value=2),
    st.dictionaries(st.sampled_from(ROLE_NAMES), anything),
    st.tuples(anything, anything, anything, anything, anything),
), max_size=30))
def test_garbage_inputs_never_raise(steps: list[Any]) -> None:
    wf = PressWorkflow("p1", WorkflowSettings(), PLANS)
    ts = 0.0
    for dt, kind, roles, (a, b, c, d, e) in steps:
        ts += dt
        if kind == 0:
            events = wf.on_poll(ts, roles)
        elif kind == 1:
            events = wf.on_gauge(ts, a, b, c, d, e)
        else:
            events = wf.on_connection(ts, bool(a), str(b))
        assert wf.state in STATES
        for event in events:
            json.dumps(event.context)
        snap = json.loads(json.dumps(wf.snapshot()))
        assert PressWorkflow.restore("p1", WorkflowSettings(), PLANS, snap).context() == (
            wf.context())


@settings(max_examples=200, deadline=None)
@given(snap=st.dictionaries(
    st.sampled_from(["version", "press_id", "state", "previous_state", "online",
                     "baselined", "ids", "setup_mode", "repair", "stroke_count",
                     "last_stroke_ts", "attempt", "unreleased_strokes", "patrol_last",
                     "first_article", "quality",
                     # version 2 sections
                     "machine", "setup", "counter", "spc", "patrol", "inspection_100",
                     "last_piece", "operator_log", "containment", "sign_off"]),
    st.one_of(anything, st.sampled_from([1, 2, "p1", *STATES]),
              st.dictionaries(st.text(max_size=12), anything, max_size=3))))
def test_restore_of_any_snapshot_never_raises(snap: dict[str, Any]) -> None:
    wf = PressWorkflow.restore("p1", WorkflowSettings(), PLANS, snap)
    assert wf.state in STATES
    wf.on_poll(1.0, {"part_number": "4711-A", "stroke_count": 1})
    wf.on_gauge(2.0, "g1", 1, "25.0", "mm")


def test_unicode_digit_channel_is_no_channel_not_a_crash() -> None:
    """Found by test_garbage_inputs_never_raise: '¹'.isdigit() is True but int('¹') fails."""
    from collector.workflow.values import to_channel

    assert to_channel("¹") is None
    assert to_channel(" 3 ") == 3
