"""collector/mqtt_loop.py against a real Mosquitto: coalesced writes in order, QoS 1 acks
taken on the fast path, large payloads, partial writes to a slow reader, a reconnect that
resends the window, incoming packets and MQTT 5 PUBACKs still through paho."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from collector.config import BrokerTlsConfig
from collector.mqtt_loop import MqttLoop, _packet_bounds, _varint
from collector.security import tls_context
from sim.local_broker import BrokerTls, LocalBroker
from tests.support.pki import make_pki
from tests.support.subscriber import Subscriber


class Peer:
    """A paho client on MqttLoop, recording acks and messages (event loop thread)."""

    def __init__(self, port: int, client_id: str, *, protocol: int = mqtt.MQTTv311,
                 clean: bool = True, sndbuf: int = 0) -> None:
        if protocol == mqtt.MQTTv5:
            c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                            protocol=protocol)
        else:
            c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                            clean_session=clean, protocol=protocol)
        c.max_inflight_messages_set(0)
        c.max_queued_messages_set(0)
        if sndbuf:  # a small send buffer: partial writes come sooner
            c.on_socket_open = lambda cl, ud, sock: sock.setsockopt(
                socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
        c.on_message = self._on_message
        c.on_disconnect = self._on_disconnect
        c.connect_async("127.0.0.1", port, 30)
        self.client = c
        self.acked: list[int] = []
        self.messages: list[bytes] = []
        self.lost = asyncio.Event()
        self._changed = asyncio.Event()
        self.io = MqttLoop(c, name="test", on_ack=self._on_ack)

    def _on_ack(self, mid: int) -> None:
        self.acked.append(mid)
        self._changed.set()

    def _on_message(self, client: Any, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        self.messages.append(bytes(msg.payload))
        self._changed.set()

    def _on_disconnect(self, *args: Any) -> None:
        self.lost.set()

    async def until(self, predicate: Callable[[], bool], timeout: float = 20.0) -> None:
        """Woken by each ack and message."""
        async with asyncio.timeout(timeout):
            while not predicate():
                self._changed.clear()
                await self._changed.wait()

    async def until_io(self, predicate: Callable[[dict[str, int]], bool],
                       timeout: float = 10.0) -> None:
        """The socket side has no callback to wait on: looked at every 10 ms."""
        async with asyncio.timeout(timeout):
            while not predicate(self.io.stats):
                await asyncio.sleep(0.01)


class Proxy:
    """A TCP relay to the broker whose client-to-broker direction can be held: while
    held, nothing is read from the client (a slow reader, a stuck network)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.flowing = asyncio.Event()
        self.flowing.set()
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self.listen_port = 0

    async def start(self) -> Proxy:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.listen_port = self._server.sockets[0].getsockname()[1]
        return self

    async def _handle(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        br, bw = await asyncio.open_connection("127.0.0.1", self.port)
        self._writers += [w, bw]
        for task in (self._pump(r, bw, held=True), self._pump(br, w, held=False)):
            t = asyncio.create_task(task)
            self._tasks.add(t)
            t.add_done_callback(self._tasks.discard)

    async def _pump(self, r: asyncio.StreamReader, w: asyncio.StreamWriter,
                    held: bool) -> None:
        with contextlib.suppress(OSError):
            while True:
                if held:
                    await self.flowing.wait()
                data = await r.read(65536)
                if not data:
                    break
                if held:  # read just before the hold: kept back too
                    await self.flowing.wait()
                w.write(data)
                await w.drain()
        w.close()

    def cut(self) -> None:
        """Close every relayed connection (both sides): a network that drops."""
        for w in self._writers:
            w.transport.abort()
        self._writers.clear()

    async def stop(self) -> None:
        self.cut()
        for t in list(self._tasks):
            t.cancel()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


@pytest.fixture
async def proxy(broker: LocalBroker) -> AsyncIterator[Proxy]:
    p = await Proxy(broker.port).start()
    try:
        yield p
    finally:
        await p.stop()


def payload(i: int, size: int = 0) -> bytes:
    return b"%06d:" % i + bytes([i % 251]) * size


def seqs(msgs: list[Any]) -> list[int]:
    return [int(m.payload.split(b":", 1)[0]) for m in msgs]


def test_varint_is_mqtts_remaining_length() -> None:
    for n, enc in ((0, b"\x00"), (127, b"\x7f"), (128, b"\x80\x01"), (16383, b"\xff\x7f"),
                   (16384, b"\x80\x80\x01"), (268435455, b"\xff\xff\xff\x7f")):
        assert _varint(n) == enc


def test_packet_bounds_cut_whole_packets_only() -> None:
    puback = bytearray(b"\x40\x02\x00\x07")
    assert _packet_bounds(puback, 0, 4) == (2, 4)
    assert _packet_bounds(puback, 0, 3)[1] == -1  # body not all here
    assert _packet_bounds(bytearray(b"\x40"), 0, 1)[1] == -1
    big = bytearray(b"\x30\x80\x01") + bytes(128)  # remaining length 128: two bytes
    assert _packet_bounds(big, 0, len(big)) == (3, 131)
    assert _packet_bounds(big, 0, 2)[1] == -1  # length field cut in the middle
    two = puback + puback
    assert _packet_bounds(two, 4, 8) == (6, 8)
    bad = bytearray(b"\x30\xff\xff\xff\xff\x01")  # 5 length bytes: paho refuses it
    assert _packet_bounds(bad, 0, len(bad))[1] == len(bad)


async def test_burst_goes_out_coalesced_in_order_with_every_ack(broker: LocalBroker) -> None:
    n = 5000
    with Subscriber("127.0.0.1", broker.port, ["ml/burst"]) as sub:
        peer = Peer(broker.port, "ml-burst")
        await peer.io.connect(5.0)
        mids = []
        for i in range(n):  # the lean path and paho's own, interleaved: one order
            publish = peer.io.publish_row if i % 3 else (
                lambda t, p: peer.client.publish(t, p, qos=1))
            mids.append(publish("ml/burst", payload(i, 200)).mid)
            if i % 500 == 499:
                await asyncio.sleep(0)  # one loop turn per 500 publishes
        await peer.until(lambda: len(peer.acked) == n)
        msgs = await sub.wait_for(lambda m: len(m) >= n)
        peer.io.close()
    assert seqs(msgs) == list(range(n))
    assert sorted(peer.acked) == sorted(mids)
    stats = peer.io.stats
    assert stats["fast_acks"] == n  # no PUBACK went through paho's decoder
    assert stats["sends"] <= 60, stats  # ~10 bursts (+ CONNECT), not one send a PUBLISH
    assert stats["recvs"] < n / 5, stats
    assert peer.client._out_messages == {}  # paho's session state let go of them


async def test_large_payloads_and_a_slow_reader(broker: LocalBroker, proxy: Proxy) -> None:
    big = {i: payload(i, 1_500_000) for i in (0, 40, 80)}  # 4.5 MB in all
    with Subscriber("127.0.0.1", broker.port, ["ml/big"]) as sub:
        peer = Peer(proxy.listen_port, "ml-big", sndbuf=65536)
        await peer.io.connect(5.0)
        proxy.flowing.clear()  # the network stops taking our bytes
        for i in range(100):
            body = big.get(i) or payload(i, 100)
            peer.client.publish("ml/big", body, qos=1)
        await peer.until_io(lambda s: s["partial_sends"] > 0 and s["would_block"] > 0)
        proxy.flowing.set()
        await peer.until(lambda: len(peer.acked) == 100, timeout=60)
        msgs = await sub.wait_for(lambda m: len(m) >= 100, timeout=60)
        peer.io.close()
    assert seqs(msgs) == list(range(100))
    for m in msgs:
        i = seqs([m])[0]
        assert m.payload == (big.get(i) or payload(i, 100))


async def test_a_dropped_connection_resends_the_window_after_reconnect(
        broker: LocalBroker, proxy: Proxy) -> None:
    with Subscriber("127.0.0.1", broker.port, ["ml/re"]) as sub:
        peer = Peer(proxy.listen_port, "ml-re", clean=False)
        await peer.io.connect(5.0)
        for i in range(100):
            peer.client.publish("ml/re", payload(i), qos=1)
        await peer.until(lambda: len(peer.acked) == 100)
        proxy.flowing.clear()  # the next 200 stay on the way...
        for i in range(100, 300):  # paho resends these from its own session state
            peer.io.publish_row("ml/re", payload(i, 1000))
        await peer.until_io(lambda s: s["bytes_out"] > 200 * 1000)  # all in the kernel
        assert len(peer.acked) == 100  # none of them reached the broker
        proxy.cut()  # ...and are lost with the connection
        await asyncio.wait_for(peer.lost.wait(), 10)
        proxy.flowing.set()
        await peer.io.connect(5.0)  # paho resends the unacknowledged ones, DUP set
        await peer.until(lambda: len(peer.acked) == 300)
        msgs = await sub.wait_for(lambda m: len(set(seqs(m))) >= 300)
        peer.io.close()
    got = seqs(msgs)
    first = sorted(set(got), key=got.index)
    assert first == list(range(300))  # every message, first copies in order
    assert len(peer.acked) == 300


async def test_incoming_packets_and_mqtt5_pubacks_go_through_paho(
        broker: LocalBroker) -> None:
    peer = Peer(broker.port, "ml-in", protocol=mqtt.MQTTv5)
    subscribed = asyncio.Event()
    peer.client.on_subscribe = lambda *a: subscribed.set()
    await peer.io.connect(5.0)
    peer.client.subscribe("ml/in", qos=1)
    await asyncio.wait_for(subscribed.wait(), 10)
    other = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="ml-in-src")
    other.connect("127.0.0.1", broker.port)
    other.loop_start()
    try:
        infos = [other.publish("ml/in", payload(i), qos=1) for i in range(1000)]
        await asyncio.to_thread(lambda: [info.wait_for_publish(10) for info in infos])
    finally:
        other.disconnect()
        other.loop_stop()
    await peer.until(lambda: len(peer.messages) == 1000)
    assert [int(p.split(b":")[0]) for p in peer.messages] == list(range(1000))
    # MQTT 5: a PUBLISH nobody subscribed gets a PUBACK with reason code 16 (3 bytes):
    # paho decodes it, on_ack still comes
    mids = [peer.client.publish("ml/nobody", payload(i), qos=1).mid for i in range(10)]
    await peer.until(lambda: set(mids) <= set(peer.acked))
    assert peer.io.stats["fast_acks"] == 0
    assert await peer.io.leave("ml/bye", b"bye", timeout_s=5.0)
    assert not peer.io.open


