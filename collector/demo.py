"""The demo: the whole pipeline on three simulated presses with real protocols.

Three Modbus TCP press simulators, five gauges on ptys, a private Mosquitto, the daemon
itself, and a subscriber that prints what the central quality system would receive. A
scripted operator drives the quality workflow by watching the events, as a setter would
watch the screen: p1 passes its first article, p2 fails one and passes the second, p3
gets a die change and a new first article. Patrol measurements follow on every press.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as mqtt

from collector.config import LoadedConfig, load_config
from collector.daemon import Daemon
from collector.domain import Characteristic, Plan
from collector.local_broker import LocalBroker
from drivers.sim_gauge import GaugeSimulator
from drivers.sim_press import PressSimulator

log = logging.getLogger(__name__)

REPO_CONFIG = Path(__file__).resolve().parent.parent / "config"

# Starting job of each demo press: part number, die id, material lot.
DEMO_JOBS = {
    "p1": ("BRK-100", 7, "L2411-01"),
    "p2": ("BRK-200", 12, "L2411-07"),
    "p3": ("CLP-300", 21, "L2410-33"),
    "p4": ("BRK-200", 31, "L2411-12"),  # the OPC UA press
}
PATROL_EVERY_S = 4.0
SETTER_WALK_S = 2.0
TERMINATORS = {"CR": b"\r", "LF": b"\n", "CRLF": b"\r\n"}


class EventTap:
    """A plain MQTT subscriber: prints what a downstream system sees, feeds the operator."""

    def __init__(self, host: str, port: int, root: str, out: Callable[[str], None] = print):
        self.root = root
        self.out = out
        self.counts: Counter[str] = Counter()
        self._loop = asyncio.get_running_loop()
        self.history: list[dict[str, Any]] = []  # every event payload, in arrival order
        self._changed = asyncio.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="demo-subscriber")
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(f"{root}/#", qos=1)
        self.client.on_message = self._on_message
        self.client.connect(host, port)
        self.client.loop_start()

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()

    def _on_message(self, client, userdata, msg) -> None:
        try:
            payload = orjson.loads(msg.payload)
        except orjson.JSONDecodeError:
            payload = {"raw": msg.payload.decode(errors="replace")}
        self._loop.call_soon_threadsafe(self._deliver, msg.topic, payload)

    def _deliver(self, topic: str, payload: dict[str, Any]) -> None:
        self.counts[topic.rsplit("/", 1)[-1]] += 1
        if "/events/" in topic:
            self.out(format_event(payload))
            self.history.append(payload)
            self._changed.set()
        elif topic.endswith("/status"):
            self.out(f"{'':12}  collector {payload.get('host')}: {payload.get('status')}")

    def mark(self) -> int:
        """A position in the history: ``wait_for(..., since=mark)`` only sees later events."""
        return len(self.history)

    async def wait_for(self, predicate: Callable[[dict[str, Any]], bool], since: int = 0,
                       timeout: float = 60.0) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while True:
                for payload in self.history[since:]:
                    if predicate(payload):
                        return payload
                since = len(self.history)
                self._changed.clear()
                await self._changed.wait()


def format_event(p: dict[str, Any]) -> str:
    """One line per event: when, press, seq, kind and what matters for that kind."""
    kind = p.get("schema", "").rsplit("/", 1)[-1]
    data, ctx = p.get("data", {}), p.get("context", {})
    clock = p.get("ts", "")[11:23]
    head = f"{clock}  {p.get('press')}  #{p.get('seq'):<4} {kind:<18}"
    if kind == "setup":
        detail = (f"reasons={','.join(data.get('reasons', []))} part={ctx.get('part_number')} "
                  f"die={ctx.get('die_id')} lot={ctx.get('material_lot')}")
    elif kind == "first_article":
        values = " ".join(f"{r.get('characteristic')}={r.get('value')}({r.get('verdict')})"
                          for r in data.get("results", []))
        detail = (f"attempt {data.get('attempt')} -> {str(data.get('verdict')).upper()}  {values}  "
                  f"unreleased_strokes={data.get('unreleased_strokes')}")
    elif kind == "measurement":
        detail = (f"{data.get('characteristic')}={data.get('value')} {data.get('unit', '')} "
                  f"-> {data.get('verdict')} stroke={ctx.get('stroke_count')}")
    elif kind == "state_change":
        detail = f"{data.get('from')} -> {data.get('to')} ({data.get('cause', '')})"
    elif kind == "connection":
        detail = f"plc {'online' if data.get('online') else 'offline'} {data.get('reason', '')}"
    else:
        detail = orjson.dumps(data).decode()[:120]
    return head + detail


def in_tolerance_value(ch: Characteristic, shift: Decimal = Decimal(0)) -> Decimal:
    """A value well inside the tolerance (or outside it, with ``shift`` in tolerance widths)."""
    low = ch.lsl if ch.lsl is not None else ch.nominal - (ch.usl - ch.nominal)  # type: ignore[operator]
    high = ch.usl if ch.usl is not None else ch.nominal + (ch.nominal - ch.lsl)  # type: ignore[operator]
    centre = (low + high) / 2 if ch.lsl is not None and ch.usl is not None else ch.nominal
    return (centre + (high - low) * shift).quantize(Decimal("0.001"))


class Operator:
    """The scripted setter of one press: measures when the workflow asks for it."""

    def __init__(self, press: str, plan: Plan, gauges: dict[str, GaugeSimulator],
                 sim: PressSimulator, tap: EventTap) -> None:
        self.press, self.plan, self.gauges, self.sim, self.tap = press, plan, gauges, sim, tap

    def _is(self, kind: str, **data: Any) -> Callable[[dict[str, Any]], bool]:
        def match(p: dict[str, Any]) -> bool:
            return (p.get("press") == self.press and p.get("schema", "").endswith("/" + kind)
                    and all(p.get("data", {}).get(k) == v for k, v in data.items()))
        return match

    async def measure_piece(self, bad: str | None = None) -> None:
        await asyncio.sleep(SETTER_WALK_S)  # the setter takes the piece to the gauges
        for ch in self.plan.characteristics:
            shift = Decimal("1.5") if ch.id == bad else Decimal(0)
            gauge = self.gauges[ch.gauge or next(iter(self.gauges))]
            gauge.send_value(str(in_tolerance_value(ch, shift)), channel=ch.channel or 1,
                             unit=ch.unit)
            await asyncio.sleep(0.5)  # a moment per feature

    async def first_article(self, since: int = 0, fail_first: bool = False) -> None:
        await self.tap.wait_for(self._is("state_change", to="awaiting_first_article"), since)
        if fail_first:
            mark = self.tap.mark()
            await self.measure_piece(bad=self.plan.characteristics[0].id)
            await self.tap.wait_for(self._is("first_article", verdict="fail"), mark)
        mark = self.tap.mark()
        await self.measure_piece()
        await self.tap.wait_for(self._is("first_article", verdict="pass"), mark)

    async def patrol(self, rounds: int) -> None:
        for _ in range(rounds):
            await asyncio.sleep(PATROL_EVERY_S)
            ch = self.plan.characteristics[0]
            gauge = self.gauges[ch.gauge or next(iter(self.gauges))]
            gauge.send_value(str(in_tolerance_value(ch)), channel=ch.channel or 1, unit=ch.unit)

    async def die_change(self, new_die: int) -> None:
        self.sim.set_running(False)
        self.sim.set_setup_mode(True)
        await asyncio.sleep(2.0)
        self.sim.set_die(new_die)
        await asyncio.sleep(2.0)
        self.sim.set_setup_mode(False)
        self.sim.set_running(True)

    async def script(self) -> None:
        if self.press in ("p1", "p4"):
            await self.first_article()
            await self.patrol(1000)
        elif self.press == "p2":
            await self.first_article(fail_first=True)
            await self.patrol(1000)
        else:
            await self.first_article()
            await self.patrol(2)
            mark = self.tap.mark()
            await self.die_change(DEMO_JOBS[self.press][1] + 1)
            await self.first_article(since=mark)
            await self.patrol(1000)


async def start_simulator(protocol: str, part: str, die: int, lot: str) -> Any:
    """A simulated press PLC speaking the press's protocol, stroking at 60 spm."""
    if protocol == "opcua":
        from drivers.sim_opcua import OpcuaPressSimulator  # asyncua only when needed

        sim: Any = OpcuaPressSimulator(host="127.0.0.1", port=0, part=part, die=die, lot=lot,
                                       spm=60)
    else:
        sim = PressSimulator(host="127.0.0.1", port=0, part=part, die=die, lot=lot, spm=60)
    await sim.start()
    sim.set_running(True)
    return sim


