"""MQTT publisher: drains the outbox in order, QoS 1, bounded window, PUBACK -> delivered.

paho-mqtt 2.x (``CallbackAPIVersion.VERSION2``), MQTT 3.1.1, ``clean_session=False``
with a stable client id, will = status topic ``offline`` (retained, QoS 1).

Network loop: driven from the asyncio loop, not ``loop_start()``
-----------------------------------------------------------------
``collector/mqtt_loop.py`` (``MqttLoop``) drives paho on the event loop: every paho call
happens on the loop thread, so PUBACKs arrive as plain calls inside a read (``_on_ack``):
they are collected and handled once per read (one ``mark_delivered`` and one window
refill per burst of acks), with no thread hop and no locking between our window
bookkeeping and paho's. The rows' PUBLISH packets are built by ``MqttLoop.publish_row``
and everything queued in one loop turn goes out in one ``send()``. Measured on this box
before that adapter (2 cores; bare paho, 20,000 x 100 B QoS 1, window 100, local
Mosquitto, three runs): asyncio-driven 27-32k acked msgs/s, ``loop_start()`` thread with
acks handed back in batches by ``call_soon_threadsafe`` 12-16.5k msgs/s (the paho thread
and the event loop contend for the GIL, and every ack burst costs a cross-thread
wake-up); the adapter's own figures: docs/status/issue13-perf-mqtt.md. The only blocking
paho call, ``reconnect()`` (TCP connect and TLS handshake), runs in a worker thread while
nothing else touches the client.

Window and order
----------------
Rows are read from the outbox's partial index in id order, a few windows at a time, and
handed to paho so that at most ``max_inflight`` outbox messages are unacknowledged (paho's
own inflight limit is switched off - it is our window that bounds it - so paho never
queues, and never sees more than ``max_inflight`` + retained + status messages; see
DEPENDENCIES.md on paho stalling with >65,535 queued). A row is marked delivered only when
its PUBACK arrives. The window refills on acks and on the outbox's commit notification
(wrapped in ``call_soon_threadsafe``); there is no polling.

Reconnect and resend
--------------------
paho keeps every unacknowledged QoS 1 message across a disconnect and resends it (DUP
set, same packet id) right after the next CONNACK, in publish order, before anything
published afterwards - with clean_session True or False alike. We rely on that: the
in-flight window is resent by paho, then our cursor continues with the next row, so the
broker sees the stream in order and only the messages in flight at the disconnect can be
duplicated (QoS 1 is at-least-once; subscribers drop duplicates by seq). Status ``online``
and the retained press states are published after paho's resend (not inside
``on_connect``, which runs *before* paho resends), so a resent older retained state never
overwrites a newer one. After a process restart the window is gone: the drain restarts
from the first pending row (again: only the last window can be duplicated).

Quality first, live next, backlog last: three lanes after an outage
-------------------------------------------------------------------
At a connect that finds more than one window of rows not yet handed to paho (an outage,
a restart with a backlog), the work splits in three lanes, each with its own cursor:

- *event lane*: every stream that is not a ``live_stream`` (quality and workflow events,
  alarms, command replies), backlog and new alike, strictly in id order (so in seq order
  per press), never throttled and served first: a quality event acquired after the
  reconnect waits for the events before it, never for telemetry;
- *live lane*: telemetry committed after the connect, on its own topic, never throttled,
  so a long backlog never delays the current values;
- *replay lane*: telemetry committed before the connect and not yet sent, in id order on
  ``{topic}/replay`` (same payload), the only thing ``replay_rate`` throttles.

Each topic is in seq order on its own; the two telemetry topics together carry every seq
(duplicates only from the resent window). The event lane walks the pending index once
from where the backlog starts (``stream NOT IN live_streams``: SQLite reads the stream
column, not the payloads, of the telemetry it passes). When the replay is out and the
event and live cursors stand at one id, the lanes merge back into one cursor (one query
per refill, as before the outage). Every lane reads rows up to one ``last_id`` snapshot
per refill, so that an idle moment leaves both cursors on the same id.

Reconnect uses capped exponential backoff; a failure reason is logged once per change,
not per retry. Passwords are never logged.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt

from buffer.store import Committed, Outbox
from collector.fresh_rows import FreshRows
from collector.mqtt_loop import MqttLoop, reconnect_forever
from collector.outbox_wake import CommitWake, wait_drained

log = logging.getLogger(__name__)

FETCH_WINDOWS = 4  # rows read from the outbox per query, in windows
EVENT_SCAN_IDS = 10000  # ids the event lane looks through per query (~4 ms; _next_event)


@dataclass
class TlsSettings:
    ca_certs: str | None = None
    certfile: str | None = None
    keyfile: str | None = None
    insecure: bool = False


class Publisher:
    """Publishes the outbox to one MQTT broker; ``await run()`` until cancelled."""

    def __init__(self, outbox: Outbox, host: str, port: int, client_id: str, topic_status: str,
                 keepalive: int = 30, max_inflight: int = 100, username: str | None = None,
                 password: str | None = None, tls: TlsSettings | ssl.SSLContext | None = None,
                 status_online: bytes = b"online", status_offline: bytes = b"offline",
                 reconnect_min_s: float = 0.25, reconnect_max_s: float = 30.0,
                 connect_timeout_s: float = 10.0, replay_rate: float = 0.0,
                 command_topic: str | None = None,
                 on_command: Callable[[str, bytes], None] | None = None,
                 live_streams: tuple[str, ...] = ("telemetry",),
                 skip_streams: tuple[str, ...] = ()) -> None:
        if not 1 <= max_inflight <= 20000:
            raise ValueError("max_inflight must be 1..20000")
        self.outbox = outbox
        self.host, self.port = host, port
        self.client_id = client_id
        self.topic_status = topic_status
        self.keepalive = keepalive
        self.max_inflight = max_inflight
        self.status_online, self.status_offline = status_online, status_offline
        self.reconnect_min_s, self.reconnect_max_s = reconnect_min_s, reconnect_max_s
        self.connect_timeout_s = connect_timeout_s
        # Inbound commands: subscribed (QoS 1) on every connect; each message is handed to
        # ``on_command(topic, payload)`` on the event loop thread (inside loop_read).
        self.command_topic = command_topic
        self.on_command = on_command
        # Token bucket over outbox rows (0 = unlimited): a long backlog is replayed at
        # ``replay_rate`` msgs/s with bursts of one window; status and retained state are
        # never throttled (they go out ahead of the backlog).
        self.replay_rate = float(replay_rate)
        self._tokens = float(max_inflight)
        self._tokens_at = time.monotonic()
        self._throttle_handle: asyncio.TimerHandle | None = None
        self._username, self._password, self._tls = username, password, tls
        self._client: mqtt.Client | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._io: MqttLoop | None = None
        self._connected = False
        self._disconnected = asyncio.Event()
        # window bookkeeping (event-loop thread only)
        self._cursor = 0  # highest outbox id handed to paho or skipped as not pending
        self._fetched: deque[tuple[int, str, bytes]] = deque()
        self._inflight: dict[int, int] = {}  # paho mid -> outbox id
        self._other_mids: set[int] = set()  # status / retained publishes
        self._acked: list[int] = []
        self._retained_dirty: set[str] = set()
        # two lanes after a connect with a backlog (see the module docstring)
        self.live_streams = frozenset(live_streams)
        # streams another output owns (Sparkplug: telemetry, collector/sparkplug/): never
        # read here, never marked; give them no live lane either (live_streams=())
        self.skip_streams = tuple(skip_streams)
        self._split = False  # three lanes active (else one cursor: self._cursor)
        self._live_cursor = 0  # highest live-stream id handed over (or skipped) by it
        self._live_fetched: deque[tuple[int, str, bytes]] = deque()
        self._event_cursor = 0  # event lane: highest other-stream id handed over or skipped
        self._event_fetched: deque[tuple[int, str, bytes]] = deque()
        self._scan_more = False  # the event lane stopped short of the snapshot: pump again
        self._replay: deque[tuple[int, int]] = deque()  # live-stream ids (lo, hi] to replay
        self._replay_top = 0  # backlog rows (throttled) have id <= this
        self._wake = CommitWake(outbox, self._kick, self._note_commit)
        self._wake_lock = self._wake.lock
        # the rows the writer's notices carried: the one-lane drain reads them from here
        self._fresh = FreshRows(2 * max_inflight * FETCH_WINDOWS, self.skip_streams,
                                self._wake_lock)
        self._idle = asyncio.Event()
        self._after_connect_pending = False
        self._stopping = False
        self._last_error: str | None = None
        self._stats: dict[str, Any] = {"published": 0, "acked": 0, "retained_published": 0,
                                       "connects": 0, "connect_failures": 0,
                                       "rejected": 0, "throttled": 0, "replayed": 0, "splits": 0,
                                       "last_error": None}

    # ------------------------------------------------------------------ public
    @property
    def connected(self) -> bool:
        return self._connected

    def stats(self) -> dict[str, Any]:
        return {**self._stats, "reconnects": max(0, self._stats["connects"] - 1),
                "inflight": len(self._inflight), "connected": self._connected,
                "cursor": self._cursor, "live_cursor": self._live_cursor,
                "event_cursor": self._event_cursor, "lanes": 3 if self._split else 1,
                "pending": self.outbox.pending_count(),
                **{f"io_{k}": v for k, v in (self._io.stats if self._io else {}).items()}}

    def publish_retained_now(self, press: str | None = None) -> None:
        """Publish the committed retained state of ``press`` (all presses: None) at once,
        ahead of the backlog; deferred to the next connect when offline."""
        presses = self.outbox.get_retained_all() if press is None else [press]
        with self._wake_lock:
            self._retained_dirty.update(presses)
        if self._connected and not self._after_connect_pending:
            self._publish_retained()

    async def drain(self, timeout: float) -> bool:
        """Wait until every committed row is acknowledged (True) or ``timeout`` passes."""
        return await wait_drained(self._drained, self._kick, self._idle, timeout)

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        client = self._client = self._make_client()
        self._wake.attach(self._loop)
        try:
            await reconnect_forever(lambda: self._connect(client), self._session,
                                    self._connect_failed, self.reconnect_min_s,
                                    self.reconnect_max_s)
        finally:
            self._wake.detach()
            await self._shutdown(client)

    # ------------------------------------------------------------------ client
    def _make_client(self) -> mqtt.Client:
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.client_id,
                             clean_session=False, protocol=mqtt.MQTTv311)
        client.max_inflight_messages_set(0)  # unlimited in paho: our window bounds it
        client.max_queued_messages_set(0)
        client.connect_timeout = self.connect_timeout_s
        client.will_set(self.topic_status, self.status_offline, qos=1, retain=True)
        if self._username:
            client.username_pw_set(self._username, self._password)
        if isinstance(self._tls, ssl.SSLContext):
            client.tls_set_context(self._tls)
        elif self._tls is not None:
            client.tls_set(ca_certs=self._tls.ca_certs, certfile=self._tls.certfile,
                           keyfile=self._tls.keyfile)
            client.tls_insecure_set(self._tls.insecure)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.connect_async(self.host, self.port, self.keepalive)
        self._io = MqttLoop(client, name="mqtt", on_ack=self._on_ack, after_read=self._after_io)
        return client

    async def _connect(self, client: mqtt.Client) -> None:
        assert self._io is not None
        self._disconnected.clear()
        await self._io.connect(self.connect_timeout_s)

    def _connect_failed(self, exc: BaseException, backoff: float) -> None:
        self._stats["connect_failures"] += 1
        self._note_error(f"connect to {self.host}:{self.port} failed: "
                         f"{exc or type(exc).__name__}")
        self._close_socket()
        self._stats["backoff_s"] = backoff

    async def _session(self) -> bool:
        await self._disconnected.wait()
        self._after_disconnect()
        return False

    def _close_socket(self) -> None:
        if self._io is not None:
            self._io.close()

    def _after_disconnect(self) -> None:
        self._close_socket()

    async def _shutdown(self, client: mqtt.Client) -> None:
        """Graceful stop: retained 'offline', DISCONNECT (the broker then drops the will)."""
        self._stopping = True
        if self._connected and self._io is not None:
            await self._io.leave(self.topic_status, self.status_offline, retain=True,
                                 timeout_s=1.0)
        self._after_disconnect()
        self._connected = False

    # ------------------------------------------------------------------ MQTT callbacks
    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any,
                    properties: Any) -> None:
        # Runs inside loop_read, *before* paho resends the unacknowledged window.
        if reason.is_failure:
            return  # MqttLoop.connect raises with the reason
        self._connected = True
        self._stats["connects"] += 1
        self._after_connect_pending = True

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any,
                       properties: Any) -> None:
        was = self._connected
        self._connected = False
        if was and self._stopping:
            log.info("disconnected from %s:%d", self.host, self.port)
        elif was:
            self._note_error(f"connection to {self.host}:{self.port} lost: {reason}")
        self._disconnected.set()
        self._idle.set()

    def _on_ack(self, mid: int) -> None:
        """PUBACK (MqttLoop, inside a read): collected, handled once per read."""
        row_id = self._inflight.pop(mid, None)
        if row_id is not None:
            self._acked.append(row_id)
        else:
            self._other_mids.discard(mid)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        if self.on_command is None:
            return
        try:
            self.on_command(msg.topic, bytes(msg.payload))
        except Exception:  # a bug in a handler must not break the network loop
            log.exception("command handler failed for %s", msg.topic)

    def _after_io(self) -> None:
        if self._after_connect_pending and self._connected:
            # paho has resent the old window by now: birth, then retained, then the drain
            self._after_connect_pending = False
            self._last_error = None
            log.info("connected to %s:%d as %s (%d messages resent by paho)", self.host,
                     self.port, self.client_id, len(self._inflight))
            self._publish_other(self.topic_status, self.status_online, retain=True)
            if self.command_topic is not None and self._client is not None:
                self._client.subscribe(self.command_topic, qos=1)
            self._retained_dirty.update(self.outbox.get_retained_all())
            self._publish_retained()
            self._split_lanes()
        if self._acked:
            acked, self._acked = self._acked, []
            self._stats["acked"] += len(acked)
            self.outbox.mark_delivered(acked)
        self._pump()

    # ------------------------------------------------------------------ outbox side
    def _note_commit(self, info: Committed) -> None:
        """Outbox writer thread, under the wake lock: presses whose retained state moved,
        and the committed rows kept for the drain (``collector.fresh_rows``)."""
        if info.retained:
            self._retained_dirty.update(info.retained)
        self._fresh.add(info)

    def _kick(self) -> None:
        if self._connected and not self._after_connect_pending:
            self._publish_retained()
            self._pump()
        elif self._drained():
            self._idle.set()

    def _publish_retained(self) -> None:
        with self._wake_lock:
            presses, self._retained_dirty = self._retained_dirty, set()
        for press in sorted(presses):
            state = self.outbox.get_retained(press)
            if state is not None:
                self._publish_other(state[0], state[1], retain=True)
                self._stats["retained_published"] += 1

    def _publish_other(self, topic: str, payload: bytes, retain: bool) -> None:
        assert self._client is not None
        try:
            info = self._client.publish(topic, payload, qos=1, retain=retain)
        except ValueError as exc:
            log.error("cannot publish on %r: %s", topic, exc)
            return
        self._other_mids.add(info.mid)

    def _split_lanes(self) -> None:
        """On connect: live-stream rows committed so far and not handed over become the
        replay backlog; later ones go out live; other streams take the event lane."""
        if not self.live_streams:
            return
        hi = self._top()
        if self._split:
            lo = self._live_cursor  # a second outage while replaying: more backlog
        else:
            lo = self._cursor
            if self._fetched:  # read ahead, not handed to paho: the lanes read it again
                lo = self._fetched[0][0] - 1
        if hi <= lo or (not self._split and hi - lo <= self.max_inflight):
            return  # nothing, or less than a window: one round trip, keep one lane
        if not self._split:
            self._fetched.clear()
            self._cursor = self._event_cursor = lo
            self._split = True
            self._stats["splits"] += 1
        self._replay.append((lo, hi))
        self._replay_top = hi
        self._live_cursor = hi

    def _pump(self) -> None:
        """Fill the window: the live lane first, then the ordered (backlog) lane."""
        client = self._client
        if (client is None or not self._connected or self._after_connect_pending
                or self._stopping):
            return
        window = self.max_inflight
        inflight = self._inflight
        io = self._io
        assert io is not None
        # one snapshot per refill (see the module docstring); one empty query per lane
        hi = self._top()  # read before the queries: see _drained
        events_empty = live_empty = False
        while len(inflight) < window:
            lane = None
            if self._split:
                if not events_empty:
                    if self._next_event(hi):
                        lane = self._event_fetched
                    else:
                        events_empty = True
                if lane is None and not live_empty:
                    if self._next_live(hi):
                        lane = self._live_fetched
                    else:
                        live_empty = True
                if lane is None:
                    if not self._next_replay():
                        break
                    lane = self._fetched
            else:
                if not self._next_backlog(hi):
                    break
                lane = self._fetched
            row_id, topic, payload = lane.popleft()
            try:
                info = io.publish_row(topic, payload)
            except ValueError as exc:  # invalid topic / payload: never blocks the queue
                self._stats["rejected"] += 1
                log.error("outbox row %d rejected by MQTT (%s); marked delivered to keep the "
                          "queue moving", row_id, exc)
                self.outbox.mark_delivered([row_id])
                continue
            if info.rc == mqtt.MQTT_ERR_QUEUE_SIZE:  # mid collision: cannot happen with
                lane.appendleft((row_id, topic, payload))  # a window << 65,535
                break
            inflight[info.mid] = row_id
            self._stats["published"] += 1
        if self._split:
            self._maybe_merge()
        if self._scan_more:
            self._scan_more = False
            if self._loop is not None:
                self._loop.call_soon(self._kick)
        if self._drained():
            self._idle.set()

    def _top(self) -> int:
        """The highest outbox id the lanes may read up to (every lane reads through this
        one snapshot per refill: the place for any bound on what may be published)."""
        return self.outbox.last_id

    def _read_upto(self, after: int, hi: int, streams: tuple[str, ...] | None = None,
                   exclude: bool = False) -> tuple[list[tuple[int, str, bytes]], int]:
        """Pending rows (of ``streams``, or of every other stream: ``exclude``) with
        ``after`` < id <= ``hi``, a few windows at most, and the cursor after them: ``hi``
        when they are all there are, else the last id read."""
        n = self.max_inflight * FETCH_WINDOWS
        if streams is None:  # the one-lane drain: the rows of the last commits, if kept
            kept = self._fresh.take(after, hi, n)
            if kept is not None:
                return kept
        if streams is None and self.skip_streams:
            rows = self.outbox.pending_streams(self.skip_streams, after, n, exclude=True,
                                               upto=hi)
        elif streams is None:
            rows = [r for r in self.outbox.pending(after, n) if r[0] <= hi]
        else:
            rows = self.outbox.pending_streams(streams, after, n, exclude=exclude, upto=hi)
        if len(rows) < n:
            return rows, max(after, hi)
        return rows, rows[-1][0]

    def _next_event(self, hi: int) -> bool:
        """True when the event lane has a row ready (never throttled). It looks at most
        ``EVENT_SCAN_IDS`` ids ahead per query, so that finding the few events in a long
        telemetry backlog never blocks the event loop; the rest of the scan is queued
        behind whatever else the loop has to do (``_scan_more``)."""
        if self._event_fetched:
            return True
        upto = min(hi, self._event_cursor + EVENT_SCAN_IDS)
        rows, self._event_cursor = self._read_upto(self._event_cursor, upto,
                                                   tuple(self.live_streams), exclude=True)
        self._event_fetched.extend(rows)
        if not rows and self._event_cursor < hi:
            self._scan_more = True
        return bool(rows)

    def _next_live(self, hi: int) -> bool:
        """True when the live lane has a row ready (fetching a few windows if needed)."""
        if self._live_fetched:
            return True
        rows, self._live_cursor = self._read_upto(self._live_cursor, hi,
                                                  tuple(self.live_streams))
        self._live_fetched.extend(rows)
        return bool(rows)

    def _next_backlog(self, hi: int) -> bool:
        """One lane (no backlog): True when a row is ready, in id order, never throttled."""
        if self._fetched:
            return True
        rows, self._cursor = self._read_upto(self._cursor, hi)
        self._fetched.extend(rows)
        return bool(rows)

    def _next_replay(self) -> bool:
        """True when the replay lane has a backlog row ready and a token for it."""
        fetched, replay = self._fetched, self._replay
        while not fetched:
            while replay and self._cursor >= replay[0][1]:
                replay.popleft()
            if not replay:
                return False
            lo, top = replay[0]
            self._cursor = max(self._cursor, lo)
            rows, self._cursor = self._read_upto(self._cursor, top, tuple(self.live_streams))
            for row_id, topic, payload in rows:
                fetched.append((row_id, topic + "/replay", payload))
            self._stats["replayed"] += len(rows)
        if self.replay_rate > 0:
            if not self._take_token():
                return False
            self._tokens -= 1.0
        return True

    def _maybe_merge(self) -> None:
        """Back to one cursor once the replay is out and the event and live lanes stand
        at one id (both read up to the same snapshot when idle)."""
        replay = self._replay
        while replay and replay[0][1] <= self._cursor:
            replay.popleft()
        if (not replay and not self._fetched and not self._live_fetched
                and not self._event_fetched and self._event_cursor == self._live_cursor
                and self._live_cursor >= self._replay_top):
            self._cursor = self._live_cursor
            self._split = False

    def _take_token(self) -> bool:
        """Refill the bucket (monotonic clock); False = wait: a timer pumps again."""
        now = time.monotonic()
        burst = float(self.max_inflight)
        self._tokens = min(burst, self._tokens + (now - self._tokens_at) * self.replay_rate)
        self._tokens_at = now
        if self._tokens >= 1.0:
            return True
        if self._throttle_handle is None and self._loop is not None:
            self._stats["throttled"] += 1
            delay = (1.0 - self._tokens) / self.replay_rate
            self._throttle_handle = self._loop.call_later(delay, self._after_throttle)
        return False

    def _after_throttle(self) -> None:
        self._throttle_handle = None
        self._kick()

    def _drained(self) -> bool:
        last = self.outbox.last_id
        if self._inflight or self._fetched or self._live_fetched or self._event_fetched:
            return False
        if self._split:
            replay_left = bool(self._replay) and self._replay[-1][1] > self._cursor
            caught_up = (not replay_left and self._live_cursor >= last
                         and self._event_cursor >= last)
        else:
            caught_up = self._cursor >= last
        return caught_up and self.outbox.queued_rows() == 0

    def _note_error(self, text: str) -> None:
        self._stats["last_error"] = text
        if text != self._last_error:
            log.warning("mqtt: %s; retrying with backoff (%.2g..%.0f s), undelivered rows "
                        "wait in the buffer", text, self.reconnect_min_s, self.reconnect_max_s)
            self._last_error = text
