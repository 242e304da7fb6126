"""CPU cost of the publish side alone: process CPU seconds per 100k messages.

Why this exists: wall-clock CPU % of the whole daemon is noisy on a shared 2-core box,
and the daemon mixes polling with publishing. This runs one ``Publisher`` (the code the
daemon runs) over a real ``Outbox`` file to a private Mosquitto and counts the CPU time
of this process (all threads: event loop and the outbox writer that commits the delivery
marks) per 100,000 telemetry messages of the bench's real size (40 tags, ~900 B).

Two shapes:

- ``drain``: ``--messages`` rows stored first, then published as fast as the window
  allows (a backlog after an outage: many PUBLISH per loop turn);
- ``live``: ``--presses`` presses add one row each every ``--period-ms`` through
  ``Outbox.add`` with the daemon's group commit (``--commit-ms``), for ``--duration`` s
  (the line: a few PUBLISH per commit).

Optional: ``--profile out.txt`` (cProfile of the loop, sorted by own time). ``io`` in the
output: the adapter's send/recv counters (collector/mqtt_loop.py). Prints one JSON line.
Same sitting, same box for before/after; compare ``cpu_s_per_100k``.

Instruction counts (repeatable on a busy box): run ``drain`` under
``valgrind --tool=callgrind`` with and without ``--fill-only`` at two sizes; the
difference of the differences over the extra messages is instructions per message
published (docs/status/issue13-perf-mqtt.md).

    .venv/bin/python -m bench.publish_cost drain --messages 50000
    .venv/bin/python -m bench.publish_cost live --presses 40 --period-ms 10 --duration 20
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import json
import pstats
import resource
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.store_bench import ROOT, payload
from buffer.store import Outbox, OutboxRow
from collector import loop as event_loop
from collector.publisher import Publisher
from sim.local_broker import LocalBroker


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _publisher(outbox: Outbox, broker: LocalBroker, window: int) -> Publisher:
    return Publisher(outbox, broker.host, broker.port, client_id="bench-publish-cost",
                     topic_status=f"{ROOT}/_collector/bench/status", max_inflight=window)


async def _wait_drained(outbox: Outbox) -> None:
    while outbox.pending_count() > 0:
        await asyncio.sleep(0.02)


@contextlib.contextmanager
def _measured(prof: cProfile.Profile | None) -> Iterator[dict[str, float]]:
    """Process CPU and wall time of the block (and the profile, if any)."""
    out: dict[str, float] = {}
    cpu0, t0 = _cpu(), time.perf_counter()
    if prof:
        prof.enable()
    try:
        yield out
    finally:
        if prof:
            prof.disable()
        out["cpu_s"], out["wall_s"] = _cpu() - cpu0, time.perf_counter() - t0


def _result(n: int, m: dict[str, float], publisher: Publisher) -> dict[str, Any]:
    return {"messages": n, "cpu_s": round(m.get("cpu_s", 0.0), 3),
            "wall_s": round(m.get("wall_s", 0.0), 3),
            "msgs_per_s": round(n / m["wall_s"]) if m.get("wall_s") else 0,
            "publisher": publisher.stats()}


async def _stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def drain(outbox: Outbox, broker: LocalBroker, n: int, window: int,
                prof: cProfile.Profile | None, fill_only: bool = False) -> dict[str, Any]:
    body = payload("p1", 1, time.time())
    rows = []
    for i in range(n):
        press = f"p{i % 10 + 1}"
        rows.append(OutboxRow(press, "telemetry", outbox.next_seq(press, "telemetry"),
                              f"{ROOT}/{press}/telemetry", body))
    outbox.add_many(rows)
    await outbox.flush()
    publisher = _publisher(outbox, broker, window)
    if fill_only:  # the baseline of an instruction count (callgrind): all but the publish
        return _result(n, {}, publisher)
    task = asyncio.create_task(publisher.run())
    try:
        with _measured(prof) as m:
            await _wait_drained(outbox)
    finally:
        await _stop(task)
    return _result(n, m, publisher)


async def live(outbox: Outbox, broker: LocalBroker, presses: int, period_s: float,
               duration: float, window: int, prof: cProfile.Profile | None
               ) -> dict[str, Any]:
    publisher = _publisher(outbox, broker, window)
    task = asyncio.create_task(publisher.run())
    body = payload("p1", 1, time.time())
    names = [f"p{p + 1}" for p in range(presses)]
    topics = {p: f"{ROOT}/{p}/telemetry" for p in names}
    sent = 0
    try:
        while not publisher.connected:
            await asyncio.sleep(0.01)
        with _measured(prof) as m:
            nxt = time.monotonic()
            end = nxt + duration
            while nxt < end:
                for p in names:
                    outbox.add(OutboxRow(p, "telemetry", outbox.next_seq(p, "telemetry"),
                                         topics[p], body))
                sent += presses
                nxt += period_s
                await asyncio.sleep(max(0.0, nxt - time.monotonic()))
            await _wait_drained(outbox)
    finally:
        await _stop(task)
    return _result(sent, m, publisher)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("mode", choices=("drain", "live"))
    ap.add_argument("--messages", type=int, default=50_000, help="drain: rows stored first")
    ap.add_argument("--presses", type=int, default=40, help="live: rows per period")
    ap.add_argument("--period-ms", type=float, default=10.0, help="live: poll period")
    ap.add_argument("--duration", type=float, default=20.0, help="live: seconds")
    ap.add_argument("--commit-ms", type=float, default=2.0, help="outbox group commit")
    ap.add_argument("--window", type=int, default=200, help="max_inflight")
    ap.add_argument("--profile", type=Path, help="write a cProfile summary here")
    ap.add_argument("--fill-only", action="store_true",
                    help="drain: store the rows, publish nothing (callgrind baseline)")
    args = ap.parse_args(argv)
    prof = cProfile.Profile() if args.profile else None
    with tempfile.TemporaryDirectory(prefix="publish-cost-") as tmp:
        broker = LocalBroker(data_dir=Path(tmp) / "mosq", persistence=False).start()
        outbox = Outbox.open(Path(tmp) / "b.sqlite", commit_interval_s=args.commit_ms / 1000)
        try:
            if args.mode == "drain":
                out = event_loop.run(drain(outbox, broker, args.messages, args.window, prof,
                                          args.fill_only))
            else:
                out = event_loop.run(live(outbox, broker, args.presses,
                                          args.period_ms / 1000, args.duration, args.window,
                                          prof))
        finally:
            with contextlib.suppress(Exception):
                outbox.close()
            broker.stop()
    out = {"scenario": f"publish_cost_{args.mode}", **out,
           "cpu_s_per_100k": round(out["cpu_s"] * 100_000 / max(1, out["messages"]), 2)}
    pub = out.pop("publisher")
    out["publisher"] = {k: pub[k] for k in ("published", "acked", "connects")}
    out["io"] = {k: v for k, v in pub.items() if k.startswith("io_")}
    print(json.dumps(out))
    if prof is not None:
        with args.profile.open("w") as f:
            pstats.Stats(prof, stream=f).sort_stats("tottime").print_stats(40)
    return 0


if __name__ == "__main__":
    sys.exit(main())
