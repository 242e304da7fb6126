"""``plans/*.toml``: a measurement plan (characteristics, SPC, first article, patrol,
capability, reaction plan) and its conversion to ``domain.Plan``; docs/quality.md is the
user's page."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Literal

from pydantic import Field, model_validator

from collector import domain
from drivers.config_base import ConfigModel, Dec, Loc, Unit, raise_problems, show

CharClass = Literal["critical", "significant", "standard"]
Chart = Literal["i_mr", "xbar_r", "xbar_s"]
LimitsSource = Literal["baseline", "fixed"]
ReactionAction = Literal["hold", "inspection_100"]
NelsonRule = Literal[1, 2, 3, 4, 5, 6, 7, 8]
ConfirmRole = Literal["production", "quality"]  # the command roles (topics, allow-lists)


class SpcConfig(ConfigModel):
    """``[characteristics.spc]``: SPC of one characteristic (docs/quality.md). The run
    lengths default to Nelson's."""

    enabled: bool = Field(True, description="false = no control chart for this "
                          "characteristic.")
    chart: Chart | None = Field(None, description="Control chart; unset = by subgroup size: "
                                "i_mr for 1, xbar_r up to 8, xbar_s above. Must fit "
                                "`patrol.subgroup_size`.")
    limits: LimitsSource = Field("baseline", description="baseline: from the first "
                                 "`baseline_subgroups` subgroups of a phase, then frozen; "
                                 "fixed: from `center` and `sigma`.")
    baseline_subgroups: int = Field(20, ge=2, le=1000, description="Complete subgroups that "
                                    "make the baseline limits.")
    center: Dec | None = Field(None, description="limits = fixed only, and required there: "
                               "the centre line (decimal).")
    sigma: Dec | None = Field(None, description="limits = fixed only, and required there: "
                              "sigma of individual values (decimal, > 0).")
    rules: list[NelsonRule] = Field(default_factory=lambda: [1, 2, 3, 4, 5, 6, 7, 8],
                                    description="Nelson rules switched on, each once.")
    same_side: int = Field(9, ge=2, le=50, description="Rule 2: points in a row on one side "
                           "of the centre line (AIAG: 7).")
    trend: int = Field(6, ge=3, le=50, description="Rule 3: points in a row increasing or "
                       "decreasing.")
    alternating: int = Field(14, ge=3, le=50, description="Rule 4: points in a row "
                             "alternating up and down.")
    zone_a: list[int] = Field(default_factory=lambda: [2, 3], description="Rule 5: [m, k] = "
                              "m of k points beyond 2 sigma on one side "
                              "(1 <= m <= k <= 50).")
    zone_b: list[int] = Field(default_factory=lambda: [4, 5], description="Rule 6: [m, k] = "
                              "m of k points beyond 1 sigma on one side "
                              "(1 <= m <= k <= 50).")
    stratification: int = Field(15, ge=2, le=50, description="Rule 7: points in a row within "
                                "1 sigma.")
    mixture: int = Field(8, ge=2, le=50, description="Rule 8: points in a row beyond 1 "
                         "sigma.")
    mixture_sides: Literal["both", "any"] = Field("both", description="Rule 8: both = with "
                                                  "points on both sides (Nelson, AIAG, qcc); "
                                                  "any = whatever the side.")
    individuals_sigma: Literal["moving_range", "stdev"] = Field(
        "moving_range", description="I-MR: sigma from the average moving range, or s/c4 of "
        "the baseline values.")

    @model_validator(mode="after")
    def _check(self) -> SpcConfig:
        problems: list[tuple[Loc, str]] = []
        if self.limits == "fixed":
            for key in ("center", "sigma"):
                if getattr(self, key) is None:
                    problems.append(((key,), "required key missing (limits = 'fixed' needs "
                                     "center and sigma)"))
            if self.sigma is not None and self.sigma <= 0:
                problems.append((("sigma",), f"{self.sigma} is out of range (allowed: > 0)"))
        else:
            for key in ("center", "sigma"):
                if getattr(self, key) is not None:
                    problems.append(((key,), f"{key} is only used with limits = 'fixed' "
                                     "(limits is 'baseline')"))
        for key in ("zone_a", "zone_b"):
            pair = getattr(self, key)
            if len(pair) != 2 or not 1 <= pair[0] <= pair[1] <= 50:
                problems.append(((key,), f"{show(pair)} is not allowed (allowed: [m, k], "
                                 "m of k points, 1 <= m <= k <= 50, e.g. [2, 3])"))
        if len(set(self.rules)) != len(self.rules):
            problems.append((("rules",), f"{show(self.rules)} names a rule twice"))
        raise_problems(problems)
        return self


