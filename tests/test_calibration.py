"""Gauge calibration: a reading from an overdue gauge is flagged in first-article and
measurement results (schema-valid), and refused for first article when configured."""

from __future__ import annotations

import orjson

from collector import messages
from collector.contract import validation_errors
from collector.domain import WorkflowSettings
from collector.workflow import PressWorkflow
from tests.test_contract import PLAN

T = 1_764_000_000.0
JOB = {"part_number": "BRK-100", "die_id": 7, "material_lot": "L1", "stroke_count": 10,
       "setup_mode": False}


def _workflow(refuse: bool) -> PressWorkflow:
    wf = PressWorkflow("p1", WorkflowSettings(refuse_overdue_for_first_article=refuse),
                       {"BRK-100": PLAN})
    wf.on_poll(T, JOB)
    return wf


def _valid(events) -> None:
    for i, event in enumerate(events, start=1):
        payload = orjson.loads(messages.encode_event(event, "p1", i, "line-pc-1"))
        assert validation_errors(event.kind, payload) == [], (event.kind, payload)


def test_overdue_reading_is_flagged_in_first_article_and_measurement() -> None:
    wf = _workflow(refuse=False)
    events = wf.on_gauge(T + 1, "g1", 1, "25.01", "mm", calibration_overdue=True)
    events += wf.on_gauge(T + 2, "g1", 1, "0.01", "mm")
    fa = next(e for e in events if e.kind == "first_article")
    flags = [r.get("calibration_overdue") for r in fa.body["results"]]
    assert flags == [True, None]
    assert fa.body["verdict"] == "pass"
    patrol = wf.on_gauge(T + 3, "g1", 1, "25.00", "mm", calibration_overdue=True)
    measurement = next(e for e in patrol if e.kind == "measurement")
    assert measurement.body["calibration_overdue"] is True
    _valid(events + patrol)


def test_overdue_reading_refused_for_first_article_when_configured() -> None:
    wf = _workflow(refuse=True)
    events = wf.on_gauge(T + 1, "g1", 1, "25.01", "mm", reading_id="r1",
                         calibration_overdue=True)
    assert [e.kind for e in events] == ["unassigned_reading"]
    assert events[0].body["reason"] == "calibration_overdue"
    assert events[0].body["reading_id"] == "r1"
    # The characteristic stays open: a calibrated gauge completes the first article.
    events += wf.on_gauge(T + 2, "g1", 1, "25.01", "mm")
    events += wf.on_gauge(T + 3, "g1", 1, "0.01", "mm")
    fa = next(e for e in events if e.kind == "first_article")
    assert fa.body["verdict"] == "pass" and len(fa.body["results"]) == 2
    # Patrol measurements are only flagged, never refused.
    patrol = wf.on_gauge(T + 4, "g1", 1, "25.00", "mm", calibration_overdue=True)
    assert [e.kind for e in patrol] == ["measurement"]
    _valid(events + patrol)


def test_overdue_reading_refused_for_first_article_after_a_plan_reload() -> None:
    """Issue 11: after a reload that changed the plan revision, the first reading took a
    second path into on_gauge that dropped calibration_overdue, so an overdue gauge was
    accepted for first article and could release the press."""
    from dataclasses import replace

    wf = _workflow(refuse=True)
    wf.set_plans({"BRK-100": replace(PLAN, revision="Z")})
    events = wf.on_gauge(T + 1, "g1", 1, "25.01", "mm", reading_id="r1",
                         calibration_overdue=True)
    assert [e.kind for e in events] == ["annotation", "unassigned_reading"]
    assert events[1].body["reason"] == "calibration_overdue"
    assert events[1].body["reading_id"] == "r1"
    assert wf.state == "awaiting_first_article"
    _valid(events)
