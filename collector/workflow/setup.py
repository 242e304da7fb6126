"""Setup detection: which setup reasons a poll carries, and the setup it opens or amends.

``SetupDetection`` remembers the ids (die, part, material lot, heat), the setup-mode and
repair flags, which id roles the PLC reports, and the open setup (issue 11: from its
trigger until a first-article attempt starts or the press is released; a trigger
meanwhile amends it). ``start`` / ``amend`` restart (or continue) the verification over
the other components; the rules are in the docstring of ``collector.workflow``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from collector.domain import Event, WorkflowSettings
from collector.workflow.codec import Record, want
from collector.workflow.kernel import ANNOTATIONS, SETUP, SETUP_REASONS
from collector.workflow.values import IDS, to_bool, to_count, to_id

if TYPE_CHECKING:
    from collector.workflow.core import PressWorkflow

_ORDER = {r: i for i, r in enumerate(SETUP_REASONS)}


def ordered(reasons: Iterable[str]) -> list[str]:
    """Setup reasons in their documented order (job first, long stop last)."""
    return sorted(reasons, key=_ORDER.__getitem__)


@dataclass(frozen=True, slots=True)
class Poll:
    """What one poll says, read through the press's role maps."""

    ids: dict[str, str | None]
    setup_mode_in: bool | None  # as the poll reported it (None: not reported)
    repair_in: bool | None
    count: int | None
    setup_mode: bool | None  # the poll's value, else the last known one


@dataclass(slots=True)
class OpenSetup:
    ts: float
    reasons: list[str]
    previous: dict[str, str | None]


@dataclass(slots=True)
class SetupDetection(Record):
    ids: dict[str, str | None] = field(default_factory=lambda: dict.fromkeys(IDS))
    setup_mode: bool | None = None
    repair: bool | None = None
    plc_ids: set[str] = field(default_factory=set)  # id roles the PLC has reported
    open: OpenSetup | None = None

    def read(self, roles: Mapping[str, Any], settings: WorkflowSettings) -> Poll:
        ids = {k: to_id(roles.get(k)) for k in IDS}
        self.plc_ids.update(k for k in IDS if ids[k] is not None)
        setup_mode_in = _role_bool(settings, "setup_mode", roles.get("setup_mode"))
        repair_in = _role_bool(settings, "repair", roles.get("repair"))
        return Poll(ids, setup_mode_in, repair_in, to_count(roles.get("stroke_count")),
                    setup_mode_in if setup_mode_in is not None else self.setup_mode)

    def baseline(self, poll: Poll) -> None:
        """The first poll sets the baseline: no edges, no changes."""
        for key in IDS:
            if poll.ids[key] is not None:
                self.ids[key] = poll.ids[key]
        self.setup_mode = poll.setup_mode
        self.repair = poll.repair_in

    def reasons(self, poll: Poll, state: str) -> list[str]:
        """The setup reasons of this poll against the remembered values (in the order
        found; ``long_stop`` is the coordinator's, it needs the stroke counter)."""
        old, ids = self.ids, poll.ids
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
        if poll.setup_mode is True and state != SETUP:
            add("die_change")
        for key in ("material_lot", "heat_number"):
            if ids[key] is not None and old[key] is not None and ids[key] != old[key]:
                add("material_change")
        if poll.repair_in is True and self.repair is not True:
            add("repair")
        return reasons

    def learn(self, poll: Poll) -> None:
        """Remember the poll's known values (unknown never erases)."""
        for key in IDS:
            if poll.ids[key] is not None:
                self.ids[key] = poll.ids[key]
        if poll.setup_mode_in is not None:
            self.setup_mode = poll.setup_mode_in
        if poll.repair_in is not None:
            self.repair = poll.repair_in

    def validate(self) -> None:
        self.ids = {k: self.ids.get(k) for k in IDS}
        self.plc_ids &= set(IDS)
        if self.open is not None:
            want(bool(self.open.reasons) and all(r in SETUP_REASONS for r in self.open.reasons),
                 "open.reasons")
            self.open.previous = {k: self.open.previous.get(k) for k in IDS}


def _role_bool(settings: WorkflowSettings, role: str, value: Any) -> bool | None:
    """A true/false role: through the press's map for it (docs/roles.md), else
    non-zero / 1 / true / on / yes."""
    mapping = settings.role_maps.get(role)
    return to_bool(value) if mapping is None else mapping.read(value)


# ---- a setup over the whole workflow ---------------------------------------------------


