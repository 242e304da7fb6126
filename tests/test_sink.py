"""The central consumer (``press-collector sink``, issue 15) against the machine's
PostgreSQL (a database of its own per module) and a real Mosquitto.

Proves: decode refuses what is not the contract (and counts it); the store writes each
(host, press, stream, seq) once, counts redeliveries as duplicates and a reused seq as a
conflict; the gaps view finds holes; two sinks on one shared-subscription group split the
stream without writing a message twice; nothing is acknowledged before it is committed
(a sink killed while its transaction waits loses nothing); a dropped database connection
is retried; a daemon's whole output (events, live and replayed telemetry, state, status)
lands with no gap.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest

psycopg = pytest.importorskip("psycopg", reason="the sink extra (psycopg 3) is missing: "
                              "pip install -e '.[sink]' (scripts/setup does)")

from collector import messages  # noqa: E402
from sim.local_broker import LocalBroker  # noqa: E402
from sink.consumer import Sink, SinkSettings  # noqa: E402
from sink.decode import Latest, Refused, Row, decode  # noqa: E402
from sink.store import Store, migrate  # noqa: E402
from tests.support.line import BRK100_PASS, Line, wait_gauges_online  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def telemetry(seq: int, host: str = "lpc-1", press: str = "p1", ts: float | None = None,
              **values: Any) -> bytes:
    return messages.encode_telemetry(press, seq, time.time() if ts is None else ts, host,
                                     values or {"strokes": seq}, {}, {"state": "released"})


def rows_of(*payloads: bytes, topic: str = "r/p1/telemetry") -> list[Row]:
    out = [decode(topic, p) for p in payloads]
    assert all(isinstance(r, Row) for r in out), out
    return out  # type: ignore[return-value]


@pytest.fixture
def db(pg_dsn: str):
    """The module's database, migrated and emptied for each test."""
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        migrate(conn)
        conn.execute("TRUNCATE record, quarantine, press_state, collector_status")
        yield conn


# -- decode (pure) ---------------------------------------------------------------------------
def test_decode_takes_the_contract_and_refuses_everything_else() -> None:
    row = decode("r/p1/telemetry/replay", telemetry(7))
    assert isinstance(row, Row)
    assert (row.key, row.kind, row.lane, row.schema_version) == (
        ("lpc-1", "p1", "telemetry", 7), "telemetry", "replay", 1)
    assert decode("r/p1/telemetry", telemetry(7)).lane == "live"  # type: ignore[union-attr]
    state = decode("r/p1/state", messages.encode_state("p1", time.time(), "lpc-1", "hold",
                                                       True, {}))
    assert isinstance(state, Latest) and (state.what, state.value) == ("state", "hold")
    status = decode("r/_collector/lpc-1/status", messages.encode_status("lpc-1", False))
    assert isinstance(status, Latest) and (status.host, status.value) == ("lpc-1", "offline")

    good = orjson.loads(telemetry(3))
    cases = {
        b"not json": "not JSON",
        b"[1]": "not a JSON object",
        orjson.dumps({**good, "schema": "other/telemetry"}): "is not press-collector/",
        orjson.dumps({**good, "schema_version": 2}): "schema_version 2 not supported",
        orjson.dumps({**good, "schema_version": "2.1"}): "schema_version 2 not supported",
        orjson.dumps({**good, "schema_version": "one"}): "is not a version",
        orjson.dumps({**good, "seq": 0}): "seq 0 is not an integer >= 1",
        orjson.dumps({**good, "seq": True}): "is not an integer",
        orjson.dumps({**good, "stream": "other"}): "is not events or telemetry",
        orjson.dumps({**good, "id": "x"}): "is not 32 hex digits",
        orjson.dumps({**good, "ts": "yesterday"}): "is not an ISO 8601 time",
        orjson.dumps({**good, "host": ""}): "host missing",
        orjson.dumps({**good, "data": []}): "context or data is not an object",
    }
    for payload, reason in cases.items():
        got = decode("r/p1/telemetry", payload)
        assert isinstance(got, Refused) and reason in got.reason, (payload, got)
        assert got.payload == payload
    # a minor version of the same major is read (compatible additions)
    assert isinstance(decode("r/p1/telemetry", orjson.dumps({**good, "schema_version": "1.3",
                                                             "extra": 1})), Row)


