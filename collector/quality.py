"""Per-characteristic SPC bookkeeping and the operator command table. Pure.

``PressWorkflow`` owns one ``CharSpc`` per characteristic of the current plan and phase.
A ``CharSpc`` collects patrol values into subgroups, freezes control limits (from the
plan, or from the first K subgroups of the phase), evaluates the run rules on each
completed subgroup and keeps what capability needs. Voided values leave every statistic
(the event log keeps them). Everything serialises to JSON for the workflow snapshot.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from collector import spc, text_safety
from collector.domain import Characteristic, Plan, SpcOptions

# --------------------------------------------------------------------------------------
# Commands: name -> class (for the allow-list), required and optional fields.
# Which state allows which command is decided in PressWorkflow.on_command.
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CommandSpec:
    cls: str  # 'production' | 'quality': the role whose topic and allow-list it takes
    required: tuple[str, ...] = ()
    optional: tuple[str, ...] = ()
    # a command more than one role sends, each on its own role's topic and checked
    # against that role's allow-list (confirm_first_article: production and quality);
    # () = only ``cls``
    other_roles: tuple[str, ...] = ()

    @property
    def roles(self) -> tuple[str, ...]:
        return (self.cls, *self.other_roles)


DISPOSITION_FIELDS = ("sorted_good", "reworked", "scrapped")  # release after a containment
DISPOSITION_MAX = 10_000_000  # parts per containment: beyond is a typing error


COMMON_FIELDS = ("request_id", "operator")
SETUP_COMMAND_REASONS = ("repair", "maintenance", "die_change", "material_change",
                         "job_change")
COMMANDS: dict[str, CommandSpec] = {
    "set_material": CommandSpec("production", (), ("lot", "heat")),
    "start_setup": CommandSpec("production", ("reason",), ("note",)),
    "release": CommandSpec("quality", ("why",), (*DISPOSITION_FIELDS, "note")),
    "hold": CommandSpec("quality", ("why",)),
    "repeat_measurement": CommandSpec("production", ("reason",)),
    "start_first_article": CommandSpec("production", (), ("why",)),
    "start_last_piece": CommandSpec("production", (), ("why",)),
    "request_capability": CommandSpec("production", (), ("characteristic",)),
    "missed_check_reason": CommandSpec("production", ("reason",), ("due_id",)),
    "acknowledge_alarm": CommandSpec("production", ("alarm",), ("note",)),
    "confirm_first_article": CommandSpec("production", (), ("attempt", "note"),
                                         other_roles=("quality",)),
}
ERROR_CODES = ("malformed", "unknown_command", "missing_field", "invalid_field",
               "not_allowed", "unauthorized")


class CommandError(Exception):
    """A refused command: ``code`` is one of ERROR_CODES."""

    def __init__(self, code: str, message: str) -> None:
        assert code in ERROR_CODES
        super().__init__(message)
        self.code = code
        self.message = message


def validate_command(name: str, payload: Any, authorized: Mapping[str, tuple[str, ...]],
                     role: str | None = None) -> tuple[dict[str, str], str]:
    """The command's fields as stripped strings and the role it is sent as, or
    ``CommandError`` (state not checked). ``role``: the role of the topic it came in on
    (None: the command's own class); the operator must be in that role's allow-list."""
    if not isinstance(payload, Mapping):
        raise CommandError("malformed", "the payload must be a JSON object")
    spec = COMMANDS.get(name)
    if spec is None:
        raise CommandError("unknown_command", f"unknown command {name!r} "
                           f"(allowed: {', '.join(COMMANDS)})")
    allowed = (*COMMON_FIELDS, *spec.required, *spec.optional)
    unknown = sorted(set(payload) - set(allowed))
    if unknown:
        raise CommandError("invalid_field", f"unknown field(s) {', '.join(unknown)} "
                           f"(allowed: {', '.join(allowed)})")
    out: dict[str, str] = {}
    for key in allowed:
        value = payload.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise CommandError("invalid_field", f"{key} must be a string")
        text = str(value).strip()
        if len(text) > 200:
            raise CommandError("invalid_field", f"{key} is longer than 200 characters")
        bad = text_safety.problem(text)
        if bad is not None:  # it would land in every event's context (docs/security.md)
            raise CommandError("invalid_field", f"{key} {bad}")
        if text:
            out[key] = text
    for key in (*COMMON_FIELDS, *spec.required):
        if key not in out:
            raise CommandError("missing_field", f"{key} is required for {name}")
    cls = spec.cls if role is None else role
    if cls not in spec.roles:  # the gate refuses it first (wrong_topic); said again here
        raise CommandError("unauthorized", f"{name} is not a {cls} command (roles: "
                           f"{', '.join(spec.roles)})")
    ids = authorized.get(cls, ())  # fail closed: no list, nobody (docs/security.md)
    if not ids:
        raise CommandError("unauthorized", f"nobody may send {cls} commands ({name}) "
                           f"to this press: its [workflow.commands] {cls} list is empty")
    if "*" not in ids and out["operator"] not in ids:
        raise CommandError("unauthorized", f"operator {out['operator']!r} may not send "
                           f"{cls} commands ({name})")
    return out, cls


# --------------------------------------------------------------------------------------
# SPC per characteristic.
# --------------------------------------------------------------------------------------


def chart_of(char: Characteristic, n: int) -> str:
    return char.spc.chart or spc.chart_for(n)


def ruleset(opts: SpcOptions) -> spc.RuleSet:
    return spc.RuleSet(enabled=frozenset(opts.rules), same_side=opts.same_side,
                       trend=opts.trend, alternating=opts.alternating, zone_a=opts.zone_a,
                       zone_b=opts.zone_b, stratification=opts.stratification,
                       mixture=opts.mixture, mixture_sides=opts.mixture_sides)


@dataclass
class Completed:
    """What completing a subgroup produced."""

    subgroup_id: str
    values: list[float]
    reading_ids: list[str | None]
    limits_frozen: spc.Limits | None = None
    violations: list[dict[str, Any]] = field(default_factory=list)
    limits: spc.Limits | None = None


@dataclass
class CharSpc:
    char_id: str
    phase: int
    n: int
    chart: str
    open: list[tuple[str | None, float]] = field(default_factory=list)
    groups: list[tuple[str, list[tuple[str | None, float]]]] = field(default_factory=list)
    started: int = 0  # subgroups started in this phase (numbers the ids)
    limits: spc.Limits | None = None
    limits_from_plan: bool = False
    violations: int = 0  # rule violations in this phase (stability flag)
    since_capability: int = 0

    @classmethod
    def new(cls, char: Characteristic, phase: int, n: int) -> CharSpc:
        state = cls(char.id, phase, n, chart_of(char, n))
        opts = char.spc
        if opts.enabled and opts.limits == "fixed" and opts.center is not None \
                and opts.sigma is not None:
            state.limits = spc.fixed_limits(state.chart, n, float(opts.center),
                                             float(opts.sigma))
            state.limits_from_plan = True
        return state

    def add(self, char: Characteristic, reading_id: str | None, value: float
            ) -> tuple[str, int, Completed | None]:
        """Add a value: (subgroup id, position 1..n, Completed or None)."""
        if not self.open:
            self.started += 1
        sid = f"{self.char_id}/{self.phase}/{self.started}"
        self.open.append((reading_id, value))
        position = len(self.open)
        if position < self.n:
            return sid, position, None
        group, self.open = self.open, []
        self.groups.append((sid, group))
        return sid, position, self._complete(char, sid, group)

    def _complete(self, char: Characteristic, sid: str,
                  group: list[tuple[str | None, float]]) -> Completed:
        done = Completed(sid, [v for _, v in group], [r for r, _ in group])
        self.since_capability += 1
        opts = char.spc
        if not opts.enabled:
            return done
        if self.limits is None:
            if len(self.groups) >= opts.baseline_subgroups:
                try:
                    self.limits = spc.limits_for(self.chart, [[v for _, v in g]
                                                              for _, g in self.groups],
                                                 opts.individuals_sigma)
                except (ValueError, ZeroDivisionError):
                    return done
                if not math.isfinite(self.limits.sigma_point) or self.limits.sigma_point <= 0:
                    self.limits = None  # all values equal: no spread to chart against
                    return done
                done.limits_frozen = self.limits
            return done  # the baseline itself is not judged against its own limits
        done.limits = lim = self.limits
        points = self._points()
        rules = ruleset(opts)
        found = spc.rules_at([p for p, _ in points], lim.center, lim.sigma_point, rules)
        ids = [sid_ for _, sid_ in points]
        for v in found:
            done.violations.append({
                "rule": v.rule, "name": v.name, "chart": "location",
                "subgroups": [ids[i] for i in v.points],
                "points": [points[i][0] for i in v.points],
            })
        disp = self._dispersion(group)
        if 1 in rules.enabled and disp is not None and (disp > lim.disp_ucl
                                                        or disp < lim.disp_lcl):
            done.violations.append({"rule": 1, "name": spc.RULE_NAMES[1] + " (dispersion)",
                                    "chart": "dispersion", "subgroups": [sid],
                                    "points": [disp]})
        self.violations += len(done.violations)
        return done

    def _points(self) -> list[tuple[float, str]]:
        return [(spc.point_of(self.chart, [v for _, v in g])[0], sid) for sid, g in self.groups]

    def _dispersion(self, group: list[tuple[str | None, float]]) -> float | None:
        if self.chart == "i_mr":
            if len(self.groups) < 2:
                return None
            return abs(group[0][1] - self.groups[-2][1][0][1])
        return spc.point_of(self.chart, [v for _, v in group])[1]

    def void(self, reading_id: str | None) -> bool:
        """Take a value out of every statistic; True if it was found."""
        for i, (rid, _) in enumerate(self.open):
            if rid == reading_id:
                del self.open[i]
                if not self.open:
                    self.started -= 1  # the subgroup id is reused by the re-measurement
                return True
        if self.groups and any(rid == reading_id for rid, _ in self.groups[-1][1]):
            _, group = self.groups.pop()
            self.open = [(r, v) for r, v in group if r != reading_id]
            if not self.open:
                self.started -= 1
            self.since_capability = max(0, self.since_capability - 1)
            if self.limits is not None and not self.limits_from_plan \
                    and len(self.groups) < self.limits.subgroups:
                self.limits = None  # it was part of the baseline: recompute
            return True
        return False

    def values(self) -> list[float]:
        return [v for _, g in self.groups for _, v in g]

    def capability(self, char: Characteristic) -> spc.Capability | None:
        values = self.values()
        if not values:
            return None
        sigma_w = (self.limits.sigma_within if self.limits is not None
                   else spc.sigma_within_of(self.chart, [[v for _, v in g]
                                                         for _, g in self.groups],
                                            char.spc.individuals_sigma))
        return spc.capability(values, sigma_w,
                              None if char.lsl is None else float(char.lsl),
                              None if char.usl is None else float(char.usl),
                              target=float(cpm_target(char)))

    # ---- snapshot ----------------------------------------------------------------
    def dump(self) -> dict[str, Any]:
        return {"char_id": self.char_id, "phase": self.phase, "n": self.n,
                "chart": self.chart, "open": [list(x) for x in self.open],
                "groups": [[sid, [list(x) for x in g]] for sid, g in self.groups],
                "started": self.started,
                "limits": None if self.limits is None else self.limits.as_dict(),
                "limits_from_plan": self.limits_from_plan, "violations": self.violations,
                "since_capability": self.since_capability}

    @classmethod
    def load(cls, raw: Mapping[str, Any]) -> CharSpc:
        def pair(x: Any) -> tuple[str | None, float]:
            rid, value = x
            if rid is not None and not isinstance(rid, str):
                raise ValueError("reading id")
            return rid, float(value)

        lim = raw["limits"]
        limits = None if lim is None else spc.Limits(
            str(lim["chart"]), int(lim["n"]), *(float(lim[k]) for k in (
                "center", "ucl", "lcl", "disp_center", "disp_ucl", "disp_lcl",
                "sigma_within")), int(lim["subgroups"]))
        return cls(str(raw["char_id"]), int(raw["phase"]), int(raw["n"]), str(raw["chart"]),
                   [pair(x) for x in raw["open"]],
                   [(str(sid), [pair(x) for x in g]) for sid, g in raw["groups"]],
                   int(raw["started"]), limits, bool(raw["limits_from_plan"]),
                   int(raw["violations"]), int(raw["since_capability"]))


def cpm_target(char: Characteristic) -> Decimal:
    """The target Cpm is computed about: the nominal, or the middle of the tolerance when
    the nominal sits on a limit of a two-sided tolerance (8.00 +0.08/0 is made at 8.04;
    about 8.00 Cpm would always be 0)."""
    if char.lsl is not None and char.usl is not None and char.nominal in (char.lsl, char.usl):
        return (char.lsl + char.usl) / 2
    return char.nominal


def fresh_spc(plan: Plan | None, phase: int) -> dict[str, CharSpc]:
    if plan is None:
        return {}
    return {c.id: CharSpc.new(c, phase, plan.subgroup_size) for c in plan.characteristics}


def capability_body(char: Characteristic, state: CharSpc, plan: Plan,
                    trigger: str) -> dict[str, Any]:
    cap = state.capability(char)
    indices = cap.as_dict() if cap is not None else {}
    cpk, ppk = indices.get("cpk"), indices.get("ppk")
    n = indices.get("n") or 0
    ppm = indices.get("ppm") or None
    observed = ppm["observed"]["total"] if ppm else 0.0
    sigma_w = indices.get("sigma_within")
    if cap is None or n < plan.capability_min_values:
        verdict = "insufficient_data"
    elif observed and (cpk is None or observed >= 1e6):
        # σ = 0 (a gauge coarse against the spread) or every value out of tolerance:
        # no index says it, the values do (issue 11)
        verdict = "out_of_tolerance"
    elif cpk is None:
        verdict = "no_spread" if sigma_w == 0 else "insufficient_data"
    elif cpk < plan.capability_min:
        verdict = "below_minimum"
    elif ppk is not None and cpk >= plan.capability_review and ppk >= plan.capability_review:
        verdict = "review"
    else:
        verdict = "capable"
    return {
        "characteristic": char.id, "char_class": char.char_class, "trigger": trigger,
        "phase": state.phase, "chart": state.chart, "subgroup_size": state.n,
        "subgroups": len(state.groups), "n": n,
        "mean": indices.get("mean"), "sigma_within": indices.get("sigma_within"),
        "sigma_overall": indices.get("sigma_overall"),
        **{k: indices.get(k) for k in ("cp", "cpk", "cpu", "cpl", "pp", "ppk", "ppu", "ppl",
                                       "cpm")},
        "target": str(cpm_target(char)),
        "ppm": ppm,
        "lsl": None if char.lsl is None else str(char.lsl),
        "usl": None if char.usl is None else str(char.usl),
        "stable": state.violations == 0, "rule_violations": state.violations,
        "limits": None if state.limits is None else state.limits.as_dict(),
        "minimum": plan.capability_min, "review_threshold": plan.capability_review,
        "verdict": verdict,
    }
