"""The press workflow: setup verification, first article, release, hold. Pure.

Everything that decides a press's quality state lives in this module. ``PressWorkflow``
takes PLC polls, gauge readings and PLC connection changes, each with its acquisition
time as data (epoch seconds), and returns ``Event`` lists. No sockets, no clock, no
logging: the same inputs always give the same events, so the workflow can be tested
with plain pytest and replayed from the buffer.

The states and every allowed transition are the table ``TRANSITIONS`` just below (the
h11 habit: a table, not ``if`` chains spread over the code); ``diagram()`` renders it for
the README. Code elsewhere in the module only computes *which trigger* an input is and
then calls ``_go``, which refuses a (state, trigger) pair that is not in the table.

Semantics (including the choices made where the brief was silent)
----------------------------------------------------------------

Values. Ids (die, part number, material lot, heat number) are compared as stripped
strings; an integral float is written as an int (a scaled Modbus tag gives ``7.0`` for
die 7). ``None``, a missing role and the empty string mean *unknown*: an unknown value
never triggers anything and does not erase the last known value. A change is a known
value replacing a *different known* value; unknown -> known is learning, not a change,
except for the part number, where unknown -> known is ``job_start``. Booleans accept
bool, numbers (non-zero = true) and the strings 1/0, true/false, on/off, yes/no. The
``running`` role is informational and ignored.

Start. The press is ``offline`` until its first poll. The first poll sets the baseline.
With a known part number it is a setup trigger ``job_start``; without one there is no
job to verify, so the press goes to ``awaiting_first_article`` (trigger ``first_poll``)
without a setup event, and the part number becoming known later is ``job_start``. A
setup mode or repair signal already on at the first poll is not an edge (no extra
reason), but setup mode on puts the press in ``setup``.

Setup triggers (all coinciding ones make ONE ``setup`` event with a ``reasons`` list in
the order job_start/job_change, die_change, material_change, repair, long_stop):
- die id changes -> ``die_change``; setup mode on while not in state ``setup`` (its
  rising edge) -> ``die_change``;
- part number changes -> ``job_change`` (``job_start`` from unknown);
- material lot changes -> ``material_change``; a heat number change is a material
  change too (ARCHITECTURE.md: "coil / lot / heat number changes"), so a press with only
  a heat tag still catches a coil change;
- repair signal rising edge -> ``repair``;
- the first stroke after more than ``long_stop_s`` without a stroke increase ->
  ``long_stop``. Idle is measured from the last stroke increase and includes time
  offline (also a daemon restart). Only evaluated while production is released
  (``released``, ``stopped``): in every other state a first article is pending anyway,
  and a press standing still while the first piece is measured, while it is on hold,
  or during a die change is normal, so a long stop there would only restart the
  verification for nothing (and renumber the attempts).
A trigger in any state restarts the verification: attempt counter and unreleased strokes
back to 0, an open first article discarded (``discarded_first_article: true``), the
patrol position reset. The target is ``setup`` while setup mode is on, else
``awaiting_first_article``. A trigger while already in ``setup`` (die id read during
the die change) still emits a ``setup`` event (charts want every die change) but no
``state_change``. Setup mode dropping in ``setup`` -> ``awaiting_first_article``.

Strokes. A stroke counter increase while not released (``setup``,
``awaiting_first_article``, ``first_article``, ``hold``) adds to ``unreleased_strokes``.
A decrease is a counter reset/wrap: the new value is the new base, nothing is counted and
the idle clock is not reset. Strokes seen in the same poll as a setup trigger count for
the new setup (they are after the long stop, and a poll is 100 ms). The count is
cumulative from the last setup trigger: it is not reset by a release, and strokes on a
later hold add to it.

First article. In ``awaiting_first_article`` or ``hold`` the first reading that can be
assigned starts attempt n+1 (state ``first_article``); a reading that cannot be assigned
starts nothing. Routing: the first open characteristic (plan order) whose gauge matches
and whose channel matches (or is unset); else, if no characteristic of the plan would
take that gauge/channel at all, the first open characteristic without a gauge; else
``unassigned_reading`` (``no_matching_characteristic``). Units mm / in / um convert
exactly (see ``collector.tolerance``); an unknown or unconvertible unit ->
``unassigned_reading`` (``unknown_unit``), the characteristic stays open. Limits are
inclusive, one-sided when one is None, and no limit at all passes. Only the completing
reading emits: one ``first_article`` event; pass -> ``released``, fail -> ``hold``.

Production. In ``released`` and ``stopped`` every reading is a patrol ``measurement``,
routed by the same rule but starting after the last measured characteristic and
wrapping around. ``stopped`` accepts measurements (parts from the bin of a standing
press are released parts). A fail with ``hold_on_measurement_fail`` -> ``hold``
(``action: 'hold'``), else ``action: 'none'``. ``released`` -> ``stopped`` on a poll
with no stroke increase for more than ``stopped_after_s``; the next stroke ->
``released`` (or ``long_stop``). Without a stroke_count tag neither can happen.

Readings are ``unassigned_reading`` in ``offline`` and ``setup`` (``state:<state>``);
without a plan for the (known) part, or with the part unknown, ``no_plan``; an empty
plan ``empty_plan``; a value that is not a finite decimal ``invalid_value``.

Connection. ``on_connection(False)`` -> ``offline``, the state before is remembered
(an open first article is kept); ``on_connection(True)`` -> back to it. Only a change of
the connection flag emits (``connection`` event, then ``state_change``); a repeated
report emits nothing. A poll while offline is an implicit reconnect (connection event
with reason 'poll received while offline'). The next poll decides what changed.

Events. Every event is durable (a quality record). ``Event.ts`` is the input's time.
``context`` is ``context()`` taken right after the input changed the press, so
``context.state`` is the state the event left the press in. A record and the transition
it causes are emitted record first, then ``state_change`` {from, to, cause=trigger}.
Bodies are JSON-able: Decimals as strings, times as epoch float seconds.

Snapshot. ``snapshot()`` is a JSON-able dict of everything; ``restore()`` validates it
and starts fresh (``offline``, no baseline: the first poll is a ``job_start``) when it is
unusable: unknown state, wrong press, wrong version or a malformed field. An open first
article whose plan revision or characteristics no longer match the plans is emptied
(same attempt number). Restored, the press continues exactly where it was: no setup is
invented, and idle time across the restart counts towards a long stop.

Not here yet: operator commands (release / hold / set lot / repair), patrol due
reminders, last piece.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from collector.domain import STATES, Characteristic, Event, Plan, WorkflowSettings
from collector.tolerance import UnitError, check, parse_value

# --------------------------------------------------------------------------------------
# States, triggers and the transition table. Everything that moves a press between
# states is listed here; ``PressWorkflow._go`` refuses anything else.
# --------------------------------------------------------------------------------------

OFFLINE = "offline"
STOPPED = "stopped"
SETUP = "setup"
AWAITING_FIRST_ARTICLE = "awaiting_first_article"
FIRST_ARTICLE = "first_article"
RELEASED = "released"
HOLD = "hold"
assert set(STATES) == {
    OFFLINE, STOPPED, SETUP, AWAITING_FIRST_ARTICLE, FIRST_ARTICLE, RELEASED, HOLD,
}

PREVIOUS = "(previous)"  # target of 'reconnect': the state the press was in before offline
ANY = "*"  # source wildcard: every state

# Online states: every state but offline.
_ONLINE_STATES = tuple(s for s in STATES if s != OFFLINE)


@dataclass(frozen=True, slots=True)
class Transition:
    source: str  # a state or ANY
    trigger: str
    target: str  # a state or PREVIOUS
    note: str


TRANSITIONS: tuple[Transition, ...] = (
    Transition(OFFLINE, "first_poll", AWAITING_FIRST_ARTICLE,
               "first poll, no part number known: nothing to set up yet"),
    Transition(OFFLINE, "first_poll_setup_mode", SETUP,
               "first poll, no part number known, setup mode on"),
    Transition(ANY, "setup_trigger", AWAITING_FIRST_ARTICLE,
               "job start/change, die change, material change, repair, long stop"),
    Transition(ANY, "setup_trigger_setup_mode", SETUP,
               "a setup trigger while setup mode is on"),
    Transition(SETUP, "setup_mode_off", AWAITING_FIRST_ARTICLE, "setup mode dropped"),
    Transition(AWAITING_FIRST_ARTICLE, "reading", FIRST_ARTICLE,
               "a gauge reading starts attempt n+1"),
    Transition(HOLD, "reading", FIRST_ARTICLE, "a gauge reading starts attempt n+1"),
    Transition(FIRST_ARTICLE, "first_article_pass", RELEASED,
               "every characteristic in tolerance"),
    Transition(FIRST_ARTICLE, "first_article_fail", HOLD,
               "a characteristic out of tolerance"),
    Transition(RELEASED, "measurement_fail", HOLD,
               "patrol value out of tolerance and hold_on_measurement_fail"),
    Transition(STOPPED, "measurement_fail", HOLD,
               "patrol value out of tolerance and hold_on_measurement_fail"),
    Transition(RELEASED, "idle", STOPPED, "no stroke for more than stopped_after_s"),
    Transition(STOPPED, "stroke", RELEASED, "a stroke within long_stop_s"),
    *(Transition(s, "disconnect", OFFLINE, "PLC connection lost") for s in _ONLINE_STATES),
    Transition(OFFLINE, "reconnect", PREVIOUS,
               "PLC connection back: the state before offline"),
)

TRIGGERS: tuple[str, ...] = tuple(dict.fromkeys(t.trigger for t in TRANSITIONS))

SETUP_REASONS = (
    "job_start", "job_change", "die_change", "material_change", "repair", "long_stop",
)

EVENT_KINDS = ("setup", "first_article", "measurement", "connection",
               "unassigned_reading", "state_change")

UNASSIGNED_REASONS = (
    *(f"state:{s}" for s in (OFFLINE, SETUP)),
    "no_plan", "empty_plan", "invalid_value", "no_matching_characteristic", "unknown_unit",
)


def _expand(table: Iterable[Transition]) -> dict[tuple[str, str], str]:
    out: dict[tuple[str, str], str] = {}
    for t in table:
        for source in STATES if t.source == ANY else (t.source,):
            key = (source, t.trigger)
            assert key not in out, f"duplicate transition {key}"
            out[key] = t.target
    return out


_TABLE: dict[tuple[str, str], str] = _expand(TRANSITIONS)


def next_state(state: str, trigger: str, previous: str | None = None) -> str:
    """The table lookup. ``KeyError`` for a pair the table does not allow."""
    target = _TABLE[(state, trigger)]
    if target != PREVIOUS:
        return target
    if previous is None or previous not in _ONLINE_STATES:
        raise KeyError((state, trigger, previous))
    return previous


def diagram(fmt: str = "mermaid", expand: bool = False) -> str:
    """Render ``TRANSITIONS`` as a Mermaid ``stateDiagram-v2`` or as plain text lines.

    ``fmt``: 'mermaid' or 'text'. Compact by default: a trigger that leaves every state
    (or every online state) for the same target is drawn once from a pseudo-state
    "any state" ("any online state"), and 'reconnect' goes to a pseudo-state "state
    before offline". ``expand=True`` draws one edge per concrete (source, target).
    """
    edges: list[tuple[str, str, str]] = []
    for t in TRANSITIONS:
        sources = STATES if t.source == ANY else (t.source,)
        if expand:
            for source in sources:
                targets = _ONLINE_STATES if t.target == PREVIOUS else (t.target,)
                edges.extend((source, target, t.trigger) for target in targets)
            continue
        edges.extend((source, t.target, t.trigger) for source in sources)
    if not expand:
        grouped: dict[tuple[str, str], list[str]] = {}
        for source, target, trigger in edges:
            grouped.setdefault((trigger, target), []).append(source)
        edges = []
        for (trigger, target), sources in grouped.items():
            if set(sources) == set(STATES):
                edges.append(("any state", target, trigger))
            elif set(sources) == set(_ONLINE_STATES):
                edges.append(("any online state", target, trigger))
            else:
                edges.extend((source, target, trigger) for source in sources)
        edges = [(s, "state before offline" if d == PREVIOUS else d, trig)
                 for s, d, trig in edges]
    if fmt == "text":
        width = max(len(s) for s, _, _ in edges)
        lines = [f"{s:<{width}} --{trig}--> {d}" for s, d, trig in edges]
        return "\n".join([f"{'(start)':<{width}} --> {OFFLINE}", *lines]) + "\n"
    if fmt != "mermaid":
        raise ValueError(f"unknown diagram format {fmt!r} (allowed: mermaid, text)")
    pseudo = {"any state": "any", "any online state": "any_online",
              "state before offline": "previous"}
    lines = ["stateDiagram-v2", f"    [*] --> {OFFLINE}"]
    used = [p for p in pseudo if any(p in (s, d) for s, d, _ in edges)]
    lines += [f'    state "{p}" as {pseudo[p]}' for p in used]
    lines += [f"    {pseudo.get(s, s)} --> {pseudo.get(d, d)} : {trig}" for s, d, trig in edges]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------
# Value coercion (PLC values arrive as int / float / str / bool).
# --------------------------------------------------------------------------------------

_TRUE = {"1", "true", "on", "yes"}
_FALSE = {"0", "false", "off", "no"}
_IDS = ("die_id", "part_number", "material_lot", "heat_number")


def _to_id(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if isinstance(value, bool):
        value = int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        if value.is_integer():
            value = int(value)
    if (isinstance(value, Decimal) and value.is_finite() and value.adjusted() < 30
            and value == value.to_integral_value()):
        value = int(value)
    text = str(value).replace("\x00", "").strip()
    return text or None


def _to_bool(value: Any) -> bool | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value != 0
    if isinstance(value, float):
        return None if math.isnan(value) else value != 0.0
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
    return None


def _to_count(value: Any) -> int | None:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if math.isfinite(value) else None
    if isinstance(value, str):
        text = value.strip()
        try:
            return int(text)
        except ValueError:
            try:
                f = float(text)
            except ValueError:
                return None
            return int(f) if math.isfinite(f) else None
    return None


def _to_channel(value: Any) -> int | None:
    if isinstance(value, str):
        text = value.strip()
        value = int(text) if text.lstrip("+-").isdigit() and len(text) < 12 else None
    elif isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) < 2**31:
        return value
    return None


def _dec(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


# --------------------------------------------------------------------------------------
# The state machine.
# --------------------------------------------------------------------------------------

SNAPSHOT_VERSION = 1


@dataclass(slots=True)
class _FirstArticle:
    attempt: int
    started_ts: float
    part_number: str
    plan_revision: str
    results: dict[str, dict[str, Any]] = field(default_factory=dict)  # by characteristic id


class PressWorkflow:
    """One press's workflow. Feed it inputs; it returns events. See the module docstring."""

    def __init__(
        self, press_id: str, settings: WorkflowSettings, plans: Mapping[str, Plan]
    ) -> None:
        self.press_id = press_id
        self.settings = settings
        self._plans: dict[str, Plan] = {}
        for key, plan in plans.items():
            part = _to_id(key)
            if part is not None:
                self._plans[part] = plan
        self._state = OFFLINE
        self._previous_state: str | None = None  # the state before offline
        self._online: bool | None = None
        self._baselined = False
        self._ids: dict[str, str | None] = dict.fromkeys(_IDS)
        self._setup_mode: bool | None = None
        self._repair: bool | None = None
        self._stroke_count: int | None = None
        self._last_stroke_ts: float | None = None
        self._attempt = 0
        self._unreleased = 0
        self._fa: _FirstArticle | None = None
        self._patrol_last = -1

    # ---- read side ---------------------------------------------------------------

    @property
    def state(self) -> str:
        return self._state

    def plan(self) -> Plan | None:
        part = self._ids["part_number"]
        return None if part is None else self._plans.get(part)

    def context(self) -> dict[str, Any]:
        plan = self.plan()
        return {
            "part_number": self._ids["part_number"],
            "plan_revision": plan.revision if plan is not None else None,
            "die_id": self._ids["die_id"],
            "material_lot": self._ids["material_lot"],
            "heat_number": self._ids["heat_number"],
            "stroke_count": self._stroke_count,
            "state": self._state,
            "first_article_attempt": self._attempt,
            "unreleased_strokes": self._unreleased,
        }

    # ---- helpers -----------------------------------------------------------------

    def _event(self, kind: str, ts: float, body: dict[str, Any]) -> Event:
        return Event(kind=kind, ts=ts, body=body, context=self.context(), durable=True)

    def _go(self, ts: float, trigger: str) -> Event | None:
        """Move along the table; the ``state_change`` event, or None for a self-loop."""
        source = self._state
        target = next_state(source, trigger, self._previous_state)
        if target == source:
            return None
        if target == OFFLINE:
            self._previous_state = source
        elif source == OFFLINE:
            self._previous_state = None
        self._state = target
        return self._event("state_change", ts, {"from": source, "to": target, "cause": trigger})

    @staticmethod
    def _append(events: list[Event], event: Event | None) -> None:
        if event is not None:
            events.append(event)

    # ---- PLC connection ----------------------------------------------------------

    def on_connection(self, ts: float, online: bool, reason: str = "") -> list[Event]:
        online = bool(online)
        if online == self._online:
            return []
        self._online = online
        before = self._state
        change: Event | None = None
        if not online:
            if self._state != OFFLINE:
                change = self._go(ts, "disconnect")
        elif self._state == OFFLINE and self._previous_state in _ONLINE_STATES:
            change = self._go(ts, "reconnect")
        events = [self._event("connection", ts, {
            "online": online, "reason": str(reason), "previous_state": before,
            "state": self._state,
        })]
        self._append(events, change)
        return events

    # ---- PLC poll ----------------------------------------------------------------

    def on_poll(self, ts: float, roles: Mapping[str, Any]) -> list[Event]:
        events: list[Event] = []
        if self._state == OFFLINE and self._previous_state in _ONLINE_STATES:
            events += self.on_connection(ts, True, "poll received while offline")
            if self._state == OFFLINE:  # the flag said online already: move anyway
                self._append(events, self._go(ts, "reconnect"))
        elif self._online is not True:
            self._online = True  # data flows: the PLC is reachable

        ids = {k: _to_id(roles.get(k)) for k in _IDS}
        setup_mode_in = _to_bool(roles.get("setup_mode"))
        repair_in = _to_bool(roles.get("repair"))
        count = _to_count(roles.get("stroke_count"))
        setup_mode = setup_mode_in if setup_mode_in is not None else self._setup_mode

        if not self._baselined:
            return events + self._first_poll(ts, ids, setup_mode, repair_in, count)

        # -- which setup reasons does this poll carry? (compared with the old values)
        old = dict(self._ids)
        reasons: list[str] = []

        def add(reason: str) -> None:
            if reason not in reasons:
                reasons.append(reason)

        part = ids["part_number"]
        if part is not None and part != old["part_number"]:
            add("job_start" if old["part_number"] is None else "job_change")
        die = ids["die_id"]
        if die is not None and old["die_id"] is not None and die != old["die_id"]:
            add("die_change")
        if setup_mode is True and self._state != SETUP:
            add("die_change")
        for key in ("material_lot", "heat_number"):
            if ids[key] is not None and old[key] is not None and ids[key] != old[key]:
                add("material_change")
        if repair_in is True and self._repair is not True:
            add("repair")

        delta = 0
        idle: float | None = None
        if count is not None and self._stroke_count is not None and count > self._stroke_count:
            delta = count - self._stroke_count
            idle = max(0.0, ts - self._last_stroke_ts) if self._last_stroke_ts is not None else 0.0
            if self._state in (RELEASED, STOPPED) and idle > self.settings.long_stop_s:
                add("long_stop")

        # -- remember the new values
        for key in _IDS:
            if ids[key] is not None:
                self._ids[key] = ids[key]
        if setup_mode_in is not None:
            self._setup_mode = setup_mode_in
        if repair_in is not None:
            self._repair = repair_in
        if count is not None:
            if self._stroke_count is None or delta > 0:
                self._last_stroke_ts = ts
            self._stroke_count = count

        # -- act
        if reasons:
            events += self._setup(ts, reasons, old, setup_mode, delta,
                                  idle if "long_stop" in reasons else None)
            return events
        if self._state == SETUP and setup_mode is not True:
            self._append(events, self._go(ts, "setup_mode_off"))
        if delta > 0:
            if self._state == STOPPED:
                self._append(events, self._go(ts, "stroke"))
            if self._state != RELEASED:
                self._unreleased += delta
        elif (
            count is not None
            and self._state == RELEASED
            and self._last_stroke_ts is not None
            and ts - self._last_stroke_ts > self.settings.stopped_after_s
        ):
            self._append(events, self._go(ts, "idle"))
        return events

    def _first_poll(
        self,
        ts: float,
        ids: dict[str, str | None],
        setup_mode: bool | None,
        repair: bool | None,
        count: int | None,
    ) -> list[Event]:
        self._baselined = True
        old = dict(self._ids)
        for key in _IDS:
            if ids[key] is not None:
                self._ids[key] = ids[key]
        self._setup_mode = setup_mode
        self._repair = repair
        if count is not None:
            self._stroke_count = count
            self._last_stroke_ts = ts
        if self._ids["part_number"] is not None:
            return self._setup(ts, ["job_start"], old, setup_mode, 0, None)
        events: list[Event] = []
        trigger = "first_poll_setup_mode" if setup_mode is True else "first_poll"
        self._append(events, self._go(ts, trigger))
        return events

    def _setup(
        self,
        ts: float,
        reasons: list[str],
        old: dict[str, str | None],
        setup_mode: bool | None,
        strokes: int,
        idle: float | None,
    ) -> list[Event]:
        before = self._state
        discarded = self._fa
        previous_unreleased = self._unreleased
        previous_attempt = self._attempt
        self._fa = None
        self._attempt = 0
        self._unreleased = 0
        self._patrol_last = -1
        change = self._go(ts, "setup_trigger_setup_mode" if setup_mode is True else "setup_trigger")
        if self._state != RELEASED:  # always true: the targets are setup / awaiting
            self._unreleased += strokes
        order = {r: i for i, r in enumerate(SETUP_REASONS)}
        body = {
            "reasons": sorted(reasons, key=order.__getitem__),
            "previous": {k: old[k] for k in _IDS},
            "new": {k: self._ids[k] for k in _IDS},
            "previous_state": before,
            "state": self._state,
            "setup_mode": setup_mode,
            "discarded_first_article": discarded is not None,
            "discarded_attempt": discarded.attempt if discarded is not None else None,
            "previous_attempt": previous_attempt,
            "previous_unreleased_strokes": previous_unreleased,
            "unreleased_strokes": self._unreleased,
            "idle_s": idle,
        }
        events = [self._event("setup", ts, body)]
        self._append(events, change)
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
    ) -> list[Event]:
        """``calibration_overdue``: the gauge was past its calibration due date; the
        result is flagged, and refused for first article when the settings say so."""
        reading = {
            "gauge": _to_id(gauge),
            "channel": _to_channel(channel),
            "value": value.strip() if isinstance(value, str) else str(value),
            "unit": unit.strip() if isinstance(unit, str) else str(unit),
            "reading_id": None if reading_id is None else str(reading_id),
        }

        def unassigned(reason: str, detail: str) -> list[Event]:
            return [self._event("unassigned_reading", ts,
                                {**reading, "reason": reason, "detail": detail})]

        state = self._state
        if state in (OFFLINE, SETUP):
            return unassigned(f"state:{state}", f"readings are not taken in state {state}")
        plan = self.plan()
        if plan is None:
            part = self._ids["part_number"]
            detail = "part number unknown" if part is None else f"no plan for part {part}"
            return unassigned("no_plan", detail)
        if not plan.characteristics:
            return unassigned("empty_plan", f"plan {plan.part_number} rev {plan.revision} "
                                            "has no characteristics")
        raw = parse_value(value)
        if raw is None:
            return unassigned("invalid_value", f"not a finite decimal: {reading['value']!r}")

        if (calibration_overdue and self.settings.refuse_overdue_for_first_article
                and state not in (RELEASED, STOPPED)):
            return unassigned("calibration_overdue", f"gauge {reading['gauge']} is past its "
                              "calibration due date: not accepted for first article")
        chars = plan.characteristics
        n = len(chars)
        if state in (RELEASED, STOPPED):
            order = [(self._patrol_last + 1 + k) % n for k in range(n)]
        else:
            done = self._fa.results if state == FIRST_ARTICLE and self._fa is not None else {}
            order = [i for i, c in enumerate(chars) if c.id not in done]
        index = _route(chars, reading["gauge"], reading["channel"], order)
        if index is None:
            return unassigned("no_matching_characteristic",
                              f"no open characteristic takes gauge {reading['gauge']} "
                              f"channel {reading['channel']}")
        char = chars[index]
        try:
            result = _result(char, raw, reading, ts)
        except UnitError as exc:
            return unassigned("unknown_unit", str(exc))
        if calibration_overdue:
            result["calibration_overdue"] = True

        if state in (RELEASED, STOPPED):
            return self._measurement(ts, index, result)
        return self._first_article_reading(ts, plan, char, result)

    def _measurement(self, ts: float, index: int, result: dict[str, Any]) -> list[Event]:
        self._patrol_last = index
        change = None
        action = "none"
        if result["verdict"] == "fail" and self.settings.hold_on_measurement_fail:
            change = self._go(ts, "measurement_fail")
            action = "hold"
        events = [self._event("measurement", ts,
                              {**result, "stroke_count": self._stroke_count, "action": action})]
        self._append(events, change)
        return events

    def _first_article_reading(
        self, ts: float, plan: Plan, char: Characteristic, result: dict[str, Any]
    ) -> list[Event]:
        events: list[Event] = []
        if self._state != FIRST_ARTICLE or self._fa is None:
            self._attempt += 1
            self._fa = _FirstArticle(
                attempt=self._attempt, started_ts=ts,
                part_number=plan.part_number, plan_revision=plan.revision,
            )
            if self._state != FIRST_ARTICLE:
                self._append(events, self._go(ts, "reading"))
        fa = self._fa
        if not fa.results:
            fa.started_ts = ts  # also after a restore that had to empty the attempt
        fa.results[char.id] = result
        if any(c.id not in fa.results for c in plan.characteristics):
            return events
        results = [fa.results[c.id] for c in plan.characteristics]
        verdict = "pass" if all(r["verdict"] == "pass" for r in results) else "fail"
        self._fa = None
        change = self._go(ts, "first_article_pass" if verdict == "pass" else "first_article_fail")
        self._patrol_last = -1
        events.append(self._event("first_article", ts, {
            "attempt": fa.attempt,
            "verdict": verdict,
            "results": results,
            "failed": [r["characteristic"] for r in results if r["verdict"] != "pass"],
            "unreleased_strokes": self._unreleased,
            "started_ts": fa.started_ts,
        }))
        self._append(events, change)
        return events

    # ---- snapshot / restore ------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        fa = self._fa
        return {
            "version": SNAPSHOT_VERSION,
            "press_id": self.press_id,
            "state": self._state,
            "previous_state": self._previous_state,
            "online": self._online,
            "baselined": self._baselined,
            "ids": dict(self._ids),
            "setup_mode": self._setup_mode,
            "repair": self._repair,
            "stroke_count": self._stroke_count,
            "last_stroke_ts": self._last_stroke_ts,
            "attempt": self._attempt,
            "unreleased_strokes": self._unreleased,
            "patrol_last": self._patrol_last,
            "first_article": None if fa is None else {
                "attempt": fa.attempt,
                "started_ts": fa.started_ts,
                "part_number": fa.part_number,
                "plan_revision": fa.plan_revision,
                "results": {k: dict(v) for k, v in fa.results.items()},
            },
        }

    @classmethod
    def restore(
        cls,
        press_id: str,
        settings: WorkflowSettings,
        plans: Mapping[str, Plan],
        snapshot: Mapping[str, Any] | None,
    ) -> PressWorkflow:
        """A workflow continuing from ``snapshot``; a fresh one if it is unusable."""
        wf = cls(press_id, settings, plans)
        try:
            wf._load(snapshot)
        except (_BadSnapshot, TypeError, ValueError, KeyError, AttributeError,
                ArithmeticError):  # Decimal('sNaN') == 1 raises InvalidOperation
            return cls(press_id, settings, plans)
        return wf

    def _load(self, snap: Any) -> None:
        if not isinstance(snap, Mapping):
            raise _BadSnapshot("not a mapping")
        _want(snap.get("version") == SNAPSHOT_VERSION, "version")
        _want(snap.get("press_id") == self.press_id, "press_id")
        state = snap.get("state")
        _want(state in STATES, "state")
        previous = snap.get("previous_state")
        _want(previous is None or previous in _ONLINE_STATES, "previous_state")
        baselined = snap.get("baselined")
        _want(isinstance(baselined, bool), "baselined")
        if state == OFFLINE and baselined:
            _want(previous is not None, "previous_state")
        _want(state == OFFLINE or previous is None, "previous_state")
        _want(baselined or state == OFFLINE, "baselined")
        online = snap.get("online")
        _want(online is None or isinstance(online, bool), "online")
        ids = snap.get("ids")
        _want(isinstance(ids, Mapping), "ids")
        for key in _IDS:
            _want(ids.get(key) is None or isinstance(ids.get(key), str), key)
        for key in ("setup_mode", "repair"):
            _want(snap.get(key) is None or isinstance(snap.get(key), bool), key)
        stroke_count = _opt_int(snap.get("stroke_count"), "stroke_count")
        last_stroke_ts = _opt_num(snap.get("last_stroke_ts"), "last_stroke_ts")
        attempt = _opt_int(snap.get("attempt"), "attempt")
        unreleased = _opt_int(snap.get("unreleased_strokes"), "unreleased_strokes")
        patrol_last = _opt_int(snap.get("patrol_last"), "patrol_last")
        _want(attempt is not None and attempt >= 0, "attempt")
        _want(unreleased is not None and unreleased >= 0, "unreleased_strokes")
        _want(patrol_last is not None and patrol_last >= -1, "patrol_last")
        assert attempt is not None and unreleased is not None and patrol_last is not None

        self._state = state
        self._previous_state = previous
        self._online = online
        self._baselined = baselined
        self._ids = {k: ids.get(k) for k in _IDS}
        self._setup_mode = snap.get("setup_mode")
        self._repair = snap.get("repair")
        self._stroke_count = stroke_count
        self._last_stroke_ts = last_stroke_ts
        self._attempt = attempt
        self._unreleased = unreleased
        plan = self.plan()
        n = len(plan.characteristics) if plan is not None else 0
        self._patrol_last = patrol_last if patrol_last < n else -1
        self._fa = self._load_first_article(snap.get("first_article"), plan)

        in_first_article = (self._previous_state if state == OFFLINE else state) == FIRST_ARTICLE
        if in_first_article:
            _want(attempt >= 1, "attempt")
            if self._fa is None:  # plan changed or entry malformed: same attempt, empty
                self._fa = _FirstArticle(attempt, 0.0, "", "")
                if plan is not None:
                    self._fa.part_number = plan.part_number
                    self._fa.plan_revision = plan.revision
            if plan is None:
                # no plan any more: a first article cannot be completed; wait for one
                if state == OFFLINE:
                    self._previous_state = AWAITING_FIRST_ARTICLE
                else:
                    self._state = AWAITING_FIRST_ARTICLE
                self._fa = None
        else:
            self._fa = None

    def _load_first_article(self, raw: Any, plan: Plan | None) -> _FirstArticle | None:
        if not isinstance(raw, Mapping) or plan is None:
            return None
        attempt = raw.get("attempt")
        if attempt != self._attempt or raw.get("plan_revision") != plan.revision:
            return None
        if raw.get("part_number") != plan.part_number:
            return None
        started = raw.get("started_ts")
        results = raw.get("results")
        if not isinstance(started, (int, float)) or isinstance(started, bool):
            return None
        if not isinstance(results, Mapping):
            return None
        known = {c.id for c in plan.characteristics}
        if not set(results) <= known or len(results) >= len(known):
            return None
        if not all(isinstance(v, Mapping) and v.get("characteristic") == k
                   for k, v in results.items()):
            return None
        return _FirstArticle(
            attempt=self._attempt, started_ts=float(started),
            part_number=plan.part_number, plan_revision=plan.revision,
            results={k: dict(v) for k, v in results.items()},
        )


