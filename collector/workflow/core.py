"""``PressWorkflow``: the coordinator of one press's workflow components.

It owns the components (the map is in docs/DESIGN.md "Workflow components"), takes the
inputs (poll, reading, connection, tick, command), decides which component handles
each, and wraps what they produce into events with the press's context. State moves go
through ``go`` and the kernel's table only. The rules themselves are in the docstring of
``collector.workflow``; each component's module says what it keeps.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from collector.domain import Event, GaugeReading, Plan, WorkflowSettings
from collector.tolerance import UnitError, parse_value
from collector.workflow import commands, patrol, setup, snapshot
from collector.workflow.commands import CommandResult, OperatorLog
from collector.workflow.containment import Containment
from collector.workflow.counter import StrokeCounter
from collector.workflow.first_article import FirstArticle
from collector.workflow.inspection import Inspection100
from collector.workflow.kernel import (
    AWAITING_CONFIRMATION,
    FIRST_ARTICLE,
    HOLD,
    OFFLINE,
    ONLINE_STATES,
    RELEASED,
    SETUP,
    STOPPED,
    Machine,
)
from collector.workflow.last_piece import LastPiece
from collector.workflow.patrol import Patrol, SpcPhase, plan_key
from collector.workflow.routing import result as judged
from collector.workflow.routing import route
from collector.workflow.setup import SetupDetection
from collector.workflow.sign_off import SignOff
from collector.workflow.values import IDS, reading, to_id
from drivers.gauge.records import flag_verdict


def _by_part(plans: Mapping[str, Plan]) -> dict[str, Plan]:
    out: dict[str, Plan] = {}
    for key, plan in plans.items():
        part = to_id(key)
        if part is not None:
            out[part] = plan
    return out


class PressWorkflow:
    """One press's workflow. Feed it inputs; it returns events."""

    def __init__(
        self, press_id: str, settings: WorkflowSettings, plans: Mapping[str, Plan]
    ) -> None:
        self.press_id = press_id
        self.settings = settings
        self._plans = _by_part(plans)
        self.machine = Machine()
        self.setup = SetupDetection()
        self.counter = StrokeCounter()
        self.first_article = FirstArticle()
        self.spc = SpcPhase()
        self.patrol = Patrol()
        self.inspection = Inspection100()
        self.last_piece = LastPiece()
        self.log = OperatorLog()
        self.containment = Containment()
        self.sign_off = SignOff()

    def set_plans(self, plans: Mapping[str, Plan]) -> None:
        """New plans while running (SIGHUP). A changed revision of the running part's plan
        is annotated (``plan_change``, new phase) by the next input or tick."""
        self._plans = _by_part(plans)

    # ---- read side ---------------------------------------------------------------

    @property
    def state(self) -> str:
        return self.machine.state

    def plan(self) -> Plan | None:
        part = self.setup.ids["part_number"]
        return None if part is None else self._plans.get(part)

    def context(self) -> dict[str, Any]:
        """What every event carries; ``containment`` (an open containment: its suspect
        range and what caused it) and ``confirmations`` (a first article waiting for its
        joint sign-off) only while there is one, so other events stay as they were."""
        plan = self.plan()
        ids = self.setup.ids
        out = {
            "part_number": ids["part_number"],
            "plan_revision": plan.revision if plan is not None else None,
            "die_id": ids["die_id"],
            "material_lot": ids["material_lot"],
            "heat_number": ids["heat_number"],
            "stroke_count": self.counter.count,
            "state": self.machine.state,
            "first_article_attempt": self.first_article.attempt,
            "unreleased_strokes": self.first_article.unreleased,
            "phase": self.spc.phase,
            "inspection_100": self.inspection.on,
            "unmeasured_pieces": self.unmeasured_pieces(),
            "operator": self.log.operator,
        }
        containment = self.containment.view(self)
        if containment is not None:
            out["containment"] = containment
        confirmations = self.sign_off.context()
        if confirmations is not None:
            out["confirmations"] = confirmations
        return out

    def telemetry_context(self) -> dict[str, Any]:
        """The part of :meth:`context` every telemetry record carries: read per poll, so
        without the plan lookup, the 100 % inspection totals and the containment view."""
        ids = self.setup.ids
        return {"state": self.machine.state, "part_number": ids["part_number"],
                "die_id": ids["die_id"], "material_lot": ids["material_lot"]}

    def unmeasured_pieces(self) -> int | None:
        """Strokes of released production under 100 % inspection not yet matched by a
        measured piece (a piece = one value of every characteristic); None = mode off."""
        totals = self.inspection.totals(self.plan(),
                                        self.settings.inspection_100_max_unmeasured)
        return None if totals is None else totals["unmeasured_pieces"]

    # ---- for the components -----------------------------------------------------------

    def event(self, kind: str, ts: float, body: dict[str, Any]) -> Event:
        """An event with the context as it is now (right after the input changed it)."""
        return Event(kind=kind, ts=ts, body=body, context=self.context(), durable=True)

    def go(self, ts: float, trigger: str) -> Event | None:
        """Move along the table; the ``state_change`` event, or None for a self-loop."""
        source, target = self.machine.move(trigger)
        if target == source:
            return None
        if target in (FIRST_ARTICLE, RELEASED, HOLD):
            self.setup.open = None  # verification under way or done: the setup is closed
        return self.event("state_change", ts, {"from": source, "to": target, "cause": trigger})

    def production_released(self, ts: float) -> None:
        """Production is released (first article pass, joint sign-off, quality release):
        the patrol counts from here, the containment base moves here, the setup counts
        as verified."""
        count = self.counter.count
        self.patrol.restart_clock(count, ts)
        self.containment.released(count, ts)
        self.sign_off.open = None
        self.sign_off.verified = True

    @staticmethod
    def append(events: list[Event], event: Event | None) -> None:
        if event is not None:
            events.append(event)

    def new_phase(self) -> None:
        self.spc.new_phase(self.plan())

    def sync_plan(self, ts: float) -> list[Event]:
        """A new revision of the running part's plan: annotation and a new phase."""
        plan = self.plan()
        key = plan_key(plan)
        if key == self.spc.key or not self.machine.baselined:
            return []
        old = self.spc.key
        self.new_phase()
        self.patrol.due = None
        self.last_piece.open = None
        self.log.last = None
        self.patrol.position = -1
        fa = self.first_article.open
        if fa is not None and plan is not None and (fa.part_number, fa.plan_revision) != key:
            # judged by the new revision: measured again from the start, same attempt
            fa.part_number, fa.plan_revision, fa.results = plan.part_number, plan.revision, {}
        if old is None or key is None or old[0] != key[0]:
            return []
        return [self.event("annotation", ts, {
            "type": "plan_change", "reason": "plan_change", "phase": self.spc.phase,
            "source": "config", "previous": {"plan_revision": old[1]},
            "new": {"plan_revision": key[1]}})]

    # ---- PLC connection ----------------------------------------------------------

    def on_connection(self, ts: float, online: bool, reason: str = "") -> list[Event]:
        online = bool(online)
        m = self.machine
        if online == m.online:
            return []
        m.online = online
        before = m.state
        change: Event | None = None
        if not online:
            if m.state != OFFLINE:
                change = self.go(ts, "disconnect")
        elif m.state == OFFLINE and m.previous in ONLINE_STATES:
            change = self.go(ts, "reconnect")
        events = [self.event("connection", ts, {
            "online": online, "reason": str(reason), "previous_state": before,
            "state": m.state,
        })]
        self.append(events, change)
        return events

    # ---- PLC poll ----------------------------------------------------------------

    def on_poll(self, ts: float, roles: Mapping[str, Any]) -> list[Event]:
        events: list[Event] = []
        m = self.machine
        if m.state == OFFLINE and m.previous in ONLINE_STATES:
            events += self.on_connection(ts, True, "poll received while offline")
            if m.state == OFFLINE:  # the flag said online already: move anyway
                self.append(events, self.go(ts, "reconnect"))
        elif m.online is not True:
            m.online = True  # data flows: the PLC is reachable

        poll = self.setup.read(roles, self.settings)
        if not m.baselined:
            return events + self._first_poll(ts, poll)
        events += self.sync_plan(ts)

        old = dict(self.setup.ids)
        reasons = self.setup.reasons(poll, m.state)
        delta, anomaly = self.counter.step(ts, poll.count, self.settings, self.spc.phase)
        if anomaly is not None:
            events.append(self.event("alarm", ts, anomaly))
        idle: float | None = None
        if delta > 0:
            idle = self.counter.idle(ts)
            if m.state in (RELEASED, STOPPED) and idle > self.settings.long_stop_s \
                    and "long_stop" not in reasons:
                reasons.append("long_stop")
        self.setup.learn(poll)
        if delta > 0:
            self.counter.last_stroke_ts = ts

        if reasons:
            return events + setup.start(self, ts, reasons, old, poll.setup_mode, delta,
                                        idle if "long_stop" in reasons else None)
        events += self._poll_act(ts, poll.setup_mode, delta, poll.count)
        return events + self.patrol.clock(self, ts)

    def _first_poll(self, ts: float, poll: setup.Poll) -> list[Event]:
        self.machine.baselined = True
        old = dict(self.setup.ids)
        self.setup.baseline(poll)
        self.counter.baseline(ts, poll.count)
        if self.setup.ids["part_number"] is not None:
            return setup.start(self, ts, ["job_start"], old, poll.setup_mode, 0, None)
        events: list[Event] = []
        self.append(events, self.go(ts, "first_poll_setup_mode" if poll.setup_mode is True
                                    else "first_poll"))
        return events

    def _poll_act(self, ts: float, setup_mode: bool | None, delta: int,
                  count: int | None) -> list[Event]:
        """A poll without a setup trigger: strokes, setup mode off, stopped / running."""
        events: list[Event] = []
        state = self.machine.state
        if delta > 0 and state in (RELEASED, STOPPED):
            events += self.inspection.strokes(self, ts, delta)
        if state == SETUP and setup_mode is not True:
            self.append(events, self.go(ts, "setup_mode_off"))
        if delta > 0:
            if self.machine.state == STOPPED:
                self.append(events, self.go(ts, "stroke"))
            if self.machine.state != RELEASED:
                self.first_article.unreleased += delta
        elif (
            count is not None
            and self.machine.state == RELEASED
            and self.counter.last_stroke_ts is not None
            and ts - self.counter.last_stroke_ts > self.settings.stopped_after_s
        ):
            self.append(events, self.go(ts, "idle"))
        return events

    # ---- gauge readings ----------------------------------------------------------

    def on_gauge(
        self,
        ts: float,
        gauge: str,
        channel: int | None,
        value: str,
        unit: str,
        reading_id: str | None = None,
        calibration_overdue: bool = False,
        flag: str | None = None,
    ) -> list[Event]:
        """A gauge value given field by field: builds the typed ``GaugeReading`` and
        hands it to ``on_reading`` (the one path every reading takes)."""
        return self.on_reading(reading(ts, gauge, channel, value, unit, reading_id,
                                       calibration_overdue, flag))

    def on_reading(self, r: GaugeReading) -> list[Event]:
        """One gauge reading. ``r.calibration_overdue``: the gauge was past its
        calibration due date; the result is flagged, and refused for first article when
        the settings say so. The reading travels as one frozen value: no path (plan
        sync, routing, first article, patrol, last piece) can drop a field of it."""
        state = self.machine.state
        if state in (OFFLINE, SETUP):
            return [self._unassigned(r, f"state:{state}",
                                     f"readings are not taken in state {state}")]
        if state == AWAITING_CONFIRMATION:
            return [self._unassigned(r, f"state:{state}", "the first article passed and "
                                     "waits for its confirmations (confirm_first_article); "
                                     "start_first_article measures it again")]
        return self.sync_plan(r.ts) + self._take(r)

    def _unassigned(self, r: GaugeReading, reason: str, detail: str) -> Event:
        return self.event("unassigned_reading", r.ts,
                          {**r.as_body(), "reason": reason, "detail": detail})

    def _take(self, r: GaugeReading) -> list[Event]:
        """Route and judge a reading (the plan is in sync): first article, patrol or
        last piece; ``unassigned_reading`` with the reason when nothing takes it."""
        ts, state = r.ts, self.machine.state
        plan = self.plan()
        if plan is None:
            part = self.setup.ids["part_number"]
            detail = "part number unknown" if part is None else f"no plan for part {part}"
            return [self._unassigned(r, "no_plan", detail)]
        if not plan.characteristics:
            return [self._unassigned(r, "empty_plan", f"plan {plan.part_number} rev "
                                     f"{plan.revision} has no characteristics")]
        raw = parse_value(r.value)
        if raw is None:
            return [self._unassigned(r, "invalid_value", f"not a finite decimal: {r.value!r}")]
        production = state in (RELEASED, STOPPED)
        if (r.calibration_overdue and self.settings.refuse_overdue_for_first_article
                and not production):
            return [self._unassigned(r, "calibration_overdue", f"gauge {r.gauge} is past "
                                     "its calibration due date: not accepted for first "
                                     "article")]
        chars = plan.characteristics
        last_piece = self.last_piece.open is not None and state in (RELEASED, STOPPED, HOLD)
        if last_piece:
            order = self.last_piece.order(plan)
        elif production:
            order = self.patrol.order(len(chars))
        else:
            order = self.first_article.order(plan, state == FIRST_ARTICLE)
        index = route(chars, r.gauge, r.channel, order)
        if index is None:
            return [self._unassigned(r, "no_matching_characteristic",
                                     f"no open characteristic takes gauge {r.gauge} "
                                     f"channel {r.channel}")]
        char = chars[index]
        try:
            result = judged(char, raw, r)
        except UnitError as exc:
            return [self._unassigned(r, "unknown_unit", str(exc))]
        if r.calibration_overdue:
            result["calibration_overdue"] = True
        if r.flag:
            result["gauge_flag"] = {"code": r.flag, "verdict": flag_verdict(r.flag)}
        if last_piece:
            return self.last_piece.reading(self, ts, plan, char, result)
        if production:
            return patrol.measurement(self, ts, plan, index, result)
        return self.first_article.reading(self, ts, plan, char, result)

    # ---- clock and commands --------------------------------------------------------

    def on_tick(self, ts: float) -> list[Event]:
        """The daemon's clock (about once a second): patrol due and overdue checks."""
        if not self.machine.baselined or self.machine.state == OFFLINE:
            return []
        return self.sync_plan(ts) + self.patrol.clock(self, ts)

    def on_command(self, ts: float, name: str, payload: Any,
                   role: str | None = None) -> CommandResult:
        """Validate and apply a command (``collector.workflow.commands``). ``role``: the
        role of the topic it came in on (the gate checked it is one the command allows);
        None = the command's own class. Refused: an error code, and nothing changed."""
        return commands.run(self, ts, name, payload, role)

    # ---- snapshot / restore ------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """A JSON-able dict of everything (``collector.workflow.snapshot``)."""
        return snapshot.dump(self)

    @classmethod
    def restore(
        cls,
        press_id: str,
        settings: WorkflowSettings,
        plans: Mapping[str, Plan],
        snap: Mapping[str, Any] | None,
    ) -> PressWorkflow:
        """A workflow continuing from ``snap``; a fresh one if it is unusable."""
        wf = cls(press_id, settings, plans)
        return wf if snapshot.load(wf, snap) else cls(press_id, settings, plans)


__all__ = ["IDS", "CommandResult", "PressWorkflow"]
