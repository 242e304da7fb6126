"""Joint sign-off and containment end to end (issue 14): the press simulator, gauges on
ptys, the daemon, and a Mosquitto started with the ACL shipped in deploy/ (loaded
verbatim) and one broker account per role, as tests/test_security_acl.py does it.

- BRK-100 asks production and quality to confirm its first article: a production
  terminal confirms on the production topic, a quality terminal on the quality topic;
  the broker drops a production account's confirmation on the quality topic, the daemon
  refuses a quality account's confirmation for an operator of the wrong list; the press
  is released by the last confirmation, and sign_off names both;
- then a patrol value out of tolerance holds the press: the suspect range is in the
  events and in the retained state; the quality release without the disposition is
  refused, with it accepted and recorded.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import orjson

from collector.config import LoadedConfig
from collector.domain import Reaction
from sim.local_broker import LocalBroker
from tests.support.commands import command_topic
from tests.support.line import BRK100_PASS, Line, wait_gauges_online
from tests.support.subscriber import Subscriber
from tests.support.terminal import Terminal
from tests.test_security_acl import PASSWORDS, ROOT, acl_broker, on_site, reply

__all__ = ["acl_broker"]  # the fixture, used by name


def joint_config(config: LoadedConfig) -> LoadedConfig:
    """The shipped root and accounts; BRK-100 confirmed by production and quality, a
    critical value out of tolerance holds the press."""
    config = on_site(config)
    plan = dataclasses.replace(config.plans["BRK-100"],
                               first_article_confirm_roles=("production", "quality"),
                               reactions={"critical": Reaction(out_of_tolerance=("hold",))})
    return config.model_copy(update={"plans": {**config.plans, "BRK-100": plan}})


async def test_production_and_quality_confirm_then_a_containment_is_dispositioned(
        acl_broker: LocalBroker, tmp_path: Path) -> None:
    line = Line(tmp_path, acl_broker, presses=("p1",), adjust=joint_config)
    line.sub = Subscriber("127.0.0.1", acl_broker.port, [f"{ROOT}/#"], username="dashboard",
                          password=PASSWORDS["dashboard"]).start()
    await line.start(subscribe=False)
    terminals = {user: Terminal(acl_broker.port, user, PASSWORDS[user])
                 for user in ("production-line-1", "quality-lab")}
    prod, quality = terminals["production-line-1"], terminals["quality-lab"]
    try:
        await line.wait_event("p1", "setup")
        await wait_gauges_online(line, "p1")
        for gauge, value in BRK100_PASS:
            line.measure("p1", gauge, value)
        fa = await line.wait_event("p1", "first_article", verdict="pass")
        assert fa["data"]["confirm_roles"] == ["production", "quality"]
        waiting = await line.wait_event("p1", "state_change", to="awaiting_confirmation")
        assert waiting["context"]["confirmations"]["pending"] == ["production", "quality"]

        rid, ack = prod.command(ROOT, "p1", "confirm_first_article", operator="OP1",
                                topic=command_topic(ROOT, "p1", "confirm_first_article",
                                                    "production"))
        assert not ack.is_failure
        first = await reply(line, rid)
        assert first["ok"] is True and first["state"] == "awaiting_confirmation"
        assert first["effect"]["pending"] == ["quality"]
        # a production account cannot write the quality topic: the broker drops it
        sneaky, ack = prod.command(ROOT, "p1", "confirm_first_article", operator="Q7",
                                   topic=command_topic(ROOT, "p1", "confirm_first_article",
                                                       "quality"))
        assert ack.is_failure and "authori" in str(ack).lower()
        # a quality account, but the operator is not on the press's quality list
        rid, ack = quality.command(ROOT, "p1", "confirm_first_article", operator="OP2",
                                   topic=command_topic(ROOT, "p1", "confirm_first_article",
                                                       "quality"))
        wrong = await reply(line, rid)
        assert (wrong["ok"], wrong["error"]["code"]) == (False, "unauthorized")
        assert wrong["state"] == "awaiting_confirmation"

        rid, ack = quality.command(ROOT, "p1", "confirm_first_article", operator="Q7",
                                   note="setup record signed",
                                   topic=command_topic(ROOT, "p1", "confirm_first_article",
                                                       "quality"))
        last = await reply(line, rid)
        assert last["ok"] is True and last["state"] == "released"
        assert last["events"] == ["command", "sign_off", "state_change"]
        sign_off = await line.wait_event("p1", "sign_off")
        assert [(c["role"], c["operator"]) for c in sign_off["data"]["confirmations"]] == [
            ("production", "OP1"), ("quality", "Q7")]
        audits = [e for e in line.events(press="p1", kind="command")
                  if e["data"]["command"] == "confirm_first_article"]
        assert [(a["data"]["class"], a["data"]["auth"]["role"]) for a in audits] == [
            ("production", "production"), ("quality", "quality")]
        assert not [r for r in line.events(press="p1", kind="command")
                    if r["data"]["request_id"] == sneaky]
        released = await line.wait_event("p1", "state_change", to="released",
                                         after=sign_off["seq"])
        assert released["data"]["cause"] == "confirmed"

        # a patrol value out of tolerance: hold, with its suspect range
        strokes = released["context"]["stroke_count"]
        line.sims["p1"].stroke(5)
        await line.sub.wait_for(lambda msgs: any(
            orjson.loads(m.payload)["data"]["values"]["strokes"] >= strokes + 5
            for m in msgs if m.topic == f"{ROOT}/p1/telemetry"))
        line.measure("p1", "g1", "25.080")
        alarm = await line.wait_event("p1", "alarm", cause="out_of_tolerance")
        suspect = alarm["data"]["containment"]
        assert suspect["id"] == "p1/containment/1"
        assert suspect["last_good"]["source"] == "release"
        assert suspect["parts"] == suspect["last_stroke"] - suspect["first_stroke"] >= 5
        hold = await line.wait_event("p1", "state_change", to="hold")
        assert hold["context"]["containment"]["id"] == suspect["id"]
        state = [orjson.loads(m.payload) for m in line.sub.on_topic(f"{ROOT}/p1/state")]
        assert any(s["state"] == "hold" and s["context"].get("containment", {}).get("id")
                   == suspect["id"] for s in state)

        rid, ack = quality.command(ROOT, "p1", "release", operator="Q7", why="sorted")
        refused = await reply(line, rid)
        assert (refused["ok"], refused["error"]["code"]) == (False, "missing_field")
        assert suspect["id"] in refused["error"]["message"]
        rid, ack = quality.command(ROOT, "p1", "release", operator="Q7", why="sorted",
                                   sorted_good="3", reworked="1", scrapped="1",
                                   note="5 in the bin, strokes on hold scrapped at the press")
        done = await reply(line, rid)
        assert done["ok"] is True and done["state"] == "released", done
        disposition = done["effect"]["disposition"]
        assert (disposition["sorted_good"], disposition["reworked"], disposition["scrapped"],
                disposition["accounted"]) == (3, 1, 1, 5)
        audit = await line.wait_event("p1", "command", command="release")
        assert audit["data"]["effect"]["containment"]["disposition"] == disposition
        assert audit["data"]["auth"]["role"] == "quality"
        assert line.contract_violations() == []
    finally:
        for t in terminals.values():
            t.close()
        await line.close()
