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
except for the part number, where unknown -> known is ``job_start``. True/false roles
(setup_mode, running, repair) read their value through the press's ``RoleMap`` for the
role when it has one (a set of values, a bit of a word, enum names: docs/roles.md);
without one they accept bool, numbers (non-zero = true) and the strings 1/0,
true/false, on/off, yes/no. The ``running`` role is informational and ignored.

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
``awaiting_first_article``. Setup mode dropping in ``setup`` -> ``awaiting_first_article``.

Open setup (issue 11). A setup is open from its trigger until a first-article attempt
starts (the first reading is taken) or the press is released. A trigger while a setup is
open (typically "setup mode on, then the die id changes", or the material lot entered
during the die change) amends it instead of starting another: a ``setup`` event with
``amended: true``, the reasons of the whole setup, ``added_reasons``, ``previous`` = the
ids before the setup and ``new`` = the ids now; the reasons this change carried are
annotated again (``amended: true``) in the same phase. No new phase, attempt and
unreleased strokes count on; a state change only if setup mode changed the target.

Strokes. A stroke counter increase while not released (``setup``,
``awaiting_first_article``, ``first_article``, ``hold``) adds to ``unreleased_strokes``.
The counter is read as PLCs send it (issue 11): it wraps at ``stroke_counter_wrap``
(2**16 / 2**32 from the tag type) and is counted across the wrap; a value that is not a
plausible increase (more than ``max_strokes_per_min`` allows since the last accepted
value, over at least a second; a drop, e.g. a one-poll glitch to 0 or a reset) counts
nothing, is one ``alarm`` (cause ``counter_anomaly``) per episode, and does not reset the
idle clock; the count resumes with the next value that is plausible after the last
accepted one (a glitch) or after the implausible one (a reset). ``context.stroke_count``
is the collector's count: the PLC counter's first value plus every counted stroke (equal
to the PLC counter until it wraps or is reset). Strokes seen in the same poll as a setup
trigger count for the new setup (they are after the long stop, and a poll is 100 ms). The count is
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

Quality workflow (issue 5; details and the choices made in docs/quality.md)
----------------------------------------------------------------------------

Phases. Every setup trigger and every plan revision change starts a new SPC phase
(``context.phase``); the per-characteristic SPC state (``collector.quality.CharSpc``) is
reset, so run rules and baseline limits are evaluated within a phase. Each setup reason
is also an ``annotation`` event (die change, die repair, press maintenance, material lot
change, job change, long stop; plan change when the revision changes under a running job).

Patrol. In ``released``/``stopped`` a check is due every ``patrol_every_strokes`` strokes
(from the PLC counter) and/or ``patrol_every_min`` minutes since the release or the last
completed check -> ``measurement_due``. ``on_tick(ts)`` (the daemon calls it every
second) and every poll look at the clock; the workflow stays pure. A due check is
complete when every characteristic has completed a subgroup; not complete within
``overdue_grace_min`` -> one ``overdue`` event (the missed-check record, with reason).
Readings in production form subgroups of ``subgroup_size`` per characteristic; each
``measurement`` carries its subgroup id/position, phase and due id.

SPC and reactions. A completed subgroup is judged against frozen limits (plan-fixed, or
computed from the first K subgroups of the phase: ``control_limits`` event when they
freeze); broken rules -> ``alarm`` (cause ``rule``) with the evidence. An out-of-tolerance
value -> ``alarm`` (cause ``out_of_tolerance``). ``capability`` every
``capability_every`` subgroups and on request; Cpk below the minimum (with enough
values) -> ``alarm`` (cause ``low_capability``); Cpk and Ppk at or above the review
threshold -> ``capability_review`` (a suggestion; the plan is never changed). The
reaction plan of the characteristic's class adds ``hold`` (trigger ``reaction_hold``)
and/or ``inspection_100`` (a mode flag in the context, not a state: every piece is to be
measured until a quality ``release`` command).

Commands. ``on_command(ts, name, payload)`` validates (fields, allow-list, state) and
returns a ``CommandResult``; a refused command changes nothing. An accepted one is a
``command`` event (audit: who, when, what, effect) followed by what it caused.

Last piece. ``start_last_piece`` routes the next readings (one per characteristic) to the
last piece -> ``last_piece`` event, kept per die in the snapshot; when the next first
article on that die completes, ``last_piece_comparison`` reports both values.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from collector import quality
from collector.domain import (
    STATES,
    Characteristic,
    Event,
    GaugeReading,
    Plan,
    WorkflowSettings,
)
from collector.quality import COMMANDS, CharSpc, CommandError
from collector.tolerance import UnitError, check, parse_value
from drivers.gauge_parsers import flag_verdict

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
    Transition(RELEASED, "reaction_hold", HOLD, "an alarm whose reaction plan says hold"),
    Transition(STOPPED, "reaction_hold", HOLD, "an alarm whose reaction plan says hold"),
    Transition(RELEASED, "hold_command", HOLD, "hold command (quality)"),
    Transition(STOPPED, "hold_command", HOLD, "hold command (quality)"),
    Transition(HOLD, "quality_release", RELEASED, "release command (quality)"),
    *(Transition(s, "first_article_command", AWAITING_FIRST_ARTICLE,
                 "start_first_article command") for s in (RELEASED, STOPPED, HOLD)),
    Transition(STOPPED, "stroke", RELEASED, "a stroke within long_stop_s"),
    *(Transition(s, "disconnect", OFFLINE, "PLC connection lost") for s in _ONLINE_STATES),
    Transition(OFFLINE, "reconnect", PREVIOUS,
               "PLC connection back: the state before offline"),
)

TRIGGERS: tuple[str, ...] = tuple(dict.fromkeys(t.trigger for t in TRANSITIONS))

SETUP_REASONS = (
    "job_start", "job_change", "die_change", "material_change", "repair", "maintenance",
    "long_stop",
)

EVENT_KINDS = ("setup", "first_article", "measurement", "connection",
               "unassigned_reading", "state_change", "measurement_due", "overdue", "alarm",
               "control_limits", "capability", "capability_review", "annotation",
               "last_piece", "last_piece_comparison", "command")

# setup reason -> annotation type (job_start has none: nothing ran before)
ANNOTATIONS = {"job_change": "job_change", "die_change": "die_change",
               "material_change": "material_lot_change", "repair": "die_repair",
               "maintenance": "press_maintenance", "long_stop": "long_stop"}
ANNOTATION_TYPES = (*ANNOTATIONS.values(), "plan_change")

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
        digits = text.lstrip("+-")
        # isascii: '¹' and other Unicode digits pass isdigit() but not int()
        value = int(text) if digits.isascii() and digits.isdigit() and len(text) < 12 else None
    elif isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) < 2**31:
        return value
    return None


