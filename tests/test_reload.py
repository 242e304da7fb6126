"""SIGHUP applies press files (issue 14, "For the technician"): presses added, removed or
changed are started, stopped or restarted, the others are not touched, nothing in the
buffer is lost; a config that fails ``check`` is refused and the running one kept.

The daemon runs as a process (``python -m collector.cli run``) against Modbus press
simulators on real sockets, gauges on ptys, a private Mosquitto and a persistent
subscriber; the test edits the config dir and sends SIGHUP like ``systemctl reload``.
"No gap" is checked after a clean stop against the buffer itself: every seq the buffer
handed out for an untouched press, 1..last, arrived once in order. The pure diff
(``collector.reload.plan_reload``) is tested on its own below.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import pytest

from buffer.store import Outbox
from collector.config import LoadedConfig, load_config
from collector.contract import validate_message
from collector.daemon import Daemon
from collector.reload import changed_keys, plan_reload
from sim.demo import REPO_CONFIG
from sim.gauge import GaugeSimulator
from sim.local_broker import LocalBroker
from sim.ports import free_port
from sim.press import PressSimulator
from tests.support.configdir import write_config_dir
from tests.support.daemon_proc import DaemonProcess
from tests.support.line import BRK100_PASS, JOBS, close_peers
from tests.support.subscriber import Received, Subscriber

ROOT = "demo-plant/press-shop"
ALL = ("p1", "p2", "p3")
SUMMARY = r"SIGHUP: presses added: "


class ReloadBench:
    """Simulators for p1..p3, a config dir holding some of them, the daemon process and a
    subscriber. ``staging`` holds every press file; ``etc`` is what the daemon reads."""

    def __init__(self, tmp_path: Path, broker: LocalBroker) -> None:
        self.tmp_path, self.broker = tmp_path, broker
        self.sims: dict[str, PressSimulator] = {}
        self.gauges: dict[str, dict[str, GaugeSimulator]] = {}
        self.staging = tmp_path / "staging"
        self.etc = tmp_path / "etc"
        self.health_port = free_port()
        self.sub: Subscriber | None = None
        self.daemon = DaemonProcess(self.etc, tmp_path / "daemon.log")

    async def start(self, presses: tuple[str, ...]) -> ReloadBench:
        for pid in ALL:
            part, die, lot = JOBS[pid]
            sim = PressSimulator(host="127.0.0.1", port=0, part=part, die=die, lot=lot,
                                 spm=120, seed=1)
            await sim.start()
            sim.set_running(True)
            self.sims[pid] = sim
        write_config_dir(self.staging, self.broker.port,
                         {p: s.port for p, s in self.sims.items()}, self.tmp_path)
        staged = load_config(self.staging)
        for pid in ALL:
            self.gauges[pid] = {}
            for g in staged.presses[pid].gauges:
                gsim = GaugeSimulator(str(self.tmp_path / f"{pid}-{g.id}"), preset=g.preset)
                gsim.open()
                self.gauges[pid][g.id] = gsim
        shutil.copytree(self.staging, self.etc)
        for pid in ALL:
            if pid not in presses:
                self.remove(pid)
        toml = self.etc / "collector.toml"
        toml.write_text(re.sub(r"(?m)^\[metrics\]\nport = 0", f"[metrics]\nport = "
                               f"{self.health_port}", toml.read_text()))
        self.sub = Subscriber("127.0.0.1", self.broker.port, [f"{ROOT}/#"]).start()
        await self.daemon.start()
        for pid in presses:
            await self.wait_telemetry(pid)
        return self

    async def close(self) -> None:
        if self.daemon.proc is not None:
            await self.daemon.stop()
        await close_peers(self.sub, self.sims, self.gauges)

    # -- the config dir ----------------------------------------------------------------
    def press_file(self, pid: str) -> Path:
        return self.etc / "presses" / f"{pid}.toml"

    def add(self, pid: str) -> None:
        shutil.copy(self.staging / "presses" / f"{pid}.toml", self.press_file(pid))

    def remove(self, pid: str) -> None:
        self.press_file(pid).unlink()

    async def reload(self) -> str:
        """SIGHUP, then the reload's one-line summary."""
        mark = self.daemon.hup()
        return (await self.daemon.wait_line(SUMMARY, after=mark))[1]

    async def health(self) -> dict[str, Any]:
        url = f"http://127.0.0.1:{self.health_port}/health"

        def get() -> dict[str, Any]:
            with urllib.request.urlopen(url, timeout=5) as answer:
                return json.loads(answer.read())
        return await asyncio.to_thread(get)

    # -- what the subscriber saw ---------------------------------------------------------
    def payloads(self, pid: str, suffix: str) -> list[dict[str, Any]]:
        assert self.sub is not None
        return [orjson.loads(m.payload) for m in self.sub.snapshot()
                if m.topic.startswith(f"{ROOT}/{pid}/") and m.topic.endswith(suffix)
                and m.payload]

    def events(self, pid: str, kind: str) -> list[dict[str, Any]]:
        return self.payloads(pid, f"/events/{kind}")

    async def wait(self, check: Any, timeout: float = 20.0) -> list[Received]:
        assert self.sub is not None
        return await self.sub.wait_for(lambda _msgs: bool(check()), timeout)

    async def wait_telemetry(self, pid: str, more_than: int = 0) -> None:
        """Until the press's telemetry seq passed ``more_than``."""
        await self.wait(lambda: any(p["seq"] > more_than
                                    for p in self.payloads(pid, "/telemetry")))

    def last_telemetry_seq(self, pid: str) -> int:
        return max((p["seq"] for p in self.payloads(pid, "/telemetry")), default=0)

    async def release_p1(self) -> None:
        await self.wait(lambda: self.events("p1", "setup"))
        for gauge in self.gauges["p1"]:
            await self.wait(lambda g=gauge: any(
                e["data"]["gauge"] == g and e["data"]["online"]
                for e in self.events("p1", "gauge_connection")))
        for gauge, value in BRK100_PASS:
            self.gauges["p1"][gauge].send_value(value)
        await self.wait(lambda: any(e["data"]["verdict"] == "pass"
                                    for e in self.events("p1", "first_article")))

    async def stop_and_check_no_gap(self, presses: tuple[str, ...]) -> None:
        """Clean stop, then: every seq the buffer handed out for these presses' events and
        telemetry arrived, 1..last, each once, in order."""
        assert await self.daemon.stop() == 0
        with Outbox.open(self.etc / "buffer.sqlite", readonly=True) as ro:
            last = {pid: {s: ro.last_seq(pid, s) for s in ("events", "telemetry")}
                    for pid in presses}

        def seqs(pid: str, stream: str) -> list[int]:
            return [p["seq"] for p in self.payloads(pid, "") if p.get("stream") == stream]

        await self.wait(lambda: all(max(seqs(p, s), default=0) >= n
                                    for p, streams in last.items() for s, n in streams.items()))
        for pid, streams in last.items():
            for stream, n in streams.items():
                assert n > 0
                got = list(dict.fromkeys(seqs(pid, stream)))  # a resend keeps its place
                assert got == list(range(1, n + 1)), f"{pid}/{stream}: gap or reordering"

    def contract_violations(self) -> list[str]:
        assert self.sub is not None
        return [f"{m.topic}: {e}" for m in self.sub.snapshot() if m.payload
                for e in validate_message(m.topic, ROOT, orjson.loads(m.payload))]


