"""The message contract is code: schemas, AsyncAPI document and encoder agree.

These are pure tests of the encoder against the schemas; the end-to-end tests validate
what a subscriber really receives from the broker with the same function.
"""

from __future__ import annotations

import time
from decimal import Decimal
from importlib import resources

import orjson
import pytest
import yaml

from collector import messages
from collector.contract import load_schemas, schema_name_for, validate_message, validation_errors
from collector.domain import Characteristic, Plan, WorkflowSettings
from collector.workflow import EVENT_KINDS, PressWorkflow

ROOT = "plant/press-shop"
PLAN = Plan("BRK-100", "B", (
    Characteristic("C1", "hole distance", Decimal("25.00"), Decimal("24.95"), Decimal("25.05"),
                   gauge="g1"),
    Characteristic("C2", "burr", Decimal("0"), None, Decimal("0.05"), gauge="g1"),
))


def run_scenario() -> list:
    """A job start, a failed and a passed first article, a measurement, an outage."""
    wf = PressWorkflow("p1", WorkflowSettings(), {"BRK-100": PLAN})
    t = 1_764_000_000.0
    events = []
    events += wf.on_poll(t, {"part_number": "BRK-100", "die_id": 7, "material_lot": "L1",
                             "stroke_count": 10, "setup_mode": False})
    events += wf.on_gauge(t + 1, "g1", 1, "25.20", "mm", reading_id="p1/gauge/1")
    events += wf.on_gauge(t + 2, "g1", 1, "0.01", "mm", reading_id="p1/gauge/2")
    events += wf.on_gauge(t + 3, "g1", 1, "25.01", "mm", reading_id="p1/gauge/3")
    events += wf.on_gauge(t + 4, "g1", 1, "0.02", "mm", reading_id="p1/gauge/4")
    events += wf.on_gauge(t + 5, "g1", 1, "25.00", "mm", reading_id="p1/gauge/5")
    events += wf.on_gauge(t + 6, "g9", None, "1.0", "mm")
    events += wf.on_connection(t + 7, False, "timeout")
    events += wf.on_connection(t + 8, True)
    events += wf.on_poll(t + 9, {"part_number": "BRK-100", "die_id": 8, "material_lot": "L1",
                                 "stroke_count": 12})
    return events


def encoded(events) -> list[tuple[str, dict]]:
    topics = messages.Topics(ROOT, "line-pc-1")
    return [(topics.event("p1", e.kind),
             orjson.loads(messages.encode_event(e, "p1", i, "line-pc-1")))
            for i, e in enumerate(events, start=1)]


def test_every_workflow_event_kind_has_a_schema() -> None:
    assert set(EVENT_KINDS) <= set(load_schemas())


def test_scenario_events_honour_their_schemas() -> None:
    events = run_scenario()
    kinds = {e.kind for e in events}
    assert {"setup", "first_article", "measurement", "unassigned_reading", "connection",
            "state_change"} <= kinds
    for topic, payload in encoded(events):
        assert validate_message(topic, ROOT, payload) == [], (topic, payload)


def test_schema_rejects_a_broken_event() -> None:
    topic, payload = next((t, p) for t, p in encoded(run_scenario()) if t.endswith("first_article"))
    del payload["seq"]
    payload["data"]["verdict"] = "maybe"
    errors = validate_message(topic, ROOT, payload)
    assert any("seq" in e for e in errors)
    assert any("maybe" in e for e in errors)


def test_telemetry_state_and_status_honour_their_schemas() -> None:
    now = time.time()
    context = {"state": "released", "part_number": "BRK-100", "die_id": "7", "material_lot": "L1"}
    telemetry = orjson.loads(messages.encode_telemetry(
        "p1", 5, now, "h", {"strokes": 12, "tonnage": 812.5, "part": "BRK-100", "setup": False},
        {"temp": "IllegalDataAddress"}, context))
    state = orjson.loads(messages.encode_state("p1", now, "h", "released", True, context))
    status = orjson.loads(messages.encode_status("h", False))
    assert validate_message(f"{ROOT}/p1/telemetry", ROOT, telemetry) == []
    assert validate_message(f"{ROOT}/p1/telemetry/replay", ROOT, telemetry) == []
    assert validate_message(f"{ROOT}/p1/state", ROOT, state) == []
    assert validate_message(f"{ROOT}/_collector/h/status", ROOT, status) == []
    telemetry["stream"] = "events"
    assert validation_errors("telemetry", telemetry)


