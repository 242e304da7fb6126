"""Fault test 7: bad commands over MQTT are refused with an error reply and change nothing.

tests/test_e2e_quality.py covers bad commands while the press is on hold (malformed JSON,
an unauthorised release, hold while on hold, a missing field, an unknown command). This
adds the rest against a *released* press: payloads that are JSON but not an object, an
empty payload, fields of the wrong type, unknown fields, over-long values, an empty
operator, an unauthorised quality command that would be allowed in this state, a command
that is out of state here (release while released), an invalid setup reason, an unknown
command, and a command for a press this daemon does not have (no reply, logged). After
all of them: no event at all, the same workflow state and context, the same retained
state, and a good command still works.
"""

from __future__ import annotations

import logging
import uuid

import orjson
import pytest

from collector.contract import validate_message
from tests.support.commands import command_topic, stamped
from tests.support.line import BRK100_PASS, Line


def publish(line: Line, press: str, name: str, payload: bytes) -> None:
    assert line.sub is not None
    line.sub.client.publish(command_topic(line.root, press, name), payload, qos=1)


def replies(line: Line) -> list[dict]:
    assert line.sub is not None
    return [orjson.loads(m.payload) for m in line.sub.snapshot()
            if m.topic == f"{line.root}/p1/cmd_result"]


async def test_bad_commands_are_refused_with_a_reply_and_change_nothing(
        line: Line, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="collector.daemon")
    assert line.sub is not None and line.daemon is not None
    await line.wait_event("p1", "setup")
    for g in ("g1", "g2"):
        await line.wait_event("p1", "gauge_connection", gauge=g, online=True)
    for g, value in BRK100_PASS:
        line.measure("p1", g, value)
    await line.wait_event("p1", "state_change", to="released")
    runtime = line.daemon.presses["p1"]
    await line.daemon.outbox.flush()  # type: ignore[union-attr]
    state_before = runtime.workflow.state
    context_before = runtime.workflow.context()
    events_before = line.daemon.outbox.last_seq("p1", "events")  # type: ignore[union-attr]
    retained_before = line.daemon.outbox.get_retained("p1")  # type: ignore[union-attr]

    def req(**fields: object) -> tuple[str, bytes]:
        rid = uuid.uuid4().hex[:8]
        return rid, orjson.dumps(stamped({"request_id": rid, **fields}))

    cases: list[tuple[str, str | None, bytes, str]] = []  # (command, request id, payload, code)
    for payload in (b"[1, 2]", b'"release"', b"", b"null", b"\xff\xfe"):
        cases.append(("hold", None, payload, "malformed"))
    for fields, code in (
            ({"operator": ["Q7"], "why": "x"}, "invalid_field"),             # wrong type
            ({"operator": "Q7", "why": "x", "force": "yes"}, "invalid_field"),  # unknown field
            ({"operator": "Q7", "why": "x" * 201}, "invalid_field"),          # too long
            ({"operator": "", "why": "x"}, "missing_field"),                  # empty operator
            ({"operator": "OP1", "why": "x"}, "unauthorized")):               # not quality
        rid, payload = req(**fields)
        cases.append(("hold", rid, payload, code))
    rid, payload = req(operator="Q7", why="x")
    cases.append(("release", rid, payload, "not_allowed"))  # released: nothing to release
    rid, payload = req(operator="OP1", reason="die_change_typo")
    cases.append(("start_setup", rid, payload, "invalid_field"))
    rid, payload = req(operator="OP1")
    cases.append(("self_destruct", rid, payload, "unknown_command"))
    for name, _, payload, _ in cases:
        publish(line, "p1", name, payload)
    publish(line, "p9", "hold", req(operator="Q7", why="x")[1])  # no such press here

    await line.sub.wait_for(lambda m: len(replies(line)) >= len(cases), 15)
    got = replies(line)
    assert len(got) == len(cases)
    for (name, rid, _, code), answer in zip(cases, got, strict=True):
        assert (answer["command"], answer["request_id"], answer["ok"],
                answer["error"]["code"]) == (name, rid, False, code), answer
        assert answer["events"] == [] and answer["state"] == "released"
        assert answer["error"]["message"]
    # nothing changed: no event, same state and context, same retained state
    await line.daemon.outbox.flush()  # type: ignore[union-attr]
    assert line.daemon.outbox.last_seq("p1", "events") == events_before  # type: ignore[union-attr]
    assert runtime.workflow.state == state_before
    assert runtime.workflow.context() == context_before
    assert line.daemon.outbox.get_retained("p1") == retained_before  # type: ignore[union-attr]
    assert any("unknown press 'p9'" in r.getMessage() for r in caplog.records)
    # and a good command still works afterwards
    rid, payload = req(operator="Q7", why="die check")
    publish(line, "p1", "hold", payload)
    await line.wait_event("p1", "state_change", to="hold", after=events_before)
    # the reply is committed after the event it reports (same batch, higher id) and so
    # arrives after it: await it, never read it in the same breath as the event (that
    # raced, and failed when the subscriber's thread woke the test between the two)
    await line.sub.wait_for(lambda m: any(r["request_id"] == rid for r in replies(line)), 15)
    ok = [r for r in replies(line) if r["request_id"] == rid]
    assert ok[0]["ok"] is True
    problems = [(m.topic, validate_message(m.topic, line.root, orjson.loads(m.payload)))
                for m in line.sub.snapshot() if "/cmd/" not in m.topic]  # ours: bad on purpose
    assert [p for p in problems if p[1]] == []
