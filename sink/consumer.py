"""The sink's MQTT side: subscribe, batch, commit, then acknowledge.

Acknowledge after commit
------------------------
paho-mqtt 2.x with ``manual_ack=True``: paho does not send a PUBACK when ``on_message``
returns; the sink calls ``client.ack(mid, qos)`` for each message of a batch only after
the batch's transaction has committed in PostgreSQL. A sink killed between receiving and
committing leaves those messages unacknowledged in its persistent session (MQTT 5
session expiry ``session_expiry_s``, or MQTT 3.1.1 clean session off): the broker sends
them again (Mosquitto and RabbitMQ when the sink reconnects, NATS when its ack_wait runs
out; docs/brokers.md). Killed between commit and PUBACK, the redelivered copies find their
keys stored and are counted as duplicates: the unique key is the second line, the first
is that nothing is acknowledged before it is stored.

Acks go out in the order the messages came (MQTT 3.1.1 4.6 asks for that). A message
received on an earlier connection is never acknowledged on a later one (a packet id names
a message only within its connection's session state; after a reconnect the broker has
already resent it under its id, and that copy is acknowledged when it is stored).

Several sinks: by topic root, or one shared group
-------------------------------------------------
Without ``group`` each sink subscribes plainly to its own topic roots (``--root`` once per
line or area): sinks side by side take disjoint roots, so they never see the same
message. This is the mode that survives a Mosquitto 2.0 restart: Mosquitto 2.0.11 keeps a
persistent session's plain subscriptions across a restart, but not its *shared*
subscriptions, and drops what is published for the group between the restart and the
members' re-subscription (measured; tests/test_sink.py pins it, docs/brokers.md).


With ``group`` set, the sink subscribes ``$share/{group}/...`` (MQTT 5 shared
subscriptions, Mosquitto 2.x): the broker hands each message to one member of the group,
so two sinks never both write the same message in normal operation; they write disjoint
rows side by side. Two writers can meet on one key only through redelivery (a member
killed before its PUBACK, a collector resending its in-flight window after a reconnect),
and then ``ON CONFLICT DO NOTHING`` keeps one row and counts a duplicate. Retained state
and status are subscribed without the share (the broker sends retained messages to plain
subscriptions only) by every member: idempotent upserts, latest ``ts`` wins.

Threads: the network thread runs an event loop driving paho (``collector/mqtt_loop.py``:
reads in large chunks, the PUBACKs of a whole batch in one send) and only puts messages
on a queue; the calling thread takes batches (up to ``batch_max`` messages, waiting at
most ``linger_ms`` for more), writes, commits, and hands the batch's acknowledgements to
the network thread (``call_soon_threadsafe``). The queue is bounded by what the broker may
have in flight to us (MQTT 5 Receive Maximum = ``batch_max``; the broker's own limit on
3.1.1: Mosquitto max_inflight_messages, RabbitMQ mqtt.prefetch, NATS max_ack_pending).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from collector import loop as event_loop
from collector.mqtt_loop import MqttLoop, reconnect_forever
from sink.decode import Latest, Refused, Row, decode
from sink.store import Store, Written

log = logging.getLogger(__name__)


@dataclass
class SinkSettings:
    host: str
    port: int
    roots: tuple[str, ...]  # the collectors' site.topic_root values this sink takes
    dsn: str  # libpq connection string ("" = PG* environment variables)
    client_id: str
    group: str = ""  # shared subscription group; "" = a plain subscription
    protocol: str = "5"  # "5" or "3.1.1" (no shared subscriptions there)
    batch_max: int = 1000
    linger_ms: float = 20.0
    session_expiry_s: int = 7 * 86400
    username: str | None = None
    password: str | None = None
    tls: ssl.SSLContext | None = None
    keepalive: int = 30
    stats_every_s: float = 30.0
    gaps_every_s: float = 60.0  # 0 = never query the gaps view

    def filters(self) -> tuple[list[str], list[str]]:
        """(shared filters: records, plain filters: retained state and status)."""
        records: list[str] = []
        plain: list[str] = []
        for r in self.roots:
            records += [f"{r}/+/events/#", f"{r}/+/telemetry/#", f"{r}/_collector/+/alarm"]
            plain += [f"{r}/+/state", f"{r}/_collector/+/status"]
        if self.group:
            records = [f"$share/{self.group}/{f}" for f in records]
        return records, plain


@dataclass
class SinkStats:
    received: int = 0
    inserted: int = 0
    duplicates: int = 0
    conflicts: int = 0
    quarantined: int = 0
    latest: int = 0
    batches: int = 0
    acked: int = 0
    not_acked_old_connection: int = 0
    db_errors: int = 0
    connects: int = 0
    commit_ms: list[float] = field(default_factory=list)

    def add(self, w: Written) -> None:
        self.inserted += w.inserted
        self.duplicates += w.duplicates
        self.conflicts += w.conflicts
        self.quarantined += w.quarantined
        self.latest += w.latest

    def line(self) -> str:
        ms = sorted(self.commit_ms)
        p50 = ms[len(ms) // 2] if ms else 0.0
        p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))] if ms else 0.0
        return (f"received {self.received}, inserted {self.inserted}, duplicates "
                f"{self.duplicates}, conflicts {self.conflicts}, quarantined "
                f"{self.quarantined}, batches {self.batches} (commit p50 {p50:.1f} ms, p99 "
                f"{p99:.1f} ms), db errors {self.db_errors}, connects {self.connects}")


class Sink:
    """``run(stop)`` until ``stop`` is set; then it stores and acknowledges what it has."""

    def __init__(self, settings: SinkSettings,
                 store_factory: Callable[[], Store] | None = None) -> None:
        if settings.group and settings.protocol != "5":
            raise ValueError("shared subscriptions (--group) need MQTT 5; on a 3.1.1-only "
                             "broker run one sink per topic root (docs/sink.md)")
        self.s = settings
        self.store_factory = store_factory or (lambda: Store.connect(settings.dsn,
                                                                     settings.client_id))
        self.stats = SinkStats()
        self._q: queue.Queue[tuple[int, str, bytes, int, int]] = queue.Queue()
        self._gen = 0  # connections so far (network thread only)
        self._client = self._make_client()
        self._store: Store | None = None
        self.subscribed = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_ready = threading.Event()
        self._net_stop: asyncio.Event | None = None
        self._lost: asyncio.Event | None = None
        self._io: MqttLoop | None = None
        self._last_error = ""

    # -- MQTT (the network thread's event loop) ---------------------------------------------
    def _make_client(self) -> mqtt.Client:
        s = self.s
        if s.protocol == "5":
            c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=s.client_id,
                            protocol=mqtt.MQTTv5, manual_ack=True)
        else:
            c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=s.client_id,
                            protocol=mqtt.MQTTv311, clean_session=False, manual_ack=True)
        c.max_inflight_messages_set(20)
        if s.username:
            c.username_pw_set(s.username, s.password)
        if s.tls is not None:
            c.tls_set_context(s.tls)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        c.on_subscribe = self._on_subscribe
        return c

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any,
                    properties: Any) -> None:
        if reason.is_failure:
            log.warning("sink: broker %s:%d refused the connection: %s", self.s.host,
                        self.s.port, reason)
            return
        self._gen += 1
        self._last_error = ""
        self.stats.connects += 1
        records, plain = self.s.filters()
        log.info("sink: connected to %s:%d as %s (session present: %s); subscribing %s",
                 self.s.host, self.s.port, self.s.client_id, flags.session_present,
                 ", ".join(records + plain))
        client.subscribe([(f, 1) for f in records + plain])

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, codes: list[Any],
                      properties: Any) -> None:
        refused = [str(c) for c in codes if c.is_failure]
        if refused:
            log.error("sink: the broker refused subscriptions: %s (ACL? $share on a broker "
                      "without shared subscriptions?)", ", ".join(refused))
        else:
            log.info("sink: subscribed")
            self.subscribed.set()

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any,
                       properties: Any) -> None:
        log.warning("sink: disconnected from %s:%d (%s); reconnecting", self.s.host,
                    self.s.port, reason)
        if self._lost is not None:
            self._lost.set()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        self._q.put((self._gen, msg.topic, bytes(msg.payload), msg.mid, msg.qos))

    def _network_thread(self) -> None:
        event_loop.run(self._network())

    async def _network(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._net_stop, self._lost = asyncio.Event(), asyncio.Event()
        io = self._io = MqttLoop(self._client, name="sink")
        self._loop_ready.set()
        task = asyncio.create_task(reconnect_forever(self._connect, self._session,
                                                     self._connect_failed, 1.0, 10.0))
        try:
            await self._net_stop.wait()
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            io.disconnect()  # the session (and anything unacknowledged) stays
            io.close()

    async def _connect(self) -> None:
        assert self._io is not None and self._lost is not None
        self._lost.clear()
        await self._io.connect(10.0)

    async def _session(self) -> bool:
        assert self._io is not None and self._lost is not None
        await self._lost.wait()
        self._io.close()
        return False

    def _connect_failed(self, exc: BaseException, backoff: float) -> None:
        text = str(exc) or type(exc).__name__
        if text != self._last_error:  # once per change, not per retry
            self._last_error = text
            log.warning("sink: cannot connect to %s:%d (%s); retrying with backoff "
                        "(1..10 s)", self.s.host, self.s.port, text)
        if self._io is not None:
            self._io.close()

    def _to_network(self, fn: Callable[..., None], *args: Any) -> None:
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop is gone already
                loop.call_soon_threadsafe(fn, *args)

    # -- the writer (calling thread) ---------------------------------------------------------
    def run(self, stop: threading.Event) -> SinkStats:
        s = self.s
        self._store = self._connect_store(stop)
        if self._store is None:
            return self.stats
        if s.protocol == "5":
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = s.session_expiry_s
            props.ReceiveMaximum = max(1, min(65535, s.batch_max))
            self._client.connect_async(s.host, s.port, s.keepalive, clean_start=False,
                                       properties=props)
        else:
            self._client.connect_async(s.host, s.port, s.keepalive)
        net = threading.Thread(target=self._network_thread, name="sink-mqtt", daemon=True)
        net.start()
        self._loop_ready.wait()
        next_stats = time.monotonic() + s.stats_every_s
        next_gaps = time.monotonic() + s.gaps_every_s if s.gaps_every_s else float("inf")
        try:
            while True:
                batch = self._take(stop)
                if batch:
                    if not self._write(batch, stop):
                        break  # stopping while the database is away: nothing acknowledged
                    self._ack(batch)
                elif stop.is_set():
                    break
                now = time.monotonic()
                if now >= next_stats:
                    log.info("sink: %s", self.stats.line())
                    next_stats = now + s.stats_every_s
                if now >= next_gaps:
                    self._report_gaps()
                    next_gaps = now + s.gaps_every_s
        finally:
            if self._net_stop is not None:  # after the acks handed over above
                self._to_network(self._net_stop.set)
            net.join()
            if self._store is not None:
                self._store.close()
            log.info("sink: stopped; %s", self.stats.line())
        return self.stats

    def _take(self, stop: threading.Event) -> list[tuple[int, str, bytes, int, int]]:
        try:
            first = self._q.get(timeout=0.2)
        except queue.Empty:
            return []
        batch = [first]
        deadline = time.monotonic() + self.s.linger_ms / 1000
        while len(batch) < self.s.batch_max:
            try:
                batch.append(self._q.get_nowait())
                continue
            except queue.Empty:
                pass
            left = deadline - time.monotonic()
            if left <= 0 or stop.is_set():
                break
            try:
                batch.append(self._q.get(timeout=left))
            except queue.Empty:
                break
        return batch

    def _write(self, batch: list[tuple[int, str, bytes, int, int]],
               stop: threading.Event) -> bool:
        rows: list[Row] = []
        latest: list[Latest] = []
        refused: list[Refused] = []
        for _, topic, payload, _, _ in batch:
            item = decode(topic, payload)
            if isinstance(item, Row):
                rows.append(item)
            elif isinstance(item, Latest):
                latest.append(item)
            else:
                refused.append(item)
                log.warning("sink: quarantined a message on %s: %s", topic[:200], item.reason)
        self.stats.received += len(batch)
        backoff = 0.5
        while True:
            if self._store is None:
                self._store = self._connect_store(stop)
                if self._store is None:
                    return False
            started = time.monotonic()
            try:
                written = self._store.write(rows, latest, refused)
            except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
                # connection lost, server restarting, ...
                self.stats.db_errors += 1
                log.warning("sink: database write failed (%s); batch of %d kept, not "
                            "acknowledged; retrying in %.1f s", str(exc).strip()[:200],
                            len(batch), backoff)
                with contextlib.suppress(Exception):  # already broken
                    self._store.close()
                self._store = None
                if stop.wait(backoff):
                    return False
                backoff = min(backoff * 2, 10.0)
                continue
            self.stats.commit_ms.append((time.monotonic() - started) * 1000)
            if len(self.stats.commit_ms) > 10000:
                del self.stats.commit_ms[:5000]
            self.stats.batches += 1
            self.stats.add(written)
            if written.conflicts:
                log.error("sink: %d record(s) reused a stored seq with another id: "
                          "quarantined (see table quarantine)", written.conflicts)
            return True

    def _ack(self, batch: list[tuple[int, str, bytes, int, int]]) -> None:
        """Writer thread: the network thread sends the batch's PUBACKs (one write)."""
        self._to_network(self._ack_now, [(g, mid, qos) for g, _, _, mid, qos in batch])

    def _ack_now(self, batch: list[tuple[int, int, int]]) -> None:
        gen = self._gen
        for msg_gen, mid, qos in batch:
            if qos == 0:
                continue
            if msg_gen != gen:
                self.stats.not_acked_old_connection += 1  # resent by the broker meanwhile
                continue
            self._client.ack(mid, qos)
            self.stats.acked += 1

    def _connect_store(self, stop: threading.Event) -> Store | None:
        backoff = 0.5
        while not stop.is_set():
            try:
                return self.store_factory()
            except psycopg.OperationalError as exc:
                self.stats.db_errors += 1
                log.warning("sink: cannot connect to the database (%s); retrying in %.1f s",
                            str(exc).strip()[:200], backoff)
                stop.wait(backoff)
                backoff = min(backoff * 2, 10.0)
        return None

    def _report_gaps(self) -> None:
        if self._store is None:
            return
        try:
            rows = self._store.gap_summary()
        except Exception as exc:
            log.warning("sink: gap report failed: %s", str(exc)[:200])
            return
        for host, press, stream, holes, missing in rows:
            log.warning("sink: %s/%s/%s: %d gap(s), %d seq missing (view gaps; while a "
                        "collector replays after an outage this closes by itself)", host,
                        press, stream, holes, missing)
