"""The collector's own MQTT 5 connection for commands (docs/security.md).

Commands do not ride on the publisher's connection (MQTT 3.1.1, persistent session, tuned
for the outbox) because three guarantees need MQTT 5:

- **retain as published** (subscription option): every delivery carries the retain flag
  the sender set, also for a message published while we are subscribed (MQTT 3.1.1
  clears it then), so a retained command is recognised and never executed;
- **clean start, no session expiry**: the broker queues nothing for us while the daemon
  is down, so commands sent meanwhile do not run when it comes back (the sender gets no
  reply and sends again; the request id makes the retry safe). The issue-time check is
  the second line for any other path;
- **maximum packet size** (CONNECT property, ``MAX_PACKET_BYTES``): the broker never
  sends us a bigger message, so a 100 MB "command" costs the daemon nothing (bigger than
  the gate's 8 KiB but under this: refused with ``too_large``);
- reason codes: a refused SUBACK and a refused "clear this retained message" PUBACK are
  reported as such.

On a broker without MQTT 5 (RabbitMQ 3.x, NATS 2.9) the connection runs on MQTT 3.1.1
when ``broker.protocol = "3.1.1"`` (``protocol="3.1.1"`` here): clean session instead of
clean start (the same: nothing queued while the daemon is down), no maximum packet size
(the broker's own message size limit applies), and no retain-as-published: a retained
message still arrives with the retain flag when it is delivered *because we subscribed*
(at every connect: the stale-command case), but a command published with retain while we
are already subscribed arrives without it and is executed once like any live command
(request id, issue time, signature and role checks still apply); the daemon then cannot
clear it, and the next connect finds it retained and refuses it. docs/brokers.md.
With ``protocol="5"`` and a broker that refuses MQTT 5 the log says to set the option.

paho is driven from the event loop (``collector/mqtt_loop.py``, as the publisher): every
callback runs on the loop thread, so the command gate and the presses see commands with
no thread hop; reconnects use the same capped backoff as the publisher.
``collector/command_watch.py`` checks the subscription on each connect.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from collector.command_watch import CommandSubscription
from collector.mqtt_loop import MqttLoop, reconnect_forever

log = logging.getLogger(__name__)

MAX_PACKET_BYTES = 65536


class CommandClient:
    """Receives ``topic`` (QoS 1) and hands each message to ``on_command(topic, payload,
    retained)`` on the event loop; ``await run()`` until cancelled."""

    def __init__(self, host: str, port: int, client_id: str, topic: str,
                 probe_topic: str | None, on_command: Callable[[str, bytes, bool], None],
                 username: str | None = None, password: str | None = None,
                 tls: ssl.SSLContext | None = None, keepalive: int = 30,
                 reconnect_min_s: float = 0.25, reconnect_max_s: float = 30.0,
                 max_packet_bytes: int = MAX_PACKET_BYTES, protocol: str = "5") -> None:
        if protocol not in ("5", "3.1.1"):
            raise ValueError(f"protocol must be '5' or '3.1.1', not {protocol!r}")
        self.protocol = protocol
        self.host, self.port = host, port
        self.client_id = client_id
        self.topic = topic
        self.on_command = on_command
        self.username, self._password, self._tls = username, password, tls
        self.keepalive = keepalive
        self.reconnect_min_s, self.reconnect_max_s = reconnect_min_s, reconnect_max_s
        self.max_packet_bytes = max_packet_bytes
        self.watch = CommandSubscription(topic, probe_topic, username or "")
        self._client: mqtt.Client | None = None
        self._io: MqttLoop | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lost = asyncio.Event()
        self._clearing: dict[int, str] = {}  # mid -> topic of a retained-message clear
        self._last_error: str | None = None
        self._stopping = False
        self._stats: dict[str, Any] = {"connects": 0, "received": 0, "probes": 0,
                                       "clear_refused": 0}

    def stats(self) -> dict[str, Any]:
        return {**self._stats, "subscription": self.watch.state, "deaf": self.watch.deaf}

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        client = self._client = self._make_client()
        if self.protocol == "5":
            client.connect_async(self.host, self.port, self.keepalive, clean_start=True,
                                 properties=self._connect_properties())
        else:
            client.connect_async(self.host, self.port, self.keepalive)
        io = self._io = MqttLoop(client, name="commands")
        try:
            await reconnect_forever(self._connect, self._session, self._connect_failed,
                                    self.reconnect_min_s, self.reconnect_max_s)
        finally:
            self._stopping = True
            self.watch.reset()
            with contextlib.suppress(Exception):
                io.disconnect()
            io.close()

    async def _connect(self) -> None:
        assert self._io is not None
        self._lost.clear()
        await self._io.connect(10.0)

    def _connect_failed(self, exc: BaseException, backoff: float) -> None:
        reason = str(exc) or type(exc).__name__
        if "before CONNACK" in reason and self.protocol == "5":
            # RabbitMQ 3.x closes an MQTT 5 CONNECT without a CONNACK
            self._error(f"command connection to {self.host}:{self.port} closed before "
                        f"CONNACK ({reason})" + self._protocol_hint("closed"))
        else:
            self._error(f"command connection to {self.host}:{self.port} failed: {reason}"
                        + self._protocol_hint(reason))
        if self._io is not None:
            self._io.close()

    async def _session(self) -> bool:
        await self._lost.wait()
        if self._io is not None:
            self._io.close()
        return False

    def clear_retained(self, topic: str) -> None:
        """Ask the broker to forget a retained command (an empty retained publish); a
        refusal (the shipped ACL: the collector may not write command topics) is logged."""
        client = self._client
        if client is None or not client.is_connected():
            return
        info = client.publish(topic, b"", qos=1, retain=True)
        self._clearing[info.mid] = topic

    # -- paho side (network thread) ------------------------------------------------------
    def _make_client(self) -> mqtt.Client:
        if self.protocol == "5":
            client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.client_id,
                                 protocol=mqtt.MQTTv5)
        else:  # clean session: the broker keeps nothing for us while we are away
            client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.client_id,
                                 protocol=mqtt.MQTTv311, clean_session=True)
        if self.username:
            client.username_pw_set(self.username, self._password)
        if self._tls is not None:
            client.tls_set_context(self._tls)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        client.on_publish = self._on_publish
        return client

    def _connect_properties(self) -> Properties:
        props = Properties(PacketTypes.CONNECT)
        props.MaximumPacketSize = self.max_packet_bytes
        props.SessionExpiryInterval = 0
        return props

    # -- paho callbacks (event loop thread, inside MqttLoop's reads) --------------------
    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any,
                    properties: Any) -> None:
        if not reason.is_failure:  # a refusal: MqttLoop.connect raises, _connect_failed
            self._connected()

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any,
                       properties: Any) -> None:
        self._lost.set()
        self._disconnected(str(reason))

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int,
                      reason_codes: list[Any], properties: Any) -> None:
        self.watch.on_suback(mid, list(reason_codes))

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        self._deliver(msg.topic, bytes(msg.payload), bool(msg.retain))

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason: Any,
                    properties: Any) -> None:
        if mid in self._clearing:
            self._cleared(self._clearing.pop(mid), bool(reason.is_failure), str(reason))

    def _connected(self) -> None:
        self._stats["connects"] += 1
        if self._last_error is not None:
            log.info("command connection to %s:%d back", self.host, self.port)
            self._last_error = None
        client = self._client
        assert client is not None and self._loop is not None

        def subscribe() -> int | None:
            if self.protocol == "5":
                _, mid = client.subscribe(self.topic, options=SubscribeOptions(
                    qos=1, retainAsPublished=True))
            else:
                _, mid = client.subscribe(self.topic, qos=1)
            return mid  # None: the connection is gone again; the next connect subscribes

        def publish(topic: str, payload: bytes) -> None:
            self._stats["probes"] += 1
            client.publish(topic, payload, qos=1)

        self.watch.start(subscribe, publish, self._loop)

    def _disconnected(self, reason: str) -> None:
        self.watch.reset()
        if self._stopping:
            return
        if self._stats["connects"]:
            self._error(f"command connection to {self.host}:{self.port} lost: {reason}")

    def _protocol_hint(self, reason: str) -> str:
        if self.protocol != "5" or not ("protocol" in reason.lower() or reason == "closed"):
            return ""
        return ("; if this broker does not speak MQTT 5 (RabbitMQ 3.x, NATS 2.9), set "
                "broker.protocol = \"3.1.1\" in collector.toml (docs/brokers.md)")

    def _deliver(self, topic: str, payload: bytes, retained: bool) -> None:
        if self.watch.on_message(topic, payload):
            return
        self._stats["received"] += 1
        try:
            self.on_command(topic, payload, retained)
        except Exception:  # a bug in a handler must not stop command reception
            log.exception("command handler failed for %s", topic[:200])

    def _cleared(self, topic: str, failed: bool, reason: str) -> None:
        if failed:
            self._stats["clear_refused"] += 1
            log.warning("the broker refused to clear the retained command on %s (%s): this "
                        "account may not write command topics (as the shipped ACL wants); "
                        "clear it with a %s account: mosquitto_pub -r -n -t '%s'", topic,
                        reason, topic.split("/")[-2], topic)
        else:
            log.info("retained command on %s cleared", topic)

    def _error(self, text: str) -> None:
        if text != self._last_error:
            self._last_error = text
            log.warning("%s (retrying)", text)
