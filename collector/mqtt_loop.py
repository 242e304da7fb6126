"""One paho-mqtt 2.x client driven from the asyncio loop: coalesced writes, chunked reads.

Why not ``loop_start()``: paho's network thread and the event loop then contend for the
GIL and every callback needs a thread hop (measured in collector/publisher.py's notes:
12-16.5k acked msgs/s threaded vs 27-32k loop-driven). Why not paho's own socket calls
either: paho writes every packet with its own ``send()`` and reads every packet with
three ``recv()`` calls or more (one byte of type, one per length byte, then the body) and
builds a ``ReasonCode`` and a ``Properties`` object per PUBACK. At line load the publish
side's cost was mostly those syscalls and objects (bench/publish_cost.py; figures in
docs/status/issue13-perf-mqtt.md), so this module stands between paho and the socket:

- **Writes**: paho's socket is replaced by a :class:`_PahoSocket` whose ``send()`` only
  appends to a buffer (and says "would block" above ``HIGH_WATER`` bytes, so paho keeps
  the rest queued: memory stays bounded under a slow broker). Whatever paho queued in one
  event-loop turn goes out in one ``send()`` at the start of the next turn; a partial
  write keeps the rest and waits for the socket to be writable (``add_writer``), in
  order, before paho may add more.
- **Reads**: one ``recv()`` of up to ``READ_CHUNK`` bytes per readable event; the bytes are
  cut into MQTT packets here. A QoS 1 PUBACK with no reason code (all of MQTT 3.1.1, a
  successful MQTT 5 one) is handled here when the owner passed ``on_ack``: the message
  leaves paho's session state (``_out_messages``, the in-flight count) as paho itself
  does it, then ``on_ack(mid)``. Every other packet is handed to paho's ``loop_read``
  exactly as it came, so CONNACK, SUBACK, incoming PUBLISH, QoS 2 and keepalive stay
  paho's. ``after_read`` runs once per readable event (batch the acks there).
- **Connect**: the blocking TCP connect and TLS handshake (``reconnect()``) run in a worker
  thread while nothing else touches the client; CONNACK is awaited with a timeout;
  ``loop_misc()`` (keepalive) runs once a second while connected.

This reaches into paho's private members (``_sock``, ``_out_messages``,
``_inflight_messages``, ``_out_message_mutex``, ``_last_bytes_received``), as paho's own
websocket wrapper does with ``_sock``; paho is pinned (requirements/*.txt, 2.2.0) and
tests/test_mqtt_loop.py fails if the fast paths stop being taken. With anything it does
not recognise (a paho without those members) the PUBACK fast path switches itself off
and paho handles every packet.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn

import paho.mqtt.client as mqtt

log = logging.getLogger(__name__)

READ_CHUNK = 256 * 1024
HIGH_WATER = 512 * 1024  # bytes buffered before paho is told "would block"
MISC_INTERVAL_S = 1.0
PUBACK = 0x40
CONNECT_ERRORS = (OSError, ssl.SSLError, ConnectionError, TimeoutError)
_WOULD_BLOCK = (BlockingIOError, InterruptedError, ssl.SSLWantReadError,
                ssl.SSLWantWriteError)


def _packet_bounds(buf: bytearray, i: int, n: int) -> tuple[int, int]:
    """(start of the body, end) of the MQTT packet at ``buf[i:]``; end -1: not all here
    yet. A length field longer than 4 bytes is returned as whole (paho refuses it)."""
    if i + 2 > n:
        return i, -1
    length, shift, j = 0, 0, i + 1
    while True:
        if j >= n:
            return j, -1
        b = buf[j]
        j += 1
        length |= (b & 127) << shift
        if b < 128:
            break
        shift += 7
        if shift > 21:
            return j, n  # malformed: paho closes the connection
    end = j + length
    return j, (end if end <= n else -1)


_PUBLISH_QOS1 = b"\x32"


def _varint(n: int) -> bytes:
    """MQTT's remaining length (1-4 bytes, 7 bits each, low first)."""
    out = bytearray()
    while True:
        n, b = n >> 7, n & 127
        if n:
            out.append(b | 128)
        else:
            out.append(b)
            return bytes(out)


class RowInfo:
    """``MQTTMessageInfo`` without its ``threading.Condition`` (one per message was a tenth
    of the publish cost): nobody waits on an outbox row's info, its PUBACK goes to
    ``on_ack``. Has what paho uses: ``mid``, ``rc``, ``_set_as_published``."""

    __slots__ = ("_published", "mid", "rc")

    def __init__(self, mid: int) -> None:
        self.mid = mid
        self.rc = mqtt.MQTT_ERR_SUCCESS
        self._published = False

    def _set_as_published(self) -> None:
        self._published = True

    def is_published(self) -> bool:
        return self._published


