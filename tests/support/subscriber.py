"""A paho subscriber for tests: persistent session, QoS 1, thread-safe message log.

paho's network thread (``loop_start``) appends to ``messages``; async tests wait with
``await sub.wait_for(predicate, timeout)``, woken through ``call_soon_threadsafe`` on each
message (no sleeps). ``stop()`` disconnects without cleaning the session, so a new
Subscriber with the same client id resumes it (the broker queues QoS 1 meanwhile).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import paho.mqtt.client as mqtt


@dataclass(frozen=True, slots=True)
class Received:
    topic: str
    payload: bytes
    retain: bool
    dup: bool
    qos: int
    at: float


class Subscriber:
    def __init__(self, host: str, port: int, topics: Iterable[str] = ("#",),
                 client_id: str | None = None, clean_session: bool = False,
                 qos: int = 1, username: str | None = None, password: str | None = None,
                 tls: ssl.SSLContext | None = None) -> None:
        self.host, self.port = host, port
        self.topics = list(topics)
        self.qos = qos
        self.client_id = client_id or f"test-sub-{uuid.uuid4().hex[:8]}"
        self._lock = threading.Lock()
        self.messages: list[Received] = []
        self.connects = 0
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []
        self._subscribed = threading.Event()
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.client_id,
                        clean_session=clean_session, protocol=mqtt.MQTTv311)
        c.max_inflight_messages_set(1000)
        c.reconnect_delay_set(0.05, 0.5)
        if username is not None:
            c.username_pw_set(username, password)
        if tls is not None:
            c.tls_set_context(tls)
        c.on_connect = self._on_connect
        c.on_message = self._on_message
        c.on_subscribe = self._on_subscribe
        self.client = c

    # -- lifecycle ---------------------------------------------------------------------
    def start(self, timeout: float = 10.0) -> Subscriber:
        self.client.connect_async(self.host, self.port, keepalive=10)
        self.client.loop_start()
        if not self._subscribed.wait(timeout):
            self.stop()
            raise TimeoutError(f"subscriber could not subscribe at {self.host}:{self.port}")
        return self

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.client.disconnect()
        self.client.loop_stop()

    def __enter__(self) -> Subscriber:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- callbacks (paho thread) -------------------------------------------------------
    def _on_connect(self, client, userdata, flags, reason, properties) -> None:
        if reason.is_failure:
            return
        self.connects += 1
        client.subscribe([(t, self.qos) for t in self.topics])

    def _on_subscribe(self, client, userdata, mid, reasons, properties) -> None:
        self._subscribed.set()
        self._wake()

    def _on_message(self, client, userdata, msg: mqtt.MQTTMessage) -> None:
        rec = Received(msg.topic, bytes(msg.payload), bool(msg.retain), bool(msg.dup),
                       msg.qos, time.monotonic())
        with self._lock:
            self.messages.append(rec)
        self._wake()

    def _wake(self) -> None:
        with self._lock:
            waiters = list(self._waiters)
        for loop, event in waiters:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(event.set)

    # -- queries -----------------------------------------------------------------------
    def snapshot(self) -> list[Received]:
        with self._lock:
            return list(self.messages)

    def on_topic(self, topic: str) -> list[Received]:
        return [m for m in self.snapshot() if m.topic == topic]

    async def wait_for(self, predicate: Callable[[list[Received]], bool],
                       timeout: float = 10.0) -> list[Received]:
        """Wait until ``predicate(messages)`` is true; return the messages. TimeoutError."""
        loop = asyncio.get_running_loop()
        event = asyncio.Event()
        entry = (loop, event)
        with self._lock:
            self._waiters.append(entry)
        try:
            async with asyncio.timeout(timeout):
                while True:
                    event.clear()
                    msgs = self.snapshot()
                    if predicate(msgs):
                        return msgs
                    await event.wait()
        except TimeoutError:
            msgs = self.snapshot()
            raise TimeoutError(f"condition not met within {timeout} s "
                               f"({len(msgs)} messages received)") from None
        finally:
            with self._lock:
                self._waiters.remove(entry)
