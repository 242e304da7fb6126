"""Who may command a press, against a real Mosquitto started with the ACL file shipped in
deploy/etc/mosquitto/ (loaded verbatim) and one account per role.

- viewer and production accounts cannot release (the broker drops their publish), a
  quality account can; the daemon still receives commands (its loop-back probe comes
  back) and a command on another role's topic is refused by the daemon too;
- the ACL documented before issue 10 (collector: write only) left the daemon deaf in
  silence: now it says so, loudly, and /health shows it;
- a broker that refuses the subscription in the SUBACK (Mosquitto's dynamic-security
  plugin does) is logged as such;
- a retained command is never executed, answered once, and once per process even when
  the ACL keeps the collector from clearing it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from collector.config import LoadedConfig
from sim.local_broker import LocalBroker
from tests.support.commands import command_topic
from tests.support.line import BRK100_PASS, Line, wait_gauges_online
from tests.support.subscriber import Subscriber
from tests.support.terminal import Terminal

REPO = Path(__file__).resolve().parents[1]
SHIPPED_ACL = REPO / "deploy" / "etc" / "mosquitto" / "press-collector.acl"
ROOT = "plant-1/press-shop"  # the root the shipped ACL and deploy/etc/collector.toml use
COLLECTOR = "press-collector-line-pc-1"
PASSWORDS = {COLLECTOR: "pw-collector", "dashboard": "pw-dashboard",
             "production-line-1": "pw-production", "quality-lab": "pw-quality"}


def on_site(config: LoadedConfig) -> LoadedConfig:
    """The example config with the shipped root and the collector's own account."""
    col = config.collector
    col = col.model_copy(update={
        "site": col.site.model_copy(update={"topic_root": ROOT}),
        "broker": col.broker.model_copy(update={"username": COLLECTOR})})
    return config.model_copy(update={"collector": col})


@pytest.fixture
def acl_broker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalBroker]:
    monkeypatch.setenv("PRESS_COLLECTOR_MQTT_PASSWORD", PASSWORDS[COLLECTOR])
    b = LocalBroker(data_dir=tmp_path / "mq", users=PASSWORDS,
                    acl=SHIPPED_ACL.read_text())
    b.start()
    try:
        yield b
    finally:
        b.stop()


async def start_line(tmp_path: Path, broker: LocalBroker) -> Line:
    """The daemon as the collector account, a dashboard (viewer) watching everything."""
    line = Line(tmp_path, broker, presses=("p1",), adjust=on_site)
    line.sub = Subscriber("127.0.0.1", broker.port, [f"{ROOT}/#"], username="dashboard",
                          password=PASSWORDS["dashboard"]).start()
    return await line.start(subscribe=False)


def replies(line: Line, request_id: str | None = None) -> list[dict]:
    assert line.sub is not None
    out = [orjson.loads(m.payload) for m in line.sub.on_topic(f"{ROOT}/p1/cmd_result")]
    return [r for r in out if request_id is None or r["request_id"] == request_id]


async def reply(line: Line, request_id: str) -> dict:
    assert line.sub is not None
    await line.sub.wait_for(lambda _: bool(replies(line, request_id)), 15)
    return replies(line, request_id)[0]


async def released(line: Line) -> None:
    await line.wait_event("p1", "setup")
    await wait_gauges_online(line, "p1")
    for gauge, value in BRK100_PASS:
        line.measure("p1", gauge, value)
    await line.wait_event("p1", "state_change", to="released")


