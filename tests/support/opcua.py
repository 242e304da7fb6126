"""OPC UA test helpers: a recording sink with awaitable conditions, poller factories, and a
line whose press speaks OPC UA (the OPC UA twin of tests.support.line.Line)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from collector.config import OpcuaPlcConfig, load_config
from drivers.base import Backoff, ConnectionChange, DriverEvent, PollResult
from drivers.opcua import OpcuaPoller, OpcuaSecurity, OpcuaTag
from sim.demo import REPO_CONFIG, prepare_config
from sim.gauge import GaugeSimulator
from sim.opcua import NODES, ROLES, OpcuaPressSimulator, node_text
from tests.support.line import JOBS, Line
from tests.support.subscriber import Subscriber


class Recorder:
    """A driver sink that remembers everything and lets a test await a condition."""

    def __init__(self) -> None:
        self.events: list[DriverEvent] = []
        self._changed = asyncio.Event()

    def __call__(self, event: DriverEvent) -> None:
        self.events.append(event)
        self._changed.set()

    @property
    def polls(self) -> list[PollResult]:
        return [e for e in self.events if isinstance(e, PollResult)]

    @property
    def changes(self) -> list[ConnectionChange]:
        return [e for e in self.events if isinstance(e, ConnectionChange)]

    def online_flags(self) -> list[bool]:
        return [c.online for c in self.changes]

    async def wait_for(self, predicate: Callable[[Recorder], Any], timeout: float = 10.0) -> Any:
        async with asyncio.timeout(timeout):
            while True:
                hit = predicate(self)
                if hit:
                    return hit
                self._changed.clear()
                await self._changed.wait()

    async def wait_poll(self, predicate: Callable[[PollResult], bool],
                        timeout: float = 10.0) -> PollResult:
        """The first PollResult from now on that satisfies ``predicate``."""
        start = len(self.events)
        return await self.wait_for(lambda r: next(
            (e for e in r.events[start:] if isinstance(e, PollResult) and predicate(e)), None),
            timeout)


def press_tags(poll: Sequence[str] = (), **overrides: dict[str, Any]) -> list[OpcuaTag]:
    """One tag per simulator node; names in ``poll`` are polled, the rest subscribed."""
    return [OpcuaTag(name, node_text(name), mode="poll" if name in poll else "subscribe",
                     **overrides.get(name, {}))
            for name in NODES]


def poller(sim: OpcuaPressSimulator, tags: Sequence[OpcuaTag] | None = None,
           security: OpcuaSecurity | None = None, **kw: Any) -> OpcuaPoller:
    """A poller tuned for tests: fast publishing, short backoff, quick watchdog."""
    kw.setdefault("publishing_interval_s", 0.05)
    kw.setdefault("poll_interval_s", 0.1)
    kw.setdefault("heartbeat_s", 0.5)
    kw.setdefault("watchdog_s", 0.5)
    kw.setdefault("timeout_s", 2.0)
    kw.setdefault("backoff", Backoff(initial=0.1, maximum=0.4))
    return OpcuaPoller("p4/plc", sim.url, tags if tags is not None else press_tags(),
                       security=security, **kw)


@contextlib.asynccontextmanager
async def running(p: OpcuaPoller, rec: Recorder):
    task = asyncio.create_task(p.run(rec))
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


class OpcuaLine(Line):
    """Line with press p1 behind an OPC UA simulator instead of Modbus (same config
    otherwise: the repo's plans and gauges)."""

    async def start(self, subscribe: bool = True) -> OpcuaLine:
        base = load_config(REPO_CONFIG)
        press_id = "p1"
        part, die, lot = JOBS[press_id]
        sim = OpcuaPressSimulator(part=part, die=die, lot=lot, spm=self.spm, seed=1)
        await sim.start()
        sim.set_running(True)
        self.sims[press_id] = sim  # type: ignore[assignment]
        self.gauges[press_id] = {}
        gauge_paths = {}
        for g in base.presses[press_id].gauges:
            link = self.tmp_path / f"{press_id}-{g.id}"
            gsim = GaugeSimulator(str(link), preset=g.preset)
            gsim.open()
            self.gauges[press_id][g.id] = gsim
            gauge_paths[(press_id, g.id)] = str(link)
        base = base.model_copy(update={"presses": {press_id: base.presses[press_id]}})
        config = prepare_config(base, self.tmp_path, ("127.0.0.1", self.broker.port),
                                {press_id: 1}, gauge_paths)
        plc = OpcuaPlcConfig.model_validate({
            "protocol": "opcua", "endpoint": sim.url, "publishing_interval_ms": 50,
            "heartbeat_ms": 200,
            "tags": [{"name": n, "node": node_text(n), **({"role": ROLES[n]} if n in ROLES else {}),
                      **({"mode": "poll"} if n == "die_id" else {})} for n in NODES]})
        press = config.presses[press_id].model_copy(update={"plc": plc})
        self.config = config.model_copy(update={"presses": {press_id: press}})
        if self.adjust is not None:
            self.config = self.adjust(self.config)
        if subscribe:
            self.sub = Subscriber("127.0.0.1", self.broker.port, [f"{self.root}/#"]).start()
        await self.start_daemon()
        return self


def trust(cert: Path | None, trust_dir: Path) -> Path:
    trust_dir.mkdir(parents=True, exist_ok=True)
    if cert is not None:
        (trust_dir / cert.name).write_bytes(cert.read_bytes())
    return trust_dir
