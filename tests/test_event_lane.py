"""Quality first after an outage: the event lane is never throttled behind telemetry.

A publisher that connects to a real Mosquitto and finds a backlog (after an outage, or a
restart: the same code path, ``Publisher._split_lanes``) replays the telemetry part of it
on ``/telemetry/replay`` at ``replay_rate``. Quality and workflow events - those of the
backlog and those acquired after the connect - go out on their own lane, in seq order,
without waiting for that throttled replay. Asserted as an order of arrival at a real
subscriber (the event acquired after the connect arrives before the telemetry backlog is
out), not as a time: the throttle makes the replay last ~2 s here, the events need one
round trip each window.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest

from buffer.store import Outbox, OutboxRow
from collector import publisher as publisher_module
from collector.publisher import Publisher
from sim.local_broker import LocalBroker
from tests.support.subscriber import Received, Subscriber

ROOT = "plant/lanes"
STATUS = f"{ROOT}/_collector/h/status"
TELEMETRY, EVENTS = f"{ROOT}/p1/telemetry", f"{ROOT}/p1/events/measurement"
REPLAY = TELEMETRY + "/replay"
BACKLOG_TELEMETRY, BACKLOG_EVENTS, RATE, WINDOW = 400, 60, 200.0, 20


def seq_of(msg: Received) -> int:
    return int(msg.payload.split(b":", 1)[0])


def rows(outbox: Outbox, stream: str, topic: str, n: int) -> list[OutboxRow]:
    out = []
    for _ in range(n):
        seq = outbox.next_seq("p1", stream)
        out.append(OutboxRow("p1", stream, seq, topic, b"%d:" % seq + b"x" * 200,
                             durable=stream == "events"))
    return out


async def test_event_after_the_reconnect_overtakes_the_throttled_telemetry_backlog(
        broker: LocalBroker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # the event lane looks through the backlog in short steps (yielding to the loop in
    # between): several steps here, as in a long backlog with the default 10,000 ids
    monkeypatch.setattr(publisher_module, "EVENT_SCAN_IDS", 50)
    outbox = Outbox.open(tmp_path / "b.sqlite", commit_interval_s=0.005)
    # the backlog: telemetry with events among it (more events than one window)
    per = BACKLOG_TELEMETRY // BACKLOG_EVENTS
    for _ in range(BACKLOG_EVENTS):
        outbox.add_many(rows(outbox, "telemetry", TELEMETRY, per)
                        + rows(outbox, "events", EVENTS, 1))
    outbox.add_many(rows(outbox, "telemetry", TELEMETRY, BACKLOG_TELEMETRY % BACKLOG_EVENTS))
    await outbox.flush()
    publisher = Publisher(outbox, "127.0.0.1", broker.port, "pc-event-lane", STATUS,
                          max_inflight=WINDOW, replay_rate=RATE)
    with Subscriber("127.0.0.1", broker.port, [f"{ROOT}/#"]) as sub:
        task = asyncio.create_task(publisher.run())
        try:
            # the replay has begun: the publisher is connected and throttling
            await sub.wait_for(lambda m: any(x.topic == REPLAY for x in m), 15)
            # a quality event acquired after the reconnect
            outbox.add_many(rows(outbox, "events", EVENTS, 1))
            await outbox.flush()
            last_event = BACKLOG_EVENTS + 1
            await sub.wait_for(lambda m: any(x.topic == EVENTS and seq_of(x) == last_event
                                             for x in m), 15)
            msgs = await sub.wait_for(lambda m: len({seq_of(x) for x in m if x.topic == REPLAY})
                                      >= BACKLOG_TELEMETRY, 30)
            st = publisher.stats()
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    outbox.close()
    events = [seq_of(m) for m in msgs if m.topic == EVENTS]
    assert list(dict.fromkeys(events)) == list(range(1, last_event + 1)), "events out of order"
    replay = [seq_of(m) for m in msgs if m.topic == REPLAY]
    assert list(dict.fromkeys(replay)) == list(range(1, BACKLOG_TELEMETRY + 1))
    # precedence: every event, the new one included, came before the telemetry backlog was
    # out (on the old single ordered lane the new event came after all of it)
    i_event = next(i for i, m in enumerate(msgs) if m.topic == EVENTS
                   and seq_of(m) == last_event)
    i_replay_done = max(i for i, m in enumerate(msgs) if m.topic == REPLAY)
    replay_after = len({seq_of(m) for m in msgs[i_event:] if m.topic == REPLAY})
    assert i_event < i_replay_done and replay_after > WINDOW, (
        f"the event waited behind the telemetry replay ({replay_after} replayed after it)")
    # and the telemetry backlog was still throttled meanwhile; then one lane again
    assert st["throttled"] > 0 and st["replayed"] == BACKLOG_TELEMETRY
    assert st["splits"] == 1