@pytest.fixture
async def bench(tmp_path: Path, broker: LocalBroker):
    b = ReloadBench(tmp_path, broker)
    try:
        yield b
    finally:
        await b.close()


def retained_state(bench: ReloadBench, pid: str) -> list[dict[str, Any]]:
    return bench.payloads(pid, "/state")


async def same_runtime(bench: ReloadBench, pid: str) -> bool:
    """Whether the press still runs on the runtime it started with. One telemetry message
    per poll and a fresh buffer: a runtime that has run since the press's first seq has
    counted at least as many polls as the highest seq seen; a restarted one counts anew
    while the seqs go on. Waits for some more polls first."""
    await bench.wait_telemetry(pid, bench.last_telemetry_seq(pid) + 2)
    seen = bench.last_telemetry_seq(pid)
    return (await bench.health())["presses"][pid]["polls"] >= seen


async def test_add_and_remove_presses_without_touching_the_others(bench: ReloadBench) -> None:
    await bench.start(("p1", "p2"))
    await bench.release_p1()

    bench.add("p3")
    summary = await bench.reload()
    assert "added: p3; removed: none; changed: none; unchanged: p1, p2" in summary
    await bench.wait_telemetry("p3")  # the new press runs

    await bench.wait_telemetry("p1", 30)  # a history to resume from (and to tell runtimes)
    bench.remove("p1")
    states_before = len(retained_state(bench, "p1"))
    summary = await bench.reload()
    assert "added: none; removed: p1; changed: none; unchanged: p2, p3" in summary
    await bench.wait(lambda: any(s.get("removed") for s in retained_state(bench, "p1")))
    gone = retained_state(bench, "p1")[-1]
    assert gone["removed"] is True and gone["collector_online"] is False
    assert gone["plc_online"] is False and gone["state"] == "released"
    assert set((await bench.health())["presses"]) == {"p2", "p3"}
    assert await same_runtime(bench, "p2") and await same_runtime(bench, "p3")

    # added again: resumes from its snapshot (released), no new setup, seqs go on
    setups = len(bench.events("p1", "setup"))
    events_before = max(e["seq"] for e in bench.payloads("p1", "") if e.get("stream") ==
                        "events")
    bench.add("p1")
    summary = await bench.reload()
    assert "added: p1; removed: none; changed: none; unchanged: p2, p3" in summary
    await bench.wait(lambda: any(s["collector_online"] and not s.get("removed")
                                 for s in retained_state(bench, "p1")[states_before + 1:]))
    back = [s for s in retained_state(bench, "p1")[states_before:] if s["collector_online"]]
    assert back[0]["state"] == "released"  # a new workflow would await a first article
    await bench.wait_telemetry("p1", bench.last_telemetry_seq("p1"))
    assert len(bench.events("p1", "setup")) == setups
    assert await same_runtime(bench, "p2") and await same_runtime(bench, "p3")
    assert not await same_runtime(bench, "p1")

    await bench.stop_and_check_no_gap(("p1", "p2", "p3"))
    p1_events = [e["seq"] for e in bench.payloads("p1", "") if e.get("stream") == "events"]
    assert max(p1_events) > events_before  # p1's events went on from where they were
    assert bench.contract_violations() == []


