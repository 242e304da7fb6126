"""Quality events per second through the whole spine, durable and delivered.

Feeds gauge readings into a released press (PressRuntime: workflow -> outbox), lets the
real outbox writer (fsync for every batch holding a quality record) and the publisher
deliver them to a private Mosquitto, and counts them in a separate ``mosquitto_sub``
process. Prints one JSON line; asserts nothing.

    .venv/bin/python bench/spine_throughput.py [--events 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import subprocess
import tempfile
import time
from decimal import Decimal
from pathlib import Path

from buffer.store import Outbox
from collector.domain import Characteristic, Plan, WorkflowSettings
from collector.messages import Topics
from collector.press import PressRuntime
from collector.publisher import Publisher
from drivers.base import GaugeValue, PollResult
from sim.local_broker import LocalBroker

ROOT = "bench/spine"
PLAN = Plan("P-1", "A", (Characteristic("C1", "len", Decimal("10.00"), Decimal("9.95"),
                                        Decimal("10.05"), gauge="g1"),))


async def main(events: int) -> dict:
    work = Path(tempfile.mkdtemp(prefix="spine-bench-"))
    broker = LocalBroker(port=0, data_dir=work / "broker")
    broker.start()
    sub = subprocess.Popen([shutil.which("mosquitto_sub") or "mosquitto_sub", "-h", "127.0.0.1",
                            "-p", str(broker.port), "-q", "1", "-t", f"{ROOT}/+/events/measurement",
                            "-C", str(events)], stdout=subprocess.DEVNULL)
    await asyncio.sleep(0.5)  # let mosquitto_sub subscribe (a bench, not a test)
    outbox = Outbox.open(work / "buffer.sqlite", commit_interval_s=0.05)
    publisher = Publisher(outbox, "127.0.0.1", broker.port, "bench-spine", f"{ROOT}/status")
    runtime = PressRuntime("p1", {"strokes": "stroke_count", "part": "part_number"},
                           WorkflowSettings(), {"P-1": PLAN}, outbox, Topics(ROOT, "bench"),
                           publish_telemetry=False)
    task = asyncio.create_task(publisher.run())
    t = time.time()
    runtime.sink(PollResult("p1/plc", t, {"strokes": 1, "part": "P-1"}))
    runtime.sink(GaugeValue("g1", t, "10.00", "mm"))  # first article passes: released
    assert runtime.workflow.state == "released"
    started = time.perf_counter()
    for i in range(events):
        runtime.sink(GaugeValue("g1", t + i * 1e-3, "10.01", "mm"))
        if i % 500 == 0:
            await asyncio.sleep(0)  # let the publisher run, as the event loop would
    fed = time.perf_counter() - started
    await asyncio.to_thread(sub.wait, 120)
    total = time.perf_counter() - started
    task.cancel()
    stats = outbox.stats()
    outbox.close()
    broker.stop()
    shutil.rmtree(work, ignore_errors=True)
    return {"scenario": "spine_events", "events": events,
            "feed_events_per_s": round(events / fed),
            "delivered_events_per_s": round(events / total),
            "commits": stats.get("commits"), "commits_fsync": stats.get("commits_full")}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20000)
    print(json.dumps(asyncio.run(main(parser.parse_args().events))))