async def test_shipped_acl_only_quality_accounts_release(acl_broker: LocalBroker,
                                                         tmp_path: Path) -> None:
    line = await start_line(tmp_path, acl_broker)
    terminals = {user: Terminal(acl_broker.port, user, PASSWORDS[user])
                 for user in ("dashboard", "production-line-1", "quality-lab")}
    try:
        assert line.daemon is not None and line.daemon.commands is not None
        watch = line.daemon.commands.watch
        assert watch is not None
        assert await watch.settled() == "ok"  # the daemon receives commands
        await released(line)
        quality = terminals["quality-lab"]
        rid, ack = quality.command(ROOT, "p1", "hold", operator="Q7", why="die check")
        assert not ack.is_failure
        assert (await reply(line, rid))["ok"] is True
        await line.wait_event("p1", "state_change", to="hold")

        refused = []
        for user in ("dashboard", "production-line-1"):
            rid, ack = terminals[user].command(ROOT, "p1", "release", operator="Q7",
                                               why="I say so")
            assert ack.is_failure and "authori" in str(ack).lower(), (user, ack)
            refused.append(rid)
        # a production account on its own role's topic: the broker lets it through, the
        # daemon refuses a quality command there
        prod = terminals["production-line-1"]
        rid, ack = prod.command(ROOT, "p1", "release", operator="Q7", why="sneaky",
                                topic=f"{ROOT}/p1/cmd/production/release")
        assert not ack.is_failure
        answer = await reply(line, rid)
        assert (answer["ok"], answer["error"]["code"]) == (False, "wrong_topic")
        assert f"{ROOT}/p1/cmd/quality/release" in answer["error"]["message"]

        rid, ack = quality.command(ROOT, "p1", "release", operator="Q7", why="re-measured")
        assert not ack.is_failure
        assert (await reply(line, rid))["ok"] is True
        audit = await line.wait_event("p1", "command", command="release")
        assert audit["data"]["auth"] == {"role": "quality", "key": None,
                                        "issued_at": audit["data"]["auth"]["issued_at"]}
        # the broker dropped the viewer's and the production account's releases: the
        # daemon never saw them (no reply, no event), and only one release happened
        assert all(not replies(line, r) for r in refused)
        assert [e["data"]["request_id"] for e in line.events(press="p1", kind="command")
                if e["data"]["command"] == "release"] == [rid]
        assert line.daemon.commands.stats()["deaf"] is False
        assert line.contract_violations() == []
    finally:
        for t in terminals.values():
            t.close()
        await line.close()


async def test_the_acl_documented_before_leaves_the_collector_deaf_and_it_says_so(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """docs/security.md used to show `topic write {root}/#` for the collector: Mosquitto
    grants its command subscription and delivers nothing. Now: an ERROR, and /health."""
    caplog.set_level(logging.INFO, logger="collector")
    monkeypatch.setattr("collector.command_watch.PROBE_TIMEOUT_S", 1.0)
    monkeypatch.setenv("PRESS_COLLECTOR_MQTT_PASSWORD", PASSWORDS[COLLECTOR])
    acl = f"user {COLLECTOR}\ntopic write {ROOT}/#\nuser dashboard\ntopic read {ROOT}/#\n"
    with LocalBroker(data_dir=tmp_path / "mq", users=PASSWORDS, acl=acl) as broker:
        line = await start_line(tmp_path, broker)
        try:
            assert line.daemon is not None and line.daemon.commands is not None
            watch = line.daemon.commands.watch
            assert watch is not None
            assert await watch.settled() == "deaf"
            assert line.daemon.health()["commands"]["deaf"] is True
            loud = [r for r in caplog.records if r.levelno == logging.ERROR
                    and "COMMANDS WILL NOT ARRIVE" in r.getMessage()]
            assert len(loud) == 1
            assert f"read {ROOT}/+/cmd/#" in loud[0].getMessage()
            assert COLLECTOR in loud[0].getMessage()
        finally:
            await line.close()


def dynsec_config(path: Path, users: dict[str, tuple[str, list[dict]]]) -> Path:
    """A Mosquitto dynamic-security plugin file: users with their ACL entries."""
    clients, roles = [], []
    for name, (password, acls) in users.items():
        salt = os.urandom(12)
        digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, 101, 64)
        clients.append({"username": name, "password": base64.b64encode(digest).decode(),
                        "salt": base64.b64encode(salt).decode(), "iterations": 101,
                        "roles": [{"rolename": name}]})
        roles.append({"rolename": name, "acls": acls})
    path.write_text(json.dumps({
        "defaultACLAccess": {"publishClientSend": False, "publishClientReceive": True,
                             "subscribe": False, "unsubscribe": True},
        "clients": clients, "roles": roles, "groups": []}))
    return path