async def test_a_changed_tag_restarts_only_that_press(bench: ReloadBench) -> None:
    await bench.start(("p1", "p2"))
    await bench.wait_telemetry("p2", 30)
    assert await same_runtime(bench, "p1") and await same_runtime(bench, "p2")

    p2 = bench.press_file("p2")
    text = p2.read_text()
    assert 'name = "tonnage"' in text
    p2.write_text(text.replace('name = "tonnage"', 'name = "force_kn"'))
    summary = await bench.reload()
    assert "added: none; removed: none; changed: p2; unchanged: p1" in summary
    await bench.wait(lambda: any("force_kn" in p["data"]["values"]
                                 for p in bench.payloads("p2", "/telemetry")))
    assert not await same_runtime(bench, "p2")  # restarted: a new runtime
    assert await same_runtime(bench, "p1")  # untouched
    renamed = [p for p in bench.payloads("p2", "/telemetry") if "force_kn" in p["data"]["values"]]
    assert all("tonnage" not in p["data"]["values"] for p in renamed)
    await bench.wait_telemetry("p1", bench.last_telemetry_seq("p1") + 5)

    await bench.stop_and_check_no_gap(("p1", "p2"))  # the restarted press too: seqs go on
    assert bench.contract_violations() == []


async def test_a_broken_press_file_is_refused_and_the_running_config_kept(
        bench: ReloadBench) -> None:
    await bench.start(("p1", "p2"))
    p2 = bench.press_file("p2")
    good = p2.read_text()
    p2.write_text(good.replace('type = "uint32"', 'type = "uint33"', 1))
    bench.add("p3")  # refused together with the broken file: not started

    mark = bench.daemon.hup()
    await bench.daemon.wait_line(r"SIGHUP: config refused \(1 problem\(s\)\); the running "
                                 "config is kept", after=mark)
    await bench.daemon.wait_line(r"presses/p2\.toml: plc\.tags\[0\]\.type: 'uint33' is not "
                                 "allowed", after=mark)
    assert not any(re.search(SUMMARY, line) for line in bench.daemon.lines[mark:])
    assert set((await bench.health())["presses"]) == {"p1", "p2"}
    assert await same_runtime(bench, "p1") and await same_runtime(bench, "p2")

    # fixed, plus a collector.toml change: the presses are applied, the site change is not
    p2.write_text(good)
    toml = bench.etc / "collector.toml"
    toml.write_text(re.sub(r"(?m)^keepalive_s = 30", "keepalive_s = 45", toml.read_text()))
    mark = bench.daemon.hup()
    await bench.daemon.wait_line(r"SIGHUP: broker\.keepalive_s changed: needs a restart "
                                 r"\(not applied\)", after=mark)
    _, summary = await bench.daemon.wait_line(SUMMARY, after=mark)
    assert "added: p3; removed: none; changed: none; unchanged: p1, p2" in summary
    await bench.wait_telemetry("p3")
    assert await same_runtime(bench, "p1") and await same_runtime(bench, "p2")

    await bench.stop_and_check_no_gap(("p1", "p2"))
    assert bench.contract_violations() == []


