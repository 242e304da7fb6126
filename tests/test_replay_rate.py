"""The replay throttle (broker.replay_rate) against a real Mosquitto.

A backlog of N telemetry rows is waiting when the publisher connects; with replay_rate R
the subscriber must receive it (on ``/telemetry/replay``) at no more than about R msgs/s
(the token bucket allows one window as a burst), while the retained press state and the
status arrive at once, ahead of the backlog, and a state change during the replay
overtakes the rest of the backlog. Events are never throttled (tests/test_event_lane.py).
This asserts behaviour (a throttle exists and the state is not behind it), not speed: the
bound is a generous lower bound on the elapsed time.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from buffer.store import Outbox, OutboxRow
from collector.publisher import Publisher
from sim.local_broker import LocalBroker
from tests.support.subscriber import Subscriber

ROOT = "plant/rate"
STATUS = f"{ROOT}/_collector/h/status"
STATE = f"{ROOT}/p1/state"
TELEMETRY = f"{ROOT}/p1/telemetry"
REPLAY = TELEMETRY + "/replay"
N, RATE, WINDOW = 600, 300.0, 20


async def test_backlog_is_replayed_at_most_at_replay_rate_state_goes_first(
        broker: LocalBroker, tmp_path: Path) -> None:
    outbox = Outbox.open(tmp_path / "b.sqlite")
    outbox.put_retained("p1", STATE, b"state-1")
    rows = []
    for _ in range(N):
        seq = outbox.next_seq("p1", "telemetry")
        rows.append(OutboxRow("p1", "telemetry", seq, TELEMETRY, b"%d" % seq))
    outbox.add_many(rows)
    await outbox.flush()
    publisher = Publisher(outbox, "127.0.0.1", broker.port, "pc-rate", STATUS,
                          max_inflight=WINDOW, replay_rate=RATE)
    with Subscriber("127.0.0.1", broker.port, [f"{ROOT}/#"]) as sub:
        task = asyncio.create_task(publisher.run())
        try:
            # a state change once a quarter of the backlog is through
            await sub.wait_for(lambda m: sum(x.topic == REPLAY for x in m) >= N // 4, 30)
            outbox.put_retained("p1", STATE, b"state-2")
            msgs = await sub.wait_for(lambda m: sum(x.topic == REPLAY for x in m) >= N, 30)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    outbox.close()
    backlog = [m for m in msgs if m.topic == REPLAY]
    assert [int(m.payload) for m in backlog] == list(range(1, N + 1))
    # status and the retained state came first, before any backlog row
    assert [(m.topic, m.payload) for m in msgs[:2]] == [(STATUS, b"online"), (STATE, b"state-1")]
    # the state change overtook the rest of the backlog (published at once, not queued)
    i_state2 = next(i for i, m in enumerate(msgs) if m.payload == b"state-2")
    after = sum(m.topic == REPLAY for m in msgs[i_state2:])
    assert after > N // 4, f"state-2 arrived behind the backlog ({after} rows after it)"
    # the throttle: one window may go as a burst, the rest at <= RATE msgs/s
    elapsed = backlog[-1].at - backlog[0].at
    floor = (N - WINDOW) / RATE
    assert elapsed >= floor * 0.7, f"{N} rows in {elapsed:.2f} s: faster than {RATE}/s"
    assert publisher.stats()["throttled"] > 0
    print(f"\nreplay: {N} rows at replay_rate {RATE:.0f}/s took {elapsed:.2f} s "
          f"(floor {floor:.2f} s); state-2 overtook {after} rows")
