"""Fault test 5: the disk under the buffer fills up during a stream, then space comes back.

The daemon runs with its buffer on a small tmpfs (``mount -t tmpfs -o size=16m``, we are
root here). If mounting is not possible, the same test runs with SQLite's own limit
(``PRAGMA max_page_count`` on the writer's connection): the commit fails with the same
"database or disk is full" error. It never skips: one of the two always works.

Asserted: no crash (the daemon task and its driver tasks keep running, the presses keep
polling), one log line per distinct error, the ``write_errors`` / ``buffer_write_failing``
health metrics, the in-memory queue bounded by ``buffer.memory_max_mb`` (oldest telemetry
dropped, counted, never an event), and when space comes back: collection resumes, every
record committed before the fault arrives, events (including one made during the fault)
arrive with seq without gaps, the telemetry gap is exactly the dropped count, and the
``buffer_write_failed`` alarm was raised and cleared.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest

from buffer.store import Outbox, OutboxRow
from collector.config import LoadedConfig
from collector.daemon import Daemon
from collector.streams import STREAMS
from sim.local_broker import LocalBroker
from tests.support.line import Line, contiguous

# timing-sensitive: scripts/test runs it alone, after the parallel part
pytestmark = pytest.mark.serial

PRESSES = ("p1", "p2", "p3")
MEMORY_MAX_MB = 0.05  # ~52 kB of queued rows: a few seconds of three presses' telemetry


class SmallDisk:
    """A directory whose file system can be filled and freed: a tmpfs, or else SQLite's
    page limit on the buffer (same error to the writer)."""

    def __init__(self, root: Path) -> None:
        self.dir = root / "fs"
        self.dir.mkdir()
        self.filler = self.dir / "filler"
        self.mode, self.why = "max_page_count", "FAULT_DISK_MODE=max_page_count"
        if os.environ.get("FAULT_DISK_MODE") != "max_page_count":  # to try the fallback
            done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs",
                                   str(self.dir)], capture_output=True, text=True)
            if done.returncode == 0:
                self.mode, self.why = "tmpfs", ""
            else:
                self.why = f"mount failed: {done.stderr.strip()}"

    def fill(self, outbox: Outbox) -> None:
        if self.mode == "tmpfs":
            # an empty WAL first, so the very next commit needs new space
            outbox._exec_in_writer("PRAGMA wal_checkpoint(TRUNCATE)")
            fd = os.open(self.filler, os.O_WRONLY | os.O_CREAT, 0o600)
            try:
                for size in (1 << 20, 4096, 1):  # big chunks, then the last bytes
                    with contextlib.suppress(OSError):
                        while os.write(fd, b"\0" * size):
                            pass
            finally:
                os.close(fd)
        else:
            pages = outbox._exec_in_writer("PRAGMA page_count")[0][0]
            outbox._exec_in_writer(f"PRAGMA max_page_count={pages}")

    def free(self, outbox: Outbox) -> None:
        if self.mode == "tmpfs":
            self.filler.unlink()
        else:
            outbox._exec_in_writer("PRAGMA max_page_count=1073741823")

    def close(self) -> None:
        if self.mode == "tmpfs":
            subprocess.run(["umount", "-l", str(self.dir)], check=False)


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[SmallDisk]:
    d = SmallDisk(tmp_path)
    try:
        yield d
    finally:
        d.close()


def on_disk(path: Path) -> Callable[[LoadedConfig], LoadedConfig]:
    def adjust(config: LoadedConfig) -> LoadedConfig:
        col = config.collector
        buf = col.buffer.model_copy(update={"path": str(path / "buffer.sqlite"),
                                            "memory_max_mb": MEMORY_MAX_MB})
        return config.model_copy(update={"collector": col.model_copy(update={"buffer": buf})})
    return adjust


async def until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Wait for a condition that has no event to await (writer-thread state)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not within {timeout} s")
        await asyncio.sleep(0.05)


def alarms(line: Line) -> list[dict]:
    assert line.sub is not None
    return [orjson.loads(m.payload)["data"] for m in line.sub.snapshot()
            if m.topic.endswith("/alarm") and "/_collector/" in m.topic]


async def test_disk_full_during_a_stream_no_crash_bounded_memory_nothing_committed_lost(
        tmp_path: Path, broker: LocalBroker, disk: SmallDisk,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="buffer.store")
    line = Line(tmp_path, broker, presses=PRESSES, adjust=on_disk(disk.dir))
    await line.start()
    try:
        assert line.sub is not None and line.daemon is not None and line.task is not None
        daemon = line.daemon
        daemon.write_health_every_s = 0.1
        outbox = daemon.outbox
        assert outbox is not None
        for p in PRESSES:
            await line.wait_event(p, "setup")
        await line.sub.wait_for(lambda m: all(len(line.seqs("telemetry")[p]) >= 5
                                              for p in PRESSES), 15)

        disk.fill(outbox)
        filled = time.monotonic()
        await until(lambda: outbox.write_health()["failing"], 15, "a failing commit")
        committed = {k: v["last_seq"] for k, v in outbox.stats()["streams"].items()
                     if k.split("/")[0] in PRESSES and k.split("/")[1] in ("events",
                                                                           "telemetry")}
        polls = {p: daemon.presses[p].stats["polls"] for p in PRESSES}
        events_before = daemon.presses["p2"].stats["events"]
        line.sims["p2"].set_die(99)  # a setup event made while nothing can be written
        await until(lambda: daemon.presses["p2"].stats["events"] > events_before, 10,
                    "the die change event")
        peak = 0

        def shedding() -> bool:
            nonlocal peak
            peak = max(peak, outbox.write_health()["queued_bytes"])
            return outbox.write_health()["telemetry_shed"] > 0

        await until(shedding, 20, "telemetry dropped from the memory queue")
        await until(lambda: daemon.bounds.get("buffer_write_failing") is True, 5, "health")
        # no crash: the daemon and every driver still run, the presses are still polled
        assert not line.task.done()
        drivers = [t for t in asyncio.all_tasks() if t.get_name().startswith(PRESSES)
                   and t.get_name().split("/")[1] in ("plc", "gauge")]  # not the outputs
        assert len(drivers) == 3 * 3 and not any(t.done() for t in drivers)  # plc + 2 gauges
        assert all(daemon.presses[p].stats["polls"] > polls[p] for p in PRESSES)
        assert daemon.bounds["write_errors"] >= 1
        assert "full" in str(daemon.bounds["last_write_error"])
        bound = int(MEMORY_MAX_MB * 2**20)
        assert peak <= bound + 4096  # one row over at most, before it is shed
        fault_s = time.monotonic() - filled

        disk.free(outbox)
        freed = time.monotonic()
        await until(lambda: not outbox.write_health()["failing"], 15, "commits again")
        recovered_s = time.monotonic() - freed
        await until(lambda: daemon.bounds.get("buffer_write_failing") is False, 5, "health")
        shed = outbox.write_health()["telemetry_shed"]
        await line.sub.wait_for(lambda m: [a["active"] for a in alarms(line)
                                           if a["kind"] == "buffer_write_failed"]
                                == [True, False], 15)
        raised, cleared = [a for a in alarms(line) if a["kind"] == "buffer_write_failed"]
        assert raised["write_errors"] >= 1 and "full" in raised["error"]
        assert cleared["telemetry_dropped"] == shed
        # the event made during the fault arrives after it
        setup = await line.wait_event("p2", "setup", after=committed["p2/events"])
        assert setup["context"]["die_id"] in (99, "99")
        # collection resumed: fresh telemetry from every press after the fault
        last = {p: outbox.last_seq(p, "telemetry") for p in PRESSES}
        await line.sub.wait_for(lambda m: all(max(line.seqs("telemetry")[p]) >= last[p]
                                              for p in PRESSES), 15)

        await line.stop_daemon()
        with Outbox.open(Path(line.config.collector.buffer.path), readonly=True) as ro:
            final = ro.stats()
        assert final["pending"] == 0
        done = {k: v["last_seq"] for k, v in final["streams"].items()
                if k.split("/")[0] in PRESSES and k.split("/")[1] in ("events", "telemetry")}
        await line.sub.wait_for(lambda m: all(
            max(line.seqs(k.split("/")[1]).get(k.split("/")[0], [0])) >= n
            for k, n in done.items()), 15)
        gaps = 0
        received = dups = 0
        for key, n in done.items():
            press, stream = key.split("/")
            got = line.seqs(stream)[press]
            missing, d = contiguous(got)
            received, dups = received + len(got), dups + d
            assert min(got) == 1 and max(got) == n, key
            if stream == "events":
                assert missing == [], f"{key}: events lost {missing}"
            else:
                # everything committed before the fault arrived; later gaps are shed rows
                assert all(s > committed[key] for s in missing), key
                gaps += len(missing)
        assert gaps == shed
        assert line.contract_violations() == []
        failed = [r.getMessage() for r in caplog.records if "commit failed" in r.getMessage()]
        distinct = {m.split("(", 1)[1].split(")", 1)[0] for m in failed}
        assert len(failed) == len(distinct) <= 2, failed  # once per distinct error
        dropped_logs = [r for r in caplog.records if "dropping the oldest queued" in
                        r.getMessage()]
        assert len(dropped_logs) == 1
        assert any("telemetry rows were dropped from memory" in r.getMessage()
                   for r in caplog.records)
        print(f"\nfault 5 ({disk.mode}{': ' + disk.why if disk.why else ''}): disk full "
              f"{fault_s:.1f} s, {sum(done.values()) - shed} records committed, {received} "
              f"received, "
              f"{dups} duplicates, {shed} queued telemetry rows dropped (= the telemetry "
              f"gaps), 0 events lost; commits again {recovered_s:.2f} s after space came "
              f"back; peak queue {peak} bytes (bound {bound})")
    finally:
        await line.close()


def test_memory_queue_sheds_oldest_telemetry_never_events(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Store level: with the disk full, the queue over its bound loses the oldest
    telemetry rows only; events and gauge history stay, in order; logged once."""
    with Outbox.open(tmp_path / "b.sqlite", commit_interval_s=0.01,
                     max_queued_bytes=20_000, streams=STREAMS) as ob:
        ob.add(OutboxRow("p1", "events", ob.next_seq("p1", "events"), "t", b"e"))
        ob.flush_sync()
        pages = ob._exec_in_writer("PRAGMA page_count")[0][0]
        ob._exec_in_writer(f"PRAGMA max_page_count={pages}")
        for i in range(100):  # 100 x 1 kB telemetry, an event and a gauge row every 10
            ob.add(OutboxRow("p1", "telemetry", ob.next_seq("p1", "telemetry"), "t",
                             b"%04d" % i + b"t" * 996))
            if i % 10 == 0:
                ob.add(OutboxRow("p1", "events", ob.next_seq("p1", "events"), "t",
                                 b"e" * 1000, durable=True))
                ob.add(OutboxRow("p1", "gauge", ob.next_seq("p1", "gauge"), "t",
                                 b"g" * 1000, durable=True, delivered=True))
        health = ob.write_health()
        assert health["queued_bytes"] <= 20_000 + 1000
        shed = health["telemetry_shed"]
        assert shed > 50
        ob._exec_in_writer("PRAGMA max_page_count=1073741823")
        assert ob.flush_sync(timeout=10)
        rows = ob._rconn.execute(  # type: ignore[union-attr]
            "SELECT stream, seq FROM messages ORDER BY id").fetchall()
    events = [s for st, s in rows if st == "events"]
    gauge = [s for st, s in rows if st == "gauge"]
    tele = [s for st, s in rows if st == "telemetry"]
    assert events == list(range(1, 12)) and gauge == list(range(1, 11))
    assert tele == list(range(101 - len(tele), 101))  # the newest, contiguous
    assert len(tele) == 100 - shed
    assert len([r for r in caplog.records if "dropping the oldest" in r.getMessage()]) == 1