async def test_a_refused_command_subscription_is_logged_loudly(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """A broker that checks subscriptions (here Mosquitto's dynamic-security plugin)
    answers the SUBACK with a failure: the daemon reads it and says what to fix."""
    plugin = Path("/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so")
    assert plugin.exists(), "the Debian mosquitto package ships the dynamic-security plugin"
    caplog.set_level(logging.INFO, logger="collector")
    monkeypatch.setenv("PRESS_COLLECTOR_MQTT_PASSWORD", PASSWORDS[COLLECTOR])
    write_all = [{"acltype": "publishClientSend", "topic": f"{ROOT}/#", "allow": True,
                  "priority": 0}]
    conf = dynsec_config(tmp_path / "dynsec.json", {
        COLLECTOR: (PASSWORDS[COLLECTOR], write_all),
        "dashboard": ("pw-dashboard", [{"acltype": "subscribePattern", "topic": "#",
                                        "allow": True, "priority": 0}])})
    broker = LocalBroker(data_dir=tmp_path / "mq", extra_conf=f"plugin {plugin}\n"
                         f"plugin_opt_config_file {conf}\nallow_anonymous false")
    with broker:
        line = await start_line(tmp_path, broker)
        try:
            assert line.daemon is not None and line.daemon.commands is not None
            watch = line.daemon.commands.watch
            assert watch is not None
            assert await watch.settled() == "refused"
            loud = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR
                    and "COMMANDS WILL NOT ARRIVE" in r.getMessage()]
            assert len(loud) == 1 and "REFUSED the command subscription" in loud[0]
            assert line.daemon.health()["commands"]["deaf"] is True
            # events still flow (and the PLC driver is past its first connect: cancelling
            # a ModbusPoller inside its first connect stalls the stop, seen here)
            await line.wait_event("p1", "setup")
        finally:
            await line.close()


async def test_retained_command_is_never_executed_and_answered_once(
        acl_broker: LocalBroker, tmp_path: Path, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Today one retained hold re-applies at every reconnect. Under the shipped ACL the
    collector cannot clear it (it may not write command topics): refused, answered and
    logged once per process, never executed, also after a broker restart."""
    caplog.set_level(logging.WARNING, logger="collector")
    line = await start_line(tmp_path, acl_broker)
    quality = Terminal(acl_broker.port, "quality-lab", PASSWORDS["quality-lab"])
    try:
        await released(line)
        await line.stop_daemon()
        rid, ack = quality.command(ROOT, "p1", "hold", retain=True, operator="Q7",
                                   why="left retained by a buggy HMI")
        assert not ack.is_failure
        # a restarted process gets its password from the environment again (the daemon
        # drops it from os.environ once read)
        monkeypatch.setenv("PRESS_COLLECTOR_MQTT_PASSWORD", PASSWORDS[COLLECTOR])
        await line.start_daemon()
        answer = await reply(line, rid)
        assert (answer["ok"], answer["error"]["code"]) == (False, "retained")
        assert line.daemon is not None and line.daemon.commands is not None
        assert line.daemon.presses["p1"].workflow.state == "released"
        # the broker restarts: the daemon resubscribes, gets the retained hold again
        assert line.sub is not None

        def probes(msgs: list) -> int:
            return sum("/_collector/cmd/probe/" in m.topic for m in msgs)

        before = probes(line.sub.snapshot())
        acl_broker.restart()
        await line.sub.wait_for(lambda msgs: probes(msgs) > before, 20)
        watch = line.daemon.commands.watch
        assert watch is not None and await watch.settled(20) == "ok"
        await line.daemon.outbox.flush()  # type: ignore[union-attr]
        assert line.daemon.presses["p1"].workflow.state == "released"
        # one answer (the subscriber may see it more than once: at-least-once delivery)
        assert len({json.dumps(r, sort_keys=True) for r in replies(line, rid)}) == 1
        stats = line.daemon.presses["p1"].stats  # delivered twice, answered once
        assert (stats["commands_retained"], stats["commands_dropped"]) == (1, 1)
        logged = [r for r in caplog.records if "NOT executed" in r.getMessage()]
        assert len(logged) == 1
        refused = [r for r in caplog.records if "refused to clear" in r.getMessage()]
        assert refused and "mosquitto_pub -r -n" in refused[0].getMessage()
        assert line.events(press="p1", kind="command") == []
    finally:
        quality.close()
        await line.close()


def test_shipped_files_are_consistent() -> None:
    """The ACL's root is the production template's; the broker snippet loads it."""
    collector_toml = (REPO / "deploy" / "etc" / "collector.toml").read_text()
    assert f'topic_root = "{ROOT}"' in collector_toml
    conf = (REPO / "deploy" / "etc" / "mosquitto" / "press-collector.conf").read_text()
    assert "acl_file /etc/mosquitto/press-collector.acl" in conf
    assert "allow_anonymous false" in conf
    text = SHIPPED_ACL.read_text()
    assert f"topic write {ROOT}/+/cmd/" not in text.split("user dashboard")[0]
    assert f"topic write {ROOT}/+/cmd/quality/+" in text
    assert command_topic(ROOT, "p1", "release") == f"{ROOT}/p1/cmd/quality/release"
