"""The workflow's kernel: states, triggers, the transition table and the state itself.

Everything that moves a press between states is listed in ``TRANSITIONS`` (the h11
habit: a table, not ``if`` chains spread over the code); ``diagram()`` renders it for
the README (scripts/gen-docs, drift test in tests/test_docs.py). ``Machine`` holds the
state and moves it only along the table: ``Machine.move`` refuses a (state, trigger)
pair that is not in it. Every other part of the workflow only computes *which trigger*
an input is.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from collector import event_kinds
from collector.domain import STATES
from collector.workflow.codec import Record, want

# --------------------------------------------------------------------------------------

OFFLINE = "offline"
STOPPED = "stopped"
SETUP = "setup"
AWAITING_FIRST_ARTICLE = "awaiting_first_article"
FIRST_ARTICLE = "first_article"
AWAITING_CONFIRMATION = "awaiting_confirmation"
RELEASED = "released"
HOLD = "hold"
assert set(STATES) == {
    OFFLINE, STOPPED, SETUP, AWAITING_FIRST_ARTICLE, FIRST_ARTICLE, AWAITING_CONFIRMATION,
    RELEASED, HOLD,
}

PREVIOUS = "(previous)"  # target of 'reconnect': the state the press was in before offline
ANY = "*"  # source wildcard: every state

# Online states: every state but offline.
ONLINE_STATES = tuple(s for s in STATES if s != OFFLINE)


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
    Transition(FIRST_ARTICLE, "first_article_pass_to_confirm", AWAITING_CONFIRMATION,
               "every characteristic in tolerance; the plan's roles confirm it"),
    Transition(AWAITING_CONFIRMATION, "confirmed", RELEASED,
               "every required role confirmed the first article"),
    Transition(AWAITING_CONFIRMATION, "hold_command", HOLD,
               "hold command (quality) instead of a confirmation"),
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
                 "start_first_article command")
      for s in (RELEASED, STOPPED, HOLD, AWAITING_CONFIRMATION)),
    Transition(STOPPED, "stroke", RELEASED, "a stroke within long_stop_s"),
    *(Transition(s, "disconnect", OFFLINE, "PLC connection lost") for s in ONLINE_STATES),
    Transition(OFFLINE, "reconnect", PREVIOUS,
               "PLC connection back: the state before offline"),
)

TRIGGERS: tuple[str, ...] = tuple(dict.fromkeys(t.trigger for t in TRANSITIONS))

SETUP_REASONS = (
    "job_start", "job_change", "die_change", "material_change", "repair", "maintenance",
    "long_stop",
)

# the kinds the workflow emits: their bodies and schemas are in the registry
EVENT_KINDS = event_kinds.kinds("workflow")

# setup reason -> annotation type (job_start has none: nothing ran before)
ANNOTATIONS = {"job_change": "job_change", "die_change": "die_change",
               "material_change": "material_lot_change", "repair": "die_repair",
               "maintenance": "press_maintenance", "long_stop": "long_stop"}
ANNOTATION_TYPES = (*ANNOTATIONS.values(), "plan_change")

UNASSIGNED_REASONS = (
    *(f"state:{s}" for s in (OFFLINE, SETUP, AWAITING_CONFIRMATION)),
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
    if previous is None or previous not in ONLINE_STATES:
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
                targets = ONLINE_STATES if t.target == PREVIOUS else (t.target,)
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
            elif set(sources) == set(ONLINE_STATES):
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



@dataclass(slots=True)
class Machine(Record):
    """Where the press is: its state, the state before ``offline``, the PLC connection
    flag as last reported, and whether the first poll set the baseline yet."""

    state: str = OFFLINE
    previous: str | None = None  # the state before offline (target of 'reconnect')
    online: bool | None = None
    baselined: bool = False

    def move(self, trigger: str) -> tuple[str, str]:
        """Follow the table: (source, target); ``KeyError`` for a pair it does not allow.
        A self-loop changes nothing."""
        source = self.state
        target = next_state(source, trigger, self.previous)
        if target != source:
            if target == OFFLINE:
                self.previous = source
            elif source == OFFLINE:
                self.previous = None
            self.state = target
        return source, target

    @property
    def effective(self) -> str:
        """The state that counts for the workflow: the one before offline while offline."""
        return self.previous if self.state == OFFLINE and self.previous else self.state

    def validate(self) -> None:
        """A state the table can have: offline after the first poll remembers where it
        was, no state but offline before it, the state before offline is online."""
        want(self.state in STATES, "state")
        want(self.previous is None or self.previous in ONLINE_STATES, "previous")
        if self.state == OFFLINE and self.baselined:
            want(self.previous is not None, "previous")
        want(self.state == OFFLINE or self.previous is None, "previous")
        want(self.baselined or self.state == OFFLINE, "baselined")