# -- the store ------------------------------------------------------------------------------
def test_migrations_apply_once_even_with_two_sinks_starting_together(pg_dsn: str, db) -> None:
    results: list[list[str]] = []

    def start() -> None:
        with psycopg.connect(pg_dsn) as conn:
            results.append(migrate(conn))

    threads = [threading.Thread(target=start) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [[], []]  # the fixture applied them; nobody applies twice
    versions = db.execute("SELECT version, name FROM sink_migration").fetchall()
    assert versions == [(1, "001_records.sql")]


def test_store_writes_each_key_once_counts_duplicates_and_conflicts(pg_dsn: str, db) -> None:
    store = Store.connect(pg_dsn, "test-sink")
    try:
        first = rows_of(*(telemetry(s) for s in (1, 2, 3)))
        w = store.write(first, [], [])
        assert (w.inserted, w.duplicates, w.conflicts) == (3, 0, 0)
        # a redelivered batch (same ids) plus one new row, and a repeat inside the batch
        w = store.write(first[1:] + rows_of(telemetry(4)) + first[2:], [], [])
        assert (w.inserted, w.duplicates, w.conflicts) == (1, 3, 0)
        # seq 2 again with another id: a reused seq, never silently taken for a duplicate
        w = store.write(rows_of(telemetry(2)), [], [])
        assert (w.inserted, w.duplicates, w.conflicts, w.quarantined) == (0, 0, 1, 1)
        reason = db.execute("SELECT reason FROM quarantine").fetchone()[0]
        assert "seq 2 of lpc-1/p1/telemetry reused" in reason
        assert db.execute("SELECT count(*) FROM record").fetchone()[0] == 4
        assert db.execute("SELECT id::text FROM record WHERE seq = 2").fetchone()[0] \
            == first[1].id[:8] + "-" + first[1].id[8:12] + "-" + first[1].id[12:16] + "-" \
            + first[1].id[16:20] + "-" + first[1].id[20:]
    finally:
        store.close()


def test_a_row_postgresql_refuses_is_quarantined_and_the_rest_of_the_batch_stored(
        pg_dsn: str, db) -> None:
    store = Store.connect(pg_dsn, "test-sink")
    try:
        bad = telemetry(2, note="a\u0000b")  # JSON allows NUL in a string, jsonb does not
        w = store.write(rows_of(telemetry(1), bad, telemetry(3)), [], [])
        assert (w.inserted, w.quarantined) == (2, 1)
        assert "database refused the row" in w.row_errors[0]
        assert [s for (s,) in db.execute("SELECT seq FROM record ORDER BY seq")] == [1, 3]
        topic, payload = db.execute("SELECT topic, payload FROM quarantine").fetchone()
        assert topic == "lpc-1/p1/telemetry/2" and b"a\\u0000b" in payload
    finally:
        store.close()


def test_gaps_view_reports_holes_per_host_press_and_stream(pg_dsn: str, db) -> None:
    store = Store.connect(pg_dsn, "test-sink")
    try:
        store.write(rows_of(*(telemetry(s) for s in (1, 2, 5, 6, 9)))
                    + rows_of(*(telemetry(s, press="p2") for s in (3, 4)), topic="r/p2/telemetry")
                    + rows_of(*(telemetry(s, host="lpc-2") for s in (1, 2, 3))), [], [])
        gaps = db.execute("SELECT host, press, stream, first_missing, last_missing, missing "
                          "FROM gaps ORDER BY host, press, first_missing").fetchall()
        assert gaps == [("lpc-1", "p1", "telemetry", 3, 4, 2),
                        ("lpc-1", "p1", "telemetry", 7, 8, 2),
                        ("lpc-1", "p2", "telemetry", 1, 2, 2)]
        assert store.gap_summary() == [("lpc-1", "p1", "telemetry", 2, 4),
                                       ("lpc-1", "p2", "telemetry", 1, 2)]
        progress = db.execute("SELECT host, press, rows, last_seq, missing FROM stream_progress "
                              "ORDER BY host, press").fetchall()
        assert progress == [("lpc-1", "p1", 5, 9, 4), ("lpc-1", "p2", 2, 4, 2),
                            ("lpc-2", "p1", 3, 3, 0)]
    finally:
        store.close()


def test_two_writers_on_the_same_keys_at_once_store_each_once(pg_dsn: str, db) -> None:
    """The second line of defence: two sinks handed the same messages (redelivery) write
    them at the same moment; ON CONFLICT DO NOTHING waits for the other transaction."""
    rows = rows_of(*(telemetry(s) for s in range(1, 2001)))
    results = []
    barrier = threading.Barrier(2)

    def write(name: str) -> None:
        store = Store.connect(pg_dsn, name)
        barrier.wait()
        results.append(store.write(rows, [], []))
        store.close()

    threads = [threading.Thread(target=write, args=(n,)) for n in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(w.inserted for w in results) == 2000
    assert sum(w.duplicates for w in results) == 2000
    assert db.execute("SELECT count(*) FROM record").fetchone()[0] == 2000


# -- the sink with a broker -----------------------------------------------------------------
def publisher(broker: LocalBroker) -> Any:
    import paho.mqtt.client as mqtt

    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"pub-{uuid.uuid4().hex[:6]}")
    c.connect("127.0.0.1", broker.port)
    c.loop_start()
    return c


def publish_all(client: Any, items: list[tuple[str, bytes]]) -> None:
    infos = [client.publish(t, p, qos=1) for t, p in items]
    for info in infos:
        info.wait_for_publish(10)


def wait_rows(db: Any, n: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while (count := db.execute("SELECT count(*) FROM record").fetchone()[0]) < n:
        assert time.monotonic() < deadline, f"{count} of {n} rows stored"
        time.sleep(0.05)


def run_sink(settings: SinkSettings) -> tuple[Sink, threading.Event, threading.Thread]:
    sink = Sink(settings)
    stop = threading.Event()
    thread = threading.Thread(target=sink.run, args=(stop,), daemon=True)
    thread.start()
    assert sink.subscribed.wait(15)
    return sink, stop, thread


def test_two_sinks_in_one_group_split_the_stream_without_double_writes(
        pg_dsn: str, db, broker: LocalBroker) -> None:
    root = f"s{uuid.uuid4().hex[:6]}"
    sinks = [run_sink(SinkSettings("127.0.0.1", broker.port, (root,), pg_dsn, f"sink-{i}",
                                   group="quality", batch_max=50, gaps_every_s=0))
             for i in range(2)]
    pub = publisher(broker)
    try:
        n = 3000
        publish_all(pub, [(f"{root}/p{1 + s % 3}/telemetry", telemetry(1 + s // 3,
                                                                       press=f"p{1 + s % 3}"))
                          for s in range(n)])
        wait_rows(db, n)
        by = dict(db.execute("SELECT consumer, count(*) FROM record GROUP BY consumer"))
        assert set(by) == {"sink-0", "sink-1"} and sum(by.values()) == n  # both wrote
        stats = [s.stats for s, _, _ in sinks]
        # each message went to one member: no write of a stored key at all
        assert sum(st.received for st in stats) == n
        assert sum(st.duplicates for st in stats) == 0
        assert db.execute("SELECT count(*) FROM gaps").fetchone()[0] == 0
    finally:
        pub.loop_stop()
        for _, stop, thread in sinks:
            stop.set()
            thread.join(10)


def spawn_sink(pg_dsn: str, broker: LocalBroker, root: str, client_id: str, log: Path,
               group: str = "g") -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "collector.cli", "sink", "--broker",
             f"127.0.0.1:{broker.port}", "--root", root, "--dsn", pg_dsn, "--group", group,
             "--client-id", client_id, "--batch-max", "100", "--stats-every", "1"],
            cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)