class FirstArticleConfig(ConfigModel):
    """``[first_article]``: the check after a setup, before the press is released."""

    sample_size: int = Field(1, ge=1, le=50, description="Pieces measured (every "
                             "characteristic) per first article.")
    confirm_roles: list[ConfirmRole] = Field(
        default_factory=list, description="Joint setup verification: the roles that must "
        "each confirm a passing first article (command `confirm_first_article` on the "
        "role's topic, by an operator of that role's allow-list, a different operator "
        "per role) before the press is released; [] = released as soon as it passes.")

    @model_validator(mode="after")
    def _check(self) -> FirstArticleConfig:
        if len(set(self.confirm_roles)) != len(self.confirm_roles):
            raise_problems([(("confirm_roles",),
                             f"{show(self.confirm_roles)} names a role twice")])
        return self


class PatrolConfig(ConfigModel):
    """Patrol inspection: a check (one subgroup of every characteristic) is due every
    ``every_strokes`` strokes and/or ``every_min`` minutes of released production."""

    every_strokes: int | None = Field(None, ge=1, description="A check is due every N "
                                      "strokes (PLC counter); unset = off.")
    every_min: float | None = Field(None, gt=0, description="... and/or every T minutes of "
                                    "released production; unset = off.")
    grace_min: float = Field(10.0, gt=0, description="A due check not completed within this, "
                             "minutes, is `overdue` (a missed check).")
    # The control-chart constants go to 25.
    subgroup_size: int = Field(1, ge=1, le=25, description="Pieces per check = the control "
                               "chart's subgroup size.")


class CapabilityConfig(ConfigModel):
    """``[capability]``: when capability is published and judged (docs/quality.md)."""

    minimum: float = Field(1.33, gt=0, description="Cpk below this -> reaction "
                           "`low_capability`.")
    review: float = Field(3.0, gt=0, description="Cpk and Ppk at or above this -> "
                          "`capability_review` (a suggestion); must be above `minimum`.")
    every_subgroups: int = Field(25, ge=1, description="Capability is published every N "
                                 "complete subgroups.")
    min_values: int = Field(20, ge=2, description="Fewer values: `insufficient_data`, no "
                            "reaction.")

    @model_validator(mode="after")
    def _check(self) -> CapabilityConfig:
        if self.review <= self.minimum:
            raise_problems([(("review",), f"{self.review} is not above minimum "
                              f"{self.minimum} (review threshold must be higher)")])
        return self


class ReactionConfig(ConfigModel):
    """``[reaction.<class>]``: what an alarm adds, per cause: [] = alarm only; hold = the
    press goes on hold; inspection_100 = every piece is to be measured until a quality
    release."""

    out_of_tolerance: list[ReactionAction] = Field(default_factory=list, description="A "
                                                   "value outside the tolerance.")
    rule: list[ReactionAction] = Field(default_factory=list, description="A Nelson rule "
                                       "broken.")
    low_capability: list[ReactionAction] = Field(default_factory=list, description="Cpk "
                                                 "below `capability.minimum`.")


class ReactionPlanConfig(ConfigModel):
    """``[reaction]``: the reaction plan, per characteristic class."""

    critical: ReactionConfig = Field(default_factory=ReactionConfig, description="Reactions "
                                     "for critical characteristics.")
    significant: ReactionConfig = Field(default_factory=ReactionConfig, description="Reactions "
                                        "for significant characteristics.")
    standard: ReactionConfig = Field(default_factory=ReactionConfig, description="Reactions "
                                     "for standard characteristics.")


