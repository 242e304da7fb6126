"""Operator commands: one handler per command, in a table beside the command spec.

``collector.quality.COMMANDS`` says what a command must carry (class for the
allow-list, required and optional fields); ``HANDLERS`` here says what it does and in
which state it is allowed, one function per command. ``run`` validates (spec, then the
handler's state checks), applies, and returns the ``CommandResult``: a refused command
changes nothing and emits nothing; an accepted one is a ``command`` event (audit: who,
when, what, effect) followed by what it caused. ``OperatorLog`` is what commands act on
beyond the other components: the operator of the last accepted command (in every
event's context) and the last measurement, which ``repeat_measurement`` voids.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from collector import quality
from collector.domain import Event, Plan
from collector.quality import COMMANDS, CommandError
from collector.workflow import patrol, setup
from collector.workflow.codec import Record
from collector.workflow.kernel import (
    AWAITING_CONFIRMATION,
    FIRST_ARTICLE,
    HOLD,
    OFFLINE,
    RELEASED,
    STOPPED,
)
from collector.workflow.sign_off import Confirmation

if TYPE_CHECKING:
    from collector.workflow.core import PressWorkflow


@dataclass(slots=True)
class CommandResult:
    """The reply to a command: ok, or an error code and message; and the events."""

    ok: bool
    code: str | None
    message: str
    events: list[Event]
    effect: dict[str, Any] | None = None  # an accepted command's effect (as in its event)


@dataclass(slots=True)
class LastMeasurement:
    """The last value taken, for ``repeat_measurement`` (``key``: its first-article
    result key; ``inspection_100``: it counted as a piece under 100 % inspection)."""

    kind: str  # 'first_article' | 'patrol' | 'last_piece'
    characteristic: str
    reading_id: str | None
    value: str | None
    key: str | None = None
    inspection_100: bool = False


@dataclass(slots=True)
class OperatorLog(Record):
    operator: str | None = None
    last: LastMeasurement | None = None

    def measured(self, kind: str, char_id: str, result: Mapping[str, Any],
                 key: str | None = None, inspection_100: bool = False) -> None:
        self.last = LastMeasurement(kind, char_id, result["reading_id"], result["value"],
                                    key, inspection_100)


@dataclass(slots=True)
class Applied:
    """What a handler did: its effect (in the audit event and the reply), the records
    it caused (after the audit event) and the state changes (last)."""

    effect: dict[str, Any]
    after: list[Event] = field(default_factory=list)
    changes: list[Event] = field(default_factory=list)


# (workflow, ts, fields, state before, plan, role of the command's topic)
Handler = Callable[["PressWorkflow", float, dict[str, str], str, "Plan | None", str], Applied]


def run(wf: PressWorkflow, ts: float, name: str, payload: Any,
        role: str | None = None) -> CommandResult:
    """Validate and apply a command. Refused: an error code, and nothing changed.
    ``role``: the role of its topic (None: the command's own class)."""
    try:
        fields, role = quality.validate_command(name, payload, wf.settings.authorized, role)
        state = wf.state
        if state == OFFLINE:
            raise refuse(wf, name, "the press is offline")
        pre = wf.sync_plan(ts)
        done = HANDLERS[name](wf, ts, fields, state, wf.plan(), role)
    except CommandError as exc:
        return CommandResult(False, exc.code, exc.message, [])
    audit = wf.event("command", ts, {
        "request_id": fields["request_id"], "command": name, "operator": fields["operator"],
        "class": role, "fields": {k: v for k, v in fields.items()
                                                if k not in quality.COMMON_FIELDS},
        "state_before": state, "effect": done.effect})
    return CommandResult(True, None, "ok", [*pre, audit, *done.after, *done.changes],
                         done.effect)


def refuse(wf: PressWorkflow, name: str, why: str) -> CommandError:
    return CommandError("not_allowed", f"{name} is not allowed in state {wf.state}: {why}")


# ---- the handlers -------------------------------------------------------------------------

_MATERIAL = (("lot", "material_lot"), ("heat", "heat_number"))


def _set_material(wf: PressWorkflow, ts: float, f: dict[str, str], state: str,
                  plan: Plan | None, role: str) -> Applied:
    if "lot" not in f and "heat" not in f:
        raise CommandError("missing_field", "set_material needs lot and/or heat")
    for key, role in _MATERIAL:
        if key in f and role in wf.setup.plc_ids:
            raise refuse(wf, "set_material", f"the PLC reports {role} on this press")
    ids = wf.setup.ids
    old = dict(ids)
    changed = False
    for key, role in _MATERIAL:
        if key in f:
            changed |= old[role] is not None and old[role] != f[key]
            ids[role] = f[key]
    wf.log.operator = f["operator"]
    effect = {"material_lot": ids["material_lot"], "heat_number": ids["heat_number"],
              "material_change": changed}
    after = setup.start(wf, ts, ["material_change"], old, wf.setup.setup_mode, 0, None,
                        command=f["request_id"]) if changed else []
    return Applied(effect, after)


def _start_setup(wf: PressWorkflow, ts: float, f: dict[str, str], state: str,
                 plan: Plan | None, role: str) -> Applied:
    reason = f["reason"]
    if reason not in quality.SETUP_COMMAND_REASONS:
        raise CommandError("invalid_field", f"reason {reason!r} is not allowed "
                           f"(allowed: {', '.join(quality.SETUP_COMMAND_REASONS)})")
    wf.log.operator = f["operator"]
    after = setup.start(wf, ts, [reason], dict(wf.setup.ids), wf.setup.setup_mode, 0, None,
                        command=f["request_id"])
    return Applied({"reason": reason}, after)


def _release(wf: PressWorkflow, ts: float, f: dict[str, str], state: str,
             plan: Plan | None, role: str) -> Applied:
    """The quality release: of the press from hold, of the 100 % inspection mode, and of
    an open containment (the suspect parts, with their disposition)."""
    open_containment = wf.containment.open is not None
    if state != HOLD and not wf.inspection.on and not open_containment:
        raise refuse(wf, "release", "nothing to release (not on hold, no 100 % "
                                    "inspection, no open containment)")
    fa = wf.first_article
    if state == HOLD and (fa.unreleased > 0 and fa.attempt == 0):
        raise refuse(wf, "release", "no first article yet since the setup")
    if state == HOLD and plan is not None and plan.first_article_confirm_roles \
            and not wf.sign_off.verified:
        raise refuse(wf, "release", "the setup is not verified: plan "
                     f"{plan.part_number} rev {plan.revision} asks "
                     f"{' and '.join(plan.first_article_confirm_roles)} to confirm a "
                     "passing first article (measure one, then confirm_first_article)")
    disposition = _disposition(wf, f)
    effect: dict[str, Any] = {
        "from_state": state, "ended_inspection_100": wf.inspection.on,
        "inspection_100": wf.inspection.totals(
            wf.plan(), wf.settings.inspection_100_max_unmeasured)}
    wf.log.operator = f["operator"]
    wf.inspection.end()
    closed = wf.containment.close(wf, ts)
    if closed is not None:
        closed["disposition"] = disposition
    effect["containment"] = closed
    effect["disposition"] = disposition
    changes: list[Event] = []
    if state == HOLD:
        wf.append(changes, wf.go(ts, "quality_release"))
        wf.production_released(ts)
    return Applied(effect, changes=changes)


def _count(f: dict[str, str], key: str) -> int:
    text = f[key]
    if not text.isascii() or not text.isdigit() or int(text) > quality.DISPOSITION_MAX:
        raise CommandError("invalid_field", f"{key} must be a whole number of parts "
                           f"0..{quality.DISPOSITION_MAX} (got {text!r})")
    return int(text)


def _disposition(wf: PressWorkflow, f: dict[str, str]) -> dict[str, Any] | None:
    """The disposition of the suspect parts: required when a containment is open, all
    three counts together, and accounting for every suspect part unless ``note`` says
    why not. ``CommandError`` names what is missing and the range."""
    given = [k for k in quality.DISPOSITION_FIELDS if k in f]
    view = wf.containment.view(wf)
    if view is None and not given:
        return None
    missing = [k for k in quality.DISPOSITION_FIELDS if k not in f]
    if missing:
        if view is not None:
            where = (f"strokes {view['first_stroke']}..{view['last_stroke']}, "
                     f"{view['parts']} parts" if view["parts"] is not None
                     else "no stroke counter: count the parts held since the last "
                          "passing check")
            why = (f"release after containment {view['id']} ({where}; "
                   f"{', '.join(view['characteristics'])}) needs the disposition")
        else:
            why = "a disposition needs all three counts"
        raise CommandError("missing_field", f"{why}: {', '.join(missing)} missing "
                           f"(fields {', '.join(quality.DISPOSITION_FIELDS)}: parts sorted "
                           "good, reworked, scrapped; note when they do not add up to "
                           "the suspect parts)")
    counts = {k: _count(f, k) for k in quality.DISPOSITION_FIELDS}
    accounted = sum(counts.values())
    parts = view["parts"] if view is not None else None
    if view is not None and parts is not None and accounted != parts and "note" not in f:
        raise CommandError("invalid_field", f"the disposition accounts for {accounted} of "
                           f"the {parts} suspect parts (strokes {view['first_stroke']}.."
                           f"{view['last_stroke']}): correct the counts or say in note "
                           "where the difference is")
    return {**counts, "accounted": accounted, "suspect_parts": parts,
            "note": f.get("note")}


def _confirm_first_article(wf: PressWorkflow, ts: float, f: dict[str, str], state: str,
                           plan: Plan | None, role: str) -> Applied:
    """One role's confirmation of a passing first article (joint setup verification,
    ``collector.workflow.sign_off``); the last one releases the press."""
    name = "confirm_first_article"
    r = wf.sign_off.open
    if state != AWAITING_CONFIRMATION or r is None:
        raise refuse(wf, name, "no first article waits for confirmation")
    if "attempt" in f and f["attempt"] != str(r.attempt):
        raise CommandError("invalid_field", f"attempt {f['attempt']!r} is not the first "
                           f"article waiting for confirmation (attempt {r.attempt})")
    if role not in r.roles:
        raise refuse(wf, name, f"the plan asks {' and '.join(r.roles)} to confirm, "
                               f"not {role}")
    for c in r.received:
        if c.role == role:
            raise refuse(wf, name, f"{role} confirmed already ({c.operator})")
        if c.operator == f["operator"]:
            raise refuse(wf, name, f"{c.operator} confirmed for {c.role} already: the "
                                   f"joint verification needs another person for {role}")
    wf.log.operator = f["operator"]
    r.received.append(Confirmation(role, f["operator"], ts, f["request_id"], f.get("note")))
    pending = r.pending()
    effect = {"attempt": r.attempt, "role": role,
              "confirmed": [c.role for c in r.received], "pending": pending}
    if pending:
        return Applied(effect)
    body = {"attempt": r.attempt, "part_number": r.part_number,
            "plan_revision": r.plan_revision, "judged_ts": r.judged_ts,
            "required": list(r.roles), "confirmations": [c.body() for c in r.received]}
    after = [wf.event("sign_off", ts, body)]  # its context still shows the round
    wf.production_released(ts)  # the round is done: the state_change no longer shows it
    changes: list[Event] = []
    wf.append(changes, wf.go(ts, "confirmed"))
    return Applied(effect, after, changes)


def _hold(wf: PressWorkflow, ts: float, f: dict[str, str], state: str,
          plan: Plan | None, role: str) -> Applied:
    if state not in (RELEASED, STOPPED, AWAITING_CONFIRMATION):
        raise refuse(wf, "hold", "only released production (or a first article waiting "
                                 "for confirmation) can be put on hold")
    wf.log.operator = f["operator"]
    wf.sign_off.open = None  # quality refused to confirm: measure again
    changes: list[Event] = []
    wf.append(changes, wf.go(ts, "hold_command"))
    return Applied({"from_state": state}, changes=changes)


def _repeat_measurement(wf: PressWorkflow, ts: float, f: dict[str, str], state: str,
                        plan: Plan | None, role: str) -> Applied:
    """Void the last value: out of every statistic (the event log keeps it)."""
    name = "repeat_measurement"
    last = wf.log.last
    if last is None:
        raise refuse(wf, name, "no measurement to repeat")
    if last.kind == "patrol":
        if wf.state not in (RELEASED, STOPPED, HOLD):
            raise refuse(wf, name, "the measurement belongs to an earlier run")
        st = wf.spc.chars.get(last.characteristic)
        if st is not None:
            sid = next((sid for sid, g in st.groups[-1:]
                        if any(rid == last.reading_id for rid, _ in g)), None)
            wf.containment.void(last.characteristic, last.reading_id, sid)
            st.void(last.reading_id)
        if last.inspection_100:
            wf.inspection.void(last.characteristic)
        if plan is not None:
            ids = [c.id for c in plan.characteristics]
            if last.characteristic in ids:
                wf.patrol.position = ids.index(last.characteristic) - 1
    elif last.kind == "first_article":
        if wf.state != FIRST_ARTICLE or wf.first_article.open is None:
            raise refuse(wf, name, "the first article is already judged")
        if last.key is not None:
            wf.first_article.void(last.key)
    elif last.kind == "last_piece":
        wf.last_piece.void(last.characteristic)
    wf.log.last = None
    wf.log.operator = f["operator"]
    effect = {"voided": {"kind": last.kind, "characteristic": last.characteristic,
                         "reading_id": last.reading_id, "value": last.value}}
    return Applied(effect, wf.inspection.check(wf, ts))


def _missed_check_reason(wf: PressWorkflow, ts: float, f: dict[str, str], state: str,
                         plan: Plan | None, role: str) -> Applied:
    """Attach the operator's reason to a missed check (``due_id``, default the last)."""
    name = "missed_check_reason"
    missed = wf.patrol.missed
    if not missed:
        raise refuse(wf, name, "no missed patrol check on record")
    wanted = f.get("due_id")
    found = [r for r in missed if wanted in (None, r.due_id)]
    if not found:
        known = ", ".join(r.due_id for r in missed)
        raise CommandError("invalid_field", f"due_id {wanted!r} is not a missed check "
                           f"on record (known: {known})")
    record = found[-1]
    previous = record.operator_reason
    record.operator_reason, record.operator = f["reason"], f["operator"]
    wf.log.operator = f["operator"]
    return Applied({"due_id": record.due_id, "due_ts": record.due_ts,
                    "overdue_ts": record.overdue_ts, "due_reason": record.due_reason,
                    "missing": list(record.missing), "reason": f["reason"],
                    "previous_reason": previous})


def _start_first_article(wf: PressWorkflow, ts: float, f: dict[str, str], state: str,
                         plan: Plan | None, role: str) -> Applied:
    if state not in (RELEASED, STOPPED, HOLD, AWAITING_CONFIRMATION) or plan is None:
        raise refuse(wf, "start_first_article", "a first article is already pending or "
                                                "there is no plan")
    wf.log.operator = f["operator"]
    wf.sign_off.open = None  # measured again: the waiting one is not confirmed
    wf.last_piece.open = None
    wf.patrol.due = None
    changes: list[Event] = []
    wf.append(changes, wf.go(ts, "first_article_command"))
    return Applied({"from_state": state}, changes=changes)


def _start_last_piece(wf: PressWorkflow, ts: float, f: dict[str, str], state: str,
                      plan: Plan | None, role: str) -> Applied:
    if state not in (RELEASED, STOPPED, HOLD) or plan is None:
        raise refuse(wf, "start_last_piece", "the last piece is measured at the end of a "
                                             "released run")
    from collector.workflow.last_piece import OpenLastPiece

    wf.log.operator = f["operator"]
    wf.last_piece.open = OpenLastPiece(ts)
    return Applied({"die_id": wf.setup.ids["die_id"],
                    "characteristics": [c.id for c in plan.characteristics]})


def _request_capability(wf: PressWorkflow, ts: float, f: dict[str, str], state: str,
                        plan: Plan | None, role: str) -> Applied:
    if plan is None:
        raise refuse(wf, "request_capability", "no plan for the current part")
    wanted = f.get("characteristic")
    chars = [c for c in plan.characteristics if wanted in (None, c.id)]
    if not chars:
        raise CommandError("invalid_field", f"characteristic {wanted!r} is not in "
                           f"plan {plan.part_number} rev {plan.revision}")
    wf.log.operator = f["operator"]
    alarms: list[dict[str, Any]] = []
    records: list[tuple[str, dict[str, Any]]] = []
    changes: list[Event] = []
    for c in chars:
        st = wf.spc.chars.get(c.id)
        if st is not None:
            records += patrol.capability(wf, ts, plan, c, st, "request", changes, alarms)
    after = [wf.event("alarm", ts, a) for a in alarms]
    after += [wf.event(k, ts, b) for k, b in records]
    return Applied({"characteristics": [c.id for c in chars]}, after, changes)


def _acknowledge_alarm(wf: PressWorkflow, ts: float, f: dict[str, str], state: str,
                       plan: Plan | None, role: str) -> Applied:
    """Somebody at the press has seen an alarm (the line-side screen, or any terminal):
    recorded, nothing else changes. ``alarm`` is the alarm event's reference
    ``{press}/events/{seq}`` (its envelope's press, stream and seq); the workflow does
    not keep alarms, so it checks the form, and the screen checks that it knows it."""
    ref = f["alarm"]
    prefix = f"{wf.press_id}/events/"
    seq = ref[len(prefix):]
    if not ref.startswith(prefix) or not (seq.isascii() and seq.isdigit()) or len(seq) > 19:
        raise CommandError("invalid_field", f"alarm {ref!r} is not an alarm reference of "
                           f"this press ({prefix}<seq>)")
    wf.log.operator = f["operator"]
    return Applied({"alarm": ref, "note": f.get("note")})


HANDLERS: dict[str, Handler] = {
    "set_material": _set_material,
    "start_setup": _start_setup,
    "release": _release,
    "hold": _hold,
    "repeat_measurement": _repeat_measurement,
    "start_first_article": _start_first_article,
    "start_last_piece": _start_last_piece,
    "request_capability": _request_capability,
    "missed_check_reason": _missed_check_reason,
    "acknowledge_alarm": _acknowledge_alarm,
    "confirm_first_article": _confirm_first_article,
}
assert set(HANDLERS) == set(COMMANDS), "every command in the spec has its handler"