def sink_backend_waiting(db: Any) -> bool:
    return db.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE "
                      "'press-collector-sink%%' AND wait_event_type = 'Lock'").fetchone()[0] > 0


def test_nothing_is_acknowledged_before_commit_kill_and_db_drop_lose_nothing(
        pg_dsn: str, db, broker: LocalBroker, tmp_path: Path) -> None:
    """The sink's transaction is held on a lock, the sink SIGKILLed while it waits: had it
    acknowledged those messages, they would be gone. Restarted, it gets them again and
    stores them; then its database connection is terminated mid-stream and it retries."""
    root = f"k{uuid.uuid4().hex[:6]}"
    log = tmp_path / "sink.log"
    proc = spawn_sink(pg_dsn, broker, root, "sink-k", log)
    pub = publisher(broker)
    try:
        deadline = time.monotonic() + 20
        while "sink: subscribed" not in log.read_text():  # its session exists from here
            assert time.monotonic() < deadline and proc.poll() is None, log.read_text()
            time.sleep(0.05)
        publish_all(pub, [(f"{root}/p1/telemetry", telemetry(1))])
        wait_rows(db, 1)
        with psycopg.connect(pg_dsn) as locker:
            locker.execute("LOCK TABLE record IN ACCESS EXCLUSIVE MODE")
            publish_all(pub, [(f"{root}/p1/telemetry", telemetry(s)) for s in range(2, 51)])
            deadline = time.monotonic() + 15
            while not sink_backend_waiting(db):
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.05)
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            locker.rollback()
        assert db.execute("SELECT count(*) FROM record").fetchone()[0] == 1
        proc = spawn_sink(pg_dsn, broker, root, "sink-k", log)  # same session
        wait_rows(db, 50)

        # the database connection dropped under it: retried, not acknowledged meanwhile
        publish_all(pub, [(f"{root}/p1/telemetry", telemetry(s)) for s in range(51, 101)])
        db.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                   "WHERE application_name LIKE 'press-collector-sink%%'")
        publish_all(pub, [(f"{root}/p1/telemetry", telemetry(s)) for s in range(101, 151)])
        wait_rows(db, 150)
        assert db.execute("SELECT count(*) FROM gaps").fetchone()[0] == 0
        # a message of a future major version: quarantined, counted, acknowledged
        future = orjson.dumps({**orjson.loads(telemetry(151)), "schema_version": 2})
        publish_all(pub, [(f"{root}/p1/telemetry", future)])
        deadline = time.monotonic() + 15
        while db.execute("SELECT count(*) FROM quarantine").fetchone()[0] < 1:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert "schema_version 2 not supported" in db.execute(
            "SELECT reason FROM quarantine").fetchone()[0]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
        text = log.read_text()
        assert "database write failed" in text or "cannot connect" in text
        assert "quarantined 1" in text.splitlines()[-1]
    finally:
        pub.loop_stop()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


