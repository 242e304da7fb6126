"""Fault test 3: PLC trouble on one press while two others keep streaming.

Three press simulators (real Modbus TCP servers), gauges on ptys, the daemon, Mosquitto
and a persistent subscriber. One after another:

(a) p1's PLC is killed (listener and connections closed) and restarted on the same port;
(b) p2's PLC answers every read of its holding registers with a Modbus exception;
(c) p3's PLC accepts the connection and the requests but never answers (timeouts).

Asserted on what the subscriber received: (a) and (c) give one ``connection`` offline and
one online event of that press and nothing from the others; (b) is no outage but per-tag
errors in that press's telemetry; during every fault the other presses' telemetry keeps
advancing, and over the whole run every press's telemetry and events arrive with seq
without gaps. Afterwards the daemon stops within a bound and leaves no task behind (no
driver stuck in a hanging request), and no driver crashed.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import orjson

from buffer.store import Outbox
from sim.local_broker import LocalBroker
from tests.support.line import Line, contiguous

PRESSES = ("p1", "p2", "p3")
ADVANCE = 10  # telemetry records each other press must deliver while a fault lasts
DAEMON_TASKS = ("publisher", "prune", "tick", "bounds", "watchdog")


def last_telemetry(line: Line, press: str) -> int:
    return max(line.seqs("telemetry")[press], default=0)


def last_event(line: Line, press: str) -> int:
    return max((e["seq"] for e in line.events(press=press)), default=0)


def telemetry(line: Line, press: str, after: int) -> list[dict]:
    assert line.sub is not None
    out = []
    for m in line.sub.snapshot():
        if m.topic == f"{line.root}/{press}/telemetry":
            p = orjson.loads(m.payload)
            if p["seq"] > after:
                out.append(p)
    return out


async def others_advance(line: Line, faulty: str) -> dict[str, int]:
    """Wait until every other press delivered ADVANCE more telemetry records."""
    assert line.sub is not None
    others = [p for p in PRESSES if p != faulty]
    start = {p: last_telemetry(line, p) for p in others}
    await line.sub.wait_for(lambda m: all(last_telemetry(line, p) >= start[p] + ADVANCE
                                          for p in others), 20)
    return {p: last_telemetry(line, p) - start[p] for p in others}


async def test_plc_killed_exceptions_and_silent_other_presses_unaffected(
        tmp_path: Path, broker: LocalBroker) -> None:
    line = Line(tmp_path, broker, presses=PRESSES)
    await line.start()
    figures: list[str] = []
    try:
        assert line.sub is not None and line.daemon is not None
        for p in PRESSES:
            await line.wait_event(p, "connection", online=True)
            await line.wait_event(p, "setup")

        # (a) p1's PLC killed and restarted
        after = last_event(line, "p1")
        await line.sims["p1"].stop()
        offline = await line.wait_event("p1", "connection", online=False, after=after)
        advanced = await others_advance(line, "p1")
        await line.sims["p1"].start()
        fixed = time.monotonic()
        online = await line.wait_event("p1", "connection", online=True, after=offline["seq"])
        recovered = time.monotonic() - fixed
        mark = last_telemetry(line, "p1")
        await line.sub.wait_for(lambda m: last_telemetry(line, "p1") > mark + 3, 10)
        assert online["context"]["state"] != "offline"
        figures.append(f"(a) PLC killed: offline '{offline['data']['reason']}', others "
                       f"advanced {advanced}, online {recovered:.2f} s after the restart")

        # (b) p2 answers with Modbus exceptions (ServerDeviceFailure): no outage
        after_event = last_event(line, "p2")
        mark = last_telemetry(line, "p2")
        line.sims["p2"].fail_with_exception("holding", range(30, 33), 4)
        await line.sub.wait_for(lambda m: any(
            t["data"].get("errors", {}).get("tonnage") == "ServerDeviceFailure"
            for t in telemetry(line, "p2", mark)), 10)
        advanced = await others_advance(line, "p2")
        failing = [t for t in telemetry(line, "p2", mark) if t["data"].get("errors")]
        line.sims["p2"].clear_faults()
        fixed = time.monotonic()
        clean_mark = last_telemetry(line, "p2")
        await line.sub.wait_for(lambda m: any(
            "errors" not in t["data"] and "tonnage" in t["data"]["values"]
            for t in telemetry(line, "p2", clean_mark)), 10)
        recovered = time.monotonic() - fixed
        assert len(failing) >= ADVANCE // 2
        assert all(t["data"]["errors"]["tonnage"] == "ServerDeviceFailure" for t in failing)
        assert all("tonnage" not in t["data"]["values"] for t in failing)
        # exceptions are not an outage, and missing values invent no setup or state change
        assert [e["schema"] for e in line.events(press="p2") if e["seq"] > after_event] == []
        figures.append(f"(b) Modbus exceptions: {len(failing)} telemetry records with "
                       f"per-tag errors, others advanced {advanced}, clean values "
                       f"{recovered:.2f} s after the fault was cleared")

        # (c) p3 accepts the connection but never answers
        after = last_event(line, "p3")
        line.sims["p3"].set_silent(True)
        offline = await line.wait_event("p3", "connection", online=False, after=after)
        assert offline["data"]["reason"] == "timeout"
        advanced = await others_advance(line, "p3")
        line.sims["p3"].set_silent(False)
        fixed = time.monotonic()
        await line.wait_event("p3", "connection", online=True, after=offline["seq"])
        recovered = time.monotonic() - fixed
        mark = last_telemetry(line, "p3")
        await line.sub.wait_for(lambda m: last_telemetry(line, "p3") > mark + 3, 10)
        figures.append(f"(c) silent PLC: offline 'timeout', others advanced {advanced}, "
                       f"online {recovered:.2f} s after it answered again")

        # one offline and one online per real outage, none for anybody else
        changes = {p: [e["data"]["online"] for e in line.events(press=p, kind="connection")]
                   for p in PRESSES}
        assert changes == {"p1": [True, False, True], "p2": [True],
                           "p3": [True, False, True]}

        # the daemon stops promptly: no driver hangs in a request, nothing left behind
        assert line.daemon.failures == {}
        t0 = time.monotonic()
        await line.stop_daemon()
        stop_s = time.monotonic() - t0
        assert stop_s < 10
        await asyncio.sleep(0)
        names = {f"{p}/plc" for p in PRESSES} | set(DAEMON_TASKS)
        leftovers = [t.get_name() for t in asyncio.all_tasks()
                     if t.get_name() in names or t.get_name().startswith(PRESSES)]
        assert leftovers == []

        # every committed record arrived, seq without gaps, for every press
        with Outbox.open(Path(line.config.collector.buffer.path), readonly=True) as ro:
            stats = ro.stats()
        committed = {k: v["last_seq"] for k, v in stats["streams"].items()
                     if k.split("/")[0] in PRESSES and k.split("/")[1] in ("events",
                                                                           "telemetry")}
        await line.sub.wait_for(lambda m: all(
            max(line.seqs(k.split("/")[1]).get(k.split("/")[0], [0])) >= last
            for k, last in committed.items()), 15)
        sent = received = dups = 0
        for key, last in committed.items():
            press, stream = key.split("/")
            got = line.seqs(stream)[press]
            missing, d = contiguous(got)
            assert missing == [] and min(got) == 1 and max(got) == last, key
            sent, received, dups = sent + last, received + len(got), dups + d
        assert line.contract_violations() == []
        print(f"\nfault 3 (3 presses): {sent} records committed, {received} received, "
              f"{dups} duplicates; daemon stopped in {stop_s:.2f} s")
        for f in figures:
            print("  " + f)
    finally:
        await line.close()