class _BadSnapshot(ValueError):
    pass


def _want(condition: bool, what: str) -> None:
    if not condition:
        raise _BadSnapshot(what)


def _opt_int(value: Any, what: str) -> int | None:
    if value is None:
        return None
    _want(isinstance(value, int) and not isinstance(value, bool), what)
    return int(value)


def _opt_num(value: Any, what: str) -> float | None:
    if value is None:
        return None
    _want(isinstance(value, (int, float)) and not isinstance(value, bool), what)
    return float(value)


# --------------------------------------------------------------------------------------
# Routing and results (pure helpers).
# --------------------------------------------------------------------------------------


def _takes(char: Characteristic, gauge: str | None, channel: int | None) -> bool:
    """Does ``char`` declare this gauge (and channel, if it names one)?"""
    declared = _to_id(char.gauge)
    if declared is None or declared != gauge:
        return False
    return char.channel is None or char.channel == channel


def _route(
    chars: tuple[Characteristic, ...], gauge: str | None, channel: int | None,
    order: list[int],
) -> int | None:
    """Index of the characteristic a reading goes to, searching ``order``; None if none.

    The first characteristic in ``order`` that declares the gauge (and channel); else,
    when no characteristic of the plan declares it at all, the first one in ``order``
    without a gauge.
    """
    for i in order:
        if _takes(chars[i], gauge, channel):
            return i
    if any(_takes(c, gauge, channel) for c in chars):
        return None
    for i in order:
        if _to_id(chars[i].gauge) is None:
            return i
    return None


def _result(
    char: Characteristic, raw: Decimal, reading: Mapping[str, Any], ts: float
) -> dict[str, Any]:
    """One judged value as a JSON-able dict (``UnitError`` when units do not convert)."""
    judged = check(raw, reading["unit"], char.unit, char.nominal, char.lsl, char.usl)
    return {
        "characteristic": char.id,
        "name": char.name,
        "char_class": char.char_class,
        "nominal": _dec(char.nominal),
        "lsl": _dec(char.lsl),
        "usl": _dec(char.usl),
        "unit": char.unit,
        "value": _dec(judged.value),
        "verdict": judged.verdict,
        "deviation": _dec(judged.deviation),
        "reading_id": reading["reading_id"],
        "gauge": reading["gauge"],
        "channel": reading["channel"],
        "raw_value": reading["value"],
        "raw_unit": reading["unit"],
        "measured_ts": ts,
    }
