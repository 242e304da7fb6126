"""Signals back to the press (issue 14): release permissive, lamps and heartbeat written
into the PLC from the workflow state, read from the simulator's side.

Real peers: the pymodbus press simulator over TCP (example press p1 with its
``[[plc.outputs]]``), the OPC UA press simulator, gauges on ptys, a private Mosquitto,
the daemon in-process (clean stop) and as a process killed with SIGKILL (the heartbeat
stops, the PLC's own check drops the permissive: ``sim/plc_watchdog.py``).
"""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path
from typing import Any

import pytest

from collector.config import LoadedConfig
from collector.config.opcua import OpcuaOutputConfig
from collector.metrics import prometheus_text
from collector.outputs import HEARTBEAT_WRAP, flags
from collector.status import problems as status_problems
from sim.gauge import GaugeSimulator
from sim.local_broker import LocalBroker
from sim.opcua import NODES, ROLES, node_text
from sim.plc_watchdog import HeartbeatWatchdog
from sim.press import PressSimulator
from tests.support.configdir import write_config_dir
from tests.support.line import BRK100_PASS, Line, wait_gauges_online
from tests.support.opcua import OpcuaLine
from tests.support.subscriber import Subscriber

# p1's outputs in config/presses/p1.toml
PERMISSIVE, HOLD_LAMP, FA_REQUEST, PATROL_DUE, HEARTBEAT = 8, 9, 10, 11, 90
BRK100_FAIL = [("g1", "25.080"), ("g2", "12.480"), ("g2", "0.020")]  # C1 above 25.05
FLAGS = ("release_permissive", "hold_lamp", "first_article_request", "patrol_due")


# -- the table (pure) -------------------------------------------------------------------

@pytest.mark.parametrize(("state", "inspection", "due", "on"), [
    ("offline", False, False, set()),
    ("setup", False, False, set()),
    ("awaiting_first_article", False, False, {"first_article_request"}),
    ("first_article", False, False, {"first_article_request"}),
    ("awaiting_confirmation", False, False, set()),
    ("hold", False, False, {"hold_lamp"}),
    ("hold", True, True, {"hold_lamp"}),
    ("released", False, False, {"release_permissive"}),
    ("stopped", False, False, {"release_permissive"}),
    ("released", True, False, set()),  # 100 % inspection: no permissive
    ("released", False, True, {"release_permissive", "patrol_due"}),
    ("stopped", True, True, {"patrol_due"}),
])
def test_flags_per_state(state: str, inspection: bool, due: bool, on: set[str]) -> None:
    got = flags(state, inspection, due)
    assert set(got) == set(FLAGS)
    assert {role for role, value in got.items() if value} == on


def test_heartbeat_wrap_fits_a_signed_word() -> None:
    assert HEARTBEAT_WRAP - 1 == 2**15 - 1


# -- Modbus: the whole cycle -------------------------------------------------------------

def lamps(sim: PressSimulator) -> dict[str, bool]:
    return {"release_permissive": sim.coil(PERMISSIVE), "hold_lamp": sim.coil(HOLD_LAMP),
            "first_article_request": sim.coil(FA_REQUEST), "patrol_due": sim.coil(PATROL_DUE)}


async def outputs_become(sim: PressSimulator, timeout: float = 10.0, **want: bool) -> None:
    """Await the simulator's outputs holding ``want`` (checked at every write)."""
    try:
        await sim.wait_outputs(lambda s: all(lamps(s)[k] == v for k, v in want.items()),
                               timeout)
    except TimeoutError:
        raise AssertionError(f"outputs {lamps(sim)}, wanted {want}") from None


async def heartbeats(sim: PressSimulator, n: int, timeout: float = 10.0) -> list[int]:
    """The next ``n`` different heartbeat values the PLC receives."""
    seen = [sim.output_registers(HEARTBEAT)[0]]

    def changed(s: PressSimulator) -> bool:
        value = s.output_registers(HEARTBEAT)[0]
        if value != seen[-1]:
            seen.append(value)
        return len(seen) > n

    await sim.wait_outputs(changed, timeout)
    return seen[1:]