def _dec(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


def reading(ts: float, gauge: Any, channel: Any, value: Any, unit: Any,
            reading_id: Any = None, calibration_overdue: bool = False,
            flag: str | None = None) -> GaugeReading:
    """A ``GaugeReading`` from driver values: ids and channel normalised as everywhere in
    the workflow, value and unit stripped strings."""
    return GaugeReading(
        ts=float(ts), gauge=_to_id(gauge), channel=_to_channel(channel),
        value=value.strip() if isinstance(value, str) else str(value),
        unit=unit.strip() if isinstance(unit, str) else str(unit),
        reading_id=None if reading_id is None else str(reading_id),
        calibration_overdue=bool(calibration_overdue),
        flag=None if flag is None else str(flag))


# --------------------------------------------------------------------------------------
# The state machine.
# --------------------------------------------------------------------------------------

SNAPSHOT_VERSION = 1
MISSED_KEPT = 20  # missed checks kept for missed_check_reason (snapshot)


@dataclass(slots=True)
class _FirstArticle:
    attempt: int
    started_ts: float
    part_number: str
    plan_revision: str
    results: dict[str, dict[str, Any]] = field(default_factory=dict)  # by characteristic id


@dataclass(slots=True)
class CommandResult:
    """The reply to a command: ok, or an error code and message; and the events."""

    ok: bool
    code: str | None
    message: str
    events: list[Event]
    effect: dict[str, Any] | None = None  # an accepted command's effect (as in its event)


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
        # Strokes: _stroke_count is the collector's count (the PLC counter's first value,
        # then + every plausible increase: it continues across wraps and glitches);
        # _stroke_raw / _count_ts the last accepted PLC value and its time; _suspect the
        # last implausible value (raw, ts) of an open counter anomaly.
        self._stroke_count: int | None = None
        self._last_stroke_ts: float | None = None
        self._stroke_raw: int | None = None
        self._count_ts: float | None = None
        self._suspect: tuple[int, float] | None = None
        self._attempt = 0
        self._unreleased = 0
        self._fa: _FirstArticle | None = None
        self._patrol_last = -1
        # quality workflow (issue 5)
        self._phase = 1
        self._spc_key: tuple[str, str] | None = None  # (part, revision) of self._spc
        self._spc: dict[str, CharSpc] = {}
        self._inspection_100 = False
        self._operator: str | None = None
        self._patrol_base: tuple[int | None, float] | None = None  # (strokes, ts)
        self._due: dict[str, Any] | None = None
        self._due_seq = 0
        self._last_meas: dict[str, Any] | None = None  # what repeat_measurement voids
        self._lp: dict[str, Any] | None = None  # open last piece
        self._last_pieces: dict[str, dict[str, Any]] = {}  # by die id
        self._compare_die: str | None = None  # die whose last piece the next FA compares
        self._plc_ids: set[str] = set()  # id roles the PLC has reported
        # 100 % inspection bookkeeping while the mode is on (None = off): strokes of
        # released production vs values per characteristic (docs/quality.md)
        self._i100: dict[str, Any] | None = None
        self._overdues: list[dict[str, Any]] = []  # the last MISSED_KEPT missed checks
        # The open setup (issue 11): from a setup trigger until a first-article attempt
        # starts or the press is released; a trigger meanwhile amends it (one phase).
        self._open_setup: dict[str, Any] | None = None

    def set_plans(self, plans: Mapping[str, Plan]) -> None:
        """New plans while running (SIGHUP). A changed revision of the running part's plan
        is annotated (``plan_change``, new phase) by the next input or tick."""
        self._plans = {}
        for key, plan in plans.items():
            part = _to_id(key)
            if part is not None:
                self._plans[part] = plan

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
            "phase": self._phase,
            "inspection_100": self._inspection_100,
            "unmeasured_pieces": self.unmeasured_pieces(),
            "operator": self._operator,
        }

    def unmeasured_pieces(self) -> int | None:
        """Strokes of released production under 100 % inspection not yet matched by a
        measured piece (a piece = one value of every characteristic); None = mode off."""
        totals = self._i100_totals()
        return None if totals is None else totals["unmeasured_pieces"]

    def _i100_totals(self) -> dict[str, Any] | None:
        track = self._i100
        if track is None:
            return None
        plan = self.plan()
        counts = track["measured"]
        chars = [c.id for c in plan.characteristics] if plan is not None else []
        pieces = min((counts.get(c, 0) for c in chars), default=0)
        return {"since_ts": track["since_ts"], "strokes": track["strokes"],
                "pieces_measured": pieces,
                "unmeasured_pieces": max(0, track["strokes"] - pieces),
                "per_characteristic": {c: counts.get(c, 0) for c in chars},
                "max_unmeasured": self.settings.inspection_100_max_unmeasured,
                "alarms": track["alarms"]}

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
        if target in (FIRST_ARTICLE, RELEASED, HOLD):
            self._open_setup = None  # verification under way or done: the setup is closed
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
        self._plc_ids.update(k for k in _IDS if ids[k] is not None)
        setup_mode_in = self._role_bool("setup_mode", roles.get("setup_mode"))
        repair_in = self._role_bool("repair", roles.get("repair"))
        count = _to_count(roles.get("stroke_count"))
        setup_mode = setup_mode_in if setup_mode_in is not None else self._setup_mode

        if not self._baselined:
            return events + self._first_poll(ts, ids, setup_mode, repair_in, count)
        events += self._sync_plan(ts)

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

        delta, anomaly = self._count(ts, count)
        if anomaly is not None:
            events.append(self._event("alarm", ts, anomaly))
        idle: float | None = None
        if delta > 0:
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
        if delta > 0:
            self._last_stroke_ts = ts

        # -- act
        if reasons:
            events += self._setup(ts, reasons, old, setup_mode, delta,
                                  idle if "long_stop" in reasons else None)
            return events
        events += self._poll_act(ts, setup_mode, delta, count)
        return events + self._patrol_clock(ts)

    def _role_bool(self, role: str, value: Any) -> bool | None:
        """A true/false role: through the press's map for it (docs/roles.md), else
        non-zero / 1 / true / on / yes."""
        mapping = self.settings.role_maps.get(role)
        return _to_bool(value) if mapping is None else mapping.read(value)

    def _count(self, ts: float, raw: int | None) -> tuple[int, dict[str, Any] | None]:
        """Strokes since the last accepted counter value, and a ``counter_anomaly``
        alarm body when this value is not plausible (issue 11).

        Plausible = an increase of at most what the press can make at
        ``max_strokes_per_min`` since the last accepted value (over at least one second,
        + 1), counted modulo ``stroke_counter_wrap`` so that a wrap is counted across;
        without a rate: any increase (with a wrap: less than half the range). Anything
        else (a glitch to 0, a jump, a reset) counts nothing and raises one alarm per
        episode; the count resumes with the next value plausible after the last accepted
        one (a glitch) or after the implausible one (a reset).
        """
        if raw is None:
            return 0, None
        if self._stroke_raw is None or self._count_ts is None or self._stroke_count is None:
            self._stroke_count = self._stroke_count if self._stroke_count is not None else raw
            self._stroke_raw, self._count_ts, self._suspect = raw, ts, None
            return 0, None
        steps = self._plausible(self._stroke_raw, self._count_ts, raw, ts)
        if steps is None and self._suspect is not None:
            steps = self._plausible(*self._suspect, raw, ts)  # the counter was reset
        if steps is not None:
            self._stroke_count += steps
            self._stroke_raw, self._count_ts, self._suspect = raw, ts, None
            return steps, None
        opened = self._suspect is None
        self._suspect = (raw, ts)
        if not opened:
            return 0, None  # one alarm per episode
        limit = self._max_increase(ts - self._count_ts)
        return 0, {
            "cause": "counter_anomaly", "characteristic": None, "char_class": None,
            "actions": [], "reading_ids": [], "phase": self._phase,
            "evidence": {
                "previous": self._stroke_raw, "value": raw,
                "reason": "decrease" if raw < self._stroke_raw else "jump",
                "elapsed_s": round(ts - self._count_ts, 3),
                "max_increase": None if limit == math.inf else int(limit),
                "max_strokes_per_min": self.settings.max_strokes_per_min,
                "counter_wrap": self.settings.stroke_counter_wrap,
                "stroke_count": self._stroke_count,
            }}

    def _max_increase(self, elapsed: float) -> float:
        rate = self.settings.max_strokes_per_min
        if rate is None:
            return math.inf
        return math.ceil(rate * max(elapsed, 1.0) / 60.0) + 1

    def _plausible(self, before: int, before_ts: float, raw: int, ts: float) -> int | None:
        """Strokes from ``before`` to ``raw`` if the step is plausible, else None."""
        wrap = self.settings.stroke_counter_wrap
        if wrap is not None and wrap >= 2:
            steps = (raw - before) % wrap
            limit = min(self._max_increase(ts - before_ts), (wrap - 1) // 2)
        else:
            steps = raw - before
            limit = self._max_increase(ts - before_ts)
        return steps if 0 <= steps <= limit else None

    def _poll_act(self, ts: float, setup_mode: bool | None, delta: int,
                  count: int | None) -> list[Event]:
        events: list[Event] = []
        if delta > 0 and self._i100 is not None and self._state in (RELEASED, STOPPED):
            self._i100["strokes"] += delta
            events += self._i100_check(ts)
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
            self._stroke_count = self._stroke_raw = count
            self._last_stroke_ts = self._count_ts = ts
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
        command: str | None = None,
    ) -> list[Event]:
        if self._open_setup is not None:
            return self._amend_setup(ts, reasons, setup_mode, strokes, idle, command)
        before = self._state
        discarded = self._fa
        previous_unreleased = self._unreleased
        previous_attempt = self._attempt
        self._fa = None
        self._attempt = 0
        self._unreleased = 0
        self._patrol_last = -1
        self._new_phase()
        self._due = None
        self._lp = None
        self._last_meas = None
        self._compare_die = self._ids["die_id"]
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
            "amended": False,
            "added_reasons": [],
        }
        if command is not None:
            body["command"] = command
        self._open_setup = {"ts": ts, "reasons": list(body["reasons"]),
                            "previous": dict(body["previous"])}
        events = [self._event("setup", ts, body)]
        events += self._annotations(ts, body["reasons"], body, command, amended=False)
        self._append(events, change)
        return events

    def _annotations(self, ts: float, reasons: Iterable[str], body: Mapping[str, Any],
                     command: str | None, amended: bool) -> list[Event]:
        """One ``annotation`` per annotated setup reason (job_start has none)."""
        events = []
        for reason in reasons:
            if reason in ANNOTATIONS:
                note = {"type": ANNOTATIONS[reason], "reason": reason, "phase": self._phase,
                        "source": "command" if command is not None else "plc",
                        "previous": body["previous"], "new": body["new"]}
                if amended:
                    note["amended"] = True
                events.append(self._event("annotation", ts, note))
        return events

    def _amend_setup(self, ts: float, reasons: list[str], setup_mode: bool | None,
                     strokes: int, idle: float | None, command: str | None) -> list[Event]:
        """A trigger while a setup is open (e.g. the die id changes while setup mode is
        on): the open setup is amended, not restarted. Same phase, attempt and strokes
        count on; the ``setup`` event says ``amended: true`` with every reason of the
        setup, the ones this change added, the ids before the setup and now; each reason
        the change carried is annotated again (``amended: true``, same phase) so a chart
        names the die actually mounted."""
        opened = self._open_setup
        assert opened is not None
        before = self._state
        order = {r: i for i, r in enumerate(SETUP_REASONS)}
        added = [r for r in reasons if r not in opened["reasons"]]
        opened["reasons"] = sorted({*opened["reasons"], *reasons}, key=order.__getitem__)
        plan = self.plan()
        key = None if plan is None else (plan.part_number, plan.revision)
        if key != self._spc_key:  # the job changed too: fresh statistics, same phase
            self._spc = quality.fresh_spc(plan, self._phase)
            self._spc_key = key
        self._compare_die = self._ids["die_id"]  # the die mounted now
        previous_unreleased = self._unreleased
        change = self._go(ts, "setup_trigger_setup_mode" if setup_mode is True else "setup_trigger")
        self._open_setup = opened  # _go keeps it (setup/awaiting), stated for the reader
        self._unreleased += strokes
        body: dict[str, Any] = {
            "reasons": list(opened["reasons"]),
            "previous": dict(opened["previous"]),
            "new": {k: self._ids[k] for k in _IDS},
            "previous_state": before,
            "state": self._state,
            "setup_mode": setup_mode,
            "discarded_first_article": False,
            "discarded_attempt": None,
            "previous_attempt": self._attempt,
            "previous_unreleased_strokes": previous_unreleased,
            "unreleased_strokes": self._unreleased,
            "idle_s": idle,
            "amended": True,
            "added_reasons": sorted(added, key=order.__getitem__),
        }
        if command is not None:
            body["command"] = command
        events = [self._event("setup", ts, body)]
        events += self._annotations(ts, sorted(set(reasons), key=order.__getitem__), body,
                                    command, amended=True)
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
        if self._state in (OFFLINE, SETUP):
            return [self._unassigned(r, f"state:{self._state}",
                                     f"readings are not taken in state {self._state}")]
        return self._sync_plan(r.ts) + self._take(r)

    def _unassigned(self, r: GaugeReading, reason: str, detail: str) -> Event:
        return self._event("unassigned_reading", r.ts,
                           {**r.as_body(), "reason": reason, "detail": detail})

    def _take(self, r: GaugeReading) -> list[Event]:
        """Route and judge a reading (the plan is in sync): first article, patrol or
        last piece; ``unassigned_reading`` with the reason when nothing takes it."""
        ts, state = r.ts, self._state

        def unassigned(reason: str, detail: str) -> list[Event]:
            return [self._unassigned(r, reason, detail)]

        plan = self.plan()
        if plan is None:
            part = self._ids["part_number"]
            detail = "part number unknown" if part is None else f"no plan for part {part}"
            return unassigned("no_plan", detail)
        if not plan.characteristics:
            return unassigned("empty_plan", f"plan {plan.part_number} rev {plan.revision} "
                                            "has no characteristics")
        raw = parse_value(r.value)
        if raw is None:
            return unassigned("invalid_value", f"not a finite decimal: {r.value!r}")

        if (r.calibration_overdue and self.settings.refuse_overdue_for_first_article
                and state not in (RELEASED, STOPPED)):
            return unassigned("calibration_overdue", f"gauge {r.gauge} is past its "
                              "calibration due date: not accepted for first article")
        chars = plan.characteristics
        n = len(chars)
        last_piece = self._lp is not None and state in (RELEASED, STOPPED, HOLD)
        if last_piece:
            assert self._lp is not None
            order = [i for i, c in enumerate(chars) if c.id not in self._lp["results"]]
        elif state in (RELEASED, STOPPED):
            order = [(self._patrol_last + 1 + k) % n for k in range(n)]
        else:
            done = self._fa.results if state == FIRST_ARTICLE and self._fa is not None else {}
            size = plan.first_article_sample_size
            counts = {c.id: _pieces(done, c.id) for c in chars}
            order = sorted((i for i, c in enumerate(chars) if counts[c.id] < size),
                           key=lambda i: (counts[chars[i].id], i))
        index = _route(chars, r.gauge, r.channel, order)
        if index is None:
            return unassigned("no_matching_characteristic",
                              f"no open characteristic takes gauge {r.gauge} "
                              f"channel {r.channel}")
        char = chars[index]
        try:
            result = _result(char, raw, r)
        except UnitError as exc:
            return unassigned("unknown_unit", str(exc))
        if r.calibration_overdue:
            result["calibration_overdue"] = True
        if r.flag:
            result["gauge_flag"] = {"code": r.flag, "verdict": flag_verdict(r.flag)}

        if last_piece:
            return self._last_piece_reading(ts, plan, char, result)
        if state in (RELEASED, STOPPED):
            return self._measurement(ts, plan, index, result)
        return self._first_article_reading(ts, plan, char, result)

    def _measurement(self, ts: float, plan: Plan, index: int,
                     result: dict[str, Any]) -> list[Event]:
        """A patrol value: subgroup, SPC, reactions. Records first, transitions last."""
        self._patrol_last = index
        char = plan.characteristics[index]
        changes: list[Event] = []
        actions: list[str] = []
        counted = self._i100 is not None  # a piece measured under 100 % inspection
        if self._i100 is not None:
            measured = self._i100["measured"]
            measured[char.id] = measured.get(char.id, 0) + 1
            self._i100_check(ts)  # catching up re-arms the unmeasured alarm
        if result["verdict"] == "fail" and self.settings.hold_on_measurement_fail:
            self._append(changes, self._go(ts, "measurement_fail"))
            actions.append("hold")
        alarms: list[dict[str, Any]] = []
        if result["verdict"] == "fail":
            alarms.append(self._react(ts, plan, char, "out_of_tolerance", {
                "value": result["value"], "nominal": result["nominal"], "lsl": result["lsl"],
                "usl": result["usl"], "unit": result["unit"],
                "deviation": result["deviation"]}, [result["reading_id"]], changes,
                applied=list(actions)))  # hold_on_measurement_fail's hold is this alarm's
            actions += [a for a in alarms[-1]["actions"] if a not in actions]
        spc_state = self._spc.get(char.id)
        records: list[tuple[str, dict[str, Any]]] = []
        subgroup = None
        due_id = self._due["id"] if self._due is not None else None
        if spc_state is not None:
            sid, position, done = spc_state.add(char, result["reading_id"],
                                                float(Decimal(result["value"])))
            subgroup = {"id": sid, "position": position, "size": spc_state.n}
            if done is not None:
                records += self._on_subgroup(ts, plan, char, spc_state, done, changes, alarms)
        self._last_meas = {"kind": "patrol", "characteristic": char.id,
                           "reading_id": result["reading_id"], "value": result["value"],
                           "inspection_100": counted}
        action = ("hold_and_inspection_100" if {"hold", "inspection_100"} <= set(actions)
                  else actions[0] if actions else "none")
        events = [self._event("measurement", ts, {
            **result, "stroke_count": self._stroke_count, "action": action,
            "subgroup": subgroup, "phase": self._phase, "due_id": due_id,
            "purpose": "inspection_100" if self._inspection_100 else "patrol"})]
        events += [self._event("alarm", ts, a) for a in alarms]
        events += [self._event(kind, ts, body) for kind, body in records]
        if self._due is not None and subgroup is not None and subgroup["position"] == \
                subgroup["size"]:
            self._due["pending"] = [c for c in self._due["pending"] if c != char.id]
            if not self._due["pending"]:
                self._due = None
                self._patrol_base = (self._stroke_count, ts)
        return events + changes

    def _on_subgroup(self, ts: float, plan: Plan, char: Characteristic, state: CharSpc,
                     done: quality.Completed, changes: list[Event],
                     alarms: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
        records: list[tuple[str, dict[str, Any]]] = []
        if done.limits_frozen is not None:
            records.append(("control_limits", {
                "characteristic": char.id, "phase": state.phase, "source": "baseline",
                "limits": done.limits_frozen.as_dict(),
                "subgroups": [sid for sid, _ in state.groups]}))
        if done.violations:
            assert done.limits is not None
            alarms.append(self._react(ts, plan, char, "rule", {
                "rules": done.violations, "limits": done.limits.as_dict(),
                "subgroup": {"id": done.subgroup_id, "values": done.values}},
                done.reading_ids, changes))
        if state.since_capability >= plan.capability_every and \
                len(state.values()) >= plan.capability_min_values:
            state.since_capability = 0
            records += self._capability(ts, plan, char, state, "periodic", changes, alarms)
        return records

    def _capability(self, ts: float, plan: Plan, char: Characteristic, state: CharSpc,
                    trigger: str, changes: list[Event], alarms: list[dict[str, Any]]
                    ) -> list[tuple[str, dict[str, Any]]]:
        body = quality.capability_body(char, state, plan, trigger)
        records: list[tuple[str, dict[str, Any]]] = [("capability", body)]
        if body["verdict"] in ("below_minimum", "out_of_tolerance"):
            alarms.append(self._react(ts, plan, char, "low_capability", {
                k: body[k] for k in ("verdict", "cpk", "ppk", "cp", "pp", "cpm", "n",
                                     "minimum", "stable", "mean", "sigma_within",
                                     "sigma_overall", "ppm")},
                [rid for _, g in state.groups for rid, _ in g][-body["n"]:], changes))
        elif body["verdict"] == "review":
            records.append(("capability_review", {
                "characteristic": char.id, "phase": state.phase, "cpk": body["cpk"],
                "ppk": body["ppk"], "n": body["n"], "stable": body["stable"],
                "review_threshold": plan.capability_review,
                "suggestion": "capability at or above the review threshold: the control "
                              "plan may be revised (e.g. less frequent patrol) after "
                              "approval; the collector does not change the plan"}))
        return records

    def _react(self, ts: float, plan: Plan, char: Characteristic, cause: str,
               evidence: dict[str, Any], reading_ids: list[str | None],
               changes: list[Event], applied: list[str] | None = None) -> dict[str, Any]:
        """Apply the class's reaction plan for ``cause``; the alarm body. ``applied``:
        actions the same input already took for this cause (the press option
        ``hold_on_measurement_fail``): the alarm lists every action it caused."""
        wanted = getattr(plan.reaction(char.char_class), cause)
        applied = list(applied or [])
        if "hold" in applied:
            pass
        elif "hold" in wanted and self._state in (RELEASED, STOPPED):
            self._append(changes, self._go(ts, "reaction_hold"))
            applied.append("hold")
        elif "hold" in wanted and self._state == HOLD:
            applied.append("hold")  # already on hold (an earlier alarm of this input)
        if "inspection_100" in wanted:
            self._inspection_100 = True
            if self._i100 is None:
                self._i100 = {"since_ts": ts, "strokes": 0, "measured": {}, "alarmed": False,
                              "alarms": 0}
            applied.append("inspection_100")
        return {"cause": cause, "characteristic": char.id, "name": char.name,
                "char_class": char.char_class, "actions": applied, "evidence": evidence,
                "reading_ids": list(reading_ids), "phase": self._phase}

    def _i100_check(self, ts: float) -> list[Event]:
        """Alarm once when more strokes than ``inspection_100_max_unmeasured`` are not
        matched by measured pieces; re-armed when the measuring has caught up."""
        track, totals = self._i100, self._i100_totals()
        if track is None or totals is None:
            return []
        if totals["unmeasured_pieces"] <= self.settings.inspection_100_max_unmeasured:
            track["alarmed"] = False
            return []
        if track["alarmed"]:
            return []
        track["alarmed"] = True
        track["alarms"] += 1
        totals["alarms"] = track["alarms"]
        return [self._event("alarm", ts, {
            "cause": "unmeasured_pieces", "characteristic": None, "char_class": None,
            "actions": [], "evidence": totals, "reading_ids": [], "phase": self._phase})]

    # ---- last piece --------------------------------------------------------------

    def _last_piece_reading(self, ts: float, plan: Plan, char: Characteristic,
                            result: dict[str, Any]) -> list[Event]:
        lp = self._lp
        assert lp is not None
        lp["results"][char.id] = result
        self._last_meas = {"kind": "last_piece", "characteristic": char.id,
                           "reading_id": result["reading_id"], "value": result["value"]}
        if any(c.id not in lp["results"] for c in plan.characteristics):
            return []
        self._lp = None
        self._last_meas = None
        results = [lp["results"][c.id] for c in plan.characteristics]
        die = self._ids["die_id"]
        body = {"die_id": die, "part_number": plan.part_number,
                "plan_revision": plan.revision, "started_ts": lp["started_ts"],
                "results": results, "stored": die is not None,
                "reading_ids": [r["reading_id"] for r in results]}
        if die is not None:
            self._last_pieces[die] = {
                "ts": ts, "part_number": plan.part_number, "plan_revision": plan.revision,
                "values": {r["characteristic"]: r["value"] for r in results},
                "reading_ids": {r["characteristic"]: r["reading_id"] for r in results}}
        return [self._event("last_piece", ts, body)]

    def _compare_last_piece(self, ts: float, plan: Plan, attempt: int,
                            results: list[dict[str, Any]]) -> list[Event]:
        die, self._compare_die = self._compare_die, None
        stored = self._last_pieces.get(die) if die is not None else None
        if stored is None or stored["part_number"] != plan.part_number:
            return []
        items = []
        for r in results:
            cid = r["characteristic"]
            if r.get("piece", 1) != 1 or cid not in stored["values"]:
                continue
            last = Decimal(stored["values"][cid])
            items.append({"characteristic": cid, "last_value": stored["values"][cid],
                          "first_value": r["value"],
                          "difference": str(Decimal(r["value"]) - last),
                          "last_reading_id": stored["reading_ids"].get(cid),
                          "first_reading_id": r["reading_id"]})
        return [self._event("last_piece_comparison", ts, {
            "die_id": die, "attempt": attempt, "last_piece_ts": stored["ts"],
            "last_piece_plan_revision": stored["plan_revision"], "items": items})]

    # ---- phases, plan changes, patrol clock ----------------------------------------

    def _new_phase(self) -> None:
        plan = self.plan()
        if self._spc_key is not None:
            self._phase += 1
        self._spc = quality.fresh_spc(plan, self._phase)
        self._spc_key = None if plan is None else (plan.part_number, plan.revision)

    def _sync_plan(self, ts: float) -> list[Event]:
        """A new revision of the running part's plan: annotation and a new phase."""
        plan = self.plan()
        key = None if plan is None else (plan.part_number, plan.revision)
        if key == self._spc_key or not self._baselined:
            return []
        old = self._spc_key
        self._new_phase()
        self._due = None
        self._lp = None
        self._last_meas = None
        self._patrol_last = -1
        fa = self._fa
        if fa is not None and plan is not None and (fa.part_number, fa.plan_revision) != key:
            # judged by the new revision: measured again from the start, same attempt
            self._fa = _FirstArticle(fa.attempt, fa.started_ts, plan.part_number,
                                     plan.revision)
        if old is None or key is None or old[0] != key[0]:
            return []
        return [self._event("annotation", ts, {
            "type": "plan_change", "reason": "plan_change", "phase": self._phase,
            "source": "config", "previous": {"plan_revision": old[1]},
            "new": {"plan_revision": key[1]}})]

    def on_tick(self, ts: float) -> list[Event]:
        """The daemon's clock (about once a second): patrol due and overdue checks."""
        if not self._baselined or self._state == OFFLINE:
            return []
        return self._sync_plan(ts) + self._patrol_clock(ts)

    def _patrol_clock(self, ts: float) -> list[Event]:
        plan = self.plan()
        if plan is None or self._state not in (RELEASED, STOPPED):
            return []
        if self._patrol_base is None:
            self._patrol_base = (self._stroke_count, ts)
        due = self._due
        if due is None:
            base_strokes, base_ts = self._patrol_base
            reason = None
            strokes = (self._stroke_count - base_strokes
                       if self._stroke_count is not None and base_strokes is not None else None)
            minutes = (ts - base_ts) / 60.0
            if plan.patrol_every_strokes and strokes is not None \
                    and strokes >= plan.patrol_every_strokes:
                reason = "strokes"
            elif plan.patrol_every_min and minutes >= plan.patrol_every_min:
                reason = "time"
            if reason is None:
                return []
            self._due_seq += 1
            self._due = {"id": f"{self.press_id}/due/{self._due_seq}", "ts": ts,
                         "reason": reason, "overdue": False,
                         "pending": [c.id for c in plan.characteristics]}
            return [self._event("measurement_due", ts, {
                "due_id": self._due["id"], "reason": reason,
                "strokes_since": strokes, "minutes_since": round(minutes, 3),
                "every_strokes": plan.patrol_every_strokes,
                "every_min": plan.patrol_every_min, "grace_min": plan.overdue_grace_min,
                "subgroup_size": plan.subgroup_size,
                "characteristics": list(self._due["pending"]),
                "inspection_100": self._inspection_100})]
        if not due["overdue"] and ts - due["ts"] > plan.overdue_grace_min * 60.0:
            due["overdue"] = True
            self._overdues = [*self._overdues, {
                "due_id": due["id"], "due_ts": due["ts"], "overdue_ts": ts,
                "due_reason": due["reason"], "missing": list(due["pending"]),
                "operator_reason": None, "operator": None}][-MISSED_KEPT:]
            return [self._event("overdue", ts, {
                "due_id": due["id"], "due_ts": due["ts"], "grace_min": plan.overdue_grace_min,
                "missing": list(due["pending"]),
                "reason": f"patrol check not completed within {plan.overdue_grace_min:g} min "
                          f"of falling due ({due['reason']})"})]
        return []

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
        size = plan.first_article_sample_size
        piece = _pieces(fa.results, char.id) + 1
        key = _piece_key(char.id, piece)
        if size > 1:
            result = {**result, "piece": piece}
        fa.results[key] = result
        self._last_meas = {"kind": "first_article", "characteristic": char.id,
                           "reading_id": result["reading_id"], "value": result["value"],
                           "key": key}
        if any(_pieces(fa.results, c.id) < size for c in plan.characteristics):
            return events
        results = [fa.results[_piece_key(c.id, k)] for k in range(1, size + 1)
                   for c in plan.characteristics]
        verdict = "pass" if all(r["verdict"] == "pass" for r in results) else "fail"
        self._fa = None
        self._last_meas = None
        change = self._go(ts, "first_article_pass" if verdict == "pass" else "first_article_fail")
        self._patrol_last = -1
        if verdict == "pass":
            self._patrol_base = (self._stroke_count, ts)
            self._due = None
        comparison = self._compare_last_piece(ts, plan, fa.attempt, results)
        events.append(self._event("first_article", ts, {
            "attempt": fa.attempt,
            "verdict": verdict,
            "results": results,
            "failed": list(dict.fromkeys(r["characteristic"] for r in results
                                         if r["verdict"] != "pass")),
            "unreleased_strokes": self._unreleased,
            "started_ts": fa.started_ts,
        }))
        events += comparison
        self._append(events, change)
        return events

    # ---- operator commands -------------------------------------------------------

    def on_command(self, ts: float, name: str, payload: Any) -> CommandResult:
        """Validate and apply a command. Refused: an error code, and nothing changed."""
        try:
            fields = quality.validate_command(name, payload, self.settings.authorized)
            return self._apply_command(ts, name, fields)
        except CommandError as exc:
            return CommandResult(False, exc.code, exc.message, [])

    def _refuse(self, name: str, why: str) -> CommandError:
        return CommandError("not_allowed", f"{name} is not allowed in state {self._state}: "
                                           f"{why}")

    def _apply_command(self, ts: float, name: str, f: dict[str, str]) -> CommandResult:
        state = self._state
        plan = self.plan()
        if state == OFFLINE:
            raise self._refuse(name, "the press is offline")
        pre = self._sync_plan(ts)
        plan = self.plan()
        effect: dict[str, Any] = {}
        after: list[Event] = []
        changes: list[Event] = []
        if name == "set_material":
            if "lot" not in f and "heat" not in f:
                raise CommandError("missing_field", "set_material needs lot and/or heat")
            for key, role in (("lot", "material_lot"), ("heat", "heat_number")):
                if key in f and role in self._plc_ids:
                    raise self._refuse(name, f"the PLC reports {role} on this press")
            old = dict(self._ids)
            changed = False
            for key, role in (("lot", "material_lot"), ("heat", "heat_number")):
                if key in f:
                    changed |= old[role] is not None and old[role] != f[key]
                    self._ids[role] = f[key]
            effect = {"material_lot": self._ids["material_lot"],
                      "heat_number": self._ids["heat_number"], "material_change": changed}
            self._operator = f["operator"]
            if changed:
                after = self._setup(ts, ["material_change"], old, self._setup_mode, 0, None,
                                    command=f["request_id"])
        elif name == "start_setup":
            reason = f["reason"]
            if reason not in quality.SETUP_COMMAND_REASONS:
                raise CommandError("invalid_field", f"reason {reason!r} is not allowed "
                                   f"(allowed: {', '.join(quality.SETUP_COMMAND_REASONS)})")
            self._operator = f["operator"]
            effect = {"reason": reason}
            after = self._setup(ts, [reason], dict(self._ids), self._setup_mode, 0, None,
                                command=f["request_id"])
        elif name == "release":
            if state != HOLD and not self._inspection_100:
                raise self._refuse(name, "nothing to release (not on hold, no 100 % "
                                         "inspection)")
            if state == HOLD and (self._unreleased > 0 and self._attempt == 0):
                raise self._refuse(name, "no first article yet since the setup")
            effect = {"from_state": state, "ended_inspection_100": self._inspection_100,
                      "inspection_100": self._i100_totals()}
            self._operator = f["operator"]
            self._inspection_100 = False
            self._i100 = None
            if state == HOLD:
                self._append(changes, self._go(ts, "quality_release"))
                self._patrol_base = (self._stroke_count, ts)
                self._due = None
        elif name == "hold":
            if state not in (RELEASED, STOPPED):
                raise self._refuse(name, "only released production can be put on hold")
            self._operator = f["operator"]
            self._append(changes, self._go(ts, "hold_command"))
            effect = {"from_state": state}
        elif name == "repeat_measurement":
            effect = self._void_last(name)
            self._operator = f["operator"]
            after = self._i100_check(ts)
        elif name == "missed_check_reason":
            effect = self._missed_reason(name, f)
        elif name == "start_first_article":
            if state not in (RELEASED, STOPPED, HOLD) or plan is None:
                raise self._refuse(name, "a first article is already pending or there is "
                                         "no plan")
            self._operator = f["operator"]
            self._lp = None
            self._due = None
            self._append(changes, self._go(ts, "first_article_command"))
            effect = {"from_state": state}
        elif name == "start_last_piece":
            if state not in (RELEASED, STOPPED, HOLD) or plan is None:
                raise self._refuse(name, "the last piece is measured at the end of a "
                                         "released run")
            self._operator = f["operator"]
            self._lp = {"started_ts": ts, "results": {}}
            effect = {"die_id": self._ids["die_id"],
                      "characteristics": [c.id for c in plan.characteristics]}
        elif name == "request_capability":
            if plan is None:
                raise self._refuse(name, "no plan for the current part")
            wanted = f.get("characteristic")
            chars = [c for c in plan.characteristics if wanted in (None, c.id)]
            if not chars:
                raise CommandError("invalid_field", f"characteristic {wanted!r} is not in "
                                   f"plan {plan.part_number} rev {plan.revision}")
            self._operator = f["operator"]
            alarms: list[dict[str, Any]] = []
            records: list[tuple[str, dict[str, Any]]] = []
            for c in chars:
                st = self._spc.get(c.id)
                if st is not None:
                    records += self._capability(ts, plan, c, st, "request", changes, alarms)
            after = [self._event("alarm", ts, a) for a in alarms]
            after += [self._event(k, ts, b) for k, b in records]
            effect = {"characteristics": [c.id for c in chars]}
        else:  # pragma: no cover - validate_command knows every name
            raise CommandError("unknown_command", name)
        audit = self._event("command", ts, {
            "request_id": f["request_id"], "command": name, "operator": f["operator"],
            "class": COMMANDS[name].cls, "fields": {k: v for k, v in f.items()
                                                    if k not in quality.COMMON_FIELDS},
            "state_before": state, "effect": effect})
        events = [*pre, audit, *after, *changes]
        return CommandResult(True, None, "ok", events, effect)

    def _missed_reason(self, name: str, f: dict[str, str]) -> dict[str, Any]:
        """Attach the operator's reason to a missed check (``due_id``, default the last)."""
        if not self._overdues:
            raise self._refuse(name, "no missed patrol check on record")
        wanted = f.get("due_id")
        found = [r for r in self._overdues if wanted in (None, r["due_id"])]
        if not found:
            known = ", ".join(r["due_id"] for r in self._overdues)
            raise CommandError("invalid_field", f"due_id {wanted!r} is not a missed check "
                               f"on record (known: {known})")
        record = found[-1]
        previous = record["operator_reason"]
        record["operator_reason"], record["operator"] = f["reason"], f["operator"]
        self._operator = f["operator"]
        return {"due_id": record["due_id"], "due_ts": record["due_ts"],
                "overdue_ts": record["overdue_ts"], "due_reason": record["due_reason"],
                "missing": list(record["missing"]), "reason": f["reason"],
                "previous_reason": previous}

    def _void_last(self, name: str) -> dict[str, Any]:
        last = self._last_meas
        if last is None:
            raise self._refuse(name, "no measurement to repeat")
        kind = last["kind"]
        if kind == "patrol":
            if self._state not in (RELEASED, STOPPED, HOLD):
                raise self._refuse(name, "the measurement belongs to an earlier run")
            st = self._spc.get(last["characteristic"])
            if st is not None:
                st.void(last["reading_id"])
            if last.get("inspection_100") and self._i100 is not None:
                measured = self._i100["measured"]
                cid = last["characteristic"]
                measured[cid] = max(0, measured.get(cid, 0) - 1)
            plan = self.plan()
            if plan is not None:
                ids = [c.id for c in plan.characteristics]
                if last["characteristic"] in ids:
                    self._patrol_last = ids.index(last["characteristic"]) - 1
        elif kind == "first_article":
            if self._state != FIRST_ARTICLE or self._fa is None:
                raise self._refuse(name, "the first article is already judged")
            self._fa.results.pop(last["key"], None)
        elif kind == "last_piece" and self._lp is not None:
            self._lp["results"].pop(last["characteristic"], None)
        self._last_meas = None
        return {"voided": {k: last[k] for k in ("kind", "characteristic", "reading_id",
                                                "value")}}

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
            "stroke_raw": self._stroke_raw,
            "count_ts": self._count_ts,
            "counter_suspect": None if self._suspect is None else list(self._suspect),
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
            "quality": {
                "phase": self._phase,
                "spc_key": None if self._spc_key is None else list(self._spc_key),
                "spc": {k: v.dump() for k, v in self._spc.items()},
                "inspection_100": self._inspection_100,
                "operator": self._operator,
                "patrol_base": None if self._patrol_base is None else list(self._patrol_base),
                "due": self._due,
                "due_seq": self._due_seq,
                "last_meas": self._last_meas,
                "last_piece_open": self._lp,
                "last_pieces": self._last_pieces,
                "compare_die": self._compare_die,
                "plc_ids": sorted(self._plc_ids),
                "i100": None if self._i100 is None else {
                    **self._i100, "measured": dict(self._i100["measured"])},
                "overdues": [dict(r) for r in self._overdues],
                "open_setup": None if self._open_setup is None else {
                    **self._open_setup, "reasons": list(self._open_setup["reasons"]),
                    "previous": dict(self._open_setup["previous"])},
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
        # older snapshots: the PLC value was the count, taken at the last stroke
        raw = _opt_int(snap.get("stroke_raw", stroke_count), "stroke_raw")
        self._stroke_raw = raw if stroke_count is not None else None
        count_ts = _opt_num(snap.get("count_ts", last_stroke_ts), "count_ts")
        self._count_ts = count_ts if self._stroke_raw is not None else None
        suspect = snap.get("counter_suspect")
        _want(suspect is None or (isinstance(suspect, list) and len(suspect) == 2),
              "counter_suspect")
        self._suspect = None if suspect is None else (
            int(_opt_int(suspect[0], "counter_suspect") or 0),
            float(_opt_num(suspect[1], "counter_suspect") or 0.0))
        self._attempt = attempt
        self._unreleased = unreleased
        plan = self.plan()
        n = len(plan.characteristics) if plan is not None else 0
        self._patrol_last = patrol_last if patrol_last < n else -1
        self._fa = self._load_first_article(snap.get("first_article"), plan)
        try:
            self._load_quality(snap.get("quality"))
        except (TypeError, ValueError, KeyError, AttributeError, ArithmeticError):
            self._load_quality(None)  # quality state unusable: a fresh one, same press

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

    def _load_quality(self, raw: Any) -> None:
        """The quality part of a snapshot; None or malformed -> defaults (a new phase)."""
        plan = self.plan()
        if not isinstance(raw, Mapping):
            self._phase, self._spc_key = 1, None
            self._new_phase()
            self._inspection_100, self._operator = False, None
            self._patrol_base = self._due = self._last_meas = self._lp = None
            self._due_seq, self._last_pieces, self._compare_die = 0, {}, None
            self._plc_ids = set()
            self._i100, self._overdues = None, []
            self._open_setup = None
            return
        phase = raw["phase"]
        _want(isinstance(phase, int) and phase >= 1, "phase")
        key = raw["spc_key"]
        self._phase = phase
        self._spc_key = None if key is None else (str(key[0]), str(key[1]))
        self._spc = {k: CharSpc.load(v) for k, v in raw["spc"].items()}
        current = None if plan is None else (plan.part_number, plan.revision)
        if plan is not None and self._spc_key == current and set(self._spc) != {
                c.id for c in plan.characteristics}:
            raise ValueError("spc state does not match the plan")
        self._inspection_100 = bool(raw["inspection_100"])
        op = raw["operator"]
        self._operator = op if isinstance(op, str) else None
        base = raw["patrol_base"]
        self._patrol_base = None if base is None else (
            None if base[0] is None else int(base[0]), float(base[1]))
        due = raw["due"]
        self._due = dict(due) if isinstance(due, Mapping) else None
        self._due_seq = int(raw["due_seq"])
        last = raw["last_meas"]
        self._last_meas = dict(last) if isinstance(last, Mapping) else None
        lp = raw["last_piece_open"]
        self._lp = dict(lp) if isinstance(lp, Mapping) and isinstance(
            lp.get("results"), Mapping) else None
        pieces = raw["last_pieces"]
        _want(isinstance(pieces, Mapping), "last_pieces")
        self._last_pieces = {str(k): dict(v) for k, v in pieces.items()}
        die = raw["compare_die"]
        self._compare_die = die if isinstance(die, str) else None
        self._plc_ids = {k for k in raw["plc_ids"] if k in _IDS}
        self._i100 = _load_i100(raw.get("i100")) if self._inspection_100 else None
        if self._inspection_100 and self._i100 is None:  # older snapshot: count from now
            self._i100 = {"since_ts": None, "strokes": 0, "measured": {}, "alarmed": False,
                          "alarms": 0}
        overdues = raw.get("overdues", [])
        _want(isinstance(overdues, list), "overdues")
        self._overdues = [_load_overdue(r) for r in overdues][-MISSED_KEPT:]
        self._open_setup = _load_open_setup(raw.get("open_setup"))

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
        known = {_piece_key(c.id, k) for c in plan.characteristics
                 for k in range(1, plan.first_article_sample_size + 1)}
        if not set(results) <= known or len(results) >= len(known):
            return None
        if not all(isinstance(v, Mapping) and v.get("characteristic") == k.split("#")[0]
                   for k, v in results.items()):
            return None
        return _FirstArticle(
            attempt=self._attempt, started_ts=float(started),
            part_number=plan.part_number, plan_revision=plan.revision,
            results={k: dict(v) for k, v in results.items()},
        )


class _BadSnapshot(ValueError):
    pass


def _load_i100(raw: Any) -> dict[str, Any] | None:
    """The 100 % inspection track of a snapshot (``ValueError`` when malformed)."""
    if raw is None:
        return None
    since = raw["since_ts"]
    measured = raw["measured"]
    _want(since is None or isinstance(since, (int, float)), "i100.since_ts")
    _want(isinstance(measured, Mapping), "i100.measured")
    track = {"since_ts": None if since is None else float(since),
             "strokes": int(raw["strokes"]), "alarmed": bool(raw["alarmed"]),
             "alarms": int(raw["alarms"]),
             "measured": {str(k): int(v) for k, v in measured.items()}}
    _want(track["strokes"] >= 0 and min(track["measured"].values(), default=0) >= 0,
          "i100 counts")
    return track


def _load_overdue(raw: Any) -> dict[str, Any]:
    """One missed-check record of a snapshot (``ValueError`` when malformed)."""
    _want(isinstance(raw, Mapping) and isinstance(raw["due_id"], str), "overdues")
    reason, operator = raw["operator_reason"], raw["operator"]
    _want(reason is None or isinstance(reason, str), "overdues.operator_reason")
    _want(operator is None or isinstance(operator, str), "overdues.operator")
    return {"due_id": raw["due_id"], "due_ts": float(raw["due_ts"]),
            "overdue_ts": float(raw["overdue_ts"]), "due_reason": str(raw["due_reason"]),
            "missing": [str(c) for c in raw["missing"]], "operator_reason": reason,
            "operator": operator}


def _load_open_setup(raw: Any) -> dict[str, Any] | None:
    """The open setup of a snapshot (None: none, or an older snapshot)."""
    if raw is None:
        return None
    reasons, previous = raw["reasons"], raw["previous"]
    _want(isinstance(reasons, list) and bool(reasons)
          and all(r in SETUP_REASONS for r in reasons), "open_setup.reasons")
    _want(isinstance(previous, Mapping) and all(
        previous.get(k) is None or isinstance(previous.get(k), str) for k in _IDS),
        "open_setup.previous")
    return {"ts": float(raw["ts"]), "reasons": list(reasons),
            "previous": {k: previous.get(k) for k in _IDS}}


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


def _piece_key(char_id: str, piece: int) -> str:
    """Key of a first-article result: the id for piece 1 (as before), id#k after."""
    return char_id if piece == 1 else f"{char_id}#{piece}"


def _pieces(results: Mapping[str, Any], char_id: str) -> int:
    """How many pieces of a first article have a value for ``char_id``."""
    n = 0
    while _piece_key(char_id, n + 1) in results:
        n += 1
    return n


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


def _result(char: Characteristic, raw: Decimal, r: GaugeReading) -> dict[str, Any]:
    """One judged value as a JSON-able dict (``UnitError`` when units do not convert)."""
    judged = check(raw, r.unit, char.unit, char.nominal, char.lsl, char.usl)
    return {
        "characteristic": char.id,
        "name": char.name,
        "char_class": char.char_class,
        "nominal": _dec(char.nominal),
        "lsl": _dec(char.lsl),
        "usl": _dec(char.usl),
        "unit": char.unit,
        "resolution": _dec(char.resolution),  # the plan's gauge step, for MSA / export
        "value": _dec(judged.value),
        "verdict": judged.verdict,
        "deviation": _dec(judged.deviation),
        "reading_id": r.reading_id,
        "gauge": r.gauge,
        "channel": r.channel,
        "raw_value": r.value,
        "raw_unit": r.unit,
        "measured_ts": r.ts,
    }