async def test_a_daemons_whole_output_lands_with_no_gap(pg_dsn: str, db, broker: LocalBroker,
                                                        tmp_path: Path) -> None:
    """A real daemon (press p1 with gauges), a broker outage that makes it replay, and a
    sink: every committed event and telemetry row is stored once, live and replay lanes
    merged, the press state and the collector status kept up to date."""
    line = Line(tmp_path, broker, presses=("p1",), broker_settings={
        "reconnect_max_s": 1.0, "max_inflight": 10})
    await line.start()
    sink, stop, thread = run_sink(SinkSettings(
        "127.0.0.1", broker.port, ("demo-plant/press-shop",), pg_dsn, "sink-line",
        batch_max=200, gaps_every_s=0))
    try:
        assert line.daemon is not None and line.daemon.outbox is not None
        outbox = line.daemon.outbox
        await line.wait_event("p1", "setup")
        await wait_gauges_online(line, "p1")
        broker.stop()
        for gauge, value in BRK100_PASS:
            line.measure("p1", gauge, value)
        deadline = time.monotonic() + 20
        while outbox.pending_count() < 30:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        broker.start()
        await line.wait_event("p1", "state_change", to="released", timeout=30)
        await line.stop_daemon()  # graceful: drained, status offline
        last = {s: outbox.last_seq("p1", s) for s in ("events", "telemetry")}
        await asyncio.to_thread(wait_rows, db, sum(last.values()))
        got = dict(db.execute("SELECT stream, max(seq) FROM record GROUP BY stream"))
        assert got == last
        assert db.execute("SELECT count(*) FROM gaps").fetchone()[0] == 0
        lanes = dict(db.execute("SELECT lane, count(*) FROM telemetry GROUP BY lane"))
        assert lanes.get("replay", 0) > 0 and lanes["live"] > 0
        assert db.execute("SELECT kind FROM events WHERE kind = 'first_article'").fetchone()
        deadline = time.monotonic() + 15
        while db.execute("SELECT status FROM collector_status").fetchone() != ("offline",):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        assert db.execute("SELECT state FROM press_state WHERE press = 'p1'").fetchone() \
            == ("released",)
        assert sink.stats.quarantined == 0 and sink.stats.conflicts == 0
    finally:
        stop.set()
        thread.join(10)
        await line.close()


