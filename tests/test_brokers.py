"""The end-to-end and fault tests against the three brokers a plant may run: Mosquitto,
RabbitMQ (plugin rabbitmq_mqtt) and NATS (MQTT over JetStream) - issue 15.

A representative subset of the Mosquitto suite, each test run once per broker (the
``any_broker`` fixture of conftest.py: one private broker of each kind per module, on free
ports with its own config and data dir): the line end to end with the contract checked,
retained state and status, commands (MQTT 3.1.1 on the brokers without MQTT 5,
``broker.protocol = "3.1.1"``), a broker restart mid-stream (outage, replay lane, live
first), the daemon SIGKILLed (resume, last will). Where a broker differs by design the
test pins the difference that docs/brokers.md describes, so the page cannot drift.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import orjson

from buffer.store import Outbox
from collector.config import LoadedConfig
from tests.support.commands import command_topic, stamped
from tests.support.line import BRK100_PASS, Line, contiguous, wait_gauges_online
from tests.support.subscriber import Subscriber


def protocol_of(broker: Any) -> str:
    return "5" if "5" in broker.protocols else "3.1.1"


def line_for(tmp_path: Path, broker: Any, tag: str = "", **settings: Any) -> Line:
    """Press p1 of the example config on this broker, with a topic root (``b{tag}/press-
    shop``) and host id of its own (the module shares one broker of each kind)."""
    tag = tag or uuid.uuid4().hex[:6]

    def adjust(cfg: LoadedConfig) -> LoadedConfig:
        col = cfg.collector
        site = col.site.model_copy(update={"topic_root": f"b{tag}/press-shop",
                                           "host_id": f"lpc-{tag}"})
        return cfg.model_copy(update={"collector": col.model_copy(update={"site": site})})

    return Line(tmp_path, broker, ("p1",), adjust=adjust, broker_settings={
        "protocol": protocol_of(broker), "reconnect_max_s": 1.0, **settings})


def publish(line: Line, topic: str, payload: dict[str, Any], retain: bool = False) -> None:
    assert line.sub is not None
    line.sub.client.publish(topic, orjson.dumps(payload), qos=1,
                            retain=retain).wait_for_publish(10)


async def reply(line: Line, request_id: str) -> dict[str, Any]:
    assert line.sub is not None
    topic = f"{line.root}/p1/cmd_result"

    def answers() -> list[dict[str, Any]]:
        return [p for p in (orjson.loads(m.payload) for m in line.sub.on_topic(topic))
                if p["request_id"] == request_id]

    await line.sub.wait_for(lambda _: bool(answers()), 15)
    return answers()[0]


async def released(line: Line) -> None:
    await line.wait_event("p1", "setup")
    await wait_gauges_online(line, "p1")
    for gauge, value in BRK100_PASS:
        line.measure("p1", gauge, value)
    await line.wait_event("p1", "state_change", to="released")


async def test_line_end_to_end_retained_state_and_commands(tmp_path: Path,
                                                           any_broker: Any) -> None:
    line = await line_for(tmp_path, any_broker).start()
    try:
        assert line.sub is not None and line.config is not None
        await released(line)
        await line.sub.wait_for(lambda _: len(line.seqs("telemetry")["p1"]) >= 5, 15)
        assert contiguous(line.seqs("events")["p1"]) == ([], 0)
        assert contiguous(line.seqs("telemetry")["p1"])[0] == []
        assert line.contract_violations() == []

        # retained: a dashboard connecting now sees the state and the collector's status
        host = line.config.collector.site.host_id
        state_t, status_t = f"{line.root}/p1/state", f"{line.root}/_collector/{host}/status"
        with Subscriber("127.0.0.1", any_broker.port, [state_t, status_t]) as late:
            got = await late.wait_for(lambda msgs: {m.topic for m in msgs if m.retain}
                                      >= {state_t, status_t}, 15)
        last = {m.topic: orjson.loads(m.payload) for m in got if m.retain}
        assert last[state_t]["state"] == "released"
        assert last[status_t]["status"] == "online"
        # ... through a wildcard filter too, except on RabbitMQ 3.x (docs/brokers.md)
        marker = f"{line.root}/marker"
        with Subscriber("127.0.0.1", any_broker.port, [f"{line.root}/+/state", marker]) as wild:
            wild.client.publish(marker, b"m", qos=1).wait_for_publish(10)
            got = await wild.wait_for(lambda msgs: any(m.topic == marker for m in msgs), 15)
        assert any(m.topic == state_t and m.retain for m in got) == (
            any_broker.kind != "rabbitmq")

        # a live command and its reply over this broker (MQTT 3.1.1 on RabbitMQ and NATS)
        rid = uuid.uuid4().hex[:12]
        publish(line, command_topic(line.root, "p1", "hold"),
                stamped({"request_id": rid, "operator": "Q7", "why": "broker test"}))
        answer = await reply(line, rid)
        assert answer["ok"] is True and answer["state"] == "hold"

        # a retained command waiting at (re)subscription never runs: refused as retained
        # (MQTT 3.1.1 and 5 flag it), or on RabbitMQ 3.x never delivered at all (no
        # retained messages for wildcard filters such as the daemon's {root}/+/cmd/#)
        await line.stop_daemon()
        stale = uuid.uuid4().hex[:12]
        release_t = command_topic(line.root, "p1", "release")
        publish(line, release_t, stamped({"request_id": stale, "operator": "Q7",
                                          "why": "stale"}), retain=True)
        probe_t = f"{line.root}/_collector/cmd/probe/{host}"
        probes = len(line.sub.on_topic(probe_t))
        await line.start_daemon()
        if any_broker.kind == "rabbitmq":
            # the daemon's loop-back probe comes after its SUBACK: subscribed from here on
            await line.sub.wait_for(lambda _: len(line.sub.on_topic(probe_t)) > probes, 15)
            later = uuid.uuid4().hex[:12]  # retained ones come before it if at all
            publish(line, command_topic(line.root, "p1", "hold"),
                    stamped({"request_id": later, "operator": "Q7", "why": "after"}))
            await reply(line, later)
            assert [m for m in line.sub.on_topic(f"{line.root}/p1/cmd_result")
                    if orjson.loads(m.payload)["request_id"] == stale] == []
        else:
            answer = await reply(line, stale)
            assert (answer["ok"], answer["error"]["code"]) == (False, "retained")
            await line.sub.wait_for(lambda msgs: any(  # and the daemon cleared it
                m.topic == release_t and m.payload == b"" for m in msgs), 15)
        assert line.daemon is not None and line.daemon.presses["p1"].workflow.state == "hold"

        # a retained command published while the daemon is subscribed: refused where the
        # broker has MQTT 5 (retain as published); on 3.1.1 it arrives as a live message
        # and runs once (the documented cost of broker.protocol = "3.1.1")
        live_retained = uuid.uuid4().hex[:12]
        publish(line, release_t,
                stamped({"request_id": live_retained, "operator": "Q7", "why": "r"}),
                retain=True)
        answer = await reply(line, live_retained)
        if protocol_of(any_broker) == "5":
            assert (answer["ok"], answer["error"]["code"]) == (False, "retained")
        else:
            assert answer["ok"] is True and answer["state"] == "released"
    finally:
        await line.close()


async def test_broker_restart_mid_stream_loses_nothing_live_first(tmp_path: Path,
                                                                  any_broker: Any) -> None:
    """Fault 1 on this broker: stopped (SIGTERM) and started again while the line runs,
    with a first article while it is away. A window of 10 and a replay rate of 40/s make
    the backlog go out on the replay topic while live telemetry overtakes it."""
    line = await line_for(tmp_path, any_broker, max_inflight=10, replay_rate=40).start()
    try:
        assert line.sub is not None and line.daemon is not None
        outbox = line.daemon.outbox
        assert outbox is not None
        await line.wait_event("p1", "setup")
        await wait_gauges_online(line, "p1")
        await line.sub.wait_for(lambda _: len(line.seqs("telemetry")["p1"]) >= 5, 15)
        any_broker.stop()
        for gauge, value in BRK100_PASS:  # quality records while the broker is away
            line.measure("p1", gauge, value)
        deadline = time.monotonic() + 30
        while outbox.pending_count() < 40 or line.daemon.presses["p1"].workflow.state \
                != "released":
            assert time.monotonic() < deadline, "the daemon stopped committing"
            await asyncio.sleep(0.05)
        last_down = outbox.last_seq("p1", "telemetry")
        any_broker.start()
        assert await line.daemon.publisher.drain(60)  # type: ignore[union-attr]
        last = {s: outbox.last_seq("p1", s) for s in ("events", "telemetry")}
        await line.sub.wait_for(lambda _: all(
            set(line.seqs(s)["p1"]) >= set(range(1, last[s] + 1)) for s in last), 60)

        events = line.seqs("events")["p1"]
        firsts = list(dict.fromkeys(events))
        assert firsts == list(range(1, last["events"] + 1)), "events: gap or reordering"
        assert sorted(set(line.seqs("telemetry")["p1"])) == list(range(1, last["telemetry"] + 1))
        replayed = line.seqs("telemetry/replay")["p1"]
        assert replayed and replayed == sorted(replayed)
        live = line.seqs("telemetry/live")["p1"]
        assert list(dict.fromkeys(live)) == sorted(set(live))
        # live first: a reading taken after the restart arrived before the replay was done
        msgs = line.sub.snapshot()
        at_first_live = next(i for i, m in enumerate(msgs) if m.topic.endswith("/telemetry")
                             and orjson.loads(m.payload)["seq"] > last_down)
        at_last_replay = max(i for i, m in enumerate(msgs) if m.topic.endswith("/replay"))
        assert at_first_live < at_last_replay
        assert line.contract_violations() == []
        released_events = line.events(press="p1", kind="first_article")
        assert [e["data"]["verdict"] for e in released_events] == ["pass"]
    finally:
        await line.close()


def daemon_config(tmp_path: Path, broker: Any, sims: dict[str, Any],
                  links: dict[str, Path]) -> tuple[Path, str, str]:
    """The example config for a daemon process (tests/test_fault_kill.py's), with a root,
    host id and MQTT version of its own."""
    from tests.test_fault_kill import write_config

    tag = uuid.uuid4().hex[:6]
    root, host = f"k{tag}/press-shop", f"kill-{tag}"
    cfg = write_config(tmp_path / "cfg", broker.port, sims, links)
    toml = cfg / "collector.toml"
    text = toml.read_text()
    text = re.sub(r'(?m)^topic_root = "[^"]*"', f'topic_root = "{root}"', text)
    text = text.replace('host_id = "kill-test"', f'host_id = "{host}"')
    text = re.sub(r'(?m)^protocol = "5"', f'protocol = "{protocol_of(broker)}"', text)
    toml.write_text(text)
    return cfg, root, host


async def test_daemon_sigkill_last_will_then_resume(tmp_path: Path, any_broker: Any) -> None:
    """Fault 2 on this broker: the daemon process SIGKILLed mid-stream. The broker
    publishes the last will (retained ``offline``); the restarted daemon says ``online``
    again and delivers every committed record (duplicates only as exact resends)."""
    from sim.gauge import GaugeSimulator
    from sim.press import PressSimulator
    from tests.test_fault_kill import spawn

    sim = PressSimulator(host="127.0.0.1", port=0, part="BRK-100", die=7, lot="L2411-01",
                         spm=120, seed=1)
    await sim.start()
    sim.set_running(True)
    gauges = []
    links = {}
    for g in ("g1", "g2"):
        links[f"p1-{g}"] = tmp_path / f"p1-{g}"
        gsim = GaugeSimulator(str(links[f"p1-{g}"]))
        gsim.open()
        gauges.append(gsim)
    cfg, root, host = daemon_config(tmp_path, any_broker, {"p1": sim}, links)
    status_t = f"{root}/_collector/{host}/status"
    sub = Subscriber("127.0.0.1", any_broker.port, [f"{root}/#"]).start()
    log = tmp_path / "daemon.log"
    proc: subprocess.Popen[bytes] | None = None

    def statuses(msgs: list[Any]) -> list[str]:
        return [orjson.loads(m.payload)["status"] for m in msgs if m.topic == status_t]

    def telemetry_after(msgs: list[Any], n: int) -> bool:
        return sum(m.topic.endswith("/telemetry") for m in msgs) >= n

    try:
        proc = spawn(cfg, log)
        await sub.wait_for(lambda m: statuses(m)[-1:] == ["online"] and telemetry_after(m, 5),
                           30)
        proc.send_signal(signal.SIGKILL)
        await asyncio.to_thread(proc.wait, 10)
        got = await sub.wait_for(lambda m: statuses(m)[-1:] == ["offline"], 30)
        assert statuses(got)[-2:] == ["online", "offline"]  # the will, from the broker
        with Subscriber("127.0.0.1", any_broker.port, [status_t]) as late:
            kept = await late.wait_for(lambda m: any(x.retain for x in m), 15)
        assert statuses(kept) == ["offline"]

        seen = sum(m.topic.endswith("/telemetry") for m in sub.snapshot())
        proc = spawn(cfg, log)
        await sub.wait_for(lambda m: statuses(m)[-1:] == ["online"]
                           and telemetry_after(m, seen + 5), 30)
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 20) == 0
        proc = None
        with Outbox.open(cfg / "buffer.sqlite", readonly=True) as ro:
            stats = ro.stats()
        assert stats["pending"] == 0
        last = {k.split("/")[1]: v["last_seq"] for k, v in stats["streams"].items()
                if k.startswith("p1/")}

        def arrived(msgs: list[Any]) -> dict[str, dict[int, set[str]]]:
            out: dict[str, dict[int, set[str]]] = {"events": {}, "telemetry": {}}
            for m in msgs:
                if "/events/" in m.topic or "/telemetry" in m.topic:
                    p = orjson.loads(m.payload)
                    if p["press"] == "p1":
                        out[p["stream"]].setdefault(p["seq"], set()).add(p["id"])
            return out

        got = await sub.wait_for(lambda m: all(
            len(arrived(m)[s]) >= last[s] for s in ("events", "telemetry")), 30)
        for stream, seqs in arrived(got).items():
            assert sorted(seqs) == list(range(1, last[stream] + 1)), stream
            assert all(len(ids) == 1 for ids in seqs.values()), f"{stream}: a seq reused"
        assert statuses(got)[-1] == "offline"  # the graceful stop says so itself
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        sub.stop()
        await sim.stop()
        for g in gauges:
            g.close()


async def test_mqtt5_command_connection_names_the_setting_where_the_broker_lacks_mqtt5(
        any_broker: Any, caplog: Any) -> None:
    """broker.protocol left at "5" on RabbitMQ / NATS: the log says what to set (RabbitMQ
    closes the connection without a CONNACK, NATS answers 'unsupported protocol version');
    on Mosquitto it connects."""
    import logging

    from collector.command_client import CommandClient

    caplog.set_level(logging.WARNING, "collector.command_client")
    tag = uuid.uuid4().hex[:6]
    client = CommandClient("127.0.0.1", any_broker.port, f"pc-{tag}-cmd", f"v{tag}/+/cmd/#",
                           f"v{tag}/_collector/cmd/probe/h", lambda *_: None, protocol="5")
    task = asyncio.create_task(client.run())
    try:
        deadline = time.monotonic() + 20
        while not (client.stats()["connects"] or "broker.protocol" in caplog.text):
            assert time.monotonic() < deadline, caplog.text
            await asyncio.sleep(0.05)
        if "5" in any_broker.protocols:
            assert client.stats()["connects"] == 1
        else:
            assert client.stats()["connects"] == 0
            assert 'set broker.protocol = "3.1.1" in collector.toml' in caplog.text
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_the_sink_stores_a_daemons_output_from_this_broker(
        tmp_path: Path, any_broker: Any, pg_dsn: str) -> None:
    """The central consumer on this broker (MQTT 3.1.1 on RabbitMQ and NATS, 5 on
    Mosquitto): a daemon's events and telemetry reach PostgreSQL once each, no gap."""
    import threading

    import psycopg

    from sink.consumer import Sink, SinkSettings
    from sink.store import migrate

    with psycopg.connect(pg_dsn, autocommit=True) as db:
        migrate(db)
        tag = uuid.uuid4().hex[:6]
        sink = Sink(SinkSettings("127.0.0.1", any_broker.port, (f"b{tag}/press-shop",), pg_dsn,
                                 f"sink-{tag}", protocol=protocol_of(any_broker),
                                 gaps_every_s=0))
        stop = threading.Event()
        thread = threading.Thread(target=sink.run, args=(stop,), daemon=True)
        thread.start()
        line = line_for(tmp_path, any_broker, tag)
        try:
            assert await asyncio.to_thread(sink.subscribed.wait, 15)
            await line.start()
            await released(line)
            await line.stop_daemon()
            assert line.config is not None
            with Outbox.open(line.config.collector.buffer.path, readonly=True) as ro:
                streams = ro.stats()["streams"]
            last = {s: streams[f"p1/{s}"]["last_seq"] for s in ("events", "telemetry")}
            host = line.config.collector.site.host_id

            def stored() -> dict[str, tuple[int, int]]:
                return {s: (n, m) for s, n, m in db.execute(
                    "SELECT stream, count(*), max(seq) FROM record WHERE host = %s "
                    "GROUP BY stream", (host,))}

            deadline = time.monotonic() + 30
            while stored() != {s: (n, n) for s, n in last.items()}:
                assert time.monotonic() < deadline, (stored(), last)
                await asyncio.sleep(0.05)
            assert db.execute("SELECT status FROM collector_status WHERE host = %s",
                              (host,)).fetchone() in (("offline",), ("online",))
            assert sink.stats.quarantined == 0
        finally:
            stop.set()
            await asyncio.to_thread(thread.join, 10)
            await line.close()