def _new_message(mid: int, topic: bytes, payload: bytes) -> mqtt.MQTTMessage:
    """An ``MQTTMessage`` as paho's ``publish(qos=1)`` stores it, with a :class:`RowInfo`
    (``__init__`` would build an ``MQTTMessageInfo`` and its Condition)."""
    msg = mqtt.MQTTMessage.__new__(mqtt.MQTTMessage)
    msg.timestamp = mqtt.time_func()
    msg.state = mqtt.mqtt_ms_wait_for_puback
    msg.dup = False
    msg.mid = mid
    msg._topic = topic
    msg.payload = payload
    msg.qos = 1
    msg.retain = False
    msg.info = RowInfo(mid)  # type: ignore[assignment]
    msg.properties = None
    return msg


class _PahoSocket:
    """What paho sees as its socket. ``send`` buffers for :class:`MqttLoop`; ``recv``
    serves the one packet the loop hands to paho (then "would block")."""

    def __init__(self, sock: Any, owner: MqttLoop) -> None:
        self.sock = sock
        self._owner = owner
        self.feed = b""  # bytes paho may read now
        self.feed_pos = 0
        self.eof: BaseException | bool = False  # True: recv returns b""; an error: raised

    def send(self, data: bytes | bytearray) -> int:
        return self._owner._buffer(data)

    def recv(self, n: int) -> bytes:
        pos = self.feed_pos
        if pos < len(self.feed):
            end = min(len(self.feed), pos + n)
            self.feed_pos = end
            return self.feed[pos:end]
        if self.eof is True:
            return b""
        if self.eof:
            raise self.eof
        raise BlockingIOError

    def close(self) -> None:
        self._owner._closing(self)

    def fileno(self) -> int:
        return self.sock.fileno()

    def pending(self) -> int:
        return 0

    def __getattr__(self, name: str) -> Any:  # setblocking, getpeername, ...
        return getattr(self.sock, name)


