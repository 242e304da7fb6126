"""``press-collector cmd``: send one command to a press over MQTT and wait for its reply.

For a technician at the line PC: it reads the broker and topic root from the config dir,
publishes ``{root}/{press}/cmd/{name}`` (QoS 1) with a fresh request id and prints the
matching ``{root}/{press}/cmd_result``. The collector must be running and connected.
"""

from __future__ import annotations

import json
import sys
import threading
import uuid
from pathlib import Path

from collector.config import ConfigError, load_config
from collector.daemon import read_password


def parse_fields(fields: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in fields:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"{item!r} is not key=value")
        out[key.strip()] = value
    return out


def send_command(config_dir: Path, press: str, name: str, fields: list[str],
                 operator: str | None = None, timeout: float = 10.0) -> int:
    import paho.mqtt.client as mqtt

    try:
        config = load_config(config_dir)
        payload = parse_fields(fields)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"bad field: {exc}", file=sys.stderr)
        return 2
    if operator:
        payload.setdefault("operator", operator)
    request_id = payload.setdefault("request_id", f"cli-{uuid.uuid4().hex[:12]}")
    root = config.collector.site.topic_root
    broker = config.collector.broker
    reply_topic = f"{root}/{press}/cmd_result"
    got: dict[str, dict] = {}
    done = threading.Event()
    subscribed = threading.Event()

    def on_connect(client, userdata, flags, reason, properties):
        if not reason.is_failure:
            client.subscribe(reply_topic, qos=1)

    def on_subscribe(client, userdata, mid, reasons, properties):
        subscribed.set()

    def on_message(client, userdata, msg):
        try:
            data = json.loads(msg.payload)
        except ValueError:
            return
        if data.get("request_id") == request_id:
            got["reply"] = data
            done.set()

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                         client_id=f"press-collector-cmd-{uuid.uuid4().hex[:8]}",
                         clean_session=True, protocol=mqtt.MQTTv311)
    if broker.username:
        client.username_pw_set(broker.username, read_password(config))
    client.on_connect, client.on_subscribe, client.on_message = on_connect, on_subscribe, on_message
    try:
        client.connect(broker.host, broker.port, keepalive=30)
    except OSError as exc:
        print(f"cannot connect to {broker.host}:{broker.port}: {exc}", file=sys.stderr)
        return 2
    client.loop_start()
    try:
        if not subscribed.wait(timeout):
            print("no subscription acknowledgement from the broker", file=sys.stderr)
            return 2
        client.publish(f"{root}/{press}/cmd/{name}", json.dumps(payload), qos=1).wait_for_publish(
            timeout)
        if not done.wait(timeout):
            print(f"no reply within {timeout:g} s (is the collector running?)", file=sys.stderr)
            return 2
    finally:
        client.disconnect()
        client.loop_stop()
    reply = got["reply"]
    print(json.dumps(reply, indent=2))
    return 0 if reply.get("ok") else 1
