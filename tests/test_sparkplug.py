"""The Sparkplug B edge node (collector/sparkplug/edge.py) against a real Mosquitto.

Every payload is read with the independent wire decoder (tests/support/sparkplug_wire.py),
never with the production schema. The test plays the SCADA: a subscriber on ``spBv1.0/#``
and, where a primary host is configured, a client that publishes its retained STATE and
sends NCMD rebirth requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import orjson
import paho.mqtt.client as mqtt
import pytest

from buffer.store import Outbox
from collector import messages, streams
from collector.sparkplug.edge import EdgeNode, EdgeSettings
from sim.local_broker import LocalBroker
from tests.support import sparkplug_wire as wire
from tests.support.subscriber import Received, Subscriber

GROUP, NODE, HOST = "plant-a", "line-pc-1", "scada"
TAGS = {"p1": [("count", None), ("force", None)], "p2": [("count", None)]}


@dataclass
class Spb:
    kind: str
    device: str | None
    payload: wire.Payload
    topic: str


def sparkplug(msgs: list[Received]) -> list[Spb]:
    out = []
    for m in msgs:
        parts = m.topic.split("/")
        if parts[0] != "spBv1.0" or parts[1] != GROUP or len(parts) < 4 \
                or parts[2] in ("NCMD", "DCMD"):  # the test's own commands
            continue
        out.append(Spb(parts[2], parts[4] if len(parts) > 4 else None, wire.decode(m.payload),
                       m.topic))
    return out


def of(kind: str, msgs: list[Received]) -> list[Spb]:
    return [s for s in sparkplug(msgs) if s.kind == kind]


def bdseq(msg: Spb) -> int:
    return msg.payload.by_name()["bdSeq"].value()


class Scada:
    """The test's primary host: retained STATE and NCMD, QoS 1, acknowledged."""

    def __init__(self, port: int) -> None:
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="test-scada",
                                  protocol=mqtt.MQTTv311)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def state(self, online: bool, ts: int) -> None:
        info = self.client.publish(f"spBv1.0/STATE/{HOST}", orjson.dumps(
            {"online": online, "timestamp": ts}), qos=1, retain=True)
        info.wait_for_publish(5)

    def rebirth(self, value: bool = True) -> None:
        info = self.client.publish(f"spBv1.0/{GROUP}/NCMD/{NODE}",
                                   wire.rebirth_request(1, value), qos=1)
        info.wait_for_publish(5)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


async def add_rows(outbox: Outbox, press: str, n: int, ts0: float = 1_764_000_000.0) -> None:
    policy = streams.STREAMS[streams.TELEMETRY]
    for i in range(n):
        seq = outbox.next_seq(press, streams.TELEMETRY)
        payload = messages.encode_telemetry(press, seq, ts0 + seq / 10, "h",
                                            {"count": seq, "force": 10.5 + i}, {},
                                            {"state": "released", "part_number": "BRK-100"})
        outbox.add(streams.row(policy, press, seq, f"t/{press}/telemetry", payload))
    await outbox.flush()


