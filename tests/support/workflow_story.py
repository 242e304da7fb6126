"""A long story of one press, step by step, that visits every part of the workflow.

Used by tests/test_workflow_upgrade.py: the fixture ``tests/fixtures/workflow_v1.json``
holds snapshots that the workflow of 2026-12-05 (one module, snapshot version 1) took
after chosen steps of this story, and the events it emitted for the rest of the story.
A daemon restarted after an upgrade reads such a snapshot from its buffer; the test
restores today's workflow from it and checks that the press continues exactly as the old
code did. ``python -m tests.support.workflow_story OUT`` regenerates the fixture (only
ever with the code whose snapshot format it is meant to pin).

Steps are plain JSON lists so that the fixture can carry them:
``["poll", ts, roles]``, ``["gauge", ts, gauge, channel, value, unit, reading_id,
calibration_overdue, flag]``, ``["conn", ts, online, reason]``,
``["cmd", ts, name, payload(, role)]``, ``["tick", ts]``, ``["plans", ts, plan_key]``.
"""

from __future__ import annotations

import json
import sys
from decimal import Decimal
from typing import Any

from collector.domain import (
    Characteristic,
    Event,
    Plan,
    Reaction,
    RoleMap,
    SpcOptions,
    WorkflowSettings,
)

D = Decimal
PART = "ST-1"

_REACT = {"critical": Reaction(out_of_tolerance=("inspection_100",), rule=("hold",),
                               low_capability=("inspection_100",))}


def _plan(revision: str) -> Plan:
    spc = SpcOptions(baseline_subgroups=3, rules=(1, 2, 3))
    return Plan(PART, revision, (
        Characteristic("C1", "width", D("10.000"), D("9.950"), D("10.050"), gauge="g1",
                       char_class="critical", spc=spc, resolution=D("0.001")),
        Characteristic("C2", "height", D("5.00"), D("4.90"), D("5.10"), gauge="g2"),
    ), patrol_every_strokes=20, patrol_every_min=30.0, overdue_grace_min=5.0,
        subgroup_size=2, capability_every=3, capability_min_values=4, reactions=_REACT)


# joint setup verification (issue 14): production and quality confirm the first article
JOINT = Plan("JOINT", "1", (
    Characteristic("J1", "j", D("2.00"), D("1.95"), D("2.05"), gauge="g1",
                   char_class="critical"),),
    first_article_confirm_roles=("production", "quality"),
    reactions={"critical": Reaction(out_of_tolerance=("hold",))})

PLANS: dict[str, dict[str, Plan]] = {
    "A": {PART: _plan("A"), "ONE": Plan("ONE", "1", (
        Characteristic("K1", "k", D("1.000"), D("0.990"), D("1.010")),),
        first_article_sample_size=2), "JOINT": JOINT},
    "B": {PART: _plan("B"), "ONE": Plan("ONE", "1", (
        Characteristic("K1", "k", D("1.000"), D("0.990"), D("1.010")),),
        first_article_sample_size=2), "JOINT": JOINT},
}

SETTINGS = WorkflowSettings(
    long_stop_s=600.0, stopped_after_s=30.0, hold_on_measurement_fail=False,
    authorized={"production": ("*",), "quality": ("Q7",)},
    inspection_100_max_unmeasured=2,
    role_maps={"setup_mode": RoleMap(true_values=frozenset({1}))},
    stroke_counter_wrap=2**16, max_strokes_per_min=6000.0)