def test_mosquitto_2_0_keeps_plain_but_not_shared_subscriptions_over_a_restart(
        pg_dsn: str, db, broker: LocalBroker) -> None:
    """Why sinks on Mosquitto 2.0 split the plant by topic root rather than by a shared
    group (docs/brokers.md): two sinks, one on a shared group, one plain, both with
    persistent sessions and both away; the broker restarts (SIGTERM, persistence on) and
    messages are published before they come back. The plain one gets them; the group
    member does not (Mosquitto restored its session, not its shared subscription)."""
    shared_root, plain_root = f"sh{uuid.uuid4().hex[:6]}", f"pl{uuid.uuid4().hex[:6]}"
    sinks = {"shared": run_sink(SinkSettings("127.0.0.1", broker.port, (shared_root,), pg_dsn,
                                             "sink-shared", group="g", gaps_every_s=0)),
             "plain": run_sink(SinkSettings("127.0.0.1", broker.port, (plain_root,), pg_dsn,
                                            "sink-plain", gaps_every_s=0))}
    pub = publisher(broker)
    publish_all(pub, [(f"{r}/p1/telemetry", telemetry(1, host=r))
                      for r in (shared_root, plain_root)])
    wait_rows(db, 2)
    for _, stop, thread in sinks.values():
        stop.set()
        thread.join(10)
    pub.loop_stop()
    broker.restart()
    pub = publisher(broker)
    publish_all(pub, [(f"{r}/p1/telemetry", telemetry(s, host=r))
                      for s in (2, 3) for r in (shared_root, plain_root)])
    sinks = {"shared": run_sink(SinkSettings("127.0.0.1", broker.port, (shared_root,), pg_dsn,
                                             "sink-shared", group="g", gaps_every_s=0)),
             "plain": run_sink(SinkSettings("127.0.0.1", broker.port, (plain_root,), pg_dsn,
                                            "sink-plain", gaps_every_s=0))}
    try:
        wait_rows(db, 4)
        # a marker through the group once both are back: all the group gets from now on
        publish_all(pub, [(f"{shared_root}/p1/telemetry", telemetry(4, host=shared_root))])
        wait_rows(db, 5)
        stored = dict(db.execute("SELECT host, array_agg(seq ORDER BY seq) FROM record "
                                 "GROUP BY host"))
        assert stored == {plain_root: [1, 2, 3], shared_root: [1, 4]}
        gaps = db.execute("SELECT host, first_missing, last_missing FROM gaps").fetchall()
        assert gaps == [(shared_root, 2, 3)]  # and the gaps view shows the loss
    finally:
        pub.loop_stop()
        for _, stop, thread in sinks.values():
            stop.set()
            thread.join(10)
