"""Commands are requests, not replays: the command gate against a real Mosquitto and the
running daemon (issue 10). Each test names the finding it covers; each failed on the code
before issue 10 (see docs/status/issue10-authz.md).
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import time
import tomllib
import uuid
from pathlib import Path

import orjson
import pytest

from collector import signing
from collector.config import CommandKeyConfig, LoadedConfig
from collector.metrics import prometheus_text
from sim.local_broker import LocalBroker
from tests.support.commands import command_topic, issued, stamped
from tests.support.line import BRK100_PASS, Line, wait_gauges_online
from tests.support.subscriber import Subscriber


def publish(line: Line, topic: str, payload: bytes | dict, retain: bool = False) -> None:
    assert line.sub is not None
    data = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    line.sub.client.publish(topic, data, qos=1, retain=retain).wait_for_publish(10)


def replies(line: Line, request_id: str | None = None) -> list[bytes]:
    assert line.sub is not None
    return [m.payload for m in line.sub.on_topic(f"{line.root}/p1/cmd_result")
            if request_id is None or orjson.loads(m.payload)["request_id"] == request_id]


async def reply(line: Line, request_id: str, n: int = 1) -> dict:
    """The n-th distinct reply to ``request_id`` (at-least-once: a reply may repeat)."""
    assert line.sub is not None
    await line.sub.wait_for(lambda _: len(replies(line, request_id)) >= n, 15)
    return orjson.loads(replies(line, request_id)[n - 1])


def cmd(line: Line, name: str, rid: str | None = None, topic: str | None = None,
        **fields: object) -> str:
    """Publish a well-formed command (role topic, issued now); returns its request id."""
    rid = rid or uuid.uuid4().hex[:12]
    publish(line, topic or command_topic(line.root, "p1", name),
            stamped({"request_id": rid, **fields}))
    return rid


async def released(line: Line) -> None:
    await line.wait_event("p1", "setup")
    await wait_gauges_online(line, "p1")
    for gauge, value in BRK100_PASS:
        line.measure("p1", gauge, value)
    await line.wait_event("p1", "state_change", to="released")


def violations(line: Line) -> list[str]:
    from collector.contract import validate_message

    assert line.sub is not None
    return [f"{m.topic}: {e}" for m in line.sub.snapshot() if "/p1/cmd/" not in m.topic
            for e in validate_message(m.topic, line.root, orjson.loads(m.payload))]


def commands_seen(line: Line) -> list[str]:
    return [e["data"]["request_id"] for e in line.events(press="p1", kind="command")]


async def test_request_id_runs_once_durably_and_time_size_topic_and_text_are_checked(
        line: Line) -> None:
    assert line.daemon is not None and line.sub is not None
    await released(line)
    # -- idempotent by request id (today: the same hold twice = two holds, two audits)
    rid = cmd(line, "hold", operator="Q7", why="die check")
    first = await reply(line, rid)
    assert first["ok"] is True
    payload = line.sub.on_topic(command_topic(line.root, "p1", "hold"))[-1].payload
    publish(line, command_topic(line.root, "p1", "hold"), payload)  # the same bytes again
    await line.sub.wait_for(lambda _: len(replies(line, rid)) >= 2, 15)
    assert len(set(replies(line, rid))) == 1  # the first reply, byte for byte
    other = cmd(line, "release", rid=rid, operator="Q7", why="same id, other command")
    answer = await reply(line, other, 3)
    assert (answer["ok"], answer["error"]["code"]) == (False, "duplicate_request_id")
    # ... and durable: after a restart the same request is answered, not executed again
    await line.stop_daemon()
    await line.start_daemon()
    assert line.daemon is not None and line.daemon.commands is not None
    await line.daemon.commands.watch.settled()
    publish(line, command_topic(line.root, "p1", "hold"), payload)
    await line.sub.wait_for(lambda _: len(replies(line, rid)) >= 4, 15)
    assert orjson.loads(replies(line, rid)[-1]) == first
    assert commands_seen(line) == [rid]
    assert line.daemon.presses["p1"].workflow.state == "hold"

    # -- issue time: required, not older than max_age_s (300), not ahead by max_future_s
    topic = command_topic(line.root, "p1", "release")
    now = time.time()
    cases = [
        ({"operator": "Q7", "why": "x"}, "missing_field"),
        ({"operator": "Q7", "why": "x", "issued_at": issued(now - 301)}, "expired"),
        ({"operator": "Q7", "why": "x", "issued_at": issued(now + 120)}, "issued_in_future"),
        ({"operator": "Q7", "why": "x", "issued_at": "2026-11-25T09:00:00"}, "invalid_field"),
        # -- topic: the role level must be the command's class; the old layout is refused
        ({"operator": "Q7", "why": "x", "issued_at": issued(),
          "_topic": f"{line.root}/p1/cmd/release"}, "wrong_topic"),
        ({"operator": "Q7", "why": "x", "issued_at": issued(),
          "_topic": f"{line.root}/p1/cmd/production/release"}, "wrong_topic"),
        # -- control, NUL and bidi characters in anything that lands in an event context
        ({"operator": "Q\u202e7", "why": "x", "issued_at": issued()}, "invalid_field"),
        ({"operator": "Q7", "why": "ok\x00then", "issued_at": issued()}, "invalid_field"),
        ({"operator": "Q7", "why": "\x1b[31mred", "issued_at": issued()}, "invalid_field"),
        ({"operator": "Q7", "why": "line\u2028two", "issued_at": issued()}, "invalid_field"),
    ]
    rids = []
    for fields, _ in cases:
        rid = uuid.uuid4().hex[:12]
        publish(line, str(fields.pop("_topic", topic)), {"request_id": rid, **fields})
        rids.append(rid)
    for rid, (_, code) in zip(rids, cases, strict=True):
        answer = await reply(line, rid)
        assert (answer["ok"], answer["error"]["code"]) == (False, code), answer
    assert f"{line.root}/p1/cmd/quality/release" in (await reply(line, rids[4]))["error"][
        "message"]

    # -- bounds: a huge request id is never echoed; a big payload is refused unparsed
    huge = "r" * 5000
    publish(line, topic, stamped({"request_id": huge, "operator": "Q7", "why": "x"}))
    big = stamped({"request_id": "big-1", "operator": "Q7", "why": "x", "pad": "x" * 20000})
    publish(line, topic, big)  # 20 KB: over the gate's 8 KiB, under the 64 KiB packet cap
    publish(line, topic, stamped({"request_id": "huge-1", "operator": "Q7", "why": "x",
                                  "pad": "x" * 2_000_000}))  # the broker never sends it to us
    marker = cmd(line, "release", operator="Q7", why="after the big ones")
    await reply(line, marker)
    nulls = [orjson.loads(p) for p in replies(line) if orjson.loads(p)["request_id"] is None]
    assert [(r["error"]["code"]) for r in nulls][-2:] == ["invalid_field", "too_large"]
    assert all(huge.encode() not in p for p in replies(line))
    assert not replies(line, "big-1") and not replies(line, "huge-1")
    assert line.daemon.presses["p1"].workflow.state == "released"
    assert commands_seen(line)[-1] == marker and len(commands_seen(line)) == 2
    assert [v for v in violations(line) if "/p1/cmd/" not in v] == []  # ours: bad on purpose


@pytest.fixture
async def slow_line(tmp_path: Path, broker: LocalBroker):
    """p1 accepting 3 commands in a burst, then one a minute."""

    def tight(config: LoadedConfig) -> LoadedConfig:
        p1 = config.presses["p1"]
        commands = p1.workflow.commands.model_copy(update={"burst": 3, "rate_per_min": 1.0})
        p1 = p1.model_copy(update={"workflow": p1.workflow.model_copy(
            update={"commands": commands})})
        return config.model_copy(update={"presses": {"p1": p1}})

    started = Line(tmp_path, broker, presses=("p1",), adjust=tight)
    try:
        yield await started.start()
    finally:
        await started.close()


async def test_a_command_flood_is_rate_limited_and_cannot_fill_the_buffer(
        slow_line: Line) -> None:
    line = slow_line
    assert line.daemon is not None and line.daemon.commands is not None
    await line.daemon.commands.watch.settled()
    rids = [cmd(line, "hold", operator="Q7", why=f"flood {i}") for i in range(10)]
    # a retained command skips the bucket and is answered: it arrives after the flood
    marker = uuid.uuid4().hex[:12]
    publish(line, command_topic(line.root, "p1", "hold"),
            stamped({"request_id": marker, "operator": "Q7", "why": "m"}), retain=True)
    assert (await reply(line, marker))["error"]["code"] == "retained"
    codes = {rid: [orjson.loads(p)["error"]["code"] for p in replies(line, rid)] for rid in rids}
    assert [codes[r][0] for r in rids[:3]] == ["not_allowed"] * 3  # awaiting first article
    assert codes[rids[3]] == ["rate_limited"]
    assert all(codes[r] == [] for r in rids[4:])  # dropped, counted, not answered
    stats = line.daemon.presses["p1"].stats
    assert stats["commands_dropped"] == 6
    assert stats["commands"] == 11


async def test_retained_command_is_cleared_where_the_broker_allows(
        line: Line, broker: LocalBroker) -> None:
    """An open broker lets the collector clear it: a new subscriber gets nothing."""
    assert line.sub is not None
    await released(line)
    await line.stop_daemon()
    topic = command_topic(line.root, "p1", "hold")
    rid = uuid.uuid4().hex[:12]
    publish(line, topic, stamped({"request_id": rid, "operator": "Q7", "why": "x"}),
            retain=True)
    await line.start_daemon()
    answer = await reply(line, rid)
    assert (answer["ok"], answer["error"]["code"]) == (False, "retained")
    assert line.daemon is not None and line.daemon.presses["p1"].workflow.state == "released"
    # the clear (an empty retained message) reached the broker: the subscriber saw it
    await line.sub.wait_for(lambda msgs: any(m.topic == topic and m.payload == b""
                                             for m in msgs), 15)
    marker = f"{line.root}/test-marker"
    with Subscriber("127.0.0.1", broker.port, [topic, marker]) as fresh:
        publish(line, marker, b"m")
        got = await fresh.wait_for(lambda msgs: any(m.topic == marker for m in msgs), 10)
    assert [m.topic for m in got] == [marker]  # no retained command left
    assert line.events(press="p1", kind="command") == []


def keygen(tmp_path: Path, name: str, role: str) -> tuple[Path, CommandKeyConfig]:
    """``press-collector keygen`` as a plant would run it; its table parses as config."""
    out = tmp_path / f"{name}.key"
    proc = subprocess.run([sys.executable, "-m", "collector.cli", "keygen", "--out", str(out),
                           "--name", name, "--role", role], capture_output=True, text=True,
                          check=True)
    assert oct(out.stat().st_mode & 0o777) == "0o600"
    table = tomllib.loads(proc.stdout)["workflow"]["commands"]["keys"][0]
    return out, CommandKeyConfig(**table)


async def test_signed_commands(tmp_path: Path, broker: LocalBroker) -> None:
    quality_key, quality = keygen(tmp_path, "qs-lab", "quality")
    production_key, production = keygen(tmp_path, "line-hmi", "production")
    stranger = signing.generate(tmp_path / "stranger.key")

    def require(config: LoadedConfig) -> LoadedConfig:
        p1 = config.presses["p1"]
        commands = p1.workflow.commands.model_copy(update={
            "require_signature": True, "keys": [quality, production]})
        p1 = p1.model_copy(update={"workflow": p1.workflow.model_copy(
            update={"commands": commands})})
        return config.model_copy(update={"presses": {"p1": p1}})

    line = Line(tmp_path, broker, presses=("p1",), adjust=require)
    await line.start()
    try:
        await released(line)
        topic = command_topic(line.root, "p1", "hold")

        def signed(key, **fields: str) -> dict:
            return signing.sign(key, topic, stamped({"request_id": uuid.uuid4().hex[:12],
                                                     "operator": "Q7", **fields}))

        good = signed(signing.load_private_key(quality_key), why="signed")
        tampered = {**good, "why": "changed after signing", "request_id": "t-1"}
        cases = [
            ({"request_id": "u-1", "operator": "Q7", "why": "unsigned",
              "issued_at": issued()}, "signature_required"),
            (signed(stranger, why="stranger"), "bad_signature"),
            (signed(signing.load_private_key(production_key), why="wrong role"),
             "bad_signature"),
            ({**good, "why": "changed after signing"}, "bad_signature"),
            (tampered, "bad_signature"),
            ({**good, "signature": "AAAA"}, "bad_signature"),
        ]
        for payload, _ in cases:
            publish(line, topic, payload)
        for payload, code in cases:
            answer = await reply(line, payload["request_id"])
            assert (answer["ok"], answer["error"]["code"]) == (False, code), (payload, answer)
        assert "production commands only" in (await reply(line, cases[2][0]["request_id"]))[
            "error"]["message"]
        # a signed release from `press-collector cmd --key` (the terminal's own key file)
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "collector.cli", "cmd", "--config-dir",
            str(cli_config(tmp_path, broker)), "--key", str(quality_key), "--operator", "Q7",
            "p1", "hold", "why=signed from the CLI",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 0, err.decode()
        assert orjson.loads(out)["ok"] is True
        audit = await line.wait_event("p1", "command", command="hold")
        assert audit["data"]["auth"]["key"] == "qs-lab"
        assert audit["data"]["auth"]["role"] == "quality"
        assert violations(line) == []
    finally:
        await line.close()


def cli_config(tmp_path: Path, broker: LocalBroker) -> Path:
    """A copy of the example config dir pointed at the test broker."""
    from sim.demo import REPO_CONFIG

    target = tmp_path / "cli-config"
    subprocess.run(["cp", "-r", str(REPO_CONFIG), str(target)], check=True)
    toml = target / "collector.toml"
    lines = [ln for ln in toml.read_text().splitlines() if not ln.strip().startswith("port =")]
    text = "\n".join(lines).replace("[broker]", f"[broker]\nport = {broker.port}", 1)
    toml.write_text(text + "\n")
    return target


async def test_plc_strings_in_the_event_context_are_sanitised_and_counted(
        line: Line, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="collector.press")
    assert line.daemon is not None
    await released(line)
    line.sims["p1"].set_part("BRK\x1b[2J\x07")  # an escape sequence and a bell
    setup = await line.wait_event("p1", "setup", after=0, reasons=["job_change"])
    assert setup["context"]["part_number"] == "BRK\ufffd[2J\ufffd"
    health = line.daemon.health()["presses"]["p1"]
    assert health["sanitised_by_tag"]["part_number"] >= 1
    assert health["plc_strings_sanitised"] >= 1
    text = prometheus_text(line.daemon.health())
    assert 'press_collector_press_sanitised_by_tag{press="p1",tag="part_number"}' in text
    logged = [r for r in caplog.records if "control/bidi" in r.getMessage()]
    assert len(logged) == 1  # once per raw value, not per poll
    assert line.contract_violations() == []
