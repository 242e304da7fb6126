"""The spine end to end, against real peers only.

Modbus TCP press simulators, gauges on ptys, a Mosquitto started per test, the daemon
with a real SQLite file, and a subscriber that checks what arrives: kinds, order, seq
without gaps, and every payload against its JSON Schema.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import orjson

from sim.demo import REPO_CONFIG
from tests.support.line import BRK100_PASS, Line, contiguous, wait_gauges_online


async def first_article(line: Line, press: str, values: list[tuple[str, str]]) -> None:
    for gauge, value in values:
        line.measure(press, gauge, value)


async def test_setup_first_article_measurement_in_order_and_schema_valid(line: Line) -> None:
    setup = await line.wait_event("p1", "setup")
    assert setup["data"]["reasons"] == ["job_start"]
    assert setup["context"]["part_number"] == "BRK-100"
    assert setup["context"]["die_id"] == "7"
    assert setup["context"]["material_lot"] == "L2411-01"
    await wait_gauges_online(line, "p1")

    await first_article(line, "p1", BRK100_PASS)
    fa = await line.wait_event("p1", "first_article")
    assert fa["data"]["verdict"] == "pass"
    assert fa["data"]["attempt"] == 1
    assert [r["value"] for r in fa["data"]["results"]] == ["25.010", "12.480", "0.020"]
    assert fa["context"]["plan_revision"] == "B"

    line.measure("p1", "g1", "25.070")  # patrol: out of tolerance (usl 25.05)
    measurement = await line.wait_event("p1", "measurement")
    assert measurement["data"]["verdict"] == "fail"
    assert measurement["data"]["characteristic"] == "C1"

    seq_of = {kind: line.events(press="p1", kind=kind)[0]["seq"]
              for kind in ("setup", "first_article", "measurement")}
    assert seq_of["setup"] < seq_of["first_article"] < seq_of["measurement"]
    events_missing, events_dups = contiguous(line.seqs("events")["p1"])
    assert events_missing == [] and events_dups == 0
    assert line.seqs("events")["p1"][0] == 1
    assert line.sub is not None
    await line.sub.wait_for(lambda msgs: len(line.seqs("telemetry")["p1"]) > 5)
    telemetry = line.seqs("telemetry")["p1"]
    assert telemetry[0] == 1 and contiguous(telemetry) == ([], 0)
    assert line.contract_violations() == []
    await line.sub.wait_for(lambda msgs: any(
        m.topic == f"{line.root}/p1/state" and orjson.loads(m.payload)["state"] == "released"
        for m in msgs))


def telemetry_of(msgs, press: str) -> list[dict]:
    return [p for p in (orjson.loads(m.payload) for m in msgs if m.topic.endswith("/telemetry"))
            if p["press"] == press]


async def test_first_article_fail_holds_then_second_attempt_releases(line: Line) -> None:
    await line.wait_event("p1", "setup")
    await wait_gauges_online(line, "p1")
    await first_article(line, "p1", [("g1", "25.200"), ("g2", "12.500"), ("g2", "0.010")])
    failed = await line.wait_event("p1", "first_article", verdict="fail")
    assert failed["data"]["failed"] == ["C1"]
    assert failed["context"]["state"] == "hold"
    strokes = failed["context"]["stroke_count"]
    line.sims["p1"].stroke(3)  # the press makes parts while on hold: unreleased production
    assert line.sub is not None
    await line.sub.wait_for(lambda msgs: any(
        e["data"]["values"]["strokes"] >= strokes + 3 for e in telemetry_of(msgs, "p1")))
    await first_article(line, "p1", BRK100_PASS)
    passed = await line.wait_event("p1", "first_article", verdict="pass")
    assert passed["data"]["attempt"] == 2
    assert passed["data"]["unreleased_strokes"] >= 3
    assert line.contract_violations() == []


async def test_die_change_on_the_plc_triggers_a_new_setup(line: Line) -> None:
    first = await line.wait_event("p1", "setup")
    sim = line.sims["p1"]
    sim.set_setup_mode(True)
    in_setup = await line.wait_event("p1", "state_change", to="setup")
    sim.set_die(8)
    sim.set_setup_mode(False)
    await line.wait_event("p1", "state_change", to="awaiting_first_article",
                          after=max(first["seq"], in_setup["seq"]))
    reasons = [r for e in line.events(press="p1", kind="setup") for r in e["data"]["reasons"]]
    assert reasons[0] == "job_start" and "die_change" in reasons[1:]
    assert line.events(press="p1", kind="setup")[-1]["context"]["die_id"] == "8"


async def test_broker_outage_loses_nothing_and_keeps_order(line: Line) -> None:
    await line.wait_event("p1", "setup")
    await wait_gauges_online(line, "p1")
    assert line.sub is not None
    await line.sub.wait_for(lambda msgs: len(line.seqs("telemetry")["p1"]) >= 5)

    line.broker.stop()
    # produced while the broker is down: a first article and telemetry
    await first_article(line, "p1", BRK100_PASS)
    assert line.daemon is not None
    runtime = line.daemon.presses["p1"]
    polls_at_stop = runtime.stats["polls"]
    while runtime.stats["polls"] < polls_at_stop + 30:  # ~3 s of polling while down
        await asyncio.sleep(0.1)
    assert runtime.workflow.state == "released"
    line.broker.start()

    await line.wait_event("p1", "first_article", timeout=30)
    last_seq = line.daemon.outbox.last_seq("p1", "telemetry")  # type: ignore[union-attr]
    await line.sub.wait_for(lambda msgs: max(line.seqs("telemetry")["p1"]) >= last_seq, 30)
    for stream in ("events", "telemetry"):
        missing, duplicates = contiguous(line.seqs(stream)["p1"])
        assert missing == [], stream
        assert duplicates <= 100, stream  # at most the in-flight window is resent
    assert line.contract_violations() == []


async def test_plc_outage_gives_offline_then_online_and_polling_resumes(line: Line) -> None:
    await line.wait_event("p1", "setup")
    sim = line.sims["p1"]
    await sim.stop()
    offline = await line.wait_event("p1", "connection", online=False)
    assert offline["context"]["state"] == "offline"
    await sim.start()
    await line.wait_event("p1", "connection", online=True)
    assert line.sub is not None
    seen = len(line.seqs("telemetry")["p1"])
    await line.sub.wait_for(lambda msgs: len(line.seqs("telemetry")["p1"]) > seen + 3)
    assert line.events(press="p1", kind="state_change")[-1]["data"]["to"] != "offline"


async def test_gauge_garbage_is_counted_and_never_a_value(line: Line) -> None:
    await line.wait_event("p1", "setup")
    await wait_gauges_online(line, "p1")
    gauge = line.gauges["p1"]["g1"]
    for junk in (b"01A+00x0.123\r", b"\x00\xff\xfe\r", b"01A+\r", b"A" * 5000 + b"\r",
                 b"01B+0000.100\r", b"+25.010\r"):
        gauge.send_raw(junk)
    await first_article(line, "p1", BRK100_PASS)
    fa = await line.wait_event("p1", "first_article")
    assert fa["data"]["verdict"] == "pass"
    assert [r["value"] for r in fa["data"]["results"]] == ["25.010", "12.480", "0.020"]
    assert line.daemon is not None
    assert line.daemon.presses["p1"].stats["gauge_errors"] >= 5
    assert line.events(press="p1", kind="unassigned_reading") == []


async def test_restart_continues_seq_and_invents_no_setup(line: Line) -> None:
    await line.wait_event("p1", "setup")
    await wait_gauges_online(line, "p1")
    await first_article(line, "p1", BRK100_PASS)
    await line.wait_event("p1", "first_article")
    await line.stop_daemon()
    before = len(line.events(press="p1"))
    last_seq = line.events(press="p1")[-1]["seq"]
    await line.start_daemon()
    await wait_gauges_online(line, "p1", after=last_seq)
    line.measure("p1", "g1", "25.000")
    await line.wait_event("p1", "measurement")
    after = line.events(press="p1")[before:]
    assert [e for e in after if e["schema"].endswith("/setup")] == []
    missing, _ = contiguous(line.seqs("events")["p1"])
    assert missing == []


def test_check_command_accepts_the_examples_and_names_a_bad_key(tmp_path: Path) -> None:
    ok = subprocess.run([sys.executable, "-m", "collector.cli", "check", "--config-dir",
                         str(REPO_CONFIG)], capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    assert "p1" in ok.stdout
    bad = tmp_path / "cfg"
    subprocess.run(["cp", "-r", str(REPO_CONFIG), str(bad)], check=True)
    p1 = bad / "presses" / "p1.toml"
    p1.write_text(p1.read_text().replace('type = "uint32"', 'type = "uint33"', 1))
    result = subprocess.run([sys.executable, "-m", "collector.cli", "check", "--config-dir",
                             str(bad)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "presses/p1.toml: plc.tags[0].type: 'uint33' is not allowed" in result.stderr