def story() -> list[list[Any]]:
    """The press's day: setup, amend, first article (fail, pass), patrol with SPC,
    overdue and its reason, 100 % inspection, a hold and release, last piece, a counter
    wrap and glitch, an outage, a plan reload, a job change with two pieces."""
    t = 1_765_000_000.0
    roles: dict[str, Any] = {"part_number": PART, "die_id": "D1", "material_lot": "L1",
                             "heat_number": "H1", "setup_mode": 0, "repair": False,
                             "stroke_count": 65_500}
    steps: list[list[Any]] = []
    n = 0

    def poll(dt: float = 1.0, **changes: Any) -> None:
        nonlocal t
        t += dt
        roles.update(changes)
        steps.append(["poll", t, dict(roles)])

    def strokes(k: int, dt: float = 1.0) -> None:
        poll(dt, stroke_count=(roles["stroke_count"] + k) % 2**16)

    def gauge(g: str, value: str, dt: float = 1.0, unit: str = "mm", overdue: bool = False,
              flag: str | None = None) -> None:
        nonlocal t, n
        t += dt
        n += 1
        steps.append(["gauge", t, g, None, value, unit, f"p1/gauge/{n}", overdue, flag])

    def cmd(name: str, dt: float = 1.0, **payload: Any) -> None:
        nonlocal t
        t += dt
        payload.setdefault("request_id", f"req-{len(steps)}")
        payload.setdefault("operator", "Q7")
        steps.append(["cmd", t, name, payload])

    def tick(dt: float) -> None:
        nonlocal t
        t += dt
        steps.append(["tick", t])

    poll()                                   # 0 job_start
    poll(setup_mode=1)                       # setup mode on: amends the open setup
    poll(die_id="D2")                        # die changes in setup: amended
    poll(setup_mode=0)                       # awaiting first article
    strokes(3)                               # unreleased strokes
    gauge("g1", "10.080")                    # first article attempt 1 (fail)
    gauge("g2", "5.00")
    gauge("g1", "10.001", overdue=True)      # attempt 2
    cmd("repeat_measurement", reason="slipped")
    gauge("g1", "10.002", flag="+")
    gauge("g2", "5.01")                      # pass: released
    for a, b in (("10.000", "10.004"), ("10.002", "9.998"), ("10.001", "10.003")):
        strokes(7)                           # patrol: the counter wraps past 65535
        gauge("g1", a)
        gauge("g1", b)
        gauge("g2", "5.00")
        gauge("g2", "5.01")
    strokes(25)                              # due by strokes
    gauge("g1", "10.001")                    # judged against the frozen limits
    tick(400)                                # overdue
    cmd("missed_check_reason", reason="crane blocked")
    poll(stroke_count=0)                     # a glitch: counter anomaly
    strokes(3)
    poll(stroke_count=(roles["stroke_count"]) % 2**16)
    gauge("g1", "10.060")                    # out of tolerance: 100 %, rule: hold
    gauge("g1", "10.001")                    # a first article on hold: passes
    gauge("g2", "5.00")
    strokes(5)                               # unmeasured pieces under 100 %
    gauge("g1", "10.002")
    gauge("g2", "5.02")
    cmd("request_capability")
    cmd("release", why="capable again",     # ends 100 %, closes the containment
        sorted_good="9", reworked="0", scrapped="1", note="counted at the sort station")
    cmd("hold", why="audit")
    cmd("release", why="audit done")
    cmd("start_last_piece")
    gauge("g1", "10.004")
    cmd("set_material", lot="L2", operator="OP1")  # PLC reports the lot: refused
    gauge("g2", "5.03")                      # last piece stored for D2
    steps.append(["conn", t + 1, False, "timeout"])
    t += 2
    steps.append(["conn", t, True, ""])
    steps.append(["plans", t + 0.5, "B"])    # revision B: plan change annotation
    poll(40)
    strokes(2, dt=700)                       # long stop
    gauge("g1", "10.003")                    # compared with the last piece of D2
    gauge("g2", "5.00")
    poll(repair=True)                        # repair: new setup
    poll(repair=False, part_number="ONE")    # amended: job change
    gauge("k", "1.001")
    gauge("k", "0.999")
    gauge("k", "1.000")
    gauge("k", "1.002")                      # two pieces: pass
    cmd("start_setup", reason="maintenance")
    strokes(1)
    return steps


