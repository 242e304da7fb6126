"""Bench subscriber in its own process: one line per MQTT message received.

Output (``--out``, tab separated): receive epoch s, kind (telemetry | event kind | other),
press, seq, payload ts (ISO as sent), readings in the message. The analysis happens
after the run (bench/analysis.py), so this loop stays cheap and never drops a message.
QoS 1, persistent session (clean_session off): across a broker restart the broker keeps
what it queued for us, as a real consumer would configure it.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path

import orjson
import paho.mqtt.client as mqtt


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--topic", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--ready", required=True)
    p.add_argument("--client-id", default="bench-sub")
    args = p.parse_args()
    out = open(args.out, "w", buffering=1 << 16)  # noqa: SIM115 - closed on exit
    clock = time.time

    def on_connect(client, userdata, flags, reason, properties):
        client.subscribe(args.topic, qos=1)

    def on_subscribe(client, userdata, mid, reasons, properties):
        Path(args.ready).write_text("ok")

    def on_message(client, userdata, msg):
        now = clock()
        try:
            d = orjson.loads(msg.payload)
        except orjson.JSONDecodeError:
            out.write(f"{now:.6f}\tother\t-\t0\t-\t0\n")
            return
        schema = d.get("schema", "") if isinstance(d, dict) else ""
        kind = schema.rsplit("/", 1)[-1] if schema else "other"
        data = d.get("data") or {}
        n = len(data.get("values", ())) if kind == "telemetry" else 0
        if kind == "telemetry" and msg.topic.endswith("/replay"):
            kind = "telemetry_replay"  # the backlog after an outage (docs/delivery.md)
        out.write(f"{now:.6f}\t{kind}\t{d.get('press', '-')}\t{d.get('seq', 0)}\t"
                  f"{d.get('ts', '-')}\t{n}\n")

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=args.client_id,
                         clean_session=False, protocol=mqtt.MQTTv311)
    client.max_inflight_messages_set(1000)
    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    client.reconnect_delay_set(0.05, 0.2)

    def stop(*_):
        client.disconnect()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    client.connect_async("127.0.0.1", args.port, 30)
    while True:
        try:
            client.loop_forever(retry_first_connection=True)
        except (OSError, ConnectionError):
            time.sleep(0.05)
            continue
        break
    out.close()
    sys.exit(0)


if __name__ == "__main__":
    main()