def test_the_state_of_a_removed_press_honours_its_schema() -> None:
    """SIGHUP took the press out of the config: removed true, only ever present as true."""
    context = {"state": "released", "part_number": "BRK-100", "die_id": "7", "material_lot": "L1"}
    state = orjson.loads(messages.encode_state("p1", time.time(), "h", "released", False,
                                               context, collector_online=False, removed=True))
    assert state["removed"] is True and state["collector_online"] is False
    assert validate_message(f"{ROOT}/p1/state", ROOT, state) == []
    running = orjson.loads(messages.encode_state("p1", time.time(), "h", "released", True,
                                                 context))
    assert "removed" not in running
    state["removed"] = False
    assert validation_errors("state", state)


def test_filtered_telemetry_honours_its_schema() -> None:
    """on_change / deadband / publish_every: a subset of values, flagged ``filtered``."""
    context = {"state": "released", "part_number": None, "die_id": None, "material_lot": None}
    telemetry = orjson.loads(messages.encode_telemetry("p1", 6, time.time(), "h", {"force": 3},
                                                       {}, context, filtered=True))
    assert telemetry["data"] == {"values": {"force": 3}, "filtered": True}
    assert validate_message(f"{ROOT}/p1/telemetry", ROOT, telemetry) == []
    telemetry["data"]["filtered"] = False  # only ever present as true
    assert validation_errors("telemetry", telemetry)


def test_timestamps_are_utc_with_milliseconds() -> None:
    assert messages.iso_utc(0.5) == "1970-01-01T00:00:00.500Z"
    assert messages.iso_utc(1_764_061_200.123) == "2025-11-25T09:00:00.123Z"


@pytest.mark.parametrize("topic,name", [
    (f"{ROOT}/p1/events/setup", "setup"),
    (f"{ROOT}/p1/telemetry", "telemetry"),
    (f"{ROOT}/p1/state", "state"),
    (f"{ROOT}/_collector/line-pc-1/status", "status"),
    (f"{ROOT}/_collector/line-pc-1/alarm", "collector_alarm"),
    (f"{ROOT}/p1/cmd/quality/release", "command_request"),
    (f"{ROOT}/p1/cmd/production/set_material", "command_request"),
    (f"{ROOT}/_collector/cmd/probe/line-pc-1", "command_probe"),
])
def test_topic_to_schema(topic: str, name: str) -> None:
    assert schema_name_for(topic, ROOT) == name


def test_asyncapi_document_covers_every_schema() -> None:
    doc = yaml.safe_load(resources.files("collector").joinpath("asyncapi.yaml").read_text())
    assert doc["asyncapi"].startswith("3.")
    referenced = {m["payload"]["schema"]["$ref"].removeprefix("./schemas/").removesuffix(".json")
                  for m in doc["components"]["messages"].values()}
    assert referenced == set(load_schemas()) - {"envelope"}
    for name, channel in doc["channels"].items():
        assert channel["address"].startswith("{root}/"), name


def run_quality_scenario() -> list:
    """Every quality event kind (issue 5), from the pure tests' press."""
    from collector.domain import SpcOptions
    from tests.test_quality_workflow import Press, plan

    events = []
    p = Press(plan(spc=SpcOptions(baseline_subgroups=3), capability_min_values=3,
                   capability_every=3))
    events += p.poll()
    events += p.gauge("g1", "10.000") + p.gauge("g2", "5.00")
    events += p.strokes(100)  # measurement_due
    for v in ("10.001", "9.999", "10.000", "10.002", "9.998", "10.001"):
        events += p.gauge("g1", v) + p.gauge("g2", "5.00")
    events += p.wf.on_tick(p.ts + 10_000)
    events += p.strokes(100) + p.wf.on_tick(p.ts + 20_000)  # overdue
    events += p.cmd("request_capability", operator="OP1").events
    events += p.cmd("start_last_piece", operator="OP1").events
    events += p.gauge("g1", "10.001") + p.gauge("g2", "5.01")
    events += p.gauge("g1", "10.090")  # alarm, hold, 100 %
    events += p.cmd("release", why="sorted").events
    events += p.cmd("start_setup", operator="OP1", reason="maintenance").events
    events += p.gauge("g1", "10.000") + p.gauge("g2", "5.00")  # comparison with last piece
    return events