class CharacteristicConfig(ConfigModel):
    """One characteristic. Each limit is given one way: ``lower_tol`` (relative to
    ``nominal``) or ``lsl`` (absolute); likewise ``upper_tol`` or ``usl``. At least one
    limit is required. ``nominal`` is required with tolerances and with a one-sided
    absolute limit; with both ``lsl`` and ``usl`` it defaults to their midpoint."""

    id: str = Field(min_length=1, description="Unique per plan.")
    name: str = Field("", description="Text for people; \"\" = the id.")
    nominal: Dec | None = Field(None, description="Decimal, as a string (`\"25.00\"`: the "
                                "decimals written are the resolution shown downstream) or a "
                                "number. Required with tolerances and with a one-sided "
                                "limit; else the middle of lsl and usl.")
    lower_tol: Dec | None = Field(None, description="Lower limit relative to nominal, signed "
                                  "(`\"-0.05\"`); or give lsl.")
    upper_tol: Dec | None = Field(None, description="Upper limit relative to nominal (`\"0.05\"`); "
                                  "or give usl.")
    lsl: Dec | None = Field(None, description="Absolute lower limit (instead of lower_tol); "
                            "must be below the upper limit.")
    usl: Dec | None = Field(None, description="Absolute upper limit (instead of upper_tol). "
                            "One of the two limits may be left away (one-sided).")
    unit: Unit = Field("mm", description="Unit of nominal and limits.")
    gauge: str | None = Field(None, description="Id of the gauge (of some press) whose "
                              "readings measure this characteristic.")
    channel: int | None = Field(None, ge=0, description="Multiplexer channel of that gauge.")
    char_class: CharClass = Field("standard", alias="class", description="Characteristic "
                                  "class: picks the `[reaction.<class>]` table.")
    resolution: Dec | None = Field(None, description="Smallest step of the gauge, e.g. "
                                   "`\"0.001\"` (> 0).")
    spc: SpcConfig = Field(default_factory=SpcConfig, description="`[characteristics.spc]`: "
                           "control chart and rules.")

    def limits(self) -> tuple[Decimal | None, Decimal | None]:
        """Absolute (lsl, usl); either may be None (one-sided)."""
        lsl, usl = self.lsl, self.usl
        if self.lower_tol is not None and self.nominal is not None:
            lsl = self.nominal + self.lower_tol
        if self.upper_tol is not None and self.nominal is not None:
            usl = self.nominal + self.upper_tol
        return lsl, usl

    def nominal_value(self) -> Decimal:
        if self.nominal is not None:
            return self.nominal
        lsl, usl = self.limits()
        assert lsl is not None and usl is not None  # guaranteed by validation
        return (lsl + usl) / 2

    @model_validator(mode="after")
    def _check(self) -> CharacteristicConfig:
        problems: list[tuple[Loc, str]] = []
        if self.lower_tol is not None and self.lsl is not None:
            problems.append((("lsl",), "give either lower_tol or lsl, not both"))
        if self.upper_tol is not None and self.usl is not None:
            problems.append((("usl",), "give either upper_tol or usl, not both"))
        has_tol = self.lower_tol is not None or self.upper_tol is not None
        has_lower = self.lower_tol is not None or self.lsl is not None
        has_upper = self.upper_tol is not None or self.usl is not None
        if not has_lower and not has_upper:
            problems.append(((), "no limits: give lower_tol/upper_tol (with nominal) "
                             "or lsl/usl"))
        elif self.nominal is None and has_tol:
            problems.append((("nominal",), "required key missing (lower_tol and upper_tol "
                             "are relative to nominal)"))
        elif self.nominal is None and not (self.lsl is not None and self.usl is not None):
            problems.append((("nominal",), "required key missing (a one-sided limit needs "
                             "a nominal, e.g. nominal = '0')"))
        if not problems:
            lsl, usl = self.limits()
            if lsl is not None and usl is not None and lsl >= usl:
                key = "usl" if self.usl is not None else "upper_tol"
                hint = "lsl must be < usl"
                if self.lower_tol is not None and self.lower_tol > 0:
                    hint += "; lower_tol is signed: write e.g. '-0.05' for 0.05 below nominal"
                problems.append(((key,), f"lower limit {lsl} is not below upper limit {usl} "
                                 f"({hint})"))
        raise_problems(problems)
        return self