class MqttLoop:
    """Drives ``client`` on the running event loop (see the module docstring).

    The owner keeps its paho callbacks; this takes over the socket callbacks, and
    ``on_connect`` / ``on_disconnect`` are wrapped so that :meth:`connect` can await the
    CONNACK. ``on_ack(mid)`` (QoS 1 acknowledged) replaces ``on_publish`` when given."""

    def __init__(self, client: mqtt.Client, *, name: str = "mqtt",
                 on_ack: Callable[[int], None] | None = None,
                 after_read: Callable[[], None] | None = None) -> None:
        self.client = client
        self.name = name
        self._on_ack = on_ack
        self._after_read = after_read
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = 0
        self._psock: _PahoSocket | None = None
        self._fd = -1
        self._out: list[bytes | bytearray | memoryview] = []
        self._out_bytes = 0
        self._writer = False  # waiting for the socket to take the rest
        self._flush_scheduled = False
        self._rbuf = bytearray()
        self._connack: asyncio.Future[str | None] | None = None
        self._misc: asyncio.Task[None] | None = None
        self._final_mid = -1
        self._final_ack: asyncio.Future[None] | None = None
        self.fast_acks = on_ack is not None and all(
            hasattr(client, a) for a in ("_out_messages", "_inflight_messages",
                                         "_out_message_mutex", "_max_inflight_messages",
                                         "_msgtime_mutex", "_last_bytes_received"))
        self._topics: dict[str, bytes] = {}
        protocol = getattr(client, "_protocol", None)
        self._lean = protocol in (mqtt.MQTTv31, mqtt.MQTTv311) and all(
            hasattr(client, a) for a in ("_out_packet", "_mid_generate", "_out_messages",
                                         "_raise_for_invalid_topic"))
        self.stats = {"sends": 0, "bytes_out": 0, "recvs": 0, "bytes_in": 0,
                      "fast_acks": 0, "paho_packets": 0, "would_block": 0,
                      "partial_sends": 0}
        user_connect, user_disconnect = client.on_connect, client.on_disconnect

        def on_connect(c: mqtt.Client, userdata: Any, flags: Any, reason: Any,
                       properties: Any) -> None:
            if user_connect is not None:
                user_connect(c, userdata, flags, reason, properties)
            self._connack_result(str(reason) if reason.is_failure else None)

        def on_disconnect(c: mqtt.Client, userdata: Any, flags: Any, reason: Any,
                          properties: Any) -> None:
            self._connack_result(f"connection closed before CONNACK ({reason})")
            if self._final_ack is not None and not self._final_ack.done():
                self._final_ack.set_exception(ConnectionError("lost"))
            if user_disconnect is not None:
                user_disconnect(c, userdata, flags, reason, properties)

        client.on_connect = on_connect
        client.on_disconnect = on_disconnect
        if on_ack is not None:
            client.on_publish = lambda c, u, mid, reason, props: self._acked(mid)
        client.on_socket_register_write = self._on_register_write
        client.on_socket_unregister_write = None
        client.on_socket_close = None

    # ------------------------------------------------------------------ connection
    @property
    def open(self) -> bool:
        return self._psock is not None

    async def connect(self, timeout_s: float,
                      on_sent: Callable[[], None] | None = None) -> None:
        """TCP (+ TLS) connect in a worker thread, CONNECT, wait for the CONNACK. Raises
        OSError / ssl.SSLError / TimeoutError / ConnectionError (refused: the reason).
        ``on_sent``: called once the CONNECT goes out on a connected socket (what the
        will carries is then in use, e.g. Sparkplug's bdSeq)."""
        loop = self._loop = asyncio.get_running_loop()
        self._thread = threading.get_ident()
        self.close()
        self._connack = loop.create_future()
        await asyncio.to_thread(self.client.reconnect)  # CONNECT is queued, not sent
        sock = self.client.socket()
        if sock is None:
            raise ConnectionError("no socket after connect")
        self._attach(sock)
        if on_sent is not None:
            on_sent()
        try:
            async with asyncio.timeout(timeout_s):
                reason = await asyncio.shield(self._connack)
        except TimeoutError:
            raise TimeoutError("no CONNACK") from None
        if reason is not None:
            raise ConnectionError(f"broker refused the connection: {reason}")
        self._misc = loop.create_task(self._misc_loop(), name=f"{self.name}-misc")

    async def leave(self, topic: str, payload: bytes, *, retain: bool = False,
                    timeout_s: float = 1.0) -> bool:
        """A deliberate end: one last QoS 1 message (status ``offline``, NDEATH), its
        PUBACK awaited up to ``timeout_s``, then DISCONNECT (the broker drops the will).
        True when the message was acknowledged."""
        if self._psock is None or self._loop is None or not self.client.is_connected():
            return False
        acked = False
        try:
            self._final_ack = self._loop.create_future()
            self._final_mid = self.client.publish(topic, payload, qos=1, retain=retain).mid
            async with asyncio.timeout(timeout_s):
                await self._final_ack
            acked = True
            self.disconnect()
        except (TimeoutError, OSError, ValueError, ConnectionError):
            pass
        finally:
            self._final_ack = None
        return acked

    def disconnect(self) -> None:
        """DISCONNECT now (paho closes the socket once it is written)."""
        if self._psock is not None:
            self.client.disconnect()
            self.flush()

    def close(self) -> None:
        """Drop the connection now, without DISCONNECT (the will is published)."""
        if self._misc is not None:
            self._misc.cancel()
            self._misc = None
        if self.client.socket() is not None:
            self.client._sock_close()  # no public close-without-DISCONNECT in paho
        self._detach()

    def _attach(self, sock: Any) -> None:
        assert self._loop is not None
        psock = self._psock = _PahoSocket(sock, self)
        self.client._sock = psock
        self._fd = sock.fileno()
        self._rbuf = bytearray()
        self._out, self._out_bytes, self._writer = [], 0, False
        self._loop.add_reader(self._fd, self._on_readable)
        self.flush()  # the CONNECT that reconnect() queued

    def _closing(self, psock: _PahoSocket) -> None:
        """paho closes its socket (DISCONNECT written, connection lost): what is
        buffered gets one last non-blocking try (a DISCONNECT must go out), then close."""
        if psock is self._psock:
            if self._out:
                with contextlib.suppress(OSError, *_WOULD_BLOCK):
                    psock.sock.send(b"".join(self._out))
            self._detach()
        psock.sock.close()

    def _detach(self) -> None:
        if self._psock is not None and self._loop is not None and self._fd >= 0:
            self._loop.remove_reader(self._fd)
            self._loop.remove_writer(self._fd)
        self._psock = None
        self._fd = -1
        self._out, self._out_bytes, self._writer = [], 0, False
        self._rbuf = bytearray()

    def _connack_result(self, reason: str | None) -> None:
        fut = self._connack
        if fut is not None and not fut.done():
            fut.set_result(reason)

    async def _misc_loop(self) -> None:
        while True:
            await asyncio.sleep(MISC_INTERVAL_S)
            self.client.loop_misc()

    # ------------------------------------------------------------------ writes
    def publish_row(self, topic: str, payload: bytes) -> mqtt.MQTTMessageInfo | RowInfo:
        """``client.publish(topic, payload, qos=1)`` for the outbox's rows, cheaper.

        paho's session state is left exactly as its ``publish()`` leaves it (the message
        in ``_out_messages`` for the resend after a reconnect, the in-flight count), but
        the topic is encoded and checked once per topic, not per message, and the
        PUBLISH packet is built in one join and, when nothing of paho's waits before it,
        goes straight into this loop's send buffer; its info is a :class:`RowInfo` (no
        one waits for an outbox row: the PUBACK comes to ``on_ack``). MQTT 3.1.1 only
        (no properties); otherwise, or while not connected, paho's own ``publish()``."""
        client = self.client
        if self._psock is None or not self._lean:
            return client.publish(topic, payload, qos=1)
        tb = self._topics.get(topic)
        if tb is None:
            tb = topic.encode()
            if not tb:
                raise ValueError("Invalid topic.")
            client._raise_for_invalid_topic(tb)
            if len(self._topics) >= 4096:
                self._topics.clear()
            self._topics[topic] = tb
        if len(payload) > 268435455:
            raise ValueError("Payload too large.")
        mid = client._mid_generate()
        msg = _new_message(mid, tb, payload)
        with client._out_message_mutex:
            if mid in client._out_messages:  # a window near 65,535: never here
                msg.info.rc = mqtt.MQTT_ERR_QUEUE_SIZE
                return msg.info
            client._out_messages[mid] = msg
            client._inflight_messages += 1
        body = 4 + len(tb) + len(payload)
        packet = b"".join((_PUBLISH_QOS1, _varint(body), len(tb).to_bytes(2, "big"), tb,
                           mid.to_bytes(2, "big"), payload))
        if client._out_packet or self._writer or (
                self._out_bytes and self._out_bytes + len(packet) > HIGH_WATER):
            client._out_packet.append({"command": 0x32, "mid": mid, "qos": 1, "pos": 0,
                                       "to_process": len(packet), "packet": packet,
                                       "info": msg.info})
        else:  # nothing of paho's before it: straight to the send buffer
            self._out.append(packet)
            self._out_bytes += len(packet)
        if not self._flush_scheduled and not self._writer:
            self._flush_scheduled = True
            assert self._loop is not None
            self._loop.call_soon(self._flush_soon)
        return msg.info

    def _buffer(self, data: bytes | bytearray) -> int:
        """paho's send(): take the packet unless HIGH_WATER bytes already wait."""
        if self._out_bytes and self._out_bytes + len(data) > HIGH_WATER:
            self.stats["would_block"] += 1
            raise BlockingIOError
        self._out.append(data)
        self._out_bytes += len(data)
        return len(data)

    def _on_register_write(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        # paho queued a packet. From reconnect() in the worker thread: _attach flushes.
        if (not self._flush_scheduled and not self._writer and self._loop is not None
                and threading.get_ident() == self._thread):
            self._flush_scheduled = True
            self._loop.call_soon(self._flush_soon)

    def _flush_soon(self) -> None:
        self._flush_scheduled = False
        self.flush()

    def flush(self) -> None:
        """Everything paho has queued, out in one send (what the socket does not take
        waits for it to be writable)."""
        while self._psock is not None and not self._writer:
            self.client.loop_write()  # paho -> _buffer(), packet by packet
            self._send()
            if not self.client.want_write():
                return  # else paho kept packets back at HIGH_WATER and the kernel took all

    def _send(self) -> None:
        psock = self._psock
        if psock is None or not self._out:
            return
        out = self._out
        data = out[0] if len(out) == 1 else b"".join(out)
        try:
            sent = psock.sock.send(data)
        except _WOULD_BLOCK:
            sent = 0
        except OSError as exc:  # reset: the reader sees it and paho closes the session
            log.debug("%s: send failed: %s", self.name, exc)
            self._out, self._out_bytes = [], 0
            return
        self.stats["sends"] += 1
        self.stats["bytes_out"] += sent
        if self.fast_acks:  # paho's keepalive only sees the packets it wrote itself
            with self.client._msgtime_mutex:
                self.client._last_msg_out = mqtt.time_func()
        if sent == len(data):
            self._out, self._out_bytes = [], 0
            if self._writer:
                self._writer = False
                assert self._loop is not None
                self._loop.remove_writer(self._fd)
            return
        self.stats["partial_sends"] += 1
        rest = memoryview(data)[sent:]
        self._out, self._out_bytes = [rest], len(rest)
        if not self._writer:
            self._writer = True
            assert self._loop is not None
            self._loop.add_writer(self._fd, self._on_writable)

    def _on_writable(self) -> None:
        self._send()
        if not self._writer and self.client.want_write():
            self.flush()  # packets paho kept back at HIGH_WATER

    # ------------------------------------------------------------------ reads
    def _on_readable(self) -> None:
        psock = self._psock
        if psock is None:
            return
        try:
            data = psock.sock.recv(READ_CHUNK)
            while isinstance(psock.sock, ssl.SSLSocket) and psock.sock.pending():
                data += psock.sock.recv(READ_CHUNK)  # decrypted, invisible to epoll
        except _WOULD_BLOCK:
            return
        except OSError as exc:
            psock.eof = exc
            self._to_paho(psock, b"")
            self._done_reading()
            return
        if not data:
            psock.eof = True
            self._to_paho(psock, b"")
            self._done_reading()
            return
        self.stats["recvs"] += 1
        self.stats["bytes_in"] += len(data)
        self._rbuf += data
        self._dispatch(psock)
        self._done_reading()

    def _done_reading(self) -> None:
        if self._after_read is not None:
            self._after_read()

    def _dispatch(self, psock: _PahoSocket) -> None:
        """Cut the read buffer into whole packets: PUBACKs here, the rest to paho."""
        buf = self._rbuf
        n = len(buf)
        i = 0
        fast = self.fast_acks
        client = self.client
        while True:
            j, end = _packet_bounds(buf, i, n)
            if end < 0:
                break
            if fast and buf[i] == PUBACK and end - j == 2 and \
                    self._fast_ack(buf[j] << 8 | buf[j + 1]):
                i = end
                continue
            self._to_paho(psock, bytes(buf[i:end]))
            i = end
            if self._psock is not psock:  # paho closed the connection meanwhile
                return
        if fast:  # paho's keepalive only sees the packets it read itself
            with client._msgtime_mutex:
                client._last_bytes_received = mqtt.time_func()
        del buf[:i]

    def _to_paho(self, psock: _PahoSocket, packet: bytes) -> None:
        psock.feed, psock.feed_pos = packet, 0
        self.stats["paho_packets"] += 1
        self.client.loop_read()
        psock.feed = b""

    def _fast_ack(self, mid: int) -> bool:
        """QoS 1 PUBACK without paho's decoding: the message leaves paho's session state
        as in paho's ``_do_on_publish``. False: not ours to take (paho decides)."""
        client = self.client
        with client._out_message_mutex:
            msg = client._out_messages.get(mid)
            if msg is None or msg.qos != 1:
                return False
            del client._out_messages[mid]
            client._inflight_messages -= 1
        if client._max_inflight_messages > 0:
            client._update_inflight()
        msg.info._set_as_published()
        self.stats["fast_acks"] += 1
        self._acked(mid)
        return True

    def _acked(self, mid: int) -> None:
        if mid == self._final_mid and self._final_ack is not None \
                and not self._final_ack.done():
            self._final_ack.set_result(None)
        if self._on_ack is not None:
            self._on_ack(mid)


async def reconnect_forever(connect: Callable[[], Awaitable[None]],
                            session: Callable[[], Awaitable[bool]],
                            failed: Callable[[BaseException, float], None],
                            min_s: float, max_s: float) -> NoReturn:
    """Connect, live the session, again, with capped exponential backoff between tries.

    ``connect()`` raises one of ``CONNECT_ERRORS`` when it fails: ``failed(exc, backoff)``
    then the backoff. ``session()`` returns when the connection is over; True starts the
    next try at ``min_s`` (a deliberate end), as does a session that lasted over 10 s
    (a broker that drops us at once after each connect is not hammered)."""
    backoff = min_s
    while True:
        started = time.monotonic()
        try:
            await connect()
        except CONNECT_ERRORS as exc:
            failed(exc, backoff)
        else:
            if await session() or time.monotonic() - started > 10:
                backoff = min_s
        await asyncio.sleep(backoff)
        backoff = min(backoff * 2, max_s)
