"""Capability at the edges (issue 11): σ = 0 and every value out of tolerance are
reported and alarmed, never 'insufficient_data'; Cpm and parts per million in every
capability event; the chart options (rule 8 sides, individuals σ) from the plan."""

from __future__ import annotations

from decimal import Decimal

import orjson
import pytest

from collector import messages
from collector.contract import validation_errors
from collector.domain import Event, SpcOptions
from tests.test_quality_workflow import Press, kinds, plan

D = Decimal


def capability_press(**kw: object) -> Press:
    p = Press(plan(capability_min_values=20, capability_every=25, patrol_every_strokes=None,
                   patrol_every_min=None, **kw))
    return p.release()


def feed(p: Press, value: str, n: int) -> list[Event]:
    events: list[Event] = []
    for _ in range(n):
        events += p.gauge("g2", value)
    return events


def valid(events: list[Event]) -> None:
    for seq, event in enumerate(events, start=1):
        payload = orjson.loads(messages.encode_event(event, "p1", seq, "h"))
        assert validation_errors(event.kind, payload) == [], (event.kind, payload["data"])


def test_identical_values_all_out_of_tolerance_are_reported_and_alarmed() -> None:
    """125 identical values, all above the USL 5.10: today 'insufficient_data', no alarm."""
    p = capability_press()
    events = feed(p, "5.20", 125)
    caps = [e for e in events if e.kind == "capability"]
    assert len(caps) == 5  # every 25 subgroups
    body = caps[0].body
    assert body["verdict"] == "out_of_tolerance"
    assert body["sigma_within"] == 0 and body["cpk"] is None and body["cpm"] is not None
    assert body["ppm"]["observed"] == {"below": 0.0, "above": 1e6, "total": 1e6}
    assert body["ppm"]["expected_within"]["above"] == 1e6
    alarms = [e.body for e in events if e.kind == "alarm" and e.body["cause"] == "low_capability"]
    assert len(alarms) == 5
    assert alarms[0]["evidence"]["verdict"] == "out_of_tolerance"
    assert alarms[0]["evidence"]["ppm"]["observed"]["total"] == 1e6
    valid(events)


def test_zero_spread_in_tolerance_is_no_spread_without_an_alarm() -> None:
    p = capability_press()
    events = feed(p, "5.00", 25)
    cap = next(e for e in events if e.kind == "capability").body
    assert cap["verdict"] == "no_spread"
    assert cap["ppm"]["expected_within"]["total"] == 0.0
    assert cap["cpm"] is None  # τ = 0: every value on the target
    assert "alarm" not in kinds(events)
    valid(events)


def test_capability_reports_cpm_about_the_nominal_and_ppm() -> None:
    p = capability_press()
    values = ["5.02", "4.98", "5.04", "5.00", "4.96"] * 5
    events: list[Event] = []
    for v in values:
        events += p.gauge("g2", v)
    cap = next(e for e in events if e.kind == "capability").body
    assert cap["target"] == "5.00"
    floats = [float(v) for v in values]
    tau = (sum((v - 5.0) ** 2 for v in floats) / (len(floats) - 1)) ** 0.5
    assert cap["cpm"] == pytest.approx(0.10 / (3 * tau))
    assert cap["ppm"]["observed"]["total"] == 0.0
    assert 0 < cap["ppm"]["expected_overall"]["total"] < 1e6
    valid(events)


def test_one_value_out_among_many_keeps_the_index_verdict() -> None:
    p = capability_press()
    values = ["5.02", "4.98", "5.04", "5.00", "4.96"] * 4 + ["5.02", "4.98", "5.04", "5.00",
                                                              "5.30"]
    events: list[Event] = []
    for v in values:
        events += p.gauge("g2", v)
    cap = next(e for e in events if e.kind == "capability").body
    assert cap["ppm"]["observed"]["total"] == pytest.approx(1e6 / 25)
    assert cap["verdict"] == "below_minimum"  # the indices can say it


def test_rule_8_option_from_the_plan() -> None:
    """One-sided reading only when the plan asks for it (mixture_sides = 'any')."""
    for sides, expected in (("both", []), ("any", [8])):
        spc = SpcOptions(limits="fixed", center=D("10.000"), sigma=D("0.010"), rules=(8,),
                         mixture_sides=sides)
        p = Press(plan(spc=spc, patrol_every_strokes=None, patrol_every_min=None))
        p.release()
        events: list[Event] = []
        for _ in range(8):
            events += p.gauge("g1", "10.015")  # beyond 1σ, in tolerance, one side
        rules = [r["rule"] for e in events if e.kind == "alarm" and e.body["cause"] == "rule"
                 for r in e.body["evidence"]["rules"]]
        assert rules == expected, sides


def test_individuals_sigma_option_from_the_plan() -> None:
    values = ["10.000", "10.010", "9.990", "10.020", "9.980", "10.000"]

    def limits(sigma: str) -> dict:
        spc = SpcOptions(baseline_subgroups=6, individuals_sigma=sigma)
        p = Press(plan(spc=spc, patrol_every_strokes=None, patrol_every_min=None))
        p.release()
        events: list[Event] = []
        for v in values:
            events += p.gauge("g1", v)
        return next(e for e in events if e.kind == "control_limits").body["limits"]

    from collector import spc as spc_mod

    floats = [float(v) for v in values]
    assert limits("moving_range")["sigma_within"] == pytest.approx(
        spc_mod.imr_limits(floats).sigma_within)
    assert limits("stdev")["sigma_within"] == pytest.approx(
        spc_mod.imr_limits(floats, sigma="stdev").sigma_within)


def test_cpm_target_is_the_nominal_or_the_middle_when_the_nominal_is_a_limit() -> None:
    from collector.domain import Characteristic
    from collector.quality import cpm_target

    slot = Characteristic("C2", "slot", D("8.00"), D("8.00"), D("8.08"))
    assert cpm_target(slot) == D("8.04")
    hole = Characteristic("C1", "hole", D("25.00"), D("24.95"), D("25.05"))
    assert cpm_target(hole) == D("25.00")
    burr = Characteristic("C3", "burr", D("0"), None, D("0.05"))
    assert cpm_target(burr) == D("0")  # smaller is better: the target is the nominal
