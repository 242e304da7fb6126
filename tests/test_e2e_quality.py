"""The quality workflow end to end through Mosquitto (issue 5).

Press simulator, gauges on ptys, the daemon, a subscriber, and commands sent as an
operator terminal would (MQTT) and as a technician would (``press-collector cmd``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import subprocess
import sys
import uuid
from decimal import Decimal
from pathlib import Path

import orjson
import pytest

from collector.config import LoadedConfig
from collector.contract import validate_message
from collector.domain import Reaction, SpcOptions
from sim.demo import REPO_CONFIG
from sim.local_broker import LocalBroker
from tests.support.commands import command_topic, stamped
from tests.support.configdir import write_config_dir
from tests.support.line import BRK100_PASS, Line


def quality_config(config: LoadedConfig) -> LoadedConfig:
    """BRK-100 with patrol every 10 strokes, fixed limits on C1, hold on a broken rule;
    quality commands only for operator Q7."""
    plan = config.plans["BRK-100"]
    c1 = dataclasses.replace(plan.characteristics[0], spc=SpcOptions(
        limits="fixed", center=Decimal("25.00"), sigma=Decimal("0.01")))
    plan = dataclasses.replace(
        plan, characteristics=(c1, *plan.characteristics[1:]), patrol_every_strokes=10,
        overdue_grace_min=60.0, reactions={"critical": Reaction(rule=("hold",))})
    press = config.presses["p1"]
    workflow = press.workflow.model_copy(update={"commands": press.workflow.commands.model_copy(
        update={"quality": ["Q7"]})})
    presses = {**config.presses, "p1": press.model_copy(update={"workflow": workflow})}
    return config.model_copy(update={"plans": {**config.plans, "BRK-100": plan},
                                     "presses": presses})


@pytest.fixture
async def line(tmp_path: Path, broker: LocalBroker):
    started = Line(tmp_path, broker, presses=("p1",), adjust=quality_config)
    try:
        yield await started.start()
    finally:
        await started.close()


async def released(line: Line) -> None:
    await line.wait_event("p1", "setup")
    for gauge in line.gauges["p1"]:
        await line.wait_event("p1", "gauge_connection", gauge=gauge, online=True)
    for gauge, value in BRK100_PASS:
        line.measure("p1", gauge, value)
    await line.wait_event("p1", "first_article", verdict="pass")


def send(line: Line, name: str, payload: dict | bytes) -> str:
    """Publish a command as an operator terminal would; returns its request id."""
    assert line.sub is not None
    request_id = uuid.uuid4().hex[:8]
    if isinstance(payload, dict):
        payload = orjson.dumps(stamped({"request_id": request_id, **payload}))
    line.sub.client.publish(command_topic(line.root, "p1", name), payload, qos=1)
    return request_id


async def reply(line: Line, request_id: str | None = None, command: str | None = None) -> dict:
    assert line.sub is not None
    topic = f"{line.root}/p1/cmd_result"

    def found(msgs) -> list[dict]:
        out = [orjson.loads(m.payload) for m in msgs if m.topic == topic]
        return [r for r in out if (request_id is None or r["request_id"] == request_id)
                and (command is None or r["command"] == command)]

    msgs = await line.sub.wait_for(lambda msgs: bool(found(msgs)), 15)
    return found(msgs)[0]


def cli_config(line: Line, tmp_path: Path) -> Path:
    """A copy of the example config pointed at the test broker (for ``press-collector cmd``)."""
    target = tmp_path / "cli-config"
    subprocess.run(["cp", "-r", str(REPO_CONFIG), str(target)], check=True)
    toml = target / "collector.toml"
    text = toml.read_text()
    assert "[broker]" in text
    text = text.replace("[broker]", f"[broker]\nport = {line.broker.port}", 1)
    lines = [ln for ln in text.splitlines() if not ln.strip().startswith("port =")
             or ln.strip() == f"port = {line.broker.port}"]
    toml.write_text("\n".join(lines) + "\n")
    return target


async def test_patrol_rule_alarm_hold_bad_commands_then_release_by_cli(
        line: Line, tmp_path: Path) -> None:
    await released(line)
    line.sims["p1"].stroke(10)
    due = await line.wait_event("p1", "measurement_due", reason="strokes")
    line.measure("p1", "g1", "25.040")  # in tolerance (usl 25.05), beyond UCL 25.03
    measurement = await line.wait_event("p1", "measurement", characteristic="C1")
    assert measurement["data"]["due_id"] == due["data"]["due_id"]
    assert measurement["data"]["subgroup"]["position"] == 1
    alarm = await line.wait_event("p1", "alarm", cause="rule")
    assert alarm["data"]["actions"] == ["hold"]
    assert alarm["data"]["evidence"]["rules"][0]["rule"] == 1
    assert alarm["data"]["reading_ids"] == [measurement["data"]["reading_id"]]
    for key in ("part_number", "plan_revision", "die_id", "material_lot", "stroke_count"):
        assert alarm["context"][key] is not None
    await line.wait_event("p1", "state_change", to="hold")

    # bad commands: an error reply each, nothing changed
    bad = [
        (send(line, "release", b"{not json"), "malformed"),
        (send(line, "release", {"operator": "OP1", "why": "looks fine"}), "unauthorized"),
        (send(line, "hold", {"operator": "Q7", "why": "again"}), "not_allowed"),
        (send(line, "release", {"operator": "Q7"}), "missing_field"),
        (send(line, "fly", {"operator": "Q7"}), "unknown_command"),
    ]
    for request_id, code in bad[1:]:
        answer = await reply(line, request_id)
        assert (answer["ok"], answer["error"]["code"]) == (False, code)
        assert answer["state"] == "hold"
    assert line.sub is not None
    replies = [orjson.loads(m.payload) for m in line.sub.snapshot()
               if m.topic.endswith("/p1/cmd_result")]
    malformed = [r for r in replies if r["request_id"] is None]
    assert [(r["ok"], r["error"]["code"]) for r in malformed] == [(False, "malformed")]
    assert line.daemon is not None and line.daemon.presses["p1"].workflow.state == "hold"
    assert line.events(press="p1", kind="command") == []

    # the hold names the suspect range (issue 14): from the release to the rule signal
    hold = await line.wait_event("p1", "state_change", to="hold")
    suspect = alarm["data"]["containment"]
    assert suspect == hold["context"]["containment"] | {
        k: suspect[k] for k in ("last_stroke", "until", "parts")}
    assert suspect["last_good"]["source"] == "release"  # no passing check since it
    assert suspect["first_stroke"] is not None
    assert suspect["parts"] == suspect["last_stroke"] - suspect["first_stroke"] >= 10

    # quality release from the line PC: refused without the disposition, then given
    config_dir = cli_config(line, tmp_path)

    async def release(*fields: str) -> tuple[int, dict]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "collector.cli", "cmd", "--config-dir", str(config_dir),
            "--operator", "Q7", "p1", "release", "why=re-measured, process centred",
            *fields, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode in (0, 1), err.decode()
        return proc.returncode, orjson.loads(out)

    code, answer = await release()
    assert code == 1 and answer["error"]["code"] == "missing_field"
    assert hold["context"]["containment"]["id"] in answer["error"]["message"]
    code, answer = await release("sorted_good=7", "reworked=2", "scrapped=1",
                                 "note=the bin held 10 parts, the rest were on the belt")
    assert code == 0 and answer["ok"] is True, answer
    audit = await line.wait_event("p1", "command", command="release")
    assert audit["data"]["operator"] == "Q7"
    assert audit["data"]["fields"] == {
        "why": "re-measured, process centred", "sorted_good": "7", "reworked": "2",
        "scrapped": "1", "note": "the bin held 10 parts, the rest were on the belt"}
    closed = audit["data"]["effect"]["containment"]
    assert closed["id"] == suspect["id"] and closed["first_stroke"] == suspect["first_stroke"]
    assert closed["last_stroke"] >= suspect["last_stroke"]  # strokes on hold are suspect
    assert closed["disposition"] == answer["effect"]["disposition"] == {
        "sorted_good": 7, "reworked": 2, "scrapped": 1, "accounted": 10,
        "suspect_parts": closed["parts"],
        "note": "the bin held 10 parts, the rest were on the belt"}
    assert "containment" not in audit["context"]  # closed by this release
    await line.wait_event("p1", "state_change", to="released", after=audit["seq"] - 1)
    assert audit["context"]["operator"] == "Q7"
    assert line.sub is not None  # everything but the (partly malformed) commands we sent
    problems = [(m.topic, validate_message(m.topic, line.root, orjson.loads(m.payload)))
                for m in line.sub.snapshot() if "/cmd/" not in m.topic]
    assert [p for p in problems if p[1]] == []


async def annotated_die(line: Line, die: str, after: int = 0) -> dict:
    """The die_change annotation that left the press with ``die`` mounted."""
    assert line.sub is not None

    def found(msgs) -> list[dict]:
        return [e for e in line.matching(msgs, "p1", "annotation", after, {"type": "die_change"})
                if e["context"]["die_id"] == die]

    return found(await line.sub.wait_for(lambda msgs: bool(found(msgs)), 15))[0]


async def test_last_piece_is_compared_at_the_next_setup_of_the_die(line: Line) -> None:
    await released(line)
    request_id = send(line, "start_last_piece", {"operator": "OP1"})
    assert (await reply(line, request_id))["ok"] is True
    for gauge, value in (("g1", "25.020"), ("g2", "12.470"), ("g2", "0.010")):
        line.measure("p1", gauge, value)
    last = await line.wait_event("p1", "last_piece")
    assert last["data"]["die_id"] == "7" and last["data"]["stored"] is True
    sim = line.sims["p1"]
    sim.set_setup_mode(True)
    await line.wait_event("p1", "state_change", to="setup")
    sim.set_die(8)
    note = await annotated_die(line, "8")
    sim.set_die(7)  # the die comes back from the die store
    await annotated_die(line, "7", after=note["seq"])
    sim.set_setup_mode(False)
    await line.wait_event("p1", "state_change", to="awaiting_first_article",
                          after=note["seq"])
    for gauge, value in BRK100_PASS:
        line.measure("p1", gauge, value)
    comparison = await line.wait_event("p1", "last_piece_comparison")
    items = {i["characteristic"]: i for i in comparison["data"]["items"]}
    assert items["C1"] == {**items["C1"], "last_value": "25.020", "first_value": "25.010",
                           "difference": "-0.010"}
    assert comparison["data"]["die_id"] == "7"
    assert line.contract_violations() == []
    assert all(validate_message(f"{line.root}/p1/events/{k}", line.root, e) == []
               for k in ("last_piece",) for e in line.events(press="p1", kind=k))


def inspection_config(config: LoadedConfig) -> LoadedConfig:
    """BRK-100: C1 (critical) out of tolerance -> 100 % inspection only, no patrol;
    more than 3 unmeasured strokes -> alarm; quality commands only for Q7."""
    config = quality_config(config)
    plan = dataclasses.replace(
        config.plans["BRK-100"], patrol_every_strokes=None, patrol_every_min=None,
        reactions={"critical": Reaction(out_of_tolerance=("inspection_100",))})
    press = config.presses["p1"]
    workflow = press.workflow.model_copy(update={"inspection_100_max_unmeasured": 3})
    presses = {**config.presses, "p1": press.model_copy(update={"workflow": workflow})}
    return config.model_copy(update={"plans": {**config.plans, "BRK-100": plan},
                                     "presses": presses})


async def retained_state(line: Line, **context: object) -> dict:
    """The first retained state message of p1 whose context has these values."""
    assert line.sub is not None
    topic = f"{line.root}/p1/state"

    def found(msgs) -> list[dict]:
        states = [orjson.loads(m.payload) for m in msgs if m.topic == topic]
        return [s for s in states if all(s["context"].get(k) == v for k, v in context.items())]

    return found(await line.sub.wait_for(lambda msgs: bool(found(msgs)), 15))[0]


async def test_100_percent_inspection_counts_unmeasured_pieces_until_release(
        tmp_path: Path, broker: LocalBroker) -> None:
    line = Line(tmp_path, broker, presses=("p1",), spm=0, adjust=inspection_config)
    try:
        await line.start()
        await released(line)
        sim = line.sims["p1"]
        line.measure("p1", "g1", "25.080")  # C1 out of tolerance
        alarm = await line.wait_event("p1", "alarm", cause="out_of_tolerance")
        assert alarm["data"]["actions"] == ["inspection_100"]
        assert alarm["context"]["inspection_100"] is True
        assert alarm["context"]["unmeasured_pieces"] == 0
        sim.stroke(2)  # pressed, not measured
        await retained_state(line, unmeasured_pieces=2, state="released")
        sim.stroke(2)
        gap = await line.wait_event("p1", "alarm", cause="unmeasured_pieces")
        evidence = gap["data"]["evidence"]
        assert (evidence["strokes"], evidence["pieces_measured"],
                evidence["unmeasured_pieces"], evidence["max_unmeasured"]) == (4, 0, 4, 3)
        for gauge, value in BRK100_PASS:  # one piece: every characteristic
            line.measure("p1", gauge, value)
        last = await line.wait_event("p1", "measurement", characteristic="C3")
        assert last["data"]["purpose"] == "inspection_100"
        assert last["context"]["unmeasured_pieces"] == 3

        request_id = send(line, "release", {"operator": "Q7", "why": "sorted 4 parts"})
        answer = await reply(line, request_id)
        assert answer["ok"] is True and answer["state"] == "released"
        totals = answer["effect"]["inspection_100"]
        assert (totals["strokes"], totals["pieces_measured"], totals["unmeasured_pieces"],
                totals["alarms"]) == (4, 1, 3, 1)
        assert totals["per_characteristic"] == {"C1": 1, "C2": 1, "C3": 1}
        audit = await line.wait_event("p1", "command", command="release")
        assert audit["data"]["effect"]["inspection_100"] == totals
        assert audit["context"]["inspection_100"] is False
        assert audit["context"]["unmeasured_pieces"] is None
        await retained_state(line, unmeasured_pieces=None, inspection_100=False,
                             operator="Q7")
        assert line.contract_violations() == []
    finally:
        await line.close()


async def test_sighup_reload_with_a_new_plan_revision_annotates_and_events_name_it(
        tmp_path: Path, broker: LocalBroker) -> None:
    config_dir = tmp_path / "etc"

    def own_dir(config: LoadedConfig) -> LoadedConfig:
        return config.model_copy(update={"config_dir": config_dir})

    line = Line(tmp_path, broker, presses=("p1",), spm=0, adjust=own_dir)
    try:
        await line.start()
        # the config dir the daemon reads on SIGHUP: the running press, same addresses
        write_config_dir(config_dir, broker.port, {"p1": line.sims["p1"].port}, tmp_path)
        await released(line)
        assert line.daemon is not None
        plan_file = config_dir / "plans" / "brk-100.toml"
        text = plan_file.read_text()
        assert 'revision = "B"' in text
        plan_file.write_text(text.replace('revision = "B"', 'revision = "B-broken'))
        assert await line.daemon.reload() is False  # refused: the running plans stay
        assert line.daemon.presses["p1"].workflow.context()["plan_revision"] == "B"
        plan_file.write_text(text.replace('revision = "B"', 'revision = "C"'))
        runtime = line.daemon.presses["p1"]
        assert await line.daemon.reload() is True
        assert line.daemon.presses["p1"] is runtime  # the press file did not change
        note = await line.wait_event("p1", "annotation", type="plan_change")
        assert note["data"]["previous"] == {"plan_revision": "B"}
        assert note["data"]["new"] == {"plan_revision": "C"}
        line.measure("p1", "g1", "25.001")
        m = await line.wait_event("p1", "measurement", after=note["seq"])
        assert m["context"]["plan_revision"] == "C"
        assert m["data"]["resolution"] == "0.001"  # the plan's gauge step travels along
        assert m["context"]["phase"] == note["data"]["phase"]
        assert line.contract_violations() == []
    finally:
        await line.close()
