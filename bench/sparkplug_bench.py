"""Sparkplug B output: what a DDATA costs, and how fast a stored backlog drains.

usage: .venv/bin/python -m bench.sparkplug_bench [--rows 20000] [--tags 40]

1. encode: one telemetry row of ``--tags`` values (the JSON row as the outbox holds it)
   -> parsed -> DDATA bytes, per row (median of 5 runs of 2,000 rows), beside the JSON
   encoding the press does for the same row (messages.encode_telemetry).
2. drain: ``--rows`` rows committed before the edge node starts (a held backlog) -> edge
   node -> a private Mosquitto -> a subscriber in this process counting DDATA; rows/s
   from the first NBIRTH to the last confirmed row (every row marked delivered).
Figures depend on the machine and its load: compare runs of one session only.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from buffer.store import Outbox
from collector import messages, streams
from collector.sparkplug import codec
from collector.sparkplug.edge import EdgeNode, EdgeSettings
from sim.local_broker import LocalBroker


def row_values(tags: int, i: int) -> dict[str, object]:
    return {f"t{k:02d}": (i + k) if k % 2 else (i + k) / 10 for k in range(tags)}


def encode_cost(tags: int) -> tuple[float, float]:
    """(us per DDATA incl. parsing the JSON row, us per JSON row) median of 5 runs."""
    node = codec.NodeModel()
    node.add_tags("p1", [(f"t{k:02d}", codec.INT64 if k % 2 else codec.DOUBLE)
                         for k in range(tags)])
    model = node.devices["p1"]
    ctx = {"state": "released", "part_number": "BRK-100", "die_id": "D-7",
           "material_lot": "L1"}
    n = 2000
    payloads = [messages.encode_telemetry("p1", i, 1_764_000_000 + i / 10, "h",
                                          row_values(tags, i), {}, ctx) for i in range(n)]
    spb, js = [], []
    for _ in range(5):
        t0 = time.perf_counter()
        for i, p in enumerate(payloads):
            codec.ddata(model, i % 256, 0, codec.parse_telemetry(i, p), historical=False)
        spb.append((time.perf_counter() - t0) / n * 1e6)
        t0 = time.perf_counter()
        for i in range(n):
            messages.encode_telemetry("p1", i, 1_764_000_000 + i / 10, "h",
                                      row_values(tags, i), {}, ctx)
        js.append((time.perf_counter() - t0) / n * 1e6)
    return statistics.median(spb), statistics.median(js)


async def drain_rate(rows: int, tags: int, work: Path) -> tuple[float, int]:
    import paho.mqtt.client as mqtt

    broker = LocalBroker(port=0, data_dir=work / "mosquitto")
    broker.start()
    outbox = Outbox.open(work / "buffer.sqlite", commit_interval_s=0.002,
                         streams=streams.STREAMS)
    policy = streams.STREAMS[streams.TELEMETRY]
    for i in range(rows):
        seq = outbox.next_seq("p1", streams.TELEMETRY)
        outbox.add(streams.row(policy, "p1", seq, "t/p1/telemetry", messages.encode_telemetry(
            "p1", seq, 1_764_000_000 + i / 10, "h", row_values(tags, i), {}, {})))
    await outbox.flush()
    got = 0
    first: list[float] = []
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-spb-sub")

    def on_message(client, userdata, msg) -> None:
        nonlocal got
        if "/NBIRTH/" in msg.topic and not first:
            first.append(time.perf_counter())
        elif "/DDATA/" in msg.topic:
            got += 1

    sub.on_message = on_message
    sub.connect("127.0.0.1", broker.port)
    sub.subscribe("spBv1.0/#", qos=0)
    sub.loop_start()
    edge = EdgeNode(outbox, EdgeSettings("bench", "node"), "127.0.0.1", broker.port,
                    "bench-spb", {"p1": []}, window=100)
    task = asyncio.create_task(edge.run())
    try:
        async with asyncio.timeout(600):
            while not (edge.born and await edge.drain(1.0)):
                await asyncio.sleep(0.01)
        elapsed = time.perf_counter() - first[0]
        deadline = time.monotonic() + 10  # the broker took them all: let them arrive
        while got < rows and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        sub.loop_stop()
        outbox.close()
        broker.stop()
    return rows / elapsed, got


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=20000)
    parser.add_argument("--tags", type=int, default=40)
    args = parser.parse_args()
    spb_us, json_us = encode_cost(args.tags)
    print(f"encode ({args.tags} tags): DDATA {spb_us:.1f} us/row (JSON row parsed + "
          f"protobuf), JSON telemetry {json_us:.1f} us/row")
    with tempfile.TemporaryDirectory() as tmp:
        rate, got = asyncio.run(drain_rate(args.rows, args.tags, Path(tmp)))
    print(f"drain: {args.rows} stored rows -> {got} DDATA received, {rate:,.0f} rows/s "
          "(births to the last confirmed row)")


if __name__ == "__main__":
    main()