# ---------------------------------------------------------------- issue 12: no crash, no hang
def test_prune_on_a_full_disk_fails_with_the_disk_error_and_changes_nothing(
        disk: SmallDisk) -> None:
    """Store level: SQLite rolls the prune's transaction back itself on SQLITE_FULL; the
    prune used to answer with a second ROLLBACK ("no transaction is active") that hid
    the real error. Now the disk error comes out, and the buffer is as it was."""
    if disk.mode != "tmpfs":
        pytest.skip("needs a real full file system (tmpfs): max_page_count does not limit "
                    "the WAL that a DELETE writes")
    with Outbox.open(disk.dir / "b.sqlite", commit_interval_s=0.005, streams=STREAMS) as ob:
        ob.add_many([OutboxRow("p1", "telemetry", ob.next_seq("p1", "telemetry"), "t",
                               b"x" * 500) for _ in range(2000)])
        assert ob.flush_sync(timeout=30)
        ob.mark_delivered([r[0] for r in ob.pending(0, 5000)])
        assert ob.flush_sync(timeout=30)
        disk.fill(ob)
        with pytest.raises(sqlite3.OperationalError, match="full"):
            ob.prune(0)
        assert ob.stats()["rows"] == 2000
        disk.free(ob)
        assert ob.prune(0) == 1999  # the newest row stays (ids never go back)