async def test_modbus_setup_first_article_fail_hold_release_and_clean_stop(
        tmp_path: Path, broker: LocalBroker) -> None:
    line = Line(tmp_path, broker, presses=("p1",), spm=0)
    await line.start()
    try:
        sim = line.sims["p1"]
        # first poll: job start, a first article is awaited
        await outputs_become(sim, first_article_request=True, release_permissive=False)
        beats = await heartbeats(sim, 2)
        assert beats[1] == (beats[0] + 1) % HEARTBEAT_WRAP
        await wait_gauges_online(line, "p1")
        for gauge, value in BRK100_PASS:
            line.measure("p1", gauge, value)
        await outputs_become(sim, release_permissive=True, first_article_request=False,
                             hold_lamp=False)
        # die change: setup mode on -> setup; the permissive drops
        sim.set_setup_mode(True)
        sim.set_die(8)
        await line.wait_event("p1", "state_change", to="setup")
        await outputs_become(sim, release_permissive=False, first_article_request=False)
        sim.set_setup_mode(False)
        await outputs_become(sim, first_article_request=True)
        # first article fails: hold
        for gauge, value in BRK100_FAIL:
            line.measure("p1", gauge, value)
        await line.wait_event("p1", "first_article", verdict="fail")
        await outputs_become(sim, hold_lamp=True, release_permissive=False,
                             first_article_request=False)
        # a new first article passes: released
        for gauge, value in BRK100_PASS:
            line.measure("p1", gauge, value)
        await line.wait_event("p1", "first_article", verdict="pass", attempt=2)
        await outputs_become(sim, release_permissive=True, hold_lamp=False,
                             first_article_request=False)
        assert line.daemon is not None
        daemon = line.daemon

        def outputs_health() -> dict[str, Any]:
            return daemon.health()["presses"]["p1"]["outputs"]  # type: ignore[no-any-return]

        # the PLC has the value before the daemon's read-back confirms it: awaited at
        # each message the daemon publishes (telemetry every poll), not assumed
        await line.sub.wait_for(
            lambda _m: outputs_health()["release_permissive"]["written"] is True, 10)
        health = outputs_health()
        assert all(not o["alarm"] for o in health.values())
        # a clean stop leaves the permissive false, the press still released in the record
        await line.stop_daemon()
        assert sim.coil(PERMISSIVE) is False
        assert [e["data"]["to"] for e in line.events(kind="state_change")][-1] == "released"
        assert line.events(kind="output_alarm") == []
        assert line.contract_violations() == []
    finally:
        await line.close()


async def test_a_press_stopped_by_a_reload_leaves_its_permissive_false(
        tmp_path: Path, broker: LocalBroker) -> None:
    """A press a SIGHUP removes (or restarts) stops its outputs before its PLC link:
    the permissive goes false, the heartbeat stops; the press's runtime is gone."""
    line = Line(tmp_path, broker, presses=("p1",), spm=0)
    await line.start()
    try:
        sim = line.sims["p1"]
        # the press awaits its first article before the values come (a value measured
        # before the first poll's setup is an unassigned reading: flaky under load)
        await outputs_become(sim, first_article_request=True)
        await wait_gauges_online(line, "p1")
        for gauge, value in BRK100_PASS:
            line.measure("p1", gauge, value)
        await outputs_become(sim, release_permissive=True)
        assert line.daemon is not None
        await line.daemon.stop_press("p1", removed=True)
        assert sim.coil(PERMISSIVE) is False
        assert "p1" not in line.daemon.outputs and "p1" not in line.daemon.presses
        last = sim.output_registers(HEARTBEAT)[0]
        with pytest.raises(TimeoutError):  # no writer left: nothing changes the word
            await sim.wait_outputs(lambda s: s.output_registers(HEARTBEAT)[0] != last, 2.5)
    finally:
        await line.close()