async def test_an_unchanged_press_keeps_its_runtime_and_driver_tasks(
        tmp_path: Path, broker: LocalBroker) -> None:
    """The same proof inside the process: the untouched press's runtime and driver task
    objects are the very same ones, still running; the changed press's are new."""
    sims = {}
    for pid in ("p1", "p2"):
        part, die, lot = JOBS[pid]
        sims[pid] = PressSimulator(host="127.0.0.1", port=0, part=part, die=die, lot=lot,
                                   spm=120, seed=1)
        await sims[pid].start()
    etc = write_config_dir(tmp_path / "etc", broker.port,
                           {p: s.port for p, s in sims.items()}, tmp_path)
    daemon = Daemon(load_config(etc))
    task = asyncio.create_task(daemon.run())
    try:
        await asyncio.wait_for(daemon.ready.wait(), 10)
        runtimes = dict(daemon.presses)
        tasks = {pid: daemon.press_tasks(pid) for pid in runtimes}
        p2 = etc / "presses" / "p2.toml"
        p2.write_text(p2.read_text().replace("poll_interval_ms = 100", "poll_interval_ms = 200"))
        assert await daemon.reload() is True
        assert daemon.presses["p1"] is runtimes["p1"]
        assert daemon.press_tasks("p1") == tasks["p1"]
        assert not any(t.done() for t in tasks["p1"])
        assert daemon.presses["p2"] is not runtimes["p2"]
        assert all(t.cancelled() for t in tasks["p2"])
        assert not set(daemon.press_tasks("p2")) & set(tasks["p2"])
        assert daemon.config.presses["p2"].plc.poll_interval_ms == 200
    finally:
        daemon.stop()
        await asyncio.wait_for(task, 20)
        for sim in sims.values():
            await sim.stop()


# -- the diff on its own ------------------------------------------------------------------
def _config(tmp_path: Path, name: str = "etc") -> LoadedConfig:
    return load_config(write_config_dir(tmp_path / name, 1883, {"p1": 5021, "p2": 5022,
                                                              "p3": 5023}, tmp_path))


def _on_line(config: LoadedConfig, pid: str, port: int) -> LoadedConfig:
    """``pid`` moved to a Modbus RTU-over-TCP line 127.0.0.1:port (shared by whoever else
    is put there)."""
    press = config.presses[pid]
    plc = press.plc.model_copy(update={"protocol": "modbus_rtu_tcp", "port": port})
    presses = {**config.presses, pid: press.model_copy(update={"plc": plc})}
    return config.model_copy(update={"presses": presses})


def test_plan_sorts_presses_by_fate(tmp_path: Path) -> None:
    old = _config(tmp_path)
    plc = old.presses["p2"].plc
    new = old.model_copy(update={"presses": {
        "p2": old.presses["p2"].model_copy(update={"plc": plc.model_copy(
            update={"poll_interval_ms": 250})}),
        "p3": old.presses["p3"], "p9": old.presses["p1"].model_copy(update={"id": "p9"})}})
    plan = plan_reload(old, new)
    assert (plan.added, plan.removed, plan.changed, plan.unchanged) == \
        (("p9",), ("p1",), ("p2",), ("p3",))
    assert plan.needs_restart == () and plan.deferred == ()
    assert plan.summary() == ("SIGHUP: presses added: p9; removed: p1; changed: p2; "
                              "unchanged: p3")
    same = plan_reload(old, _config(tmp_path, "again"))
    assert (same.added, same.removed, same.changed) == ((), (), ())
    assert not same.touches_presses