def own_daemon(line: Line, **settings: float) -> Daemon:
    """Replace the Line's daemon by one with shorter periods (set before it runs)."""
    assert line.config is not None
    daemon = Daemon(line.config)
    for key, value in settings.items():
        setattr(daemon, key, value)
    line.daemon = daemon
    line.task = asyncio.create_task(daemon.run())
    return daemon


async def test_background_loops_survive_a_full_disk_raise_and_clear_their_alarm(
        tmp_path: Path, broker: LocalBroker, disk: SmallDisk,
        caplog: pytest.LogCaptureFixture) -> None:
    """The prune used to end the daemon (exit 1) on a full disk, losing the queued rows.
    Now it fails, is logged once, raises task_failed, retries every round, and clears the
    alarm when space is back; the daemon, its drivers and the queue live on."""
    if disk.mode != "tmpfs":
        pytest.skip("needs a real full file system (tmpfs) for the prune's DELETE to fail")
    caplog.set_level(logging.INFO)

    def tiny_retention(config: LoadedConfig) -> LoadedConfig:
        config = on_disk(disk.dir)(config)
        buf = config.collector.buffer.model_copy(update={"retention_h": 1e-6})
        return config.model_copy(update={"collector": config.collector.model_copy(
            update={"buffer": buf})})

    line = Line(tmp_path, broker, presses=("p1", "p2"), adjust=tiny_retention)
    await line.start()
    try:
        await line.stop_daemon()
        daemon = own_daemon(line, prune_every_s=0.2, write_health_every_s=0.1)
        await asyncio.wait_for(daemon.ready.wait(), 10)
        assert line.sub is not None and line.task is not None
        outbox = daemon.outbox
        assert outbox is not None and daemon.guard is not None
        await line.sub.wait_for(lambda m: all(len(line.seqs("telemetry")[p]) >= 20
                                              for p in ("p1", "p2")), 15)
        await until(lambda: outbox.stats()["rows"] < outbox.stats()["rows_written"], 10,
                    "a prune that deleted rows")
        disk.fill(outbox)
        await until(lambda: daemon.guard is not None and daemon.guard.failing("prune"), 15,
                    "a failing prune")
        failures = daemon.failures["prune"]
        await until(lambda: daemon.failures["prune"] >= failures + 3, 10, "more prune rounds")
        assert not line.task.done()  # the daemon lives on
        drivers = [t for t in asyncio.all_tasks() if t.get_name().startswith(("p1", "p2"))]
        assert drivers and not any(t.done() for t in drivers)
        events_before = daemon.presses["p2"].stats["events"]
        line.sims["p2"].set_die(77)  # an event queued while the disk is full
        await until(lambda: daemon.presses["p2"].stats["events"] > events_before, 10,
                    "the die change event")
        disk.free(outbox)
        await until(lambda: not daemon.guard.failing("prune")  # type: ignore[union-attr]
                    and not outbox.write_health()["failing"], 15, "prune works again")
        await line.wait_event("p2", "setup", after=1)
        await line.sub.wait_for(lambda m: [a["active"] for a in alarms(line)
                                           if a["kind"] == "task_failed"
                                           and a["task"] == "prune"] == [True, False], 15)
        assert not line.task.done()
        prune_logs = [r for r in caplog.records
                      if "background task prune failed" in r.getMessage()]
        assert len(prune_logs) == 1 and "full" in prune_logs[0].getMessage()
        await line.stop_daemon()
        events = line.seqs("events")
        for press in ("p1", "p2"):
            assert contiguous(events[press])[0] == [], press  # no event lost
        assert line.contract_violations() == []
    finally:
        await line.close()