async def test_modbus_refused_and_mismatching_writes_raise_one_alarm_per_episode(
        tmp_path: Path, broker: LocalBroker) -> None:
    def refused_lamp(config: LoadedConfig) -> LoadedConfig:
        press = config.presses["p1"]
        outputs = [o if o.role != "patrol_due" else o.model_copy(update={"address": 3})
                   for o in press.plc.outputs]  # coil 3: the PLC refuses writes there
        plc = press.plc.model_copy(update={"outputs": outputs})
        return config.model_copy(update={"presses": {"p1": press.model_copy(
            update={"plc": plc})}})

    line = Line(tmp_path, broker, presses=("p1",), spm=0, adjust=refused_lamp)
    await line.start()
    try:
        sim = line.sims["p1"]
        assert line.daemon is not None
        outputs = line.daemon.outputs["p1"].outputs
        # patrol_due is false in awaiting_first_article: written, refused, retried
        alarm = await line.wait_event("p1", "output_alarm", role="patrol_due", active=True)
        assert alarm["data"]["output"] == "coil 3"
        assert alarm["data"]["reason"].endswith("refused: IllegalDataAddress")
        assert alarm["data"]["value"] is False
        assert alarm["context"]["state"] == "awaiting_first_article"
        await line.sub.wait_for(lambda _m: outputs["patrol_due"].write_errors >= 3, 15)
        assert len(line.events(kind="output_alarm")) == 1  # once per episode
        assert any(p.startswith("p1: output patrol_due not written")
                   for p in status_problems(line.daemon.health()))
        metrics = prometheus_text(line.daemon.health())
        assert 'press_collector_output_alarm{press="p1",role="patrol_due"} 1' in metrics
        assert 'press_collector_output_alarm{press="p1",role="hold_lamp"} 0' in metrics
        await outputs_become(sim, first_article_request=True)  # the others are written
        # the PLC program overwrites its outputs: the heartbeat reads back different
        sim.drop_writes = True
        mismatch = await line.wait_event("p1", "output_alarm", role="heartbeat", active=True)
        # function 6's echo already shows the value not kept (else the read-back would)
        assert "write echo 005a" in mismatch["data"]["reason"]
        sim.drop_writes = False
        cleared = await line.wait_event("p1", "output_alarm", role="heartbeat", active=False)
        assert cleared["data"]["failures"] >= 1  # the episode's count and last reason
        assert "write echo 005a" in cleared["data"]["reason"]
        assert cleared["data"]["since"] == mismatch["data"]["since"]
        await heartbeats(sim, 1)  # beating again
        kinds = [(e["data"]["role"], e["data"]["active"])
                 for e in line.events(kind="output_alarm")]
        assert kinds == [("patrol_due", True), ("heartbeat", True), ("heartbeat", False)]
        assert line.contract_violations() == []
    finally:
        await line.close()


# -- the daemon killed: the heartbeat stops, the PLC drops the permissive -----------------