def test_a_change_on_a_shared_line_restarts_the_whole_line(tmp_path: Path) -> None:
    old = _on_line(_on_line(_config(tmp_path), "p1", 6000), "p2", 6000)
    press = old.presses["p2"]
    new = old.model_copy(update={"presses": {**old.presses, "p2": press.model_copy(
        update={"plc": press.plc.model_copy(update={"unit": 9})})}})
    plan = plan_reload(old, new)
    assert plan.changed == ("p2", "p1") and plan.unchanged == ("p3",)
    assert plan.with_line == {"p1": "127.0.0.1:6000"}
    assert "restarted with their line: p1 (127.0.0.1:6000)" in plan.summary()
    # a press leaving the line restarts the others on it too
    gone = old.model_copy(update={"presses": {k: v for k, v in old.presses.items()
                                              if k != "p2"}})
    plan = plan_reload(old, gone)
    assert plan.removed == ("p2",) and plan.changed == ("p1",)


def test_site_changes_are_named_not_applied(tmp_path: Path) -> None:
    old = _config(tmp_path)
    col = old.collector
    new = old.model_copy(update={"collector": col.model_copy(update={
        "broker": col.broker.model_copy(update={"host": "10.0.0.9", "keepalive_s": 45}),
        "buffer": col.buffer.model_copy(update={"path": "/elsewhere.sqlite"})})})
    plan = plan_reload(old, new)
    assert plan.needs_restart == ("broker.host", "broker.keepalive_s", "buffer.path")
    assert plan.unchanged == ("p1", "p2", "p3")


def test_with_sparkplug_press_changes_wait_for_a_restart(tmp_path: Path) -> None:
    old = _config(tmp_path)
    col = old.collector
    old = old.model_copy(update={"collector": col.model_copy(update={
        "sparkplug": col.sparkplug.model_copy(update={"enabled": True})})})
    new = old.model_copy(update={"presses": {"p1": old.presses["p1"]}})
    plan = plan_reload(old, new)
    assert not plan.touches_presses and plan.deferred == ("p2", "p3")
    assert plan.needs_restart == ("presses/*.toml (p2, p3): [sparkplug] declares its "
                                  "devices at start",)


def test_changed_keys_walks_tables() -> None:
    assert changed_keys({"a": {"b": 1, "c": [1]}, "d": 1},
                        {"a": {"b": 2, "c": [1]}, "e": 1}) == ["a.b", "d", "e"]
    assert changed_keys({"a": 1}, {"a": 1}) == []


def test_an_added_opcua_press_needs_a_password_it_can_read(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The daemon drops the password variables after start: a press it starts on a reload
    reads its password file, keeps the password it had, or the reload is refused."""
    from collector.reload import SecretRefused, plc_passwords

    for name in [n for n in os.environ if n.startswith("PRESS_COLLECTOR_OPCUA_PASSWORD")]:
        monkeypatch.delenv(name)
    old = load_config(REPO_CONFIG)
    p4 = old.presses["p4"]
    secured = p4.model_copy(update={"plc": p4.plc.model_copy(update={"username": "collector"})})
    new = old.model_copy(update={"presses": {**old.presses, "p4": secured}})
    plan = plan_reload(old, new)
    assert plan.changed == ("p4",)
    with pytest.raises(SecretRefused, match=r"presses/p4\.toml: plc\.username: no password"):
        plc_passwords(plan, new, {})
    assert plc_passwords(plan, new, {"p4": "kept"}) == {"p4": "kept"}
    (tmp_path / "p4.secret").write_text("from-file\n")
    with_file = secured.model_copy(update={"plc": secured.plc.model_copy(
        update={"password_file": str(tmp_path / "p4.secret")})})
    new = old.model_copy(update={"presses": {**old.presses, "p4": with_file}})
    assert plc_passwords(plan, new, {"p4": "kept"}) == {"p4": "from-file"}