def test_quality_events_honour_their_schemas() -> None:
    events = run_quality_scenario()
    kinds = {e.kind for e in events}
    assert kinds >= {"measurement_due", "overdue", "alarm", "control_limits", "capability",
                     "annotation", "last_piece", "last_piece_comparison", "command"}
    for topic, payload in encoded(events):
        assert validate_message(topic, ROOT, payload) == [], (topic, payload["data"])


def test_capability_review_and_cmd_result_honour_their_schemas() -> None:
    from collector.domain import SpcOptions
    from tests.test_quality_workflow import Press, plan

    p = Press(plan(spc=SpcOptions(limits="fixed", center=Decimal("10.000"),
                                  sigma=Decimal("0.002")), capability_min_values=3))
    p.release()
    for v in ("10.001", "9.999", "10.000"):
        p.gauge("g1", v)
        p.gauge("g2", "5.00")
    events = p.cmd("request_capability", operator="OP1").events
    assert "capability_review" in {e.kind for e in events}
    for topic, payload in encoded(events):
        assert validate_message(topic, ROOT, payload) == []
    reply = orjson.loads(messages.encode_cmd_result("p1", 1.0, "h", "r-1", "hold", False,
                                                    "not_allowed", "not now", [], "released"))
    assert validate_message(f"{ROOT}/p1/cmd_result", ROOT, reply) == []
    hold = f"{ROOT}/p1/cmd/quality/hold"
    ok = {"request_id": "r-1", "operator": "Q7", "why": "x",
          "issued_at": "2026-11-25T09:00:00.000Z"}
    assert validate_message(hold, ROOT, ok) == []
    assert validate_message(hold, ROOT, {"operator": "Q7"}) != []
    assert validate_message(hold, ROOT, {**ok, "request_id": "x" * 65}) != []
    assert validate_message(hold, ROOT, {k: v for k, v in ok.items() if k != "issued_at"})
    with pytest.raises(ValueError):  # the layout without a role level is not a command
        schema_name_for(f"{ROOT}/p1/cmd/hold", ROOT)
def test_100_percent_inspection_and_missed_check_messages_honour_their_schemas() -> None:
    from tests.test_quality_workflow import i100_press

    p = i100_press(patrol_every_strokes=100)
    events = p.gauge("g1", "10.060") + p.strokes(20)  # 100 %, then the unmeasured alarm
    events += p.strokes(100) + p.wf.on_tick(p.ts + 10_000)  # due, overdue
    reason = p.cmd("missed_check_reason", operator="OP1", reason="coil change")
    release = p.cmd("release", why="sorted")
    events += reason.events + release.events
    causes = {e.body.get("cause") for e in events if e.kind == "alarm"}
    assert "unmeasured_pieces" in causes and "overdue" in {e.kind for e in events}
    for topic, payload in encoded(events):
        assert validate_message(topic, ROOT, payload) == [], (topic, payload["data"])
    reply = orjson.loads(messages.encode_cmd_result(
        "p1", 1.0, "h", "r-2", "release", True, None, "ok", ["command"], "released",
        release.effect))
    assert reply["effect"]["inspection_100"] is not None
    assert validate_message(f"{ROOT}/p1/cmd_result", ROOT, reply) == []
    bad = next(m for _, m in encoded(events) if m["data"].get("cause") == "unmeasured_pieces")
    bad["context"]["unmeasured_pieces"] = -1
    assert validate_message(f"{ROOT}/p1/events/alarm", ROOT, bad) != []


