"""Publisher against a real Mosquitto: order, acks, outage, retained state, last will."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from buffer.store import Outbox, OutboxRow
from collector.publisher import Publisher
from sim.local_broker import LocalBroker
from tests.support.subscriber import Received, Subscriber

ROOT = "plant/test"
STATUS = f"{ROOT}/_collector/host1/status"
REPO = Path(__file__).resolve().parents[1]


def seq_of(msg: Received) -> int:
    return int(msg.payload.split(b":", 1)[0])


def make_rows(outbox: Outbox, press: str, n: int, stream: str = "events",
              size: int = 0) -> list[OutboxRow]:
    rows = []
    for _ in range(n):
        seq = outbox.next_seq(press, stream)
        rows.append(OutboxRow(press, stream, seq, f"{ROOT}/{press}/{stream}",
                              b"%d:" % seq + b"x" * size, durable=stream == "events"))
    return rows


@contextlib.asynccontextmanager
async def running(publisher: Publisher) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(publisher.run())
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def check_stream(msgs: list[Received], topic: str, n: int) -> int:
    """Every seq 1..n, first copies in order without gaps; returns the duplicate count."""
    seen: set[int] = set()
    top = 0
    dups = 0
    for m in msgs:
        if m.topic != topic:
            continue
        s = seq_of(m)
        if s in seen:
            dups += 1
            continue
        assert s == top + 1, f"{topic}: got seq {s} after {top}"
        seen.add(s)
        top = s
    assert top == n, f"{topic}: last seq {top}, expected {n}"
    return dups


async def test_drains_5000_rows_in_order_acked_and_marked_delivered(
        broker: LocalBroker, tmp_path: Path) -> None:
    outbox = Outbox.open(tmp_path / "b.sqlite")
    with Subscriber("127.0.0.1", broker.port, [f"{ROOT}/#"]) as sub:
        outbox.add_many(make_rows(outbox, "p1", 2500) + make_rows(outbox, "p2", 2500))
        await outbox.flush()
        publisher = Publisher(outbox, "127.0.0.1", broker.port, "pc-test-1", STATUS,
                              max_inflight=50)
        async with running(publisher):
            assert await publisher.drain(30)
            await sub.wait_for(lambda m: len(m) >= 5001, 30)
            st = publisher.stats()
            assert st["published"] == st["acked"] == 5000
            assert st["inflight"] == 0 and st["connected"] and st["reconnects"] == 0
        msgs = sub.snapshot()
        assert check_stream(msgs, f"{ROOT}/p1/events", 2500) == 0
        assert check_stream(msgs, f"{ROOT}/p2/events", 2500) == 0
        status = [m.payload for m in msgs if m.topic == STATUS]
        assert status[0] == b"online"
        await sub.wait_for(lambda m: m[-1].topic == STATUS and m[-1].payload == b"offline", 5)
    await outbox.flush()
    assert outbox.pending() == []
    assert outbox.stats()["pending"] == 0 and outbox.stats()["rows"] == 5000
    outbox.close()


async def test_live_drain_takes_the_rows_from_the_commit_notices(
        broker: LocalBroker, tmp_path: Path) -> None:
    """Connected and caught up, the publisher sends what each commit's notice carried
    (collector/fresh_rows.py) instead of reading those rows back from SQLite; order,
    acks and delivery marks are the same."""
    outbox = Outbox.open(tmp_path / "b.sqlite", commit_interval_s=0.005)
    from_sqlite: list[int] = []
    real_pending = outbox.pending

    def counting_pending(after_id: int = 0, limit: int = 1000) -> list[tuple[int, str, bytes]]:
        rows = real_pending(after_id, limit)
        from_sqlite.extend(r[0] for r in rows)
        return rows

    outbox.pending = counting_pending  # type: ignore[method-assign]
    publisher = Publisher(outbox, "127.0.0.1", broker.port, "pc-test-fresh", STATUS,
                          max_inflight=50)
    n = 0
    with Subscriber("127.0.0.1", broker.port, [f"{ROOT}/#"]) as sub:
        async with running(publisher):
            await sub.wait_for(lambda m: any(x.topic == STATUS for x in m), 10)
            for _ in range(100):
                rows = make_rows(outbox, "p1", 10)
                outbox.add_many(rows)
                n += len(rows)
                await outbox.flush()
            assert await publisher.drain(30)
            await sub.wait_for(lambda m: sum(x.topic == f"{ROOT}/p1/events"
                                             for x in m) >= n, 30)
            st = publisher.stats()
        msgs = sub.snapshot()
    assert check_stream(msgs, f"{ROOT}/p1/events", n) == 0
    assert st["published"] == st["acked"] == n
    # a notice can lag the commit it reports (then SQLite is read): most come from memory
    assert len(from_sqlite) < n // 4, f"{len(from_sqlite)} of {n} rows read back"
    await outbox.flush()
    assert real_pending() == [] and outbox.stats()["pending"] == 0
    outbox.close()


async def test_broker_outage_mid_stream_loses_nothing_and_keeps_order(
        broker: LocalBroker, tmp_path: Path) -> None:
    outbox = Outbox.open(tmp_path / "b.sqlite", commit_interval_s=0.02)
    # The subscriber (reconnect delay <= 0.5 s) is back before the publisher (1.5 s):
    # Mosquitto 2.0.11 can stall a persistent session whose queue it restored from disk
    # (see sim/local_broker.py), and this test is about the publisher, not that bug.
    publisher = Publisher(outbox, "127.0.0.1", broker.port, "pc-test-2", STATUS,
                          max_inflight=100, reconnect_min_s=1.5, reconnect_max_s=1.5)
    presses = ("p1", "p2", "p3")
    produced = dict.fromkeys(presses, 0)

    async def produce(seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            for p in presses:
                rows = make_rows(outbox, p, 4, size=60)
                outbox.add_many(rows)
                produced[p] += len(rows)
            await asyncio.sleep(0.005)

    with Subscriber("127.0.0.1", broker.port, [f"{ROOT}/+/events"],
                    client_id="test-sub-outage") as sub:
        async with running(publisher):
            await produce(0.6)
            broker.stop()  # SIGTERM: Mosquitto saves sessions and queued messages
            down_at = time.monotonic()
            await produce(2.0)  # production goes on: rows wait on disk
            assert not publisher.connected
            backlog = outbox.pending_count()
            assert backlog > 0
            broker.start()
            down_s = time.monotonic() - down_at
            await sub.wait_for(lambda m: sub.connects >= 2, 10)
            await produce(0.5)
            await outbox.flush()
            assert await publisher.drain(30)
            total = sum(produced.values())
            await sub.wait_for(lambda m: len({(x.topic, x.payload) for x in m}) >= total, 30)
            st = publisher.stats()
        msgs = sub.snapshot()
    dups = sum(check_stream(msgs, f"{ROOT}/{p}/events", produced[p]) for p in presses)
    # only messages in flight at the disconnect (ours to the broker, the broker's to the
    # subscriber) may come twice
    print(f"\noutage: {total} messages, backlog {backlog} at restart "
          f"(broker down {down_s:.1f} s), {dups} duplicates, "
          f"{st['reconnects']} reconnects, {st['connect_failures']} failed attempts")
    assert dups <= 2 * publisher.max_inflight
    assert st["reconnects"] >= 1 and st["acked"] >= total
    await outbox.flush()
    assert outbox.stats()["pending"] == 0
    outbox.close()


async def test_after_an_outage_live_telemetry_goes_first_backlog_replays_in_order(
        broker: LocalBroker, tmp_path: Path) -> None:
    """Two lanes: telemetry committed after the reconnect is published at once on its
    topic while the throttled backlog replays on ``/telemetry/replay``; events keep one
    ordered lane; every telemetry seq arrives across the two topics."""
    outbox = Outbox.open(tmp_path / "b.sqlite", commit_interval_s=0.01)
    publisher = Publisher(outbox, "127.0.0.1", broker.port, "pc-test-lanes", STATUS,
                          max_inflight=50, reconnect_min_s=1.5, reconnect_max_s=1.5,
                          replay_rate=1000)
    live_topic, replay_topic = f"{ROOT}/p1/telemetry", f"{ROOT}/p1/telemetry/replay"
    events_topic = f"{ROOT}/p1/events"

    def produce(telemetry: int, events: int) -> None:
        for _ in range(events):
            outbox.add_many(make_rows(outbox, "p1", telemetry // events, stream="telemetry",
                                      size=40) + make_rows(outbox, "p1", 1))

    with Subscriber("127.0.0.1", broker.port, [f"{ROOT}/p1/#"],
                    client_id="test-sub-lanes") as sub:
        async with running(publisher):
            produce(100, 10)
            await outbox.flush()
            await sub.wait_for(lambda m: sum(x.topic == events_topic for x in m) >= 10, 10)
            before_top = outbox.last_seq("p1", "telemetry")
            broker.stop()
            produce(3000, 100)  # the backlog: 3 s of replay at 1,000 msgs/s
            await outbox.flush()
            backlog_top = outbox.last_seq("p1", "telemetry")
            broker.start()
            # the publisher is back once the replay of the outage has begun
            await sub.wait_for(lambda m: any(x.topic == replay_topic and seq_of(x) > before_top
                                             for x in m), 15)
            produce(20, 2)
            await outbox.flush()
            got = await sub.wait_for(lambda m: any(
                x.topic == live_topic and seq_of(x) > backlog_top for x in m), 10)
            replayed_then = {seq_of(x) for x in got if x.topic == replay_topic}
            assert len(replayed_then) < 3000, "live telemetry waited for the whole backlog"
            assert await publisher.drain(30)
            total_t, total_e = outbox.last_seq("p1", "telemetry"), outbox.last_seq("p1", "events")
            await sub.wait_for(lambda m: len({(x.topic, x.payload) for x in m})
                               >= total_t + total_e, 15)
            st = publisher.stats()
        msgs = sub.snapshot()
    assert check_stream(msgs, events_topic, total_e) <= 2 * publisher.max_inflight
    seen: dict[int, int] = {}
    for topic in (live_topic, replay_topic):
        seqs = [seq_of(m) for m in msgs if m.topic == topic]
        firsts = list(dict.fromkeys(seqs))
        assert firsts == sorted(firsts), f"{topic} out of seq order"
        for s in seqs:
            seen[s] = seen.get(s, 0) + 1
    assert sorted(seen) == list(range(1, total_t + 1))  # every seq, on one topic or both
    assert sum(n - 1 for n in seen.values()) <= 2 * publisher.max_inflight
    assert st["replayed"] >= 2900 and st["throttled"] > 0
    await outbox.flush()
    assert outbox.stats()["pending"] == 0
    outbox.close()


async def test_retained_state_is_prompt_and_visible_to_a_late_subscriber(
        broker: LocalBroker, tmp_path: Path) -> None:
    outbox = Outbox.open(tmp_path / "b.sqlite")
    state_topic = f"{ROOT}/p1/state"
    outbox.put_retained("p1", state_topic, b"state-1")
    # a backlog long enough to be still draining when state-2 comes back (3,000 rows
    # were, before collector/mqtt_loop.py made the drain ~3x faster)
    outbox.add_many(make_rows(outbox, "p1", 20000, stream="telemetry", size=200))
    await outbox.flush()
    publisher = Publisher(outbox, "127.0.0.1", broker.port, "pc-test-3", STATUS,
                          max_inflight=20)
    with Subscriber("127.0.0.1", broker.port, [f"{ROOT}/#"]) as sub:
        async with running(publisher):
            await sub.wait_for(lambda m: any(x.topic == state_topic for x in m), 10)
            # a state change while the backlog drains is published ahead of it
            outbox.put_retained("p1", state_topic, b"state-2")
            await sub.wait_for(lambda m: any(x.payload == b"state-2" for x in m), 10)
            assert publisher.outbox.pending_count() > 0, "backlog drained before the state"
            assert await publisher.drain(30)
            msgs = sub.snapshot()
            order = [x.payload for x in msgs if x.topic == STATUS or x.topic == state_topic]
            assert order[:2] == [b"online", b"state-1"]  # birth, retained, then the backlog
            assert msgs[1].topic == state_topic
            with Subscriber("127.0.0.1", broker.port, [state_topic, STATUS]) as late:
                got = await late.wait_for(lambda m: len(m) >= 2, 5)
                assert {(m.topic, m.payload, m.retain) for m in got} == {
                    (state_topic, b"state-2", True), (STATUS, b"online", True)}
    outbox.close()


async def test_last_will_offline_when_the_publisher_process_is_killed(
        broker: LocalBroker, tmp_path: Path) -> None:
    db = tmp_path / "b.sqlite"
    with Outbox.open(db) as outbox:
        outbox.add_many(make_rows(outbox, "p1", 10))
    with Subscriber("127.0.0.1", broker.port, [STATUS, f"{ROOT}/p1/events"]) as sub:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        proc = subprocess.Popen([sys.executable, "-m", "tests.support.publisher_proc", str(db),
                                 str(broker.port), "pc-test-4", STATUS], cwd=REPO, env=env)
        try:
            await sub.wait_for(lambda m: sum(x.topic != STATUS for x in m) >= 10
                               and any(x.payload == b"online" for x in m), 15)
            proc.send_signal(signal.SIGKILL)
            proc.wait(5)
            got = await sub.wait_for(lambda m: m[-1].payload == b"offline", 10)
            assert got[-1].topic == STATUS
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    with Subscriber("127.0.0.1", broker.port, [STATUS]) as late:
        got = await late.wait_for(lambda m: len(m) >= 1, 5)
        assert (got[0].payload, got[0].retain) == (b"offline", True)


async def test_starts_with_broker_down_and_delivers_when_it_comes(tmp_path: Path) -> None:
    b = LocalBroker(port=0, data_dir=tmp_path / "mq")
    outbox = Outbox.open(tmp_path / "b.sqlite")
    outbox.add_many(make_rows(outbox, "p1", 100))
    publisher = Publisher(outbox, "127.0.0.1", b.port, "pc-test-5", STATUS,
                          reconnect_min_s=0.05, reconnect_max_s=0.2)
    try:
        async with running(publisher):
            async with asyncio.timeout(10):  # until it has been refused twice (backoff)
                while publisher.stats()["connect_failures"] < 2:
                    await asyncio.sleep(0.02)
            st = publisher.stats()
            assert not st["connected"] and st["connect_failures"] >= 2
            assert "refused" in (st["last_error"] or "").lower()
            b.start()
            assert await publisher.drain(10)
            assert publisher.stats()["acked"] == 100
    finally:
        b.stop()
        outbox.close()


async def test_rate_outbox_to_subscriber(broker: LocalBroker, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    """Figure only (no timed assertion): 20,000 small messages end to end."""
    n = 20_000
    outbox = Outbox.open(tmp_path / "b.sqlite")
    publisher = Publisher(outbox, "127.0.0.1", broker.port, "pc-test-6", STATUS)
    topic = f"{ROOT}/p1/telemetry"
    external = shutil.which("mosquitto_sub")
    sub: Subscriber | None = None
    proc = None
    if external:  # a subscriber in another process, as downstream would be
        proc = subprocess.Popen([external, "-p", str(broker.port), "-t", topic, "-q", "1",
                                 "-C", str(n), "-i", "rate-sub"], stdout=subprocess.DEVNULL)
        await asyncio.sleep(0.3)
    else:
        sub = Subscriber("127.0.0.1", broker.port, [topic]).start()
    try:
        async with running(publisher):
            started = time.perf_counter()
            for i in range(0, n, 100):  # a producer adding rows while the publisher drains
                outbox.add_many(make_rows(outbox, "p1", 100, stream="telemetry", size=80))
                if i % 1000 == 0:
                    await asyncio.sleep(0)
            if proc is not None:
                await asyncio.wait_for(asyncio.to_thread(proc.wait), 60)
            else:
                assert sub is not None
                await sub.wait_for(lambda m: len(m) >= n, 60)
            elapsed = time.perf_counter() - started
    finally:
        if sub is not None:
            sub.stop()
        if proc is not None and proc.poll() is None:
            proc.kill()
        outbox.close()
    with capsys.disabled():
        print(f"\nrate: {n} x ~90 B, outbox -> publisher -> mosquitto -> "
              f"{'mosquitto_sub' if external else 'paho subscriber'}: "
              f"{n / elapsed:,.0f} msgs/s ({elapsed:.2f} s)")