async def test_sigkill_stops_the_heartbeat_and_the_plc_check_drops_the_permissive(
        tmp_path: Path, broker: LocalBroker) -> None:
    sim = PressSimulator(host="127.0.0.1", port=0, part="BRK-100", die=7, lot="L2411-01",
                         spm=0, seed=1)
    await sim.start()
    gauge_dir = tmp_path / "gauges"
    gauge_dir.mkdir()
    gauges = {g: GaugeSimulator(str(gauge_dir / f"p1-{g}"), preset="mitutoyo")
              for g in ("g1", "g2")}
    for g in gauges.values():
        g.open()
    config_dir = write_config_dir(tmp_path / "config", broker.port, {"p1": sim.port}, gauge_dir)
    watchdog = HeartbeatWatchdog(lambda: sim.output_registers(HEARTBEAT)[0], timeout_s=2.0)
    plc = asyncio.create_task(watchdog.run())
    sub = Subscriber("127.0.0.1", broker.port, ["demo-plant/press-shop/#"]).start()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "collector.cli", "run", "--config-dir", str(config_dir),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    try:
        await asyncio.wait_for(watchdog.became_alive.wait(), 20)
        await sim.wait_outputs(lambda s: s.coil(FA_REQUEST), 15)
        # a pty drops what is sent before the port is open: wait for both lines
        await sub.wait_for(lambda msgs: {g for g in gauges if any(
            m.topic.endswith("/events/gauge_connection") and f'"gauge":"{g}"' in
            m.payload.decode() and '"online":true' in m.payload.decode() for m in msgs)}
            == set(gauges), 20)
        for gauge, value in BRK100_PASS:
            gauges[gauge].send_value(value)
        await sim.wait_outputs(lambda s: s.coil(PERMISSIVE), 15)
        assert watchdog.permissive(sim.coil(PERMISSIVE)) is True
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
        last = sim.output_registers(HEARTBEAT)[0]
        await asyncio.wait_for(watchdog.tripped.wait(), 10)
        # nobody cleared the permissive the collector wrote, but the PLC's check did
        assert sim.coil(PERMISSIVE) is True
        assert watchdog.permissive(sim.coil(PERMISSIVE)) is False
        assert sim.output_registers(HEARTBEAT)[0] == last == watchdog.last
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        sub.stop()
        plc.cancel()
        await asyncio.gather(plc, return_exceptions=True)
        for g in gauges.values():
            g.close()
        await sim.stop()


# -- OPC UA: the same cycle on output nodes ------------------------------------------------

def with_opcua_outputs(config: LoadedConfig) -> LoadedConfig:
    press = config.presses["p1"]
    plc = press.plc.model_copy(update={"outputs": [
        OpcuaOutputConfig(role=role, node=node_text(role)) for role in (*FLAGS, "heartbeat")]})
    return config.model_copy(update={"presses": {"p1": press.model_copy(update={"plc": plc})}})


async def test_opcua_setup_first_article_fail_hold_release_and_clean_stop(
        tmp_path: Path, broker: LocalBroker) -> None:
    line = OpcuaLine(tmp_path, broker, spm=0, adjust=with_opcua_outputs)
    await line.start()
    try:
        sim = line.sims["p1"]

        async def become(**want: bool) -> None:
            try:
                await sim.wait_outputs(  # type: ignore[attr-defined]
                    lambda s: all(bool(s.written(k)) == v for k, v in want.items()), 15)
            except TimeoutError:
                got = {k: sim.written(k) for k in want}  # type: ignore[attr-defined]
                raise AssertionError(f"outputs {got}, wanted {want}") from None

        await become(first_article_request=True, release_permissive=False, hold_lamp=False)
        first = sim.written("heartbeat")  # type: ignore[attr-defined]
        await sim.wait_outputs(  # type: ignore[attr-defined]
            lambda s: s.written("heartbeat") not in (None, first), 10)
        await wait_gauges_online(line, "p1")
        for gauge, value in BRK100_FAIL:
            line.measure("p1", gauge, value)
        await line.wait_event("p1", "first_article", verdict="fail")
        await become(hold_lamp=True, first_article_request=False, release_permissive=False)
        for gauge, value in BRK100_PASS:
            line.measure("p1", gauge, value)
        await line.wait_event("p1", "first_article", verdict="pass")
        await become(release_permissive=True, hold_lamp=False, first_article_request=False)
        await line.stop_daemon()
        assert await sim.output("release_permissive") is False  # type: ignore[attr-defined]
        assert line.events(kind="output_alarm") == []
        assert line.contract_violations() == []
    finally:
        await line.close()


def test_opcua_simulator_has_a_node_for_every_output_role() -> None:
    from collector.domain import OUTPUT_ROLES

    for role in OUTPUT_ROLES:
        assert node_text(role).startswith("nsu=urn:press-sim;s=Press.Out.")
    assert set(ROLES) <= set(NODES)