async def until(check: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait for a condition on the edge node's own state (its stats), polled."""
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def edge_node(tmp_path: Path, broker: LocalBroker, primary: str = "",
                    rows: dict[str, int] | None = None, **kw) -> AsyncIterator[
                        tuple[EdgeNode, Outbox]]:
    outbox = Outbox.open(tmp_path / "buffer.sqlite", commit_interval_s=0.002,
                         streams=streams.STREAMS)
    for press, n in (rows or {}).items():
        await add_rows(outbox, press, n)
    edge = EdgeNode(outbox, EdgeSettings(GROUP, NODE, primary), "127.0.0.1", broker.port,
                    "edge-spb", TAGS, reconnect_max_s=0.25, **kw)
    task = asyncio.create_task(edge.run())
    try:
        yield edge, outbox
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        outbox.close()


def check_sessions(msgs: list[Spb]) -> None:
    """Within each birth: seq 0 at NBIRTH, +1 per message (255 -> 0), NDEATH without a
    seq; every DDATA alias is one its device's last DBIRTH defined."""
    expected = None
    births: dict[str, dict[int, int]] = {}
    for m in msgs:
        if m.kind == "NDEATH":
            assert m.payload.seq is None
            expected = None
            continue
        if m.kind == "NBIRTH":
            assert m.payload.seq == 0
            expected = 1
            continue
        assert expected is not None, f"{m.kind} before NBIRTH"
        assert m.payload.seq == expected, f"{m.topic}: seq {m.payload.seq} != {expected}"
        expected = (expected + 1) % 256
        if m.kind == "DBIRTH":
            assert all(x.name and x.alias and x.datatype for x in m.payload.metrics)
            births[m.device] = {x.alias: x.datatype for x in m.payload.metrics}
        elif m.kind == "DDATA":
            assert all(x.name is None and x.alias in births[m.device]
                       for x in m.payload.metrics)


def telemetry_seqs(msgs: list[Spb], device: str, historical: bool | None = None) -> list[int]:
    out = []
    for m in msgs:
        if m.kind != "DDATA" or m.device != device:
            continue
        first = m.payload.metrics[0]
        if historical is not None and first.is_historical != historical:
            continue
        out.append(_telemetry_seq(m, msgs))
    return out


def _telemetry_seq(m: Spb, msgs: list[Spb]) -> int:
    """The ``Press/telemetry_seq`` of a DDATA, through its device's DBIRTH alias."""
    alias = None
    for b in msgs:
        if b.kind == "DBIRTH" and b.device == m.device:
            alias = b.payload.by_name()["Press/telemetry_seq"].alias
            break
    values = [x.value(wire.UINT64) for x in m.payload.metrics if x.alias == alias]
    assert len(values) == 1
    return values[0]


@pytest.fixture
def host_sub(broker: LocalBroker):
    sub = Subscriber("127.0.0.1", broker.port, ["spBv1.0/#"]).start()
    yield sub
    sub.stop()


async def test_births_aliases_data_seq_wrap_and_delivery_marks(tmp_path: Path,
                                                             broker: LocalBroker,
                                                             host_sub: Subscriber) -> None:
    async with edge_node(tmp_path, broker, rows={"p1": 300, "p2": 10}) as (edge, outbox):
        msgs = sparkplug(await host_sub.wait_for(lambda m: len(of("DDATA", m)) >= 310, 20))
        nbirth, dbirth1, dbirth2 = msgs[:3]
        assert (nbirth.kind, bdseq(nbirth)) == ("NBIRTH", 0)
        assert (dbirth1.kind, dbirth1.device, dbirth2.kind, dbirth2.device) == \
            ("DBIRTH", "p1", "DBIRTH", "p2")
        birth = dbirth1.payload.by_name()
        assert birth["count"].value() == 300  # the newest row's values
        assert birth["Press/state"].value() == "released"
        check_sessions(msgs)
        assert [m.payload.seq for m in msgs[250:262]] == [*range(250, 256), *range(0, 6)]
        assert telemetry_seqs(msgs, "p1", historical=True) == list(range(1, 301))
        assert telemetry_seqs(msgs, "p2", historical=True) == list(range(1, 11))
        assert await edge.drain(10)  # every row confirmed by a fence ...
        await outbox.flush()
        assert outbox.pending_count() == 0  # ... and marked delivered in the buffer
        assert edge.stats()["fences"] >= 1

        await add_rows(outbox, "p1", 3)  # committed after the births: live
        msgs = sparkplug(await host_sub.wait_for(lambda m: len(of("DDATA", m)) >= 313, 10))
        assert telemetry_seqs(msgs, "p1", historical=False) == [301, 302, 303]
        check_sessions(msgs)


async def test_primary_host_offline_holds_online_replays_in_order(
        tmp_path: Path, broker: LocalBroker, host_sub: Subscriber) -> None:
    scada = Scada(broker.port)
    scada.state(False, 1000)  # the host went away before the edge node started
    try:
        async with edge_node(tmp_path, broker, primary=HOST, rows={"p1": 20}) as (edge, outbox):
            await until(lambda: edge.stats()["host_online"] is False)
            await add_rows(outbox, "p1", 5)
            assert not sparkplug(host_sub.snapshot())  # held: no birth, no data
            assert outbox.pending_count() == 25

            scada.state(True, 2000)
            msgs = sparkplug(await host_sub.wait_for(lambda m: len(of("DDATA", m)) >= 25))
            assert [m.kind for m in msgs[:3]] == ["NBIRTH", "DBIRTH", "DBIRTH"]
            assert bdseq(msgs[0]) == 0
            assert telemetry_seqs(msgs, "p1", historical=True) == list(range(1, 26))
            await add_rows(outbox, "p1", 2)
            msgs = sparkplug(await host_sub.wait_for(lambda m: len(of("DDATA", m)) >= 27))
            assert telemetry_seqs(msgs, "p1", historical=False) == [26, 27]

            # an offline STATE older than the last online one is an old will: ignored
            scada.state(False, 1500)
            scada.rebirth()  # after the STATE on the same connection: it was handled
            msgs = sparkplug(await host_sub.wait_for(lambda m: len(of("NBIRTH", m)) >= 2))
            assert not of("NDEATH", host_sub.snapshot()) and bdseq(of("NBIRTH", [
                m for m in host_sub.snapshot()])[1]) == 0

            # the host goes offline: NDEATH, a new session (bdSeq 1) that waits
            scada.state(False, 3000)
            msgs = sparkplug(await host_sub.wait_for(lambda m: len(of("NDEATH", m)) >= 1))
            assert bdseq(of("NDEATH", host_sub.snapshot())[0]) == 0
            await until(lambda: edge.stats()["bdseq"] == 1 and edge.stats()["connected"])
            await add_rows(outbox, "p1", 10)
            assert await edge.drain(0.1) is False
            assert len(of("NBIRTH", host_sub.snapshot())) == 2  # nothing while offline

            scada.state(True, 4000)
            msgs = sparkplug(await host_sub.wait_for(lambda m: len(of("NBIRTH", m)) >= 3
                                                     and 37 in telemetry_seqs(
                                                         sparkplug(m), "p1")))
            check_sessions(msgs)
            last = msgs[max(i for i, m in enumerate(msgs) if m.kind == "NBIRTH"):]
            assert bdseq(last[0]) == 1
            replay = telemetry_seqs(last, "p1", historical=True)
            assert replay == sorted(replay) and replay[-1] == 37  # in order
            assert set(range(28, 38)) <= set(replay)
            everything = telemetry_seqs(msgs, "p1")
            assert set(everything) == set(range(1, 38))  # nothing lost
            assert await edge.drain(10)
    finally:
        scada.close()


async def test_rebirth_request_repeats_births_with_the_same_aliases(
        tmp_path: Path, broker: LocalBroker, host_sub: Subscriber) -> None:
    scada = Scada(broker.port)
    try:
        async with edge_node(tmp_path, broker, rows={"p1": 5}) as (edge, outbox):
            await host_sub.wait_for(lambda m: len(of("DDATA", m)) >= 5)
            scada.rebirth(value=False)  # not a rebirth request
            scada.rebirth()
            msgs = sparkplug(await host_sub.wait_for(lambda m: len(of("DBIRTH", m)) >= 4))
            assert len(of("NBIRTH", host_sub.snapshot())) == 2
            first, second = (m for m in msgs if m.kind == "NBIRTH")
            assert bdseq(first) == bdseq(second) == 0  # same MQTT session, same bdSeq
            births = [m for m in msgs if m.kind == "DBIRTH" and m.device == "p1"]
            aliases = [{x.name: x.alias for x in b.payload.metrics} for b in births]
            assert len(aliases) == 2 and aliases[0] == aliases[1]
            await add_rows(outbox, "p1", 2)
            msgs = sparkplug(await host_sub.wait_for(lambda m: len(of("DDATA", m)) >= 7))
            check_sessions(msgs)  # DDATA after the rebirth: aliases of the new DBIRTH
            assert edge.stats()["rebirths"] == 1
    finally:
        scada.close()


def spawn_edge(db: Path, port: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    return subprocess.Popen([sys.executable, "-m", "tests.support.sparkplug_proc", str(db),
                             str(port), GROUP, NODE, "p1"], env=env)


async def test_bdseq_goes_on_across_sigkill_restart_and_broker_restart(
        tmp_path: Path, broker: LocalBroker) -> None:
    sub = Subscriber("127.0.0.1", broker.port, ["spBv1.0/#"]).start()
    scada = Scada(broker.port)
    db = tmp_path / "buffer.sqlite"
    proc = spawn_edge(db, broker.port)
    try:
        def nbirths(m: list[Received]) -> list[int]:
            return [bdseq(s) for s in of("NBIRTH", m)]

        await sub.wait_for(lambda m: nbirths(m) == [0], 15)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        msgs = await sub.wait_for(lambda m: len(of("NDEATH", m)) == 1)
        will = of("NDEATH", msgs)[0]
        assert bdseq(will) == 0 and will.payload.seq is None  # the will of that session

        proc = spawn_edge(db, broker.port)
        await sub.wait_for(lambda m: nbirths(m) == [0, 1], 15)
        broker.stop()
        broker.start()  # the edge node reconnects: a new CONNECT, bdSeq 2
        async with asyncio.timeout(20):
            while 2 not in nbirths(sub.snapshot()):  # the subscriber may be back late:
                with contextlib.suppress(Exception):  # a rebirth shows the current bdSeq
                    scada.rebirth()
                with contextlib.suppress(TimeoutError):
                    await sub.wait_for(lambda m: 2 in nbirths(m), 0.5)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        # (the broker's stop published the will of the session it had: NDEATH bdSeq 1)
        await sub.wait_for(lambda m: 2 in [bdseq(d) for d in of("NDEATH", m)], 15)
        proc = spawn_edge(db, broker.port)
        await sub.wait_for(lambda m: 3 in nbirths(m), 15)
        assert sorted(set(nbirths(sub.snapshot()))) == [0, 1, 2, 3]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        sub.stop()
        scada.close()


async def test_daemon_in_sparkplug_mode_events_stay_json_plc_loss_is_ddeath(
        tmp_path: Path, broker: LocalBroker) -> None:
    """The whole daemon with [sparkplug] on: telemetry only as DDATA (no JSON telemetry),
    quality events on their JSON topics, the PLC's loss a DDEATH, its return a DBIRTH,
    a clean stop an NDEATH."""
    from collector.config import SparkplugConfig
    from tests.support.line import Line

    def adjust(cfg):
        col = cfg.collector.model_copy(update={"sparkplug": SparkplugConfig(
            enabled=True, group_id=GROUP, edge_node_id=NODE)})
        return cfg.model_copy(update={"collector": col})

    spb = Subscriber("127.0.0.1", broker.port, ["spBv1.0/#"]).start()
    line = Line(tmp_path, broker, presses=("p1",), adjust=adjust)
    await line.start()
    try:
        msgs = await spb.wait_for(lambda m: len(of("DDATA", m)) >= 3, 15)
        birth = of("DBIRTH", msgs)[0].payload.by_name()
        assert line.config is not None
        tags = [t.name for t in line.config.presses["p1"].plc.tags]
        assert set(tags) <= set(birth) and "Press/state" in birth
        assert await line.wait_event("p1", "setup")  # events: JSON, their own topics
        json_topics = {m.topic for m in line.sub.snapshot()}
        assert not [t for t in json_topics if "/telemetry" in t]
        assert not line.contract_violations()

        await line.sims["p1"].stop()
        await spb.wait_for(lambda m: any(d.device == "p1" for d in of("DDEATH", m)), 20)
        births = len(of("DBIRTH", spb.snapshot()))
        await line.sims["p1"].start()

        def reborn(m: list[Received]) -> bool:
            s = sparkplug(m)
            i = [k for k, x in enumerate(s) if x.kind == "DBIRTH"]
            return len(i) > births and any(x.kind == "DDATA" for x in s[i[-1]:])

        msgs = await spb.wait_for(reborn, 20)
        check_sessions(sparkplug(msgs))
        assert line.daemon is not None
        health = line.daemon.health()["sparkplug"]
        assert health["born"] and health["ddeaths"] == 1 and health["bdseq"] == 0
        await line.stop_daemon()  # clean stop: NDEATH published, not left to the will
        msgs = await spb.wait_for(lambda m: len(of("NDEATH", m)) == 1)
        assert bdseq(of("NDEATH", msgs)[0]) == 0
    finally:
        await line.close()
        spb.stop()
