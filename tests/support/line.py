"""A whole line PC in a test: press simulators, gauges on ptys, the daemon, a subscriber.

Built from the repo's example config (config/), pointed at free ports, ptys and a
buffer file in the test's tmp dir, exactly as the demo does it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from collector.config import LoadedConfig, load_config
from collector.contract import validate_message
from collector.daemon import Daemon
from sim.demo import REPO_CONFIG, prepare_config
from sim.gauge import GaugeSimulator
from sim.local_broker import LocalBroker
from sim.press import PressSimulator
from tests.support.subscriber import Received, Subscriber

# a first article of part BRK-100 that passes (gauge, value) in plan order
BRK100_PASS = [("g1", "25.010"), ("g2", "12.480"), ("g2", "0.020")]

JOBS = {"p1": ("BRK-100", 7, "L2411-01"), "p2": ("BRK-200", 12, "L2411-07"),
        "p3": ("CLP-300", 21, "L2410-33")}


class Line:
    """Simulators + daemon + subscriber; ``await line.start()``, ``await line.close()``."""

    def __init__(self, tmp_path: Path, broker: LocalBroker, presses: tuple[str, ...] = ("p1",),
                 spm: int = 120, broker_settings: dict[str, Any] | None = None,
                 adjust: Callable[[LoadedConfig], LoadedConfig] | None = None) -> None:
        self.tmp_path = tmp_path
        self.broker = broker
        self.press_ids = presses
        self.spm = spm
        self.adjust = adjust  # a test's changes to the example config (plans, workflow)
        self.broker_settings = broker_settings or {}  # e.g. {"reconnect_max_s": 1.0}
        self.sims: dict[str, PressSimulator] = {}
        self.gauges: dict[str, dict[str, GaugeSimulator]] = {}
        self.config: LoadedConfig | None = None
        self.daemon: Daemon | None = None
        self.task: asyncio.Task[None] | None = None
        self.sub: Subscriber | None = None

    @property
    def root(self) -> str:
        assert self.config is not None
        return self.config.collector.site.topic_root

    async def start(self, subscribe: bool = True) -> Line:
        base = load_config(REPO_CONFIG)
        gauge_paths = {}
        for press_id in self.press_ids:
            part, die, lot = JOBS[press_id]
            sim = PressSimulator(host="127.0.0.1", port=0, part=part, die=die, lot=lot,
                                 spm=self.spm, seed=1)
            await sim.start()
            sim.set_running(True)
            self.sims[press_id] = sim
            self.gauges[press_id] = {}
            for g in base.presses[press_id].gauges:
                link = self.tmp_path / f"{press_id}-{g.id}"
                gsim = GaugeSimulator(str(link), preset=g.preset)
                gsim.open()
                self.gauges[press_id][g.id] = gsim
                gauge_paths[(press_id, g.id)] = str(link)
        base = base.model_copy(update={"presses": {p: base.presses[p] for p in self.press_ids}})
        self.config = prepare_config(base, self.tmp_path, ("127.0.0.1", self.broker.port),
                                     {p: s.port for p, s in self.sims.items()}, gauge_paths)
        if self.adjust is not None:
            self.config = self.adjust(self.config)
        if self.broker_settings:
            col = self.config.collector
            col = col.model_copy(update={"broker": col.broker.model_copy(
                update=self.broker_settings)})
            self.config = self.config.model_copy(update={"collector": col})
        if subscribe:
            self.sub = Subscriber("127.0.0.1", self.broker.port, [f"{self.root}/#"]).start()
        await self.start_daemon()
        return self

    async def start_daemon(self) -> None:
        assert self.config is not None
        self.daemon = Daemon(self.config)
        self.task = asyncio.create_task(self.daemon.run())
        await asyncio.wait_for(self.daemon.ready.wait(), 10)

    async def stop_daemon(self) -> None:
        if self.daemon is not None and self.task is not None:
            self.daemon.stop()
            await asyncio.wait_for(self.task, 15)
            self.daemon = self.task = None

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.stop_daemon()
        await close_peers(self.sub, self.sims, self.gauges)

    # -- what the subscriber saw -------------------------------------------------------
    def events(self, msgs: list[Received] | None = None, press: str | None = None,
               kind: str | None = None) -> list[dict[str, Any]]:
        assert self.sub is not None
        out = []
        for m in msgs if msgs is not None else self.sub.snapshot():
            if "/events/" not in m.topic:
                continue
            p = orjson.loads(m.payload)
            if press and p["press"] != press:
                continue
            if kind and not p["schema"].endswith("/" + kind):
                continue
            out.append(p)
        return out

    def matching(self, msgs: list[Received], press: str, kind: str, after: int,
                 data: dict[str, Any]) -> list[dict[str, Any]]:
        return [e for e in self.events(msgs, press, kind)
                if e["seq"] > after and all(e["data"].get(k) == v for k, v in data.items())]

    async def wait_event(self, press: str, kind: str, timeout: float = 15.0, after: int = 0,
                         **data: Any) -> dict[str, Any]:
        """The first event of that kind (with seq > after) whose data has these values."""
        assert self.sub is not None
        msgs = await self.sub.wait_for(
            lambda msgs: bool(self.matching(msgs, press, kind, after, data)), timeout)
        return self.matching(msgs, press, kind, after, data)[0]

    def contract_violations(self) -> list[str]:
        assert self.sub is not None
        problems = []
        for m in self.sub.snapshot():
            errors = validate_message(m.topic, self.root, orjson.loads(m.payload))
            problems += [f"{m.topic}: {e}" for e in errors]
        return problems

    def seqs(self, stream_suffix: str) -> dict[str, list[int]]:
        """seq numbers per press as received, for 'events', 'telemetry' (live and replayed
        after an outage, in arrival order), or one telemetry topic: 'telemetry/live',
        'telemetry/replay'."""
        assert self.sub is not None
        seqs: dict[str, list[int]] = defaultdict(list)
        live = stream_suffix in ("telemetry", "telemetry/live")
        replay = stream_suffix in ("telemetry", "telemetry/replay")
        for m in self.sub.snapshot():
            if (stream_suffix == "events" and "/events/" in m.topic) or \
                    (live and m.topic.endswith("/telemetry")) or \
                    (replay and m.topic.endswith("/telemetry/replay")):
                p = orjson.loads(m.payload)
                seqs[p["press"]].append(p["seq"])
        return seqs

    def measure(self, press: str, gauge: str, value: str, channel: int = 1) -> None:
        self.gauges[press][gauge].send_value(value, channel=channel)


async def close_peers(sub: Subscriber | None, sims: dict[str, Any],
                      gauges: dict[str, dict[str, GaugeSimulator]]) -> None:
    """Stop what a test's line ran beside the daemon: subscriber, simulators, gauges."""
    if sub is not None:
        sub.stop()
    for sim in sims.values():
        await sim.stop()
    for press_gauges in gauges.values():
        for g in press_gauges.values():
            g.close()


def contiguous(seqs: list[int]) -> tuple[list[int], int]:
    """(missing seq numbers, duplicate count) of a received sequence."""
    unique = sorted(set(seqs))
    missing = sorted(set(range(unique[0], unique[-1] + 1)) - set(unique)) if unique else []
    return missing, len(seqs) - len(unique)


async def wait_gauges_online(line: Line, press: str, after: int = 0) -> None:
    """A pty gauge drops what it sent before the port was open: wait for each to be read."""
    for gauge in line.gauges[press]:
        await line.wait_event(press, "gauge_connection", gauge=gauge, online=True, after=after)