def start(wf: PressWorkflow, ts: float, reasons: list[str], old: dict[str, str | None],
          setup_mode: bool | None, strokes: int, idle: float | None,
          command: str | None = None) -> list[Event]:
    """A setup trigger: a new setup (verification restarted, new SPC phase), or the
    open setup amended."""
    if wf.setup.open is not None:
        return amend(wf, ts, reasons, setup_mode, strokes, idle, command)
    before = wf.state
    fa = wf.first_article
    discarded = fa.open
    previous_unreleased, previous_attempt = fa.unreleased, fa.attempt
    fa.restart()
    wf.sign_off.restart()  # a new setup is verified (and confirmed) afresh
    wf.patrol.position = -1
    wf.new_phase()
    wf.patrol.due = None
    wf.last_piece.open = None
    wf.log.last = None
    wf.last_piece.compare_die = wf.setup.ids["die_id"]
    change = wf.go(ts, "setup_trigger_setup_mode" if setup_mode is True else "setup_trigger")
    fa.unreleased += strokes  # the targets (setup / awaiting) are not released
    body: dict[str, Any] = {
        "reasons": ordered(reasons),
        "previous": {k: old[k] for k in IDS},
        "new": {k: wf.setup.ids[k] for k in IDS},
        "previous_state": before,
        "state": wf.state,
        "setup_mode": setup_mode,
        "discarded_first_article": discarded is not None,
        "discarded_attempt": discarded.attempt if discarded is not None else None,
        "previous_attempt": previous_attempt,
        "previous_unreleased_strokes": previous_unreleased,
        "unreleased_strokes": fa.unreleased,
        "idle_s": idle,
        "amended": False,
        "added_reasons": [],
    }
    if command is not None:
        body["command"] = command
    wf.setup.open = OpenSetup(ts, list(body["reasons"]), dict(body["previous"]))
    events = [wf.event("setup", ts, body)]
    events += annotations(wf, ts, body["reasons"], body, command, amended=False)
    if change is not None:
        events.append(change)
    return events


def amend(wf: PressWorkflow, ts: float, reasons: list[str], setup_mode: bool | None,
          strokes: int, idle: float | None, command: str | None) -> list[Event]:
    """A trigger while a setup is open (e.g. the die id changes while setup mode is on):
    the open setup is amended, not restarted. Same phase, attempt and strokes count on;
    the ``setup`` event says ``amended: true`` with every reason of the setup, the ones
    this change added, the ids before the setup and now; each reason the change carried
    is annotated again (``amended: true``, same phase) so a chart names the die actually
    mounted."""
    opened = wf.setup.open
    assert opened is not None
    before = wf.state
    added = [r for r in reasons if r not in opened.reasons]
    opened.reasons = ordered({*opened.reasons, *reasons})
    wf.spc.follow(wf.plan())  # the job changed too: fresh statistics, same phase
    wf.last_piece.compare_die = wf.setup.ids["die_id"]  # the die mounted now
    fa = wf.first_article
    previous_unreleased = fa.unreleased
    change = wf.go(ts, "setup_trigger_setup_mode" if setup_mode is True else "setup_trigger")
    wf.setup.open = opened  # go keeps it (setup/awaiting), stated for the reader
    fa.unreleased += strokes
    body: dict[str, Any] = {
        "reasons": list(opened.reasons),
        "previous": dict(opened.previous),
        "new": {k: wf.setup.ids[k] for k in IDS},
        "previous_state": before,
        "state": wf.state,
        "setup_mode": setup_mode,
        "discarded_first_article": False,
        "discarded_attempt": None,
        "previous_attempt": fa.attempt,
        "previous_unreleased_strokes": previous_unreleased,
        "unreleased_strokes": fa.unreleased,
        "idle_s": idle,
        "amended": True,
        "added_reasons": ordered(added),
    }
    if command is not None:
        body["command"] = command
    events = [wf.event("setup", ts, body)]
    events += annotations(wf, ts, ordered(set(reasons)), body, command, amended=True)
    if change is not None:
        events.append(change)
    return events


def annotations(wf: PressWorkflow, ts: float, reasons: Iterable[str], body: Mapping[str, Any],
                command: str | None, amended: bool) -> list[Event]:
    """One ``annotation`` per annotated setup reason (job_start has none)."""
    events = []
    for reason in reasons:
        if reason in ANNOTATIONS:
            note = {"type": ANNOTATIONS[reason], "reason": reason, "phase": wf.spc.phase,
                    "source": "command" if command is not None else "plc",
                    "previous": body["previous"], "new": body["new"]}
            if amended:
                note["amended"] = True
            events.append(wf.event("annotation", ts, note))
    return events


__all__ = ["OpenSetup", "Poll", "SetupDetection", "amend", "annotations", "ordered", "start"]