async def test_sigterm_on_a_full_disk_stops_in_time_says_what_was_lost_never_reuses_seqs(
        tmp_path: Path, broker: LocalBroker, disk: SmallDisk,
        caplog: pytest.LogCaptureFixture) -> None:
    """The stop used to wait forever on a flush that cannot finish (systemd then kills
    it at TimeoutStopSec, losing everything in memory without a word). Now it ends well
    inside the unit's stop timeout, logs every row it could not write (events with their
    payload), and takes their seqs in the seq mark file: the next start reports them
    (buffer_rolled_back) and goes on above them."""
    caplog.set_level(logging.INFO)
    line = Line(tmp_path, broker, presses=("p1", "p2"), adjust=on_disk(disk.dir))
    await line.start()
    try:
        assert line.sub is not None and line.daemon is not None and line.task is not None
        daemon = line.daemon
        outbox = daemon.outbox
        assert outbox is not None
        await line.wait_event("p2", "setup")
        disk.fill(outbox)
        await until(lambda: outbox.write_health()["failing"], 15, "a failing commit")
        events_before = daemon.presses["p2"].stats["events"]
        line.sims["p2"].set_die(55)
        await until(lambda: daemon.presses["p2"].stats["events"] > events_before, 10,
                    "the die change event")
        taken = outbox.last_seq("p2", "events")
        started = time.monotonic()
        daemon.stop()
        await asyncio.wait_for(line.task, 30)  # deploy/press-collector.service TimeoutStopSec
        stop_s = time.monotonic() - started
        line.daemon = line.task = None
        text = "\n".join(r.getMessage() for r in caplog.records)
        assert "could not be written" in text and "p2/events" in text
        assert "not written: p2/events" in text and '"die_id"' in text
        if disk.mode == "tmpfs":  # (max_page_count was the closed connection's own limit)
            disk.free(outbox)
        await line.start_daemon()
        restarted = line.daemon
        assert restarted is not None and restarted.outbox is not None
        assert any(x.press == "p2" and x.stream == "events" and x.last_seq >= taken
                   for x in restarted.outbox.rollback)
        assert restarted.outbox.last_seq("p2", "events") >= taken  # never issued again
        await line.sub.wait_for(lambda m: any(a["kind"] == "buffer_rolled_back"
                                              for a in alarms(line)), 15)
        notice = next(a for a in alarms(line) if a["kind"] == "buffer_rolled_back")
        assert any(x["press"] == "p2" and x["last_seq"] >= taken for x in notice["lost"])
        assert line.contract_violations() == []
        print(f"\nstop on a full disk ({disk.mode}): {stop_s:.2f} s (unit timeout 30 s)")
    finally:
        await line.close()