class PlanConfig(ConfigModel):
    """``plans/*.toml`` (any file name): the measurement plan of one part number and
    revision. Several revisions of a part number: the highest wins (natural order: A < B,
    9 < 10); the same part number and revision twice is an error."""

    part_number: str = Field(min_length=1, description="As the PLC reports it (tag role "
                             "part_number).")
    revision: str = Field(min_length=1, description="A string: write \"2\", not 2.")
    description: str = Field("", description="Text for people.")
    characteristics: list[CharacteristicConfig] = Field(min_length=1, description="`[["
                                                        "characteristics]]`: the measured "
                                                        "features, at least one.")
    first_article: FirstArticleConfig = Field(default_factory=FirstArticleConfig,
                                              description="`[first_article]`.")
    patrol: PatrolConfig = Field(default_factory=PatrolConfig, description="`[patrol]`: "
                                 "patrol checks during production.")
    capability: CapabilityConfig = Field(default_factory=CapabilityConfig,
                                         description="`[capability]`.")
    reaction: ReactionPlanConfig = Field(default_factory=ReactionPlanConfig,
                                         description="`[reaction]`: the reaction plan.")

    @model_validator(mode="after")
    def _check(self) -> PlanConfig:
        problems: list[tuple[Loc, str]] = []
        seen: dict[str, int] = {}
        n = self.patrol.subgroup_size
        for i, ch in enumerate(self.characteristics):
            chart = ch.spc.chart
            if chart is not None and (chart == "i_mr") != (n == 1):
                need = "i_mr" if n == 1 else "xbar_r or xbar_s"
                problems.append((("characteristics", i, "spc", "chart"), f"{show(chart)} "
                                 f"does not fit patrol.subgroup_size {n} (allowed: {need})"))
            if ch.resolution is not None and ch.resolution <= 0:
                problems.append((("characteristics", i, "resolution"), f"{ch.resolution} is "
                                 "out of range (allowed: > 0, e.g. '0.001')"))
            if ch.id in seen:
                problems.append((("characteristics", i, "id"), f"{show(ch.id)} is already "
                                 f"used by characteristics[{seen[ch.id]}] (ids must be "
                                 "unique per plan)"))
            else:
                seen[ch.id] = i
        raise_problems(problems)
        return self


def to_plan(plan: PlanConfig) -> domain.Plan:
    """PlanConfig -> domain.Plan with absolute Decimal limits."""
    chars = []
    for ch in plan.characteristics:
        lsl, usl = ch.limits()
        chars.append(domain.Characteristic(
            id=ch.id, name=ch.name or ch.id, nominal=ch.nominal_value(), lsl=lsl, usl=usl,
            unit=ch.unit, gauge=ch.gauge, channel=ch.channel, char_class=ch.char_class,
            resolution=ch.resolution, spc=_to_spc(ch.spc)))
    reactions = {cls: domain.Reaction(tuple(r.out_of_tolerance), tuple(r.rule),
                                      tuple(r.low_capability))
                 for cls in domain.CHAR_CLASSES
                 for r in (getattr(plan.reaction, cls),)}
    cap = plan.capability
    return domain.Plan(part_number=plan.part_number, revision=plan.revision,
                       characteristics=tuple(chars), description=plan.description,
                       first_article_sample_size=plan.first_article.sample_size,
                       first_article_confirm_roles=tuple(plan.first_article.confirm_roles),
                       patrol_every_strokes=plan.patrol.every_strokes,
                       patrol_every_min=plan.patrol.every_min,
                       overdue_grace_min=plan.patrol.grace_min,
                       subgroup_size=plan.patrol.subgroup_size,
                       capability_min=cap.minimum, capability_review=cap.review,
                       capability_every=cap.every_subgroups,
                       capability_min_values=cap.min_values, reactions=reactions)


def _to_spc(spc: SpcConfig) -> domain.SpcOptions:
    return domain.SpcOptions(
        enabled=spc.enabled, chart=spc.chart, limits=spc.limits,
        baseline_subgroups=spc.baseline_subgroups, center=spc.center, sigma=spc.sigma,
        rules=tuple(sorted(spc.rules)), same_side=spc.same_side, trend=spc.trend,
        alternating=spc.alternating, zone_a=(spc.zone_a[0], spc.zone_a[1]),
        zone_b=(spc.zone_b[0], spc.zone_b[1]), stratification=spc.stratification,
        mixture=spc.mixture, mixture_sides=spc.mixture_sides,
        individuals_sigma=spc.individuals_sigma)


def revision_key(revision: str) -> tuple[tuple[tuple[int, int, str], ...], str]:
    """Sort key for revisions: natural order, so 'A' < 'B' and '9' < '10'.

    Runs of digits compare as numbers, other text as strings (for single-letter
    revisions this is plain string order); digits sort before letters ('9' < 'A').
    """
    parts = tuple((0, int(p), "") if p.isascii() and p.isdigit() else (1, 0, p)
                  for p in re.findall(r"\d+|\D+", revision))
    return parts, revision