def joint_story() -> list[list[Any]]:
    """Issue 14 on part JOINT: a first article confirmed by production and quality, a
    failing patrol value that holds the press (containment) and the release with its
    disposition."""
    t = 1_766_000_000.0
    roles: dict[str, Any] = {"part_number": "JOINT", "die_id": "J", "material_lot": "L1",
                             "stroke_count": 100}
    steps: list[list[Any]] = []

    def at(dt: float = 1.0) -> float:
        nonlocal t
        t += dt
        return t

    def poll(**changes: Any) -> None:
        roles.update(changes)
        steps.append(["poll", at(), dict(roles)])

    def cmd(name: str, role: str | None = None, **payload: Any) -> None:
        payload.setdefault("request_id", f"joint-{len(steps)}")
        steps.append(["cmd", at(), name, payload, *([role] if role else [])])

    poll()
    steps.append(["gauge", at(), "g1", None, "2.01", "mm", "j/1", False, None])
    cmd("confirm_first_article", "production", operator="OP1")
    cmd("confirm_first_article", "quality", operator="Q7", note="record signed")
    poll(stroke_count=150)
    steps.append(["gauge", at(), "g1", None, "2.00", "mm", "j/2", False, None])
    poll(stroke_count=180)
    steps.append(["gauge", at(), "g1", None, "2.09", "mm", "j/3", False, None])
    poll(stroke_count=185)  # stamped on hold: suspect too
    cmd("release", operator="Q7", why="sorted", sorted_good="33", reworked="1",
        scrapped="1")
    return steps


def feed(wf: Any, step: list[Any]) -> list[Event]:
    """One step into a workflow (``plans`` steps swap the plans)."""
    kind, ts = step[0], step[1]
    if kind == "poll":
        return wf.on_poll(ts, step[2])
    if kind == "gauge":
        _, _, g, ch, value, unit, rid, overdue, flag = step
        return wf.on_gauge(ts, g, ch, value, unit, reading_id=rid,
                           calibration_overdue=overdue, flag=flag)
    if kind == "conn":
        return wf.on_connection(ts, step[2], step[3])
    if kind == "cmd":  # ["cmd", ts, name, payload(, role)]
        result = wf.on_command(ts, step[2], step[3], *step[4:5])
        return [Event("_cmd_result", ts, {"ok": result.ok, "code": result.code,
                                          "message": result.message,
                                          "effect": result.effect}, {}), *result.events]
    if kind == "tick":
        return wf.on_tick(ts)
    if kind == "plans":
        wf.set_plans(PLANS[step[2]])
        return wf.on_tick(ts)
    raise ValueError(kind)


def as_json(events: list[Event]) -> list[dict[str, Any]]:
    """Events as the fixture keeps them (JSON round trip, as the encoder sees them)."""
    return json.loads(json.dumps([{"kind": e.kind, "ts": e.ts, "body": e.body,
                                   "context": e.context, "durable": e.durable}
                                  for e in events]))


# Steps after which the fixture keeps a snapshot (each one a different part in use).
SNAPSHOT_AFTER = (1, 2, 4, 5, 7, 8, 11, 13, 21, 27, 28, 29, 30, 33, 36, 43, 44, 47, 49, 51,
                  54, 55, 59)
HORIZON = 12  # steps compared after each snapshot


def make_fixture() -> dict[str, Any]:
    from collector.workflow import PressWorkflow

    steps = story()
    wf = PressWorkflow("p1", SETTINGS, PLANS["A"])
    plans_key = "A"
    out: dict[str, Any] = {"steps": steps, "points": []}
    events_after: list[list[Event]] = []
    snaps: dict[int, tuple[str, Any]] = {}
    for i, step in enumerate(steps):
        events_after.append(feed(wf, step))
        if step[0] == "plans":
            plans_key = step[2]
        if i in SNAPSHOT_AFTER:
            snaps[i] = (plans_key, json.loads(json.dumps(wf.snapshot())))
    for i, (plans_key, snap) in snaps.items():
        rest = [e for evs in events_after[i + 1:i + 1 + HORIZON] for e in evs]
        out["points"].append({"after_step": i, "plans": plans_key, "snapshot": snap,
                              "events": as_json(rest)})
    out["final_snapshot"] = json.loads(json.dumps(wf.snapshot()))
    return out


if __name__ == "__main__":
    with open(sys.argv[1], "w", encoding="utf-8") as fh:
        json.dump(make_fixture(), fh, indent=None, separators=(",", ":"))
        fh.write("\n")