def prepare_config(config: LoadedConfig, workdir: Path, broker: tuple[str, int],
                   plc_ports: dict[str, int],
                   gauge_paths: dict[tuple[str, str], str]) -> LoadedConfig:
    """Point the example config at the demo's simulators, broker and work directory."""
    site = config.collector
    collector = site.model_copy(update={
        "broker": site.broker.model_copy(update={"host": broker[0], "port": broker[1]}),
        "buffer": site.buffer.model_copy(update={"path": str(workdir / "buffer.sqlite")}),
    })
    presses = {}
    for press_id, press in config.presses.items():
        gauges = [g.model_copy(update={"port": gauge_paths[(press_id, g.id)]})
                  for g in press.gauges]
        if press.plc.protocol == "opcua":
            endpoint = f"opc.tcp://127.0.0.1:{plc_ports[press_id]}/press"
            plc = press.plc.model_copy(update={"endpoint": endpoint})
        else:
            plc = press.plc.model_copy(update={"host": "127.0.0.1", "port": plc_ports[press_id]})
        presses[press_id] = press.model_copy(update={"plc": plc, "gauges": gauges})
    return config.model_copy(update={"collector": collector, "presses": presses})


async def run_demo(config_dir: Path | None = None, duration: float | None = None,
                   broker: str | None = None, workdir: Path | None = None,
                   out: Callable[[str], None] = print) -> int:
    config = load_config(config_dir or REPO_CONFIG)
    with contextlib.ExitStack() as stack:
        if workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="press-demo-")))
        workdir.mkdir(parents=True, exist_ok=True)
        if broker:
            host, _, port = broker.partition(":")
            broker_addr = (host, int(port or 1883))
        else:
            local = LocalBroker(port=0, data_dir=workdir / "broker")
            local.start()
            stack.callback(local.stop)
            broker_addr = ("127.0.0.1", local.port)
            out(f"demo: private Mosquitto on 127.0.0.1:{local.port}")

        sims: dict[str, Any] = {}  # PressSimulator or OpcuaPressSimulator
        gauges: dict[str, dict[str, GaugeSimulator]] = {}
        gauge_paths: dict[tuple[str, str], str] = {}
        for press_id, press in config.presses.items():
            part, die, lot = DEMO_JOBS.get(press_id, (next(iter(config.plans)), 1, "L0001"))
            sim = await start_simulator(press.plc.protocol, part, die, lot)
            sims[press_id] = sim
            gauges[press_id] = {}
            for g in press.gauges:
                link = workdir / f"{press_id}-{g.id}"
                gsim = GaugeSimulator(str(link), preset=g.preset,
                                      terminator=TERMINATORS[g.terminator])
                gsim.open()
                stack.callback(gsim.close)
                gauges[press_id][g.id] = gsim
                gauge_paths[(press_id, g.id)] = str(link)
            out(f"demo: press {press_id} {press.plc.protocol} simulator on 127.0.0.1:{sim.port} "
                f"part={part} die={die} lot={lot}; gauges {', '.join(gauges[press_id])} on ptys")
        config = prepare_config(config, workdir, broker_addr,
                                {p: s.port for p, s in sims.items()}, gauge_paths)

        tap = EventTap(*broker_addr, config.collector.site.topic_root, out=out)
        stack.callback(tap.close)
        daemon = Daemon(config)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        started = time.monotonic()
        daemon_task = asyncio.create_task(daemon.run(), name="daemon")
        operators = [asyncio.create_task(Operator(p, config.plans[DEMO_JOBS[p][0]], gauges[p],
                                                  sims[p], tap).script(), name=f"operator-{p}")
                     for p in sims if p in DEMO_JOBS and DEMO_JOBS[p][0] in config.plans]
        try:
            waiters = [asyncio.create_task(stop.wait())]
            if duration is not None:
                waiters.append(asyncio.create_task(asyncio.sleep(duration)))
            waiters.append(daemon_task)
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            for w in waiters[:-1]:
                w.cancel()
        finally:
            for task in operators:
                task.cancel()
            await asyncio.gather(*operators, return_exceptions=True)
            daemon.stop()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(daemon_task, 10)
            for sim in sims.values():
                await sim.stop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
        elapsed = time.monotonic() - started
        summary = ", ".join(f"{k}={v}" for k, v in sorted(tap.counts.items()))
        out(f"demo: ran {elapsed:.1f} s; received {summary}")
        if daemon_task.done() and not daemon_task.cancelled() and daemon_task.exception():
            raise daemon_task.exception()  # type: ignore[misc]
    return 0
