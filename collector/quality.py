"""Per-characteristic SPC bookkeeping and the operator command table. Pure.

``PressWorkflow`` owns one ``CharSpc`` per characteristic of the current plan and phase.
A ``CharSpc`` collects patrol values into subgroups, freezes control limits (from the
plan, or from the first K subgroups of the phase), evaluates the run rules on each
completed subgroup and keeps what capability needs. Voided values leave every statistic
(the event log keeps them). The workflow snapshot stores these dataclasses field by field
(collector/workflow/codec.py).

How much is kept (docs/quality.md, "How much history is kept"): the last ``keep``
subgroups of the phase whole ([workflow] ``spc_history_subgroups``, never fewer than the
baseline and the longest run-rule window need), and every older subgroup of the phase
only as exact sums (``SpcHistory``), from which the limits and the capability of the
whole phase are the same figures as from the values. Why: a phase can last months at a
patrol rate, and the history was kept whole in memory and in every snapshot (issue 12).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction
from typing import Any

from collector import spc, text_safety
from collector.domain import SPC_HISTORY_DEFAULT, Characteristic, Plan, SpcOptions

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


def rule_window(opts: SpcOptions) -> int:
    """The most points any run rule of ``opts`` looks back on (rule 1: one)."""
    return max(1, opts.same_side, opts.trend, opts.alternating, opts.zone_a[1],
               opts.zone_b[1], opts.stratification, opts.mixture)


def history_window(char: Characteristic, keep: int) -> int:
    """Subgroups kept whole: ``keep``, but never fewer than the baseline (limits are
    computed from its subgroups), the longest run-rule window and the two subgroups the
    moving range and a void need."""
    return max(keep, 2, char.spc.baseline_subgroups, rule_window(char.spc))


@dataclass
class SpcHistory:
    """The subgroups of the phase that left the window, as exact sums (floats are binary
    fractions, so ``Fraction`` sums lose nothing): enough for the limits and the
    capability of the whole phase. A void only ever touches the open or the last subgroup,
    which are in the window: what is summed here never changes again. In the snapshot
    (collector/workflow/codec.py walks the fields) a sum is its exact 'p/q' string."""

    subgroups: int = 0
    values: int = 0
    sum_x: Fraction = Fraction(0)
    sum_xx: Fraction = Fraction(0)
    sum_dev2: Fraction = Fraction(0)  # Σ (x - target)², each term as capability takes it
    below: int = 0  # values below LSL / above USL
    above: int = 0
    sum_disp: Fraction = Fraction(0)  # Σ range (X-bar/R), s (X-bar/s), moving range (I-MR)
    pairs: int = 0  # I-MR: moving ranges in sum_disp
    last: float | None = None  # the last value summed (the moving range across the edge)

    def take(self, chart: str, values: Sequence[float], lsl: float | None,
             usl: float | None, target: float) -> None:
        self.subgroups += 1
        for v in values:
            self.values += 1
            x = Fraction(v)
            self.sum_x += x
            self.sum_xx += x * x
            self.sum_dev2 += Fraction((v - target) ** 2)
            self.below += lsl is not None and v < lsl
            self.above += usl is not None and v > usl
            if chart == "i_mr":
                if self.last is not None:
                    self.sum_disp += Fraction(abs(v - self.last))
                    self.pairs += 1
                self.last = v
        if chart != "i_mr":
            self.sum_disp += Fraction(spc.point_of(chart, values)[1] or 0.0)


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
    # the phase's subgroups older than ``groups`` (the window), summed
    history: SpcHistory = field(default_factory=SpcHistory)

    @property
    def subgroup_count(self) -> int:
        """Complete subgroups of the phase (summed ones and the window)."""
        return self.history.subgroups + len(self.groups)

    @property
    def value_count(self) -> int:
        return self.history.values + sum(len(g) for _, g in self.groups)

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

    def add(self, char: Characteristic, reading_id: str | None, value: float,
            keep: int = SPC_HISTORY_DEFAULT) -> tuple[str, int, Completed | None]:
        """Add a value: (subgroup id, position 1..n, Completed or None). At most
        ``history_window(char, keep)`` complete subgroups stay whole; older ones are summed."""
        if not self.open:
            self.started += 1
        sid = f"{self.char_id}/{self.phase}/{self.started}"
        self.open.append((reading_id, value))
        position = len(self.open)
        if position < self.n:
            return sid, position, None
        group, self.open = self.open, []
        self.groups.append((sid, group))
        done = self._complete(char, sid, group)
        self._trim(char, history_window(char, keep))
        return sid, position, done

    def _trim(self, char: Characteristic, window: int) -> None:
        """Sum the subgroups beyond the window into ``history`` (oldest first)."""
        extra = len(self.groups) - window
        if extra <= 0:
            return
        lsl = None if char.lsl is None else float(char.lsl)
        usl = None if char.usl is None else float(char.usl)
        target = float(cpm_target(char))
        for _, g in self.groups[:extra]:
            self.history.take(self.chart, [v for _, v in g], lsl, usl, target)
        del self.groups[:extra]

    def _complete(self, char: Characteristic, sid: str,
                  group: list[tuple[str | None, float]]) -> Completed:
        done = Completed(sid, [v for _, v in group], [r for r, _ in group])
        self.since_capability += 1
        opts = char.spc
        if not opts.enabled:
            return done
        if self.limits is None:
            if self.subgroup_count >= opts.baseline_subgroups:
                try:
                    self.limits = self._phase_limits(opts.individuals_sigma)
                except (ValueError, ZeroDivisionError):
                    return done
                if not math.isfinite(self.limits.sigma_point) or self.limits.sigma_point <= 0:
                    self.limits = None  # all values equal: no spread to chart against
                    return done
                done.limits_frozen = self.limits
            return done  # the baseline itself is not judged against its own limits
        done.limits = lim = self.limits
        points = self._points(rule_window(opts))
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

    def _points(self, last: int) -> list[tuple[float, str]]:
        """The plotted points of the last ``last`` subgroups (what the rules look at)."""
        return [(spc.point_of(self.chart, [v for _, v in g])[0], sid)
                for sid, g in self.groups[-last:]]

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
                    and self.subgroup_count < self.limits.subgroups:
                self.limits = None  # it was part of the baseline: recompute
            return True
        return False

    def values(self) -> list[float]:
        """The values of the window (older ones are in ``history``, summed)."""
        return [v for _, g in self.groups for _, v in g]

    def _phase_limits(self, individuals_sigma: str) -> spc.Limits:
        """Limits from every complete subgroup of the phase (window and summed)."""
        subgroups = [[v for _, v in g] for _, g in self.groups]
        h = self.history
        if h.subgroups == 0:
            return spc.limits_for(self.chart, subgroups, individuals_sigma)
        count = self.subgroup_count
        values = [v for g in subgroups for v in g]
        total = h.values + len(values)
        mean = float((h.sum_x + sum(map(Fraction, values))) / total)
        if self.chart == "i_mr":
            mrs = [abs(b - a) for a, b in zip([h.last, *values], values, strict=False)
                   if a is not None]
            mrbar = float((h.sum_disp + sum(map(Fraction, mrs))) / (h.pairs + len(mrs)))
            return spc.imr_from(mean, mrbar, self._stdev(values), count, individuals_sigma)
        disp = sum(Fraction(spc.point_of(self.chart, g)[1] or 0.0) for g in subgroups)
        dbar = float((h.sum_disp + disp) / count)
        if self.chart == "xbar_r":
            return spc.xbar_r_from(self.n, mean, dbar, count)
        return spc.xbar_s_from(self.n, mean, dbar, count)

    def _stdev(self, values: list[float]) -> float | None:
        """Sample σ of every value of the phase, exact from the sums."""
        h = self.history
        n = h.values + len(values)
        if n < 2:
            return None
        sx = h.sum_x + sum(map(Fraction, values))
        sxx = h.sum_xx + sum(Fraction(v) ** 2 for v in values)
        return math.sqrt(float((sxx - sx * sx / n) / (n - 1)))

    def capability(self, char: Characteristic) -> spc.Capability | None:
        """Capability of every non-voided value of the phase."""
        values = self.values()
        lsl = None if char.lsl is None else float(char.lsl)
        usl = None if char.usl is None else float(char.usl)
        target = float(cpm_target(char))
        h = self.history
        sigma_w: float | None
        if h.values == 0:  # everything is in the window: the values themselves
            if not values:
                return None
            sigma_w = (self.limits.sigma_within if self.limits is not None
                       else spc.sigma_within_of(self.chart, [[v for _, v in g]
                                                             for _, g in self.groups],
                                                char.spc.individuals_sigma))
            return spc.capability(values, sigma_w, lsl, usl, target=target)
        if self.limits is not None:
            sigma_w = self.limits.sigma_within
        else:
            try:
                sigma_w = self._phase_limits(char.spc.individuals_sigma).sigma_within
            except (ValueError, ZeroDivisionError):
                sigma_w = None
        n = h.values + len(values)
        dev2 = h.sum_dev2 + sum(Fraction((v - target) ** 2) for v in values)
        moments = spc.Moments(
            n, float((h.sum_x + sum(map(Fraction, values))) / n), self._stdev(values),
            h.below + sum(1 for v in values if lsl is not None and v < lsl),
            h.above + sum(1 for v in values if usl is not None and v > usl),
            math.sqrt(float(dev2 / (n - 1))) if n >= 2 else None)
        return spc.capability_of(moments, sigma_w, lsl, usl, target=target)


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
        "subgroups": state.subgroup_count, "n": n,
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
