"""The demo: the whole pipeline on four simulated presses with real protocols.

Three Modbus TCP press simulators and one OPC UA press, gauges on ptys, a private
Mosquitto, the daemon itself, and a subscriber that prints what the central quality
system would receive. A scripted operator drives the quality workflow by watching the
events, as a setter would watch the screen: p1 passes its first article, p2 fails one and
passes the second, p3 gets a die change and a new first article.

The quality story (issue 11): patrol measurements rotate through every characteristic of
the plan with values from a seeded process model (``sim.gauge.ProcessSimulator``),
so within a minute p1 shows control limits frozen from a baseline, a drift of C1, the
rule signal it causes, the plan's reaction (hold) and a quality engineer's release. For
that the demo gives BRK-100's C1 a baseline of 10 subgroups and ``hold`` on a broken rule
(the shipped plan has 20 and no reaction; it says so when it starts).

Streams: the event view (one line per event, what a subscriber sees) goes to stdout;
the demo's own log lines and the daemon's logging go to stderr.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as mqtt

from collector import messages
from collector.command_gate import command_topic
from collector.config import LoadedConfig, load_config
from collector.daemon import Daemon
from collector.domain import Characteristic, Plan
from sim.gauge import GaugeSimulator, ProcessSimulator
from sim.local_broker import LocalBroker
from sim.plc import for_protocol

log = logging.getLogger(__name__)

REPO_CONFIG = Path(__file__).resolve().parent.parent / "config"

# Starting job of each demo press: part number, die id, material lot.
DEMO_JOBS = {
    "p1": ("BRK-100", 7, "L2411-01"),
    "p2": ("BRK-200", 12, "L2411-07"),
    "p3": ("CLP-300", 21, "L2410-33"),
    "p4": ("BRK-200", 31, "L2411-12"),  # the OPC UA press
}
PATROL_EVERY_S = 1.0  # pause between two patrol rounds (one value of every characteristic)
FEATURE_S = 0.4  # a moment per feature at the gauge
SETTER_WALK_S = 2.0
SORTING_S = 3.0  # the quality engineer checks the parts before releasing the hold
DEMO_BASELINE = 10  # subgroups before p1's C1 limits freeze (the shipped plan: 20)
STORY_PRESS = "p1"
LINE_WIDTH = 120
TERMINATORS = {"CR": b"\r", "LF": b"\n", "CRLF": b"\r\n"}


def _stderr(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


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
            self.out(f"{payload.get('ts', '')[11:23]:12}  collector {payload.get('host')}: "
                     f"{payload.get('status')}")

    def mark(self) -> int:
        """A position in the history: ``wait_for(..., since=mark)`` only sees later events."""
        return len(self.history)

    async def wait_for(self, predicate: Callable[[dict[str, Any]], bool], since: int = 0,
                       timeout: float | None = 60.0) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while True:
                for payload in self.history[since:]:
                    if predicate(payload):
                        return payload
                since = len(self.history)
                self._changed.clear()
                await self._changed.wait()


def _num(value: Any) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def _fields(data: dict[str, Any], room: int) -> str:
    """Top-level fields as key=value within ``room`` characters, never cut mid-word: a
    text too long is shortened at a word boundary, fields that no longer fit are left
    out, and either shows as '…'."""
    parts: list[str] = []
    used = 0
    for key, value in data.items():
        if isinstance(value, (dict, list)):
            value = "{…}" if isinstance(value, dict) else f"[{len(value)}]"
        part = f"{key}={_num(value)}"
        left = room - used - 2
        if len(part) > left:
            words = part[:left].rsplit(" ", 1)[0] if " " in part[:left] else ""
            if words and len(words) > len(key) + 1:
                parts.append(words + " …")
            else:
                parts.append("…")
            break
        parts.append(part)
        used += len(part) + 1
    return " ".join(parts)


def format_event(p: dict[str, Any]) -> str:
    """One line per event: when, press, seq, kind and what matters for that kind."""
    kind = p.get("schema", "").rsplit("/", 1)[-1]
    data, ctx = p.get("data", {}), p.get("context", {})
    clock = p.get("ts", "")[11:23]
    head = f"{clock}  {p.get('press')}  #{p.get('seq'):<4} {kind:<18}"
    if kind == "setup":
        detail = (f"reasons={','.join(data.get('reasons', []))} part={ctx.get('part_number')} "
                  f"die={ctx.get('die_id')} lot={ctx.get('material_lot')}"
                  f"{' (amends the open setup)' if data.get('amended') else ''}")
    elif kind == "first_article":
        values = " ".join(f"{r.get('characteristic')}={r.get('value')}({r.get('verdict')})"
                          for r in data.get("results", []))
        detail = (f"attempt {data.get('attempt')} -> {str(data.get('verdict')).upper()}  {values}  "
                  f"unreleased_strokes={data.get('unreleased_strokes')}")
    elif kind == "measurement":
        sub = data.get("subgroup") or {}
        detail = (f"{data.get('characteristic')}={data.get('value')} {data.get('unit', '')} "
                  f"-> {data.get('verdict')} stroke={ctx.get('stroke_count')}"
                  f"{' subgroup ' + str(sub.get('id')) if sub else ''}")
    elif kind == "control_limits":
        lim = data.get("limits", {})
        detail = (f"{data.get('characteristic')} {lim.get('chart')} limits "
                  f"{_num(lim.get('lcl'))} .. {_num(lim.get('ucl'))} centre "
                  f"{_num(lim.get('center'))} sigma {_num(lim.get('sigma_within'))} "
                  f"(from {len(data.get('subgroups', []))} subgroups, phase {data.get('phase')})")
    elif kind == "alarm":
        ev = data.get("evidence", {})
        if data.get("cause") == "rule":
            what = "; ".join(f"rule {r.get('rule')} {r.get('name')}" for r in ev.get("rules", []))
        elif data.get("cause") == "out_of_tolerance":
            what = f"value {ev.get('value')} outside {ev.get('lsl')} .. {ev.get('usl')}"
        elif data.get("cause") == "low_capability":
            what = f"Cpk {_num(ev.get('cpk'))} ({ev.get('verdict', 'below_minimum')})"
        else:
            what = _fields(ev, 60)
        actions = ",".join(data.get("actions", [])) or "alarm only"
        suspect = data.get("containment") or {}
        span = (f"; suspect strokes {suspect.get('first_stroke')}..{suspect.get('last_stroke')}"
                f" ({suspect.get('parts')} parts)" if suspect else "")
        detail = (f"{data.get('cause')} {data.get('characteristic') or ''}: {what} "
                  f"-> {actions}{span}")
    elif kind == "capability":
        detail = (f"{data.get('characteristic')} n={data.get('n')} Cp={_num(data.get('cp'))} "
                  f"Cpk={_num(data.get('cpk'))} Ppk={_num(data.get('ppk'))} "
                  f"Cpm={_num(data.get('cpm'))} -> {data.get('verdict')}")
    elif kind == "command":
        detail = (f"{data.get('command')} by {data.get('operator')} "
                  f"{_fields(data.get('fields', {}), 60)} (state was {data.get('state_before')})")
    elif kind == "annotation":
        detail = f"{data.get('type')} phase {data.get('phase')} ({data.get('source')})"
    elif kind == "state_change":
        detail = f"{data.get('from')} -> {data.get('to')} ({data.get('cause', '')})"
    elif kind == "connection":
        detail = f"plc {'online' if data.get('online') else 'offline'} {data.get('reason', '')}"
    else:
        detail = _fields(data, LINE_WIDTH - len(head))
    return head + detail


def in_tolerance_value(ch: Characteristic, shift: Decimal = Decimal(0)) -> Decimal:
    """A value well inside the tolerance (or outside it, with ``shift`` in tolerance widths)."""
    low, high = _span(ch)
    centre = (low + high) / 2 if ch.lsl is not None and ch.usl is not None else ch.nominal
    return (centre + (high - low) * shift).quantize(Decimal("0.001"))


def _span(ch: Characteristic) -> tuple[Decimal, Decimal]:
    low = ch.lsl if ch.lsl is not None else ch.nominal - (ch.usl - ch.nominal)  # type: ignore[operator]
    high = ch.usl if ch.usl is not None else ch.nominal + (ch.nominal - ch.lsl)  # type: ignore[operator]
    return low, high


def process_for(press: str, ch: Characteristic) -> ProcessSimulator:
    """A capable process for one characteristic (σ = tolerance / 16, Cp ≈ 2.7): centred
    for two-sided limits; a one-sided limit at a third of the way to it (a burr height
    stays >= 0)."""
    low, high = _span(ch)
    sigma = (high - low) / 16
    if ch.lsl is not None and ch.usl is not None:
        centre, floor = (low + high) / 2, None
    elif ch.usl is not None:
        centre, floor = ch.nominal + (ch.usl - ch.nominal) / 3, ch.nominal
        sigma = (ch.usl - ch.nominal) / 8
    else:
        centre, floor = ch.nominal, None
    resolution = ch.resolution or Decimal("0.001")
    return ProcessSimulator(centre, sigma, resolution, seed=f"{press}/{ch.id}", low=floor)


class Operator:
    """The scripted setter of one press: measures when the workflow asks for it."""

    def __init__(self, press: str, plan: Plan, gauges: dict[str, GaugeSimulator],
                 sim: Any, tap: EventTap, pace: float = 1.0,
                 log_out: Callable[[str], None] = _stderr) -> None:
        self.press, self.plan, self.gauges, self.sim, self.tap = press, plan, gauges, sim, tap
        self.pace, self.log_out = pace, log_out
        self.processes = {ch.id: process_for(press, ch) for ch in plan.characteristics}

    def _is(self, kind: str, **data: Any) -> Callable[[dict[str, Any]], bool]:
        def match(p: dict[str, Any]) -> bool:
            return (p.get("press") == self.press and p.get("schema", "").endswith("/" + kind)
                    and all(p.get("data", {}).get(k) == v for k, v in data.items()))
        return match

    async def pause(self, seconds: float) -> None:
        await asyncio.sleep(seconds * self.pace)

    def _send(self, ch: Characteristic, value: Decimal) -> None:
        gauge = self.gauges[ch.gauge or next(iter(self.gauges))]
        gauge.send_value(str(value), channel=ch.channel or 1, unit=ch.unit)

    async def measure_piece(self, bad: str | None = None) -> None:
        await self.pause(SETTER_WALK_S)  # the setter takes the piece to the gauges
        for ch in self.plan.characteristics:
            shift = Decimal("1.5") if ch.id == bad else Decimal(0)
            self._send(ch, in_tolerance_value(ch, shift))
            await self.pause(0.5)  # a moment per feature

    async def first_article(self, since: int = 0, fail_first: bool = False) -> None:
        await self.tap.wait_for(self._is("state_change", to="awaiting_first_article"), since)
        if fail_first:
            mark = self.tap.mark()
            await self.measure_piece(bad=self.plan.characteristics[0].id)
            await self.tap.wait_for(self._is("first_article", verdict="fail"), mark)
        mark = self.tap.mark()
        await self.measure_piece()
        await self.tap.wait_for(self._is("first_article", verdict="pass"), mark)

    async def patrol_round(self) -> None:
        """One patrol check: every characteristic of the plan, in plan order."""
        await self.pause(PATROL_EVERY_S)
        for ch in self.plan.characteristics:
            self._send(ch, self.processes[ch.id].next())
            await self.pause(FEATURE_S)

    async def patrol(self, rounds: int) -> None:
        for _ in range(rounds):
            await self.patrol_round()

    async def drift_story(self, since: int) -> None:
        """p1: limits from the baseline, then C1 drifts until a rule fires; the plan's
        reaction holds the press; the quality engineer sorts the parts, has the cause
        removed and releases."""
        first = self.plan.characteristics[0]
        while not any(self._is("control_limits", characteristic=first.id)(p)
                      for p in self.tap.history[since:]):
            await self.patrol_round()
        limits = next(p for p in self.tap.history[since:]
                      if self._is("control_limits", characteristic=first.id)(p))
        sigma = Decimal(repr(limits["data"]["limits"]["sigma_within"]))
        mark = self.tap.mark()
        process = self.processes[first.id]
        process.start_drift((sigma * Decimal("0.5")).quantize(process.resolution)
                            or process.resolution)
        self.log_out(f"demo: {self.press} {first.id} starts to drift (a die wearing)")
        # the drifting feature alone from here: no other reading may reach a held press
        # (a reading on hold starts a new first article)
        while not any(self._is("alarm", cause="rule")(p) for p in self.tap.history[mark:]):
            await self.pause(PATROL_EVERY_S)
            self._send(first, process.next())
            await self.pause(FEATURE_S)
        process.stop_drift()
        alarm = next(p for p in self.tap.history[mark:] if self._is("alarm", cause="rule")(p))
        if "hold" not in alarm["data"].get("actions", []):
            return
        hold = await self.tap.wait_for(self._is("state_change", to="hold"), mark)
        await self.pause(SORTING_S)
        release = {"request_id": f"demo-{self.press}-release", "operator": "Q7",
                   "why": "parts since the last good check sorted, die re-shimmed",
                   "issued_at": messages.iso_utc(time.time())}
        suspect = hold.get("context", {}).get("containment")
        if suspect is not None:  # the disposition of the suspect parts (docs/quality.md)
            parts = suspect.get("parts") or 0
            release.update(sorted_good=str(max(0, parts - 2)), reworked="1",
                           scrapped=str(min(parts, 1)),
                           note="counted when the hold came; later strokes at the sort")
        self.tap.client.publish(command_topic(self.tap.root, self.press, "release"),
                                orjson.dumps(release), qos=1)
        await self.tap.wait_for(self._is("state_change", to="released"), mark)

    async def die_change(self, new_die: int) -> None:
        self.sim.set_running(False)
        self.sim.set_setup_mode(True)
        await self.pause(2.0)
        self.sim.set_die(new_die)
        await self.pause(2.0)
        self.sim.set_setup_mode(False)
        self.sim.set_running(True)

    async def script(self) -> None:
        if self.press == STORY_PRESS:
            mark = self.tap.mark()
            await self.first_article()
            await self.drift_story(mark)
            await self.patrol(1000)
        elif self.press == "p4":
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


def story_plans(config: LoadedConfig) -> tuple[LoadedConfig, str | None]:
    """The demo's settings for the quality story: BRK-100's C1 freezes its limits after
    DEMO_BASELINE subgroups and a broken rule holds the press (what it changed, or None)."""
    plan = config.plans.get(DEMO_JOBS[STORY_PRESS][0])
    if plan is None or not plan.characteristics:
        return config, None
    first = plan.characteristics[0]
    first = dataclasses.replace(first, spc=dataclasses.replace(
        first.spc, baseline_subgroups=DEMO_BASELINE))
    reaction = plan.reaction(first.char_class)
    reactions = {**plan.reactions, first.char_class: dataclasses.replace(
        reaction, rule=tuple(dict.fromkeys((*reaction.rule, "hold"))))}
    plan = dataclasses.replace(plan, characteristics=(first, *plan.characteristics[1:]),
                               reactions=reactions)
    note = (f"{plan.part_number} {first.id}: limits from a baseline of {DEMO_BASELINE} "
            f"subgroups and 'hold' on a broken rule (demo settings)")
    return config.model_copy(update={"plans": {**config.plans, plan.part_number: plan}}), note


async def start_simulator(protocol: str, part: str, die: int, lot: str) -> Any:
    """A simulated press PLC speaking the press's protocol, stroking at 60 spm."""
    return await for_protocol(protocol).start(part, die, lot)


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
        plc = for_protocol(press.plc.protocol).point(press.plc, plc_ports[press_id])
        presses[press_id] = press.model_copy(update={"plc": plc, "gauges": gauges})
    return config.model_copy(update={"collector": collector, "presses": presses})