def test_alarm_honours_its_schema() -> None:
    alarm = orjson.loads(messages.encode_alarm(3, "h", "buffer_full", True,
                                               {"used_bytes": 10, "max_bytes": 5,
                                                "pending": 2, "telemetry_dropped": 0}))
    assert validate_message(f"{ROOT}/_collector/h/alarm", ROOT, alarm) == []
    assert (alarm["press"], alarm["seq"]) == ("_collector", 3)
    alarm["data"]["kind"] = "disk_on_fire"
    assert validate_message(f"{ROOT}/_collector/h/alarm", ROOT, alarm) != []
    write = orjson.loads(messages.encode_alarm(4, "h", "buffer_write_failed", True,
                                               {"write_errors": 3,
                                                "error": "database or disk is full",
                                                "telemetry_dropped": 120}))
    assert validate_message(f"{ROOT}/_collector/h/alarm", ROOT, write) == []
    write["data"]["write_errors"] = -1
    assert validate_message(f"{ROOT}/_collector/h/alarm", ROOT, write) != []
    rolled = orjson.loads(messages.encode_alarm(5, "h", "buffer_rolled_back", True, {
        "lost": [{"press": "p1", "stream": "telemetry", "first_seq": 31, "last_seq": 40}]}))
    assert validate_message(f"{ROOT}/_collector/h/alarm", ROOT, rolled) == []
    rolled["data"]["lost"][0]["first_seq"] = 0
    assert validate_message(f"{ROOT}/_collector/h/alarm", ROOT, rolled) != []
    task = orjson.loads(messages.encode_alarm(6, "h", "task_failed", True, {
        "task": "prune", "error": "OperationalError: database or disk is full",
        "failures": 1}))
    assert validate_message(f"{ROOT}/_collector/h/alarm", ROOT, task) == []
    task["data"]["failures"] = "many"
    assert validate_message(f"{ROOT}/_collector/h/alarm", ROOT, task) != []


def test_amended_setup_and_its_annotation_honour_their_schemas() -> None:
    """Issue 11: a die change during setup mode amends the open setup (amended,
    added_reasons in the setup event; amended in the annotation)."""
    wf = PressWorkflow("p1", WorkflowSettings(), {"BRK-100": PLAN})
    t = 1_764_000_000.0
    roles = {"part_number": "BRK-100", "die_id": 7, "material_lot": "L1", "stroke_count": 10,
             "setup_mode": True}
    events = wf.on_poll(t, roles)
    events += wf.on_poll(t + 1, {**roles, "die_id": 8, "material_lot": "L2"})
    amended = [e for e in events if e.kind == "setup"][-1]
    assert amended.body["amended"] is True
    assert amended.body["added_reasons"] == ["die_change", "material_change"]
    for seq, event in enumerate(events, start=1):
        payload = orjson.loads(messages.encode_event(event, "p1", seq, "line-pc-1"))
        assert validation_errors(event.kind, payload) == [], (event.kind, payload["data"])
    bad = orjson.loads(messages.encode_event(amended, "p1", 9, "line-pc-1"))
    bad["data"]["added_reasons"] = ["coffee_break"]
    assert validation_errors("setup", bad) != []


def test_counter_anomaly_alarm_honours_its_schema() -> None:
    wf = PressWorkflow("p1", WorkflowSettings(stroke_counter_wrap=2**32,
                                              max_strokes_per_min=600), {"BRK-100": PLAN})
    t = 1_764_000_000.0
    roles = {"part_number": "BRK-100", "die_id": 7, "stroke_count": 1138}
    wf.on_poll(t, roles)
    events = wf.on_poll(t + 1, {**roles, "stroke_count": 0})
    alarm = next(e for e in events if e.kind == "alarm")
    assert alarm.body["cause"] == "counter_anomaly"
    payload = orjson.loads(messages.encode_event(alarm, "p1", 1, "line-pc-1"))
    assert validation_errors("alarm", payload) == []


def test_message_ids_are_distinct_random_uuid4_also_across_a_fork_and_a_buffer_refill() -> None:
    """Envelope ids come from buffered randomness (collector/messages.py, _Uuid4Hex):
    each is a valid version-4 UUID in hex, none repeats across a refill of the buffer,
    and a forked child does not replay the parent's buffered ids."""
    import os
    import uuid

    n = 3 * (4096 // 16) + 7  # crosses three refills
    ids = [messages.envelope("telemetry", "p1", "telemetry", i, 0.0, "h", {}, {})["id"]
           for i in range(n)]
    assert len(set(ids)) == n
    for text in ids:
        u = uuid.UUID(text)
        assert u.hex == text and u.version == 4 and u.variant == uuid.RFC_4122
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: the next id, to the parent
        os.write(w, messages.envelope("telemetry", "p1", "telemetry", 0, 0.0, "h", {},
                                      {})["id"].encode())
        os._exit(0)
    os.close(w)
    child_id = os.read(r, 64).decode()
    os.close(r)
    os.waitpid(pid, 0)
    parent_id = messages.envelope("telemetry", "p1", "telemetry", 0, 0.0, "h", {}, {})["id"]
    assert len(child_id) == 32 and child_id != parent_id
