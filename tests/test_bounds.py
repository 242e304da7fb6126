"""Buffer bounds, quality records durable before the state shows them, clock jumps,
watchdog: the guarantees of docs/delivery.md that need no broker."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

import orjson
import pytest

from buffer.store import Committed, Outbox, OutboxRow
from collector.config import load_config, to_workflow_settings
from collector.daemon import Daemon, watchdog_loop
from collector.messages import Topics
from collector.press import PressRuntime
from collector.press_drivers import role_tags
from collector.streams import STREAMS
from drivers.base import GaugeValue, PollResult
from sim.demo import REPO_CONFIG

ROOT = "plant/test"


def rows(outbox: Outbox, press: str, stream: str, n: int, size: int, delivered: bool = False,
         ) -> list[OutboxRow]:
    out = []
    for _ in range(n):
        seq = outbox.next_seq(press, stream)
        out.append(OutboxRow(press, stream, seq, f"{ROOT}/{press}/{stream}", b"x" * size,
                             durable=stream == "events", delivered=delivered))
    return out


def test_size_bound_prunes_history_then_telemetry_never_quality_events(tmp_path: Path) -> None:
    outbox = Outbox.open(tmp_path / "b.sqlite", streams=STREAMS)  # the daemon's policies
    outbox.add_many(rows(outbox, "p1", "gauge", 300, 1000, delivered=True))  # history
    outbox.add_many(rows(outbox, "p1", "telemetry", 300, 1000))  # undelivered telemetry
    outbox.add_many(rows(outbox, "p1", "events", 300, 1000))  # undelivered quality events
    outbox.flush_sync()
    used = outbox.used_bytes()
    assert used > 900_000
    # room for roughly the events and half of the telemetry
    report = outbox.enforce_size(used - 450_000)
    assert report.history_deleted == 300 - 1 or report.history_deleted == 300
    assert 0 < report.telemetry_dropped < 300
    assert not report.quality_only
    st = outbox.stats()["streams"]
    assert st["p1/events"]["rows"] == 300 and st["p1/events"]["pending"] == 300
    kept = [r for r in outbox.pending(limit=10_000)]
    assert outbox.pending_count() == len(kept) == st["p1/events"]["pending"] + \
        st["p1/telemetry"].get("pending", 0)
    # the oldest telemetry went first: what is left is the newest, contiguous
    tele = [s for (s,) in outbox._rconn.execute(  # type: ignore[union-attr]
        "SELECT seq FROM messages WHERE stream='telemetry' ORDER BY seq")]
    assert tele == list(range(301 - len(tele), 301))
    # a bound that only the events exceed: nothing more to drop, the caller must alarm
    report = outbox.enforce_size(10_000)
    assert report.quality_only
    assert outbox.stats()["streams"]["p1/events"]["pending"] == 300
    assert outbox.last_seq("p1", "telemetry") == 300  # seq never goes back
    outbox.close()


async def test_buffer_full_of_quality_events_raises_an_alarm_and_keeps_them(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    config = load_config(REPO_CONFIG)
    col = config.collector
    col = col.model_copy(update={"buffer": col.buffer.model_copy(update={"max_mb": 1})})
    daemon = Daemon(config.model_copy(update={"collector": col}), bounds_every_s=0.01)
    outbox = daemon.outbox = Outbox.open(tmp_path / "b.sqlite", streams=STREAMS)
    outbox.add_many(rows(outbox, "p1", "events", 1500, 1000))
    outbox.flush_sync()
    topics = Topics(ROOT, "h1")
    task = asyncio.create_task(daemon._bounds_loop(topics))
    try:
        while not daemon.bounds.get("buffer_full"):
            await asyncio.sleep(0.01)
        await outbox.flush()
    finally:
        task.cancel()
    alarms = [orjson.loads(p) for _, t, p in outbox.pending(limit=10_000)
              if t == topics.alarm()]
    assert len(alarms) == 1  # raised once, not once per check
    assert alarms[0]["data"]["kind"] == "buffer_full" and alarms[0]["data"]["active"]
    assert alarms[0]["press"] == "_collector"
    assert outbox.stats()["streams"]["p1/events"]["pending"] == 1500  # none dropped
    assert any("only undelivered quality events are left; they are kept" in r.getMessage()
               for r in caplog.records)
    outbox.close()


def press_runtime(outbox: Outbox) -> PressRuntime:
    config = load_config(REPO_CONFIG)
    press = config.presses["p1"]
    return PressRuntime("p1", role_tags(press), to_workflow_settings(press.workflow),
                        config.plans, outbox, Topics(ROOT, "h1"))


def job_poll(ts: float, strokes: int) -> PollResult:
    return PollResult("p1/plc", ts, {"strokes": strokes, "die_id": 7, "part_number": "BRK-100",
                                     "material_lot": "L1", "setup_mode": False,
                                     "running": True, "spm": 60})


def test_first_article_row_is_fsynced_in_the_commit_that_shows_released(tmp_path: Path) -> None:
    outbox = Outbox.open(tmp_path / "b.sqlite", commit_interval_s=0.5)
    commits: list[Committed] = []
    outbox.add_listener(commits.append)
    runtime = press_runtime(outbox)
    t = time.time()
    runtime.sink(job_poll(t, 10))
    outbox.flush_sync()
    assert runtime.workflow.state == "awaiting_first_article"
    for i, (g, v) in enumerate([("g1", "25.010"), ("g2", "12.480"), ("g2", "0.020")]):
        runtime.sink(GaugeValue(g, t + 1 + i, v, "mm", channel=1))
    assert runtime.workflow.state == "released"
    # nothing visible yet: the state (what the publisher shows) waits for the commit
    retained = outbox.get_retained("p1")
    assert retained is not None and orjson.loads(retained[1])["state"] != "released"
    before = len(commits)
    outbox.flush_sync()
    released = [c for c in commits[before:] if "p1" in c.retained]
    assert released, "the retained state was committed"
    assert orjson.loads(outbox.get_retained("p1")[1])["state"] == "released"  # type: ignore[index]
    # ...in the same transaction as the first_article row, with synchronous=FULL
    commit = released[0]
    assert commit.durable
    fa_ids = [i for i, t_, _ in outbox.pending(limit=1000) if t_.endswith("/first_article")]
    assert fa_ids and commit.first_id <= fa_ids[0] <= commit.last_id  # type: ignore[operator]
    outbox.close()


def test_wall_clock_jumps_never_reorder_seq_or_stall_commits(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An NTP step of -1 h and +1 h in the middle of a stream: seq keeps counting by one,
    the group commit (monotonic) keeps committing, rows keep id order = seq order."""
    outbox = Outbox.open(tmp_path / "b.sqlite", commit_interval_s=0.01)
    runtime = press_runtime(outbox)
    offset = [0.0]
    real_time = time.time
    monkeypatch.setattr(time, "time", lambda: real_time() + offset[0])
    strokes = 10
    for jump in (0.0, -3600.0, +7200.0, -86400.0):
        offset[0] = jump
        for _ in range(20):
            strokes += 1
            runtime.sink(job_poll(time.time(), strokes))
        assert outbox.flush_sync(timeout=10), "commit scheduling depends on the wall clock"
    seqs = [orjson.loads(p)["seq"] for _, t, p in outbox.pending(limit=1000)
            if t.endswith("/telemetry")]
    assert seqs == list(range(1, 81))
    events = [orjson.loads(p)["seq"] for _, t, p in outbox.pending(limit=1000)
              if "/events/" in t]
    assert events == list(range(1, len(events) + 1))
    outbox.close()