async def run_demo(config_dir: Path | None = None, duration: float | None = None,
                   broker: str | None = None, workdir: Path | None = None,
                   out: Callable[[str], None] = print,
                   log_out: Callable[[str], None] = _stderr, pace: float = 1.0,
                   until: Callable[[list[dict[str, Any]]], bool] | None = None) -> int:
    """Run the demo. ``out``: the event view (stdout); ``log_out``: the demo's own lines
    (stderr); ``pace`` < 1 compresses the operators' timing; ``until``: stop as soon as
    the events received so far satisfy it (tests: no fixed waiting), at the latest after
    ``duration``."""
    config, story = story_plans(load_config(config_dir or REPO_CONFIG))
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
            log_out(f"demo: private Mosquitto on 127.0.0.1:{local.port}")

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
            log_out(f"demo: press {press_id} {press.plc.protocol} simulator on 127.0.0.1:"
                    f"{sim.port} part={part} die={die} lot={lot}; gauges "
                    f"{', '.join(gauges[press_id])} on ptys")
        if story is not None:
            log_out(f"demo: {story}")
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
                                                  sims[p], tap, pace, log_out).script(),
                                         name=f"operator-{p}")
                     for p in sims if p in DEMO_JOBS and DEMO_JOBS[p][0] in config.plans]
        try:
            waiters = [asyncio.create_task(stop.wait())]
            if duration is not None:
                waiters.append(asyncio.create_task(asyncio.sleep(duration)))
            if until is not None:
                waiters.append(asyncio.create_task(tap.wait_for(
                    lambda _p: until(tap.history), timeout=None)))
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
        log_out(f"demo: ran {elapsed:.1f} s; received {summary}")
        if daemon_task.done() and not daemon_task.cancelled() and daemon_task.exception():
            raise daemon_task.exception()  # type: ignore[misc]
    return 0
