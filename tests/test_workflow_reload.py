"""Plan reloads never change how a reading is judged (issue 11).

A reading travels through the workflow as one frozen ``GaugeReading``; a reload (SIGHUP)
may only start a new SPC phase and annotate it. Property: any sequence of polls, gauge
readings (calibrated or overdue) and reloads gives, reading by reading, the same
disposition (judged against which characteristic with which verdict and calibration
flag, or refused with which reason) and the same state as the same sequence without the
reloads.

The reloads swap the part's plan for a revision-only change (same characteristics).
They are applied while no first article is open: a new revision in the middle of a first
article restarts its measurement by design (docs/quality.md), which legitimately changes
what later readings are routed to.
"""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from collector.domain import Characteristic, Event, Plan, WorkflowSettings
from collector.workflow import PressWorkflow

D = Decimal
PLAN_C = Plan("4711-A", "C", (
    Characteristic("C1", "hole", D("25.00"), D("24.95"), D("25.05"), gauge="g1", channel=1),
    Characteristic("C2", "width", D("10.0"), D("9.9"), D("10.1"), gauge="g1", channel=2),
    Characteristic("C3", "burr", D("0"), None, D("0.05"), gauge="g2"),
))
PLAN_D = replace(PLAN_C, revision="D")
ROUTE = {"C1": ("g1", 1), "C2": ("g1", 2), "C3": ("g2", None)}
VALUES = {"C1": ["25.00", "25.06", "24.95"], "C2": ["10.0", "9.8"], "C3": ["0.01", "0.07"]}

step = st.one_of(
    st.tuples(st.just("reading"), st.sampled_from(sorted(ROUTE)), st.integers(0, 2),
              st.booleans()),
    st.tuples(st.just("poll"), st.integers(0, 3), st.booleans()),
    st.tuples(st.just("reload")),
)


def disposition(events: list[Event], reading_id: str) -> tuple[Any, ...]:
    """What happened to one reading, whatever else the input produced."""
    for e in events:
        if e.kind == "unassigned_reading" and e.body["reading_id"] == reading_id:
            return ("refused", e.body["reason"])
        results = e.body.get("results", []) if e.kind == "first_article" else []
        if e.kind == "measurement":
            results = [e.body]
        for r in results:
            if r["reading_id"] == reading_id:
                return ("judged", r["characteristic"], r["verdict"],
                        r.get("calibration_overdue", False))
    return ("taken",)  # part of a first article still open


def run(steps: list[tuple[Any, ...]], refuse: bool, hold: bool, reloads: bool
        ) -> list[tuple[Any, ...]]:
    wf = PressWorkflow("p1", WorkflowSettings(refuse_overdue_for_first_article=refuse,
                                              hold_on_measurement_fail=hold),
                       {"4711-A": PLAN_C})
    ts, strokes, revision = 1_764_000_000.0, 100, "C"
    roles: dict[str, Any] = {"part_number": "4711-A", "die_id": "D1", "stroke_count": strokes,
                             "setup_mode": False}
    out: list[tuple[Any, ...]] = []
    out.append(("poll", [e.kind for e in wf.on_poll(ts, roles) if e.kind != "annotation"]))
    for i, s in enumerate(steps):
        ts += 1.0
        if s[0] == "reload":
            if reloads and wf.state != "first_article":
                revision = "D" if revision == "C" else "C"
                wf.set_plans({"4711-A": PLAN_D if revision == "D" else PLAN_C})
            continue
        if s[0] == "poll":
            roles["stroke_count"] += s[1]
            roles["setup_mode"] = s[2]
            wf.on_poll(ts, roles)
            out.append(("poll", wf.state))
            continue
        _, cid, k, overdue = s
        gauge, channel = ROUTE[cid]
        values = VALUES[cid]
        rid = f"r{i}"
        events = wf.on_gauge(ts, gauge, channel, values[k % len(values)], "mm",
                             reading_id=rid, calibration_overdue=overdue)
        out.append((rid, disposition(events, rid), wf.state))
    return out


@settings(max_examples=300, deadline=None)
@given(steps=st.lists(step, max_size=40), refuse=st.booleans(), hold=st.booleans())
def test_reloads_never_change_a_verdict(steps: list[tuple[Any, ...]], refuse: bool,
                                        hold: bool) -> None:
    assert run(steps, refuse, hold, reloads=True) == run(steps, refuse, hold, reloads=False)


def test_reload_then_overdue_reading_is_refused_like_without_reload() -> None:
    """The example hypothesis finds first on the old code (kept as a plain test)."""
    steps = [("reload",), ("reading", "C1", 0, True)]
    with_reload = run(steps, refuse=True, hold=False, reloads=True)
    assert with_reload == run(steps, refuse=True, hold=False, reloads=False)
    assert with_reload[-1][1] == ("refused", "calibration_overdue")
