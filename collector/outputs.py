"""Signals back to the press (issue 14): the workflow's verdict written into the PLC.

One job: derive the values a press's ``[[plc.outputs]]`` should hold from its workflow
state, and drive them through the PLC driver's ``write()`` (which reads every write back
and compares). docs/outputs.md is the user's page; it says why this is a *quality
interlock* and never a safety function.

- ``release_permissive``: true only while released (``released``, ``stopped``) and not
  under 100 % inspection; false in setup, awaiting / measuring a first article, awaiting
  confirmation, hold, offline. A clean stop writes it false (``PressOutputs.stop``).
- ``hold_lamp``, ``first_article_request``, ``patrol_due``: andon lamps (``flags``).
- ``heartbeat``: a word counted up every second (1, 2, ... 32767, 0, 1 ...: it fits every
  integer type, INT included), so that the PLC drops the permissive itself when the
  collector dies or loses the press (docs/outputs.md has the PLC logic).

Why it looks like this:

- **Never in the poll path.** Each output has its own writer task and one slot: the
  value wanted now (last value wins: a lamp that went on and off while a write was in
  flight is written once, with its latest value). A slow or refused write delays only
  that output; Modbus writes queue on the line between polls (``drivers.modbus.engine``),
  OPC UA writes share the session.
- **Written from state, not from events.** The wanted values are recomputed from the
  workflow after every event of the press and after its first poll following a
  (re)connect; nothing is written before that poll (the workflow has not seen the PLC
  yet: a die changed while we were away must not flash the permissive on). After the
  PLC was lost every output counts as unknown and is written again.
- **Alarms by episode.** A failed, refused or read-back-different write while the PLC is
  online raises one ``output_alarm`` (active) per output and episode, retried with
  capped backoff (a new flag value is tried at once); the first good write clears it
  (``active: false``). Writes that fail because the PLC is offline are no alarm: the
  ``connection`` event already says so, and the outputs are rewritten on reconnect.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from collector.domain import Event
from collector.event_kinds import OutputAlarmBody
from collector.workflow import AWAITING_FIRST_ARTICLE, FIRST_ARTICLE, HOLD, RELEASED, STOPPED
from drivers.base import Backoff, ConnectionChange, DriverEvent, PlcDriver, PollResult, Sink
from drivers.link import LinkDown, WriteFailed

if TYPE_CHECKING:
    from collector.press import PressRuntime
    from collector.workflow import PressWorkflow

log = logging.getLogger(__name__)

__all__ = ["HEARTBEAT_S", "HEARTBEAT_WRAP", "PressOutputs", "flags", "flags_of"]

HEARTBEAT_S = 1.0
HEARTBEAT_WRAP = 32768  # 0..32767: fits INT, UINT, DINT, UDINT alike
WRITE_TIMEOUT_S = 10.0  # a write (and its read-back) that takes longer failed
STOP_TIMEOUT_S = 3.0  # the clean stop's permissive write; the stop goes on after it
PRODUCTION = (RELEASED, STOPPED)


def flags(state: str, inspection_100: bool, patrol_due: bool) -> dict[str, bool]:
    """The lamp and permissive values for a workflow state (pure; the table of
    docs/outputs.md). ``stopped`` is released production standing still: the press
    must be allowed to stroke again."""
    production = state in PRODUCTION
    return {
        "release_permissive": production and not inspection_100,
        "hold_lamp": state == HOLD,
        "first_article_request": state in (AWAITING_FIRST_ARTICLE, FIRST_ARTICLE),
        "patrol_due": production and patrol_due,
    }


def flags_of(workflow: PressWorkflow) -> dict[str, bool]:
    """``flags`` of a running workflow: its state, 100 % inspection mode, open due check."""
    return flags(workflow.state, workflow.inspection.on, workflow.patrol.due is not None)


def where(output: Any) -> str:
    """Where an output goes, for alarms and logs: 'coil 8', 'holding 90' or the node."""
    node = getattr(output, "node", None)
    return str(node) if node else f"{output.area} {output.address}"


@dataclass(eq=False)
class Output:
    """One configured output: what is wanted, what the PLC holds (as last read back),
    and its alarm episode."""

    role: str
    name: str  # the driver's name for it (``output:<role>``)
    where: str
    want: Any = None  # None: nothing to write yet
    written: Any = None  # the value written and read back; None = unknown
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    writes: int = 0
    write_errors: int = 0
    alarm: bool = False  # an episode is open (an active output_alarm was sent)
    failures: int = 0  # failed writes of the open episode
    since: float = 0.0  # the episode's first failure (epoch s)
    reason: str = ""

    def set(self, value: Any) -> None:
        if value != self.want:
            self.want = value
            self.wake.set()


class PressOutputs:
    """The outputs of one press, driven from its ``PressRuntime``.

    Wiring (collector/daemon.py): ``watch(sink)`` wraps the press's driver sink (it
    learns the PLC's connection changes and the first poll after each), ``attach(driver)``
    gives the PLC driver, ``run()`` is the press's output task, ``stop()`` the clean stop.
    """

    def __init__(self, runtime: PressRuntime, outputs: Sequence[Any]) -> None:
        self.runtime = runtime
        self.outputs = {o.role: Output(o.role, o.name, where(o)) for o in outputs}
        self.driver: PlcDriver | None = None
        self._armed = False  # a poll arrived since the PLC came online
        self._epoch = 0  # bumped when the PLC goes offline: writes in flight are unknown
        self._beat = 0
        self._task: asyncio.Task[None] | None = None
        runtime.observers.append(self._on_event)

    @classmethod
    def for_press(cls, runtime: PressRuntime, plc: Any) -> PressOutputs | None:
        """The press's outputs, or None when its ``[plc]`` has no ``[[plc.outputs]]``."""
        configured = getattr(plc, "outputs", ())
        return cls(runtime, configured) if configured else None

    # -- wiring ------------------------------------------------------------------------
    def attach(self, driver: PlcDriver) -> None:
        self.driver = driver

    def watch(self, sink: Sink) -> Sink:
        """``sink`` plus what the outputs must know of the PLC link: one class check per
        driver event on the hot path."""
        plc = self.runtime.plc_source

        def watched(event: DriverEvent) -> None:
            sink(event)
            cls = event.__class__
            if cls is PollResult:
                if not self._armed and event.source == plc:
                    self._armed = True
                    self.refresh(rewrite=True)
            elif cls is ConnectionChange and event.source == plc:
                self._connection(event.online)  # type: ignore[union-attr]

        return watched

    def _connection(self, online: bool) -> None:
        self._armed = False  # wait for the first poll: the workflow must see the PLC first
        if not online:
            self._epoch += 1
            for out in self.outputs.values():
                out.written = None  # the PLC may restart meanwhile: write everything again

    def _on_event(self, _seq: int, _event: Event) -> None:
        self.refresh()

    @property
    def ready(self) -> bool:
        return self._armed and self.driver is not None and self.runtime.plc_online

    def refresh(self, rewrite: bool = False) -> None:
        """Recompute the wanted flag values from the workflow (cheap: a few attributes);
        a changed value wakes its writer. ``rewrite``: the first poll after a (re)connect,
        every output not known to hold its value is written."""
        if not self._armed:
            return
        for role, value in flags_of(self.runtime.workflow).items():
            out = self.outputs.get(role)
            if out is not None:
                out.set(value)
        if rewrite:
            for out in self.outputs.values():
                if out.want is not None and out.want != out.written:
                    out.wake.set()

    # -- tasks -------------------------------------------------------------------------
    async def run(self) -> None:
        """One writer per output and the heartbeat, until cancelled (``stop``)."""
        self._task = asyncio.current_task()
        async with asyncio.TaskGroup() as group:
            for out in self.outputs.values():
                group.create_task(self._writer(out), name=f"{self.runtime.press}/out/{out.role}")
            if "heartbeat" in self.outputs:
                group.create_task(self._heartbeat(self.outputs["heartbeat"]),
                                  name=f"{self.runtime.press}/heartbeat")

    async def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """Clean stop: end the writers and the heartbeat, then write the permissive false
        (read back) while the PLC driver still runs. Bounded: a PLC that does not answer
        costs ``timeout``, and its own heartbeat watchdog drops the permissive."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        out = self.outputs.get("release_permissive")
        if out is None or self.driver is None or not self.runtime.plc_online:
            return
        try:
            async with asyncio.timeout(timeout):
                await self.driver.write(out.name, False)
        except (WriteFailed, LinkDown, ValueError, OSError, TimeoutError) as exc:
            log.warning("press %s: stop: the release permissive (%s) could not be written "
                        "false: %s; the PLC's heartbeat check must drop it", self.runtime.press,
                        out.where, exc or type(exc).__name__)
            return
        out.written = False
        log.info("press %s: stop: release permissive (%s) written false", self.runtime.press,
                 out.where)

    async def _heartbeat(self, out: Output) -> None:
        """Count up every HEARTBEAT_S on the monotonic clock (no drift)."""
        loop = asyncio.get_running_loop()
        due = loop.time()
        while True:
            self._beat = (self._beat + 1) % HEARTBEAT_WRAP
            out.set(self._beat)
            due += HEARTBEAT_S
            now = loop.time()
            if due < now:  # the loop was stalled: no burst of catch-up beats
                due = now + HEARTBEAT_S
            await asyncio.sleep(due - now)

    async def _writer(self, out: Output) -> None:
        backoff = Backoff(initial=0.5, maximum=30.0)
        while True:
            await out.wake.wait()
            out.wake.clear()
            while self.ready and out.want is not None and out.want != out.written:
                value = out.want
                if await self._write(out, value):
                    backoff.reset()
                    continue
                delay = backoff.next_delay()
                if out.role == "heartbeat":
                    await asyncio.sleep(delay)  # its value changes every second anyway
                    continue
                out.wake.clear()
                try:  # a new flag value is tried at once, the same one after the backoff
                    async with asyncio.timeout(delay):
                        await out.wake.wait()
                except TimeoutError:
                    pass

    async def _write(self, out: Output, value: Any) -> bool:
        assert self.driver is not None
        epoch = self._epoch
        try:
            async with asyncio.timeout(WRITE_TIMEOUT_S):
                await self.driver.write(out.name, value)
        except (WriteFailed, LinkDown, ValueError, OSError, TimeoutError) as exc:
            out.write_errors += 1
            if self.runtime.plc_online and epoch == self._epoch:
                self._failed(out, value, str(exc) or type(exc).__name__)
            return False
        out.writes += 1
        if epoch == self._epoch:
            out.written = value
        if out.alarm:
            self._cleared(out, value)
        return True

    # -- alarms ------------------------------------------------------------------------
    def _failed(self, out: Output, value: Any, reason: str) -> None:
        out.failures += 1
        out.reason = reason[:300]
        if out.alarm:
            return
        out.alarm = True
        out.since = time.time()
        log.warning("press %s: output %s (%s) = %r failed: %s (alarm raised; retrying with "
                    "backoff)", self.runtime.press, out.role, out.where, value, out.reason)
        self._alarm(out, True, value)

    def _cleared(self, out: Output, value: Any) -> None:
        log.info("press %s: output %s (%s) written again after %d failed write(s); alarm "
                 "cleared", self.runtime.press, out.role, out.where, out.failures)
        out.alarm = False
        self._alarm(out, False, value)
        out.failures = 0
        out.reason = ""

    def _alarm(self, out: Output, active: bool, value: Any) -> None:
        now = time.time()
        body = OutputAlarmBody(role=out.role, output=out.where, active=active,
                               value=value, reason=out.reason, failures=out.failures,
                               since=out.since)
        self.runtime.record([Event("output_alarm", now, dict(body),
                                   self.runtime.workflow.context(), durable=True)], now)

    def stats(self) -> dict[str, dict[str, Any]]:
        """Per output (/health): wanted, written (read back), counters, alarm."""
        return {o.role: {"want": o.want, "written": o.written, "writes": o.writes,
                         "write_errors": o.write_errors, "alarm": o.alarm}
                for o in self.outputs.values()}
