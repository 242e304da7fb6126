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
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest

from buffer.store import Outbox, OutboxRow
from collector.config import LoadedConfig
from collector.local_broker import LocalBroker
from tests.support.line import Line, contiguous

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
        drivers = [t for t in asyncio.all_tasks() if t.get_name().startswith(PRESSES)]
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
                     max_queued_bytes=20_000) as ob:
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
