"""The Sparkplug B 3.0 edge node: the outbox's telemetry rows as DDATA, one device per press.

Its own MQTT connection (the JSON publisher keeps events, command replies, alarms, the
retained state and status on its own): a connection has one will, and Sparkplug needs
the NDEATH there, with a clean session, where the JSON publisher needs its ``offline``
status and a persistent session. paho is driven from the event loop as in
``collector/publisher.py`` (``collector/mqtt_loop.py``: one send per loop turn for a burst
of DDATA), so every callback runs on the loop thread and no state is shared with another
thread.

A session
---------
1. bdSeq: the last one used is kept in the buffer (kv ``sparkplug/bdseq``, synced before
   the CONNECT), so it goes on incrementing (0..255, wrapping) across reconnects and
   process restarts; a TCP connect that failed before CONNECT reuses it.
2. CONNECT (MQTT 3.1.1, clean session) with the will NDEATH {bdSeq} (QoS 1, not
   retained); SUBSCRIBE (QoS 1) to ``NCMD``, ``DCMD/+`` and, with a primary host,
   ``spBv1.0/STATE/{primary host}``.
3. Births once every SUBACK is in and, with a primary host, its STATE says online (a
   STATE whose timestamp is older than the last online one is ignored): NBIRTH (seq 0,
   bdSeq, ``Node Control/Rebirth`` = false), then a DBIRTH per press with the newest
   values the buffer holds for it.
4. Data: the telemetry rows waiting in the buffer, in id order, one DDATA each (QoS 0, as
   the spec requires). Rows committed before the births (stored while the host was
   offline, the broker down, the daemon stopped) carry ``is_historical``; the rest are
   live. ``broker.replay_rate`` throttles the historical ones. seq +1 per message, 255 -> 0.
5. Host offline (a valid STATE ``online: false``): NDEATH (QoS 1, acknowledged), then
   DISCONNECT, then a new session (new bdSeq) that waits for the host again. Rows not yet
   confirmed go again after the next births: nothing is marked delivered that the broker
   did not take.
6. ``NCMD`` ``Node Control/Rebirth`` = true: NBIRTH (seq 0, same bdSeq) and the DBIRTHs
   again, same aliases; the data goes on where it was.

Delivery marks with QoS 0: a fence
----------------------------------
QoS 0 has no PUBACK. After each burst of DDATA the node sends an UNSUBSCRIBE of a topic
it never subscribed (``.../NCMD/{node}/fence``, harmless); the broker handles the
packets of one connection in order, so its UNSUBACK says every PUBLISH before it was
taken. Only then are those rows marked delivered in the outbox (one ``delivered`` column:
each stream has one output, the telemetry belongs to this one in Sparkplug mode). A
connection lost before the UNSUBACK leaves them pending: they go again, as historical
data, after the next births (duplicates carry the same ``Press/telemetry_seq`` and
timestamps). One fence per ``window`` rows, at most four windows unconfirmed at a time.

Devices
-------
A device is alive while its press's PLC answers (``PressRuntime.plc_online``, asked at
each press state change, :meth:`EdgeNode.on_press_state`). At a node birth every press
whose PLC answers gets its DBIRTH; any other is born by its first row. When a PLC stops
answering the node sends DDEATH once every row committed before that moment is out; the
press's next row (the PLC is back) gives a DBIRTH first. Backlog rows are history, not
life: a press found dead waits for its DDEATH until the backlog replay is out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt

from buffer.store import Outbox
from collector.mqtt_loop import MqttLoop, reconnect_forever
from collector.outbox_wake import CommitWake, wait_drained
from collector.sparkplug import codec
from collector.sparkplug.codec import NodeModel, TelemetryRow, Topics

log = logging.getLogger(__name__)

BDSEQ_KEY = "sparkplug/bdseq"
FETCH_ROWS = 400
PIPELINE = 4  # windows of rows sent and not yet confirmed (one fence per window)
NDEATH_ACK_S = 1.0


@dataclass(frozen=True)
class EdgeSettings:
    group_id: str
    edge_node_id: str
    primary_host_id: str = ""  # "": publish whenever connected


class EdgeNode:
    """Publishes one stream of the outbox (``telemetry``) as a Sparkplug B edge node;
    ``await run()`` until cancelled (then NDEATH and DISCONNECT)."""

    def __init__(self, outbox: Outbox, settings: EdgeSettings, host: str, port: int,
                 client_id: str, tags: Mapping[str, Sequence[tuple[str, int | None]]],
                 *, username: str | None = None, password: str | None = None,
                 tls: ssl.SSLContext | None = None, keepalive: int = 30, window: int = 100,
                 replay_rate: float = 0.0, reconnect_min_s: float = 0.25,
                 reconnect_max_s: float = 30.0, connect_timeout_s: float = 10.0,
                 stream: str = "telemetry", clock: Callable[[], float] = time.time,
                 plc_online: Callable[[str], bool] | None = None) -> None:
        self.outbox = outbox
        self.settings = settings
        self.topics = Topics(settings.group_id, settings.edge_node_id)
        self.state_topic = (Topics.state(settings.primary_host_id)
                            if settings.primary_host_id else None)
        self.fence_topic = f"{self.topics.ncmd}/fence"
        self.host, self.port, self.client_id = host, port, client_id
        self._username, self._password, self._tls = username, password, tls
        self.keepalive = keepalive
        self.window = window
        self.replay_rate = float(replay_rate)
        self.reconnect_min_s, self.reconnect_max_s = reconnect_min_s, reconnect_max_s
        self.connect_timeout_s = connect_timeout_s
        self.stream = stream
        self.clock = clock
        # whether a press's PLC answers now (the daemon: PressRuntime.plc_online); None:
        # every press counts as alive (a device never dies)
        self._plc_online = plc_online
        self.model = NodeModel()
        for press, press_tags in tags.items():
            self.model.add_tags(press, press_tags)
        last = outbox.get_kv(BDSEQ_KEY)
        self._bdseq_last: int | None = last if isinstance(last, int) else None
        self.bdseq = -1
        # connection
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: mqtt.Client | None = None
        self._io: MqttLoop | None = None
        self._connected = False
        self._session_end: asyncio.Event = asyncio.Event()
        self._sub_mids: set[int] = set()
        self._stopping = False
        self._leaving = False  # NDEATH + DISCONNECT on purpose (host offline, stop)
        # Sparkplug session
        self.born = False
        self.seq = 0
        self.host_online: bool | None = None  # None: no STATE seen in this process
        self._host_online_now = False  # an online STATE came in this MQTT session
        self._tasks: set[asyncio.Task[None]] = set()
        self._host_ts = -1  # timestamp of the last online STATE
        self._born_devices: set[str] = set()
        self._dead_live: set[str] = set()  # presses whose PLC is offline (live view)
        self._markers: deque[tuple[int, str]] = deque()  # (last id before death, press)
        self._birth_top = 0
        self._backlog_done = True
        # delivery: rows in id order; the confirmed ones are a prefix
        self._cursor = 0  # highest row id sent (or passed) in this session
        self._acked = 0  # every row up to here is confirmed (or not ours)
        self._unfenced: list[int] = []
        self._fences: dict[int, tuple[int, list[int]]] = {}  # unsubscribe mid -> rows
        self._in_fences = 0
        self._tokens = float(window)
        self._tokens_at = time.monotonic()
        self._throttle: asyncio.TimerHandle | None = None
        self._wake = CommitWake(outbox, self._kick)
        self._idle = asyncio.Event()
        self._last_error: str | None = None
        self._stats: dict[str, Any] = {
            "connects": 0, "connect_failures": 0, "births": 0, "rebirths": 0,
            "dbirths": 0, "ddata": 0, "historical": 0, "ddeaths": 0, "host_offline": 0,
            "fences": 0, "confirmed": 0, "last_error": None}

    # ------------------------------------------------------------------ public
    def stats(self) -> dict[str, Any]:
        return {**self._stats, "connected": self._connected, "born": self.born,
                "bdseq": self.bdseq, "seq": self.seq, "host_online": self.host_online,
                "cursor": self._cursor, "confirmed_upto": self._acked,
                "unconfirmed": len(self._unfenced) + self._in_fences,
                "devices_born": len(self._born_devices)}

    def on_press_state(self, press: str, state: str) -> None:
        """The press's workflow state changed (PressRuntime ``on_state``, loop thread):
        a PLC that no longer answers kills its device once what it produced before is
        out. The PLC connection itself decides, not the state: before its first poll a
        press is ``offline`` with its PLC connected."""
        if not self._alive(press):
            if press in self._dead_live:
                return
            self._dead_live.add(press)
            if self._loop is not None:
                task = self._loop.create_task(self._mark_death(press))
                self._tasks.add(task)  # held until done (the loop keeps weak refs only)
                task.add_done_callback(self._tasks.discard)
        else:
            self._dead_live.discard(press)

    def _alive(self, press: str) -> bool:
        return True if self._plc_online is None else self._plc_online(press)

    async def _mark_death(self, press: str) -> None:
        # every row the press made before going offline is committed after this flush
        with contextlib.suppress(RuntimeError):
            await self.outbox.flush()
        self._markers.append((self.outbox.last_id, press))
        self._kick()

    async def drain(self, timeout: float) -> bool:
        """Wait until every committed row of the stream is confirmed (True), or
        ``timeout``; False at once when not born (the primary host is offline, the
        broker down: the rows stay stored for the next start)."""
        if not self.born:
            return False
        return await wait_drained(self._drained, self._kick, self._idle, timeout)

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake.attach(self._loop)
        try:
            await reconnect_forever(self._connect, self._session, self._connect_failed,
                                    self.reconnect_min_s, self.reconnect_max_s)
        finally:
            self._wake.detach()
            self._stopping = True
            await self._leave()
            self._end_session()

    # ------------------------------------------------------------------ connection
    async def _next_bdseq(self) -> int:
        """The bdSeq of the next CONNECT, synced to the buffer before it is used."""
        bdseq = 0 if self._bdseq_last is None else (self._bdseq_last + 1) % 256
        self.outbox.put_kv(BDSEQ_KEY, bdseq)
        await self.outbox.flush()
        return bdseq

    def _make_client(self, bdseq: int) -> mqtt.Client:
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.client_id,
                             clean_session=True, protocol=mqtt.MQTTv311)
        client.max_inflight_messages_set(0)
        client.max_queued_messages_set(0)
        client.connect_timeout = self.connect_timeout_s
        client.will_set(self.topics.ndeath, codec.ndeath(bdseq), qos=1, retain=False)
        if self._username:
            client.username_pw_set(self._username, self._password)
        if self._tls is not None:
            client.tls_set_context(self._tls)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_unsubscribe = self._on_unsubscribe
        client.on_message = self._on_message
        client.connect_async(self.host, self.port, self.keepalive)
        return client

    async def _connect(self) -> None:
        bdseq = await self._next_bdseq()
        client = self._client = self._make_client(bdseq)
        self._io = MqttLoop(client, name="sparkplug", on_ack=lambda mid: None)
        self.bdseq = bdseq
        self._session_end.clear()

        def connect_sent() -> None:  # a TCP connect that fails reuses the bdSeq
            self._bdseq_last = bdseq

        await self._io.connect(self.connect_timeout_s, on_sent=connect_sent)

    def _connect_failed(self, exc: BaseException, backoff: float) -> None:
        self._stats["connect_failures"] += 1
        self._note_error(f"connect to {self.host}:{self.port} failed: "
                         f"{exc or type(exc).__name__}")
        self._end_session()

    async def _session(self) -> bool:
        """Until the connection ends; True: we left on purpose (STATE offline)."""
        await self._session_end.wait()
        host_offline = self._connected
        await self._leave()
        self._end_session()
        return host_offline

    async def _leave(self) -> None:
        """A deliberate end of the session: NDEATH (QoS 1, acknowledged) and DISCONNECT,
        so that hosts learn it at once (the broker drops the will on DISCONNECT)."""
        if self._io is None or not self._connected:
            return
        self._leaving = True
        await self._io.leave(self.topics.ndeath, codec.ndeath(self.bdseq, self._ms()),
                             timeout_s=NDEATH_ACK_S)
        self._connected = self._leaving = False

    def _end_session(self) -> None:
        """Forget the session: unconfirmed rows go again after the next births."""
        if self._io is not None:
            self._io.close()
        self._connected = False
        self.born = self._host_online_now = False
        self._born_devices.clear()
        self._sub_mids.clear()
        self._unfenced.clear()
        self._fences.clear()
        self._in_fences = 0
        self._cursor = self._acked
        if self._throttle is not None:
            self._throttle.cancel()
            self._throttle = None
        self._idle.set()

    # ------------------------------------------------------------------ MQTT callbacks
    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any,
                    properties: Any) -> None:
        if reason.is_failure:
            return  # MqttLoop.connect raises with the reason
        self._connected = True
        self._stats["connects"] += 1
        self._last_error = None
        log.info("sparkplug: connected to %s:%d as %s (bdSeq %d)", self.host, self.port,
                 self.client_id, self.bdseq)
        topics = [self.topics.ncmd, self.topics.dcmd]
        if self.state_topic is not None:
            topics.append(self.state_topic)
        for topic in topics:
            self._sub_mids.add(client.subscribe(topic, qos=1)[1])

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any,
                       properties: Any) -> None:
        if client is not self._client:
            return
        was = self._connected
        self._connected = False
        if was and not self._stopping and not self._leaving:
            self._note_error(f"connection to {self.host}:{self.port} lost: {reason}")
        self._session_end.set()
        self._idle.set()

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reasons: Any,
                      properties: Any) -> None:
        for code in reasons:
            if code.is_failure:
                self._note_error(f"subscription refused by the broker ({code}); check its ACL "
                                 f"for {self.topics.ncmd} and the STATE topic")
        self._sub_mids.discard(mid)
        if not self._sub_mids and (self.state_topic is None or self._host_online_now):
            self._birth()

    def _on_unsubscribe(self, client: mqtt.Client, userdata: Any, mid: int, reasons: Any,
                        properties: Any) -> None:
        fence = self._fences.pop(mid, None)
        if fence is None:
            return
        last, ids = fence
        self._in_fences -= len(ids)
        self._acked = max(self._acked, last)
        self._stats["confirmed"] += len(ids)
        self.outbox.mark_delivered(ids)
        self._pump()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            if msg.topic == self.state_topic:
                self._on_state(bytes(msg.payload))
            elif msg.topic == self.topics.ncmd:
                if codec.rebirth_requested(bytes(msg.payload)):
                    self._rebirth()
                else:
                    log.info("sparkplug: NCMD without a rebirth request ignored (this edge "
                             "node writes nothing to the presses)")
            else:
                log.info("sparkplug: %s ignored (this edge node writes nothing to the "
                         "presses)", msg.topic[:200])
        except Exception:  # a bug here must not break the network loop
            log.exception("sparkplug: handling %s failed", msg.topic[:200])

    def _on_state(self, payload: bytes) -> None:
        parsed = codec.parse_state(payload)
        if parsed is None:
            log.warning("sparkplug: STATE of %s is not {\"online\": bool, \"timestamp\": ms} "
                        "(Sparkplug 3.0); ignored: %r", self.settings.primary_host_id,
                        payload[:100])
            return
        online, ts = parsed
        if ts < self._host_ts:
            log.info("sparkplug: STATE %s with timestamp %d older than %d ignored",
                     "online" if online else "offline", ts, self._host_ts)
            return
        if online:
            self._host_ts = ts
            self.host_online = self._host_online_now = True
            log.info("sparkplug: primary host %s online", self.settings.primary_host_id)
            if not self._sub_mids and not self.born:
                self._birth()
            return
        was = self.host_online
        self.host_online = self._host_online_now = False
        if was is not False:
            log.warning("sparkplug: primary host %s offline: telemetry is kept in the buffer "
                        "until it is back", self.settings.primary_host_id)
        if self.born:
            self._stats["host_offline"] += 1
            self.born = False
            self._session_end.set()  # run(): NDEATH, DISCONNECT, a new session

    # ------------------------------------------------------------------ births
    def _ms(self) -> int:
        return round(self.clock() * 1000)

    def _publish(self, topic: str, payload: bytes) -> None:
        assert self._client is not None
        self._client.publish(topic, payload, qos=0)

    def _next_seq(self) -> int:
        self.seq = (self.seq + 1) % 256
        return self.seq

    def _birth(self) -> None:
        """NBIRTH (seq 0) and a DBIRTH per device; what is stored by now is history."""
        if not self._connected or self._client is None:
            return
        first = not self.born
        self.born = True
        self._birth_top = self.outbox.last_id
        if first:
            self._cursor = self._acked
            self._backlog_done = False  # _after_backlog: the live view's deaths
            # deaths noticed before now are the live view's, applied after the backlog
            while self._markers and self._markers[0][0] <= self._birth_top:
                self._markers.popleft()
        self._stats["births"] += 1
        self.seq = 0
        now = self._ms()
        self._publish(self.topics.nbirth, codec.nbirth(now, 0, self.bdseq))
        # a device whose PLC does not answer now is born by its first row, if any
        devices = [d for d in self.model.devices if self._alive(d)] if first else \
            [d for d in self.model.devices if d in self._born_devices]
        for device in devices:
            self._dbirth(device, self._newest(device))
        self._pump()

    def _rebirth(self) -> None:
        """Node Control/Rebirth: stop the data, births again (same bdSeq), go on."""
        if not self.born:
            return
        self._stats["rebirths"] += 1
        log.info("sparkplug: rebirth requested")
        self._birth()

    def _newest(self, device: str) -> TelemetryRow | None:
        latest = self.outbox.latest(device, self.stream)
        if latest is None:
            return None
        try:
            row = codec.parse_telemetry(latest[0], latest[1])
        except (ValueError, KeyError, TypeError):
            return None
        self.model.absorb(device, row.values)
        return row

    def _dbirth(self, device: str, current: TelemetryRow | None) -> None:
        model = self.model.device(device)
        self._publish(self.topics.device("DBIRTH", device),
                      codec.dbirth(model, self._next_seq(), self._ms(), current))
        self._born_devices.add(device)
        self._stats["dbirths"] += 1

    def _ddeath(self, device: str) -> None:
        if device not in self._born_devices:
            return
        self._publish(self.topics.device("DDEATH", device),
                      codec.ddeath(self._next_seq(), self._ms()))
        self._born_devices.discard(device)
        self._stats["ddeaths"] += 1

    # ------------------------------------------------------------------ data
    def _kick(self) -> None:
        if self.born and self._connected:
            self._pump()
        elif self._drained():
            self._idle.set()

    def _pump(self) -> None:
        """Send the next rows in id order up to the window, then a fence."""
        if not (self.born and self._connected) or self._client is None:
            return
        hi = self.outbox.last_id
        limit = self.window * PIPELINE
        while len(self._unfenced) + self._in_fences < limit:
            self._after_backlog()
            room = min(self.window - len(self._unfenced),
                       limit - len(self._unfenced) - self._in_fences)
            historical = self._cursor < self._birth_top
            top = self._birth_top if historical else hi
            if historical and self.replay_rate > 0:
                room = min(room, self._take_tokens())
                if room <= 0:
                    break
            rows = self.outbox.pending_streams((self.stream,), self._cursor,
                                               min(room, FETCH_ROWS), upto=top)
            if not rows:
                self._cursor = max(self._cursor, top)
                if not self._unfenced and not self._in_fences:
                    self._acked = max(self._acked, self._cursor)  # nothing of ours between
                self._after_backlog()
                self._apply_markers(self._cursor)
                if self._cursor >= hi:
                    break
                continue
            for row_id, _topic, payload in rows:
                self._apply_markers(row_id - 1)
                self._send_row(row_id, payload, historical)
                self._cursor = row_id
            if len(self._unfenced) >= self.window:
                self._fence()  # one fence per window: the next window goes out meanwhile
            if historical and self.replay_rate > 0:
                self._tokens -= len(rows)
        self._fence()
        if self._drained():
            self._idle.set()

    def _send_row(self, row_id: int, payload: bytes, historical: bool) -> None:
        try:
            row = codec.parse_telemetry(row_id, payload)
        except (ValueError, KeyError, TypeError) as exc:
            log.error("sparkplug: telemetry row %d is not readable (%s); left to the JSON "
                      "history, marked delivered", row_id, exc)
            self._unfenced.append(row_id)
            return
        device = row.press
        if self.model.absorb(device, row.values) or device not in self._born_devices:
            self._dbirth(device, row)
        self._publish(self.topics.device("DDATA", device),
                      codec.ddata(self.model.devices[device], self._next_seq(), self._ms(),
                                  row, historical))
        self._unfenced.append(row_id)
        self._stats["ddata"] += 1
        if historical:
            self._stats["historical"] += 1

    def _after_backlog(self) -> None:
        """The backlog is out: devices whose PLC is offline now die (live view)."""
        if self._backlog_done or self._cursor < self._birth_top:
            return
        self._backlog_done = True
        for device in sorted(self._born_devices):
            if not self._alive(device):
                self._dead_live.add(device)
                self._ddeath(device)

    def _apply_markers(self, upto: int) -> None:
        """DDEATH for presses that went offline once every row before it is sent."""
        if not self._backlog_done:
            return
        markers = self._markers
        while markers and markers[0][0] <= upto:
            # only if the PLC is still away: a connection that came back before the rows
            # were out (a failed first connect at start) is no outage worth a death
            press = markers.popleft()[1]
            if press in self._dead_live:
                self._ddeath(press)

    def _fence(self) -> None:
        if not self._unfenced or self._client is None:
            return
        ids, self._unfenced = self._unfenced, []
        try:
            mid = self._client.unsubscribe(self.fence_topic)[1]
        except ValueError:
            return
        self._fences[mid] = (self._cursor, ids)
        self._in_fences += len(ids)
        self._stats["fences"] += 1

    def _take_tokens(self) -> int:
        now = time.monotonic()
        self._tokens = min(float(self.window),
                           self._tokens + (now - self._tokens_at) * self.replay_rate)
        self._tokens_at = now
        if self._tokens >= 1.0:
            return int(self._tokens)
        if self._throttle is None and self._loop is not None:
            delay = (1.0 - self._tokens) / self.replay_rate
            self._throttle = self._loop.call_later(delay, self._after_throttle)
        return 0

    def _after_throttle(self) -> None:
        self._throttle = None
        self._kick()

    def _drained(self) -> bool:
        return (self.born and not self._unfenced and not self._fences
                and self._acked >= self.outbox.last_id and self.outbox.queued_rows() == 0
                and not self._markers)

    def _note_error(self, text: str) -> None:
        self._stats["last_error"] = text
        if text != self._last_error:
            log.warning("sparkplug: %s; retrying with backoff (%.2g..%.2g s), telemetry "
                        "waits in the buffer", text, self.reconnect_min_s,
                        self.reconnect_max_s)
            self._last_error = text

