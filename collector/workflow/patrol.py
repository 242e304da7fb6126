"""Patrol: checks due and overdue, subgroups, SPC and the reaction plan.

``SpcPhase`` is the SPC phase (a setup or a plan revision starts the next one) with one
``collector.quality.CharSpc`` per characteristic. ``Patrol`` is the production side:
which characteristic the next reading goes to, the base the next check counts from,
the open due check and the missed checks kept for ``missed_check_reason``.
``measurement`` judges one patrol value: subgroup, SPC, reactions (records first,
transitions last, as everywhere in the workflow).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from collector import quality
from collector.domain import Characteristic, Event, Plan
from collector.quality import CharSpc
from collector.workflow import codec
from collector.workflow.codec import Record, want
from collector.workflow.containment import EVERYTHING, subgroup_order
from collector.workflow.kernel import HOLD, RELEASED, STOPPED

if TYPE_CHECKING:
    from collector.workflow.core import PressWorkflow

MISSED_KEPT = 20  # missed checks kept for missed_check_reason (snapshot)


def plan_key(plan: Plan | None) -> tuple[str, str] | None:
    return None if plan is None else (plan.part_number, plan.revision)


@dataclass(slots=True)
class SpcPhase(Record):
    phase: int = 1
    key: tuple[str, str] | None = None  # (part, revision) the statistics belong to
    chars: dict[str, CharSpc] = field(default_factory=dict)

    @classmethod
    def fresh(cls, plan: Plan | None) -> SpcPhase:
        """Phase 1 for the plan (a snapshot without usable quality state)."""
        return cls(1, plan_key(plan), quality.fresh_spc(plan, 1))

    def new_phase(self, plan: Plan | None) -> None:
        if self.key is not None:
            self.phase += 1
        self.chars = quality.fresh_spc(plan, self.phase)
        self.key = plan_key(plan)

    def follow(self, plan: Plan | None) -> None:
        """The job changed within an open setup: fresh statistics, same phase."""
        key = plan_key(plan)
        if key != self.key:
            self.chars = quality.fresh_spc(plan, self.phase)
            self.key = key

    @classmethod
    def load(cls, raw: Any, plan: Plan | None = None) -> SpcPhase:
        """``BadSnapshot`` when the statistics of the current plan do not match it."""
        self: SpcPhase = codec.load(cls, raw, "spc")
        want(self.phase >= 1, "phase")
        if plan is not None and self.key == plan_key(plan) and set(self.chars) != {
                c.id for c in plan.characteristics}:
            raise codec.BadSnapshot("spc state does not match the plan")
        return self


@dataclass(slots=True)
class Due:
    id: str
    ts: float
    reason: str  # 'strokes' | 'time'
    overdue: bool
    pending: list[str]  # characteristics without a completed subgroup yet


@dataclass(slots=True)
class MissedCheck:
    due_id: str
    due_ts: float
    overdue_ts: float
    due_reason: str
    missing: list[str]
    operator_reason: str | None = None
    operator: str | None = None


@dataclass(slots=True)
class Patrol(Record):
    position: int = -1  # index of the last measured characteristic (routing resumes after)
    base: tuple[int | None, float] | None = None  # (strokes, ts) the next check counts from
    due: Due | None = None
    due_seq: int = 0
    missed: list[MissedCheck] = field(default_factory=list)  # the last MISSED_KEPT

    def order(self, n: int) -> list[int]:
        """Characteristic indices from the one after the last measured, wrapping."""
        return [(self.position + 1 + k) % n for k in range(n)]

    def restart_clock(self, strokes: int | None, ts: float) -> None:
        """Released (again): the next check counts from here; no check is open."""
        self.base = (strokes, ts)
        self.due = None

    def clock(self, wf: PressWorkflow, ts: float) -> list[Event]:
        """Due by strokes or time; overdue after the grace time (once per check)."""
        plan = wf.plan()
        if plan is None or wf.state not in (RELEASED, STOPPED):
            return []
        count = wf.counter.count
        if self.base is None:
            self.base = (count, ts)
        due = self.due
        if due is None:
            base_strokes, base_ts = self.base
            reason = None
            strokes = (count - base_strokes
                       if count is not None and base_strokes is not None else None)
            minutes = (ts - base_ts) / 60.0
            if plan.patrol_every_strokes and strokes is not None \
                    and strokes >= plan.patrol_every_strokes:
                reason = "strokes"
            elif plan.patrol_every_min and minutes >= plan.patrol_every_min:
                reason = "time"
            if reason is None:
                return []
            self.due_seq += 1
            self.due = Due(f"{wf.press_id}/due/{self.due_seq}", ts, reason, False,
                           [c.id for c in plan.characteristics])
            return [wf.event("measurement_due", ts, {
                "due_id": self.due.id, "reason": reason,
                "strokes_since": strokes, "minutes_since": round(minutes, 3),
                "every_strokes": plan.patrol_every_strokes,
                "every_min": plan.patrol_every_min, "grace_min": plan.overdue_grace_min,
                "subgroup_size": plan.subgroup_size,
                "characteristics": list(self.due.pending),
                "inspection_100": wf.inspection.on})]
        if not due.overdue and ts - due.ts > plan.overdue_grace_min * 60.0:
            due.overdue = True
            self.missed = [*self.missed, MissedCheck(
                due.id, due.ts, ts, due.reason, list(due.pending))][-MISSED_KEPT:]
            return [wf.event("overdue", ts, {
                "due_id": due.id, "due_ts": due.ts, "grace_min": plan.overdue_grace_min,
                "missing": list(due.pending),
                "reason": f"patrol check not completed within {plan.overdue_grace_min:g} min "
                          f"of falling due ({due.reason})"})]
        return []

    def subgroup_done(self, char_id: str, strokes: int | None, ts: float) -> None:
        """A characteristic completed its subgroup: the open check needs it no more."""
        if self.due is None:
            return
        self.due.pending = [c for c in self.due.pending if c != char_id]
        if not self.due.pending:
            self.restart_clock(strokes, ts)

    @classmethod
    def load(cls, raw: Any, plan: Plan | None = None) -> Patrol:
        self: Patrol = codec.load(cls, raw, "patrol")
        want(self.position >= -1 and self.due_seq >= 0, "patrol counts")
        n = len(plan.characteristics) if plan is not None else 0
        if self.position >= n:
            self.position = -1  # the plan has fewer characteristics now
        self.missed = self.missed[-MISSED_KEPT:]
        return self


# ---- one patrol value -------------------------------------------------------------------


def measurement(wf: PressWorkflow, ts: float, plan: Plan, index: int,
                result: dict[str, Any]) -> list[Event]:
    """A patrol value: subgroup, SPC, reactions. Records first, transitions last."""
    wf.patrol.position = index
    char = plan.characteristics[index]
    changes: list[Event] = []
    actions: list[str] = []
    counted = wf.inspection.measured(wf, ts, char.id)  # a piece under 100 % inspection
    failed = result["verdict"] == "fail"
    # the suspect range since the last passing check, taken before this value counts
    suspect = wf.containment.suspect(wf, ts, char.id, "out_of_tolerance") if failed else None
    wf.containment.value(char.id, result["reading_id"], failed)
    if suspect is not None and wf.settings.hold_on_measurement_fail:
        wf.containment.hold(wf, ts, suspect, [result["reading_id"]])  # before the move:
        wf.append(changes, wf.go(ts, "measurement_fail"))  # its context names the range
        actions.append("hold")
    alarms: list[dict[str, Any]] = []
    if suspect is not None:
        alarms.append(react(wf, ts, plan, char, "out_of_tolerance", {
            "value": result["value"], "nominal": result["nominal"], "lsl": result["lsl"],
            "usl": result["usl"], "unit": result["unit"],
            "deviation": result["deviation"]}, [result["reading_id"]], changes,
            applied=list(actions), suspect=suspect))  # hold_on_measurement_fail's hold
        actions += [a for a in alarms[-1]["actions"] if a not in actions]
    spc_state = wf.spc.chars.get(char.id)
    records: list[tuple[str, dict[str, Any]]] = []
    subgroup = None
    due_id = wf.patrol.due.id if wf.patrol.due is not None else None
    if spc_state is not None:
        sid, position, done = spc_state.add(char, result["reading_id"],
                                            float(Decimal(result["value"])),
                                            wf.settings.spc_history_subgroups)
        subgroup = {"id": sid, "position": position, "size": spc_state.n}
        if done is not None:
            records += _on_subgroup(wf, ts, plan, char, spc_state, done, changes, alarms)
            wf.containment.check_done(char.id, sid, wf.counter.count, ts,
                                      signalled=bool(done.violations))
    wf.log.measured("patrol", char.id, result, inspection_100=counted)
    action = ("hold_and_inspection_100" if {"hold", "inspection_100"} <= set(actions)
              else actions[0] if actions else "none")
    body = {**result, "stroke_count": wf.counter.count, "action": action,
            "subgroup": subgroup, "phase": wf.spc.phase, "due_id": due_id,
            "purpose": "inspection_100" if wf.inspection.on else "patrol"}
    if suspect is not None:
        body["containment"] = suspect
    events = [wf.event("measurement", ts, body)]
    events += [wf.event("alarm", ts, a) for a in alarms]
    events += [wf.event(kind, ts, body) for kind, body in records]
    if subgroup is not None and subgroup["position"] == subgroup["size"]:
        wf.patrol.subgroup_done(char.id, wf.counter.count, ts)
    return events + changes


def _on_subgroup(wf: PressWorkflow, ts: float, plan: Plan, char: Characteristic,
                 state: CharSpc, done: quality.Completed, changes: list[Event],
                 alarms: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    records: list[tuple[str, dict[str, Any]]] = []
    if done.limits_frozen is not None:
        records.append(("control_limits", {
            "characteristic": char.id, "phase": state.phase, "source": "baseline",
            "limits": done.limits_frozen.as_dict(),
            "subgroups": [sid for sid, _ in state.groups]}))
    if done.violations:
        assert done.limits is not None
        alarms.append(react(wf, ts, plan, char, "rule", {
            "rules": done.violations, "limits": done.limits.as_dict(),
            "subgroup": {"id": done.subgroup_id, "values": done.values}},
            done.reading_ids, changes))
    if state.since_capability >= plan.capability_every and \
            state.value_count >= plan.capability_min_values:
        state.since_capability = 0
        records += capability(wf, ts, plan, char, state, "periodic", changes, alarms)
    return records


def capability(wf: PressWorkflow, ts: float, plan: Plan, char: Characteristic,
               state: CharSpc, trigger: str, changes: list[Event],
               alarms: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """The ``capability`` record; an alarm below the minimum, a review suggestion at or
    above the review threshold."""
    body = quality.capability_body(char, state, plan, trigger)
    records: list[tuple[str, dict[str, Any]]] = [("capability", body)]
    if body["verdict"] in ("below_minimum", "out_of_tolerance"):
        alarms.append(react(wf, ts, plan, char, "low_capability", {
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


def react(wf: PressWorkflow, ts: float, plan: Plan, char: Characteristic, cause: str,
          evidence: dict[str, Any], reading_ids: list[str | None], changes: list[Event],
          applied: list[str] | None = None,
          suspect: dict[str, Any] | None = None) -> dict[str, Any]:
    """Apply the class's reaction plan for ``cause``; the alarm body. ``applied``:
    actions the same input already took for this cause (the press option
    ``hold_on_measurement_fail``): the alarm lists every action it caused.
    ``suspect``: the failing value's range (out of tolerance); an alarm that holds the
    press names its range (``collector.workflow.containment``) and opens or widens the
    containment before the move, so the ``state_change`` carries it too."""
    wanted = getattr(plan.reaction(char.char_class), cause)
    applied = list(applied or [])
    holds = "hold" not in applied and "hold" in wanted and wf.state in (
        RELEASED, STOPPED, HOLD)
    if holds or "hold" in applied:
        if suspect is None:
            suspect = wf.containment.suspect(wf, ts, char.id, cause,
                                             _window_start(cause, evidence))
        if holds:
            wf.containment.hold(wf, ts, suspect, list(reading_ids))
    if holds and wf.state in (RELEASED, STOPPED):
        wf.append(changes, wf.go(ts, "reaction_hold"))
        applied.append("hold")
    elif holds:
        applied.append("hold")  # already on hold (an earlier alarm of this input)
    if "inspection_100" in wanted:
        wf.inspection.start(ts)
        applied.append("inspection_100")
    body = {"cause": cause, "characteristic": char.id, "name": char.name,
            "char_class": char.char_class, "actions": applied, "evidence": evidence,
            "reading_ids": list(reading_ids), "phase": wf.spc.phase}
    if suspect is not None:
        body["containment"] = suspect
    return body


def _window_start(cause: str, evidence: dict[str, Any]) -> tuple[int, int]:
    """Where the suspect range of an alarm starts looking back from: a rule signal at the
    first subgroup of its window; low capability (every value of the phase) at the
    release."""
    if cause == "rule":
        sids = [sid for v in evidence.get("rules", ()) for sid in v.get("subgroups", ())]
        if sids:
            return min(subgroup_order(sid) for sid in sids)
    return EVERYTHING