async def test_tls_large_messages_both_ways(tmp_path: Path) -> None:
    """TLS: records hold decrypted bytes epoll cannot see (SSLSocket.pending) and a send
    may take part of a buffer; 2 MB out, 2 MB back in, small ones around them."""
    pki = make_pki(tmp_path / "pki")
    broker = LocalBroker(data_dir=tmp_path / "mq", tls=BrokerTls(
        str(pki.ca), str(pki.server_cert), str(pki.server_key))).start()
    try:
        peer = Peer(broker.port, "ml-tls")
        peer.client.tls_set_context(tls_context(BrokerTlsConfig(ca_file=str(pki.ca))))
        subscribed = asyncio.Event()
        peer.client.on_subscribe = lambda *a: subscribed.set()
        await peer.io.connect(10.0)
        peer.client.subscribe("ml/tls", qos=1)
        await asyncio.wait_for(subscribed.wait(), 10)
        bodies = [payload(i, 2_000_000 if i in (3, 7) else 300) for i in range(10)]
        for body in bodies:  # each comes back to us through the subscription
            peer.client.publish("ml/tls", body, qos=1)
        await peer.until(lambda: len(peer.acked) == 10 and len(peer.messages) == 10,
                         timeout=60)
        assert peer.messages == bodies
        assert peer.io.stats["fast_acks"] == 10
        peer.io.close()
    finally:
        broker.stop()
