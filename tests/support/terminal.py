"""An operator terminal on the broker: an MQTT 5 client with its own account.

MQTT 5 because the broker then says why it dropped a publish: Mosquitto 2.0 answers a
publish its ACL denies with PUBACK reason "Not authorized" (MQTT 3.1.1 gets a plain
PUBACK and the message silently vanishes).
"""

from __future__ import annotations

import ssl
import threading
import uuid
from typing import Any

import orjson
import paho.mqtt.client as mqtt

from tests.support.commands import command_topic, stamped


class Terminal:
    def __init__(self, port: int, username: str | None = None, password: str | None = None,
                 tls: ssl.SSLContext | None = None, timeout: float = 10.0) -> None:
        self.timeout = timeout
        self._cond = threading.Condition()
        self._acks: dict[int, Any] = {}
        self._connack: Any = None
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                        client_id=f"terminal-{uuid.uuid4().hex[:8]}", protocol=mqtt.MQTTv5)
        if username is not None:
            c.username_pw_set(username, password)
        if tls is not None:
            c.tls_set_context(tls)
        c.on_connect = self._on_connect
        c.on_publish = self._on_publish
        self.client = c
        c.connect("127.0.0.1", port, keepalive=30)
        c.loop_start()
        with self._cond:
            if not self._cond.wait_for(lambda: self._connack is not None, timeout):
                raise TimeoutError("no CONNACK")
        if self._connack.is_failure:
            self.close()
            raise ConnectionError(f"login as {username!r} refused: {self._connack}")

    def _on_connect(self, client, userdata, flags, reason, properties) -> None:
        with self._cond:
            self._connack = reason
            self._cond.notify_all()

    def _on_publish(self, client, userdata, mid, reason, properties) -> None:
        with self._cond:
            self._acks[mid] = reason
            self._cond.notify_all()

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> Any:
        """Publish QoS 1 and return the broker's PUBACK reason code."""
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        with self._cond:
            if not self._cond.wait_for(lambda: info.mid in self._acks, self.timeout):
                raise TimeoutError(f"no PUBACK for {topic}")
            return self._acks.pop(info.mid)

    def command(self, root: str, press: str, name: str, retain: bool = False,
                topic: str | None = None, **fields: Any) -> tuple[str, Any]:
        """(request id, PUBACK reason) of a command as a terminal sends it."""
        rid = str(fields.pop("request_id", uuid.uuid4().hex[:12]))
        payload = orjson.dumps(stamped({"request_id": rid, **fields}))
        return rid, self.publish(topic or command_topic(root, press, name), payload, retain)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