async def test_watchdog_pings_systemd_from_the_event_loop(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "notify"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(str(path))
    server.setblocking(False)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    monkeypatch.setenv("WATCHDOG_USEC", "1500000")
    task = asyncio.create_task(watchdog_loop())
    try:
        loop = asyncio.get_running_loop()
        first = await asyncio.wait_for(loop.sock_recv(server, 64), 5)
        second = await asyncio.wait_for(loop.sock_recv(server, 64), 5)
    finally:
        task.cancel()
        server.close()
    assert first == second == b"WATCHDOG=1"




def test_size_bound_never_drops_command_replies(tmp_path: Path) -> None:
    """By the stream policies only telemetry is sheddable: undelivered command replies
    are kept like events (before the policies, every stream but events could go)."""
    outbox = Outbox.open(tmp_path / "b.sqlite", streams=STREAMS)
    outbox.add_many(rows(outbox, "p1", "cmd_result", 300, 1000))
    outbox.add_many(rows(outbox, "p1", "telemetry", 300, 1000))
    outbox.flush_sync()
    report = outbox.enforce_size(outbox.used_bytes() - 450_000)
    assert report.telemetry_dropped > 0
    assert outbox.stats()["streams"]["p1/cmd_result"]["rows"] == 300
    outbox.close()


def test_without_policies_the_buffer_drops_nothing(tmp_path: Path) -> None:
    """The buffer knows no stream by name: opened without policies it sheds nothing."""
    outbox = Outbox.open(tmp_path / "b.sqlite")
    outbox.add_many(rows(outbox, "p1", "telemetry", 300, 1000))
    outbox.flush_sync()
    report = outbox.enforce_size(10_000)
    assert report.telemetry_dropped == 0 and report.quality_only
    outbox.close()
