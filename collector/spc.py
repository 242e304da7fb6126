"""Statistical process control, pure: chart constants, control limits, capability, run rules.

No I/O and no state: the workflow keeps the per-characteristic history and calls these
functions on it. Floats are fine here (statistics, not verdicts: a tolerance verdict is
judged exactly in ``collector.tolerance``).

Formulas (AIAG SPC manual, 2nd ed.; Montgomery, *Introduction to Statistical Quality
Control*, ch. 6; see docs/quality.md):

- X-bar/R: centre X̿, limits X̿ ± A2·R̄; range chart R̄ with [D3·R̄, D4·R̄]; σw = R̄/d2.
- X-bar/s: centre X̿, limits X̿ ± A3·s̄; s chart s̄ with [B3·s̄, B4·s̄]; σw = s̄/c4.
- I-MR: centre X̄, limits X̄ ± 3·MR̄/d2(2) (= 2.660·MR̄); MR chart [0, D4(2)·MR̄]; σw = MR̄/1.128.
- Cp = (USL-LSL)/6σw, Cpk = min(CPU, CPL), CPU = (USL-x̄)/3σw, CPL = (x̄-LSL)/3σw;
  Pp/Ppk the same with σ overall (sample standard deviation, n-1). One-sided tolerance:
  only CPU or CPL (PPU/PPL); Cp and Pp are undefined (None).
- Nelson's eight run rules on the plotted statistic (zones at 1, 2, 3 σ of that statistic),
  each switchable and with configurable run lengths; Western Electric = rules 1, 5, 6 and
  "eight in a row on one side" (Nelson 2 with run length 8).
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field

# --------------------------------------------------------------------------------------
# Constants (AIAG SPC manual appendix; Montgomery appendix VI), n = 2..10.
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Constants:
    n: int
    A2: float
    A3: float
    d2: float
    d3: float
    c4: float
    D3: float
    D4: float
    B3: float
    B4: float


_TABLE = """
2 1.880 2.659 1.128 0.853 0.7979 0 3.267 0 3.267
3 1.023 1.954 1.693 0.888 0.8862 0 2.574 0 2.568
4 0.729 1.628 2.059 0.880 0.9213 0 2.282 0 2.266
5 0.577 1.427 2.326 0.864 0.9400 0 2.114 0 2.089
6 0.483 1.287 2.534 0.848 0.9515 0 2.004 0.030 1.970
7 0.419 1.182 2.704 0.833 0.9594 0.076 1.924 0.118 1.882
8 0.373 1.099 2.847 0.820 0.9650 0.136 1.864 0.185 1.815
9 0.337 1.032 2.970 0.808 0.9693 0.184 1.816 0.239 1.761
10 0.308 0.975 3.078 0.797 0.9727 0.223 1.777 0.284 1.716
"""

CONSTANTS: dict[int, Constants] = {}
for _line in _TABLE.strip().splitlines():
    _n, *_vals = _line.split()
    CONSTANTS[int(_n)] = Constants(int(_n), *map(float, _vals))

MIN_N, MAX_N = 2, 10


def c4(n: int) -> float:
    """c4 = sqrt(2/(n-1)) · Γ(n/2) / Γ((n-1)/2): E[s] = c4·σ for normal samples of size n."""
    if n < 2:
        raise ValueError("c4 needs n >= 2")
    return math.sqrt(2.0 / (n - 1)) * math.exp(math.lgamma(n / 2) - math.lgamma((n - 1) / 2))


def constants(n: int) -> Constants:
    if n not in CONSTANTS:
        raise ValueError(f"subgroup size {n} is outside the constants table ({MIN_N}..{MAX_N})")
    return CONSTANTS[n]


# --------------------------------------------------------------------------------------
# Control limits.
# --------------------------------------------------------------------------------------

CHARTS = ("i_mr", "xbar_r", "xbar_s")


def chart_for(n: int) -> str:
    """I-MR for n = 1, X-bar/R up to 8, X-bar/s from 9 (Minitab's habit, DOMAIN.md §3)."""
    if n < 1:
        raise ValueError("subgroup size must be >= 1")
    return "i_mr" if n == 1 else ("xbar_r" if n <= 8 else "xbar_s")


@dataclass(frozen=True, slots=True)
class Limits:
    """Limits of one chart pair: location (X-bar or I) and dispersion (R, s or MR).

    ``sigma_within`` estimates σ of individual values; ``sigma_point`` is σ of the
    plotted location statistic (σw/√n), the unit of the run-rule zones.
    """

    chart: str
    n: int
    center: float
    ucl: float
    lcl: float
    disp_center: float
    disp_ucl: float
    disp_lcl: float
    sigma_within: float
    subgroups: int = 0  # how many subgroups (or values for I-MR) they were computed from

    @property
    def sigma_point(self) -> float:
        return (self.ucl - self.center) / 3.0

    def as_dict(self) -> dict[str, float | int | str]:
        return {"chart": self.chart, "n": self.n, "center": self.center, "ucl": self.ucl,
                "lcl": self.lcl, "disp_center": self.disp_center, "disp_ucl": self.disp_ucl,
                "disp_lcl": self.disp_lcl, "sigma_within": self.sigma_within,
                "subgroups": self.subgroups}


def _check_groups(subgroups: Sequence[Sequence[float]]) -> int:
    if not subgroups:
        raise ValueError("no subgroups")
    n = len(subgroups[0])
    if any(len(g) != n for g in subgroups):
        raise ValueError("subgroups must all have the same size")
    return n


def xbar_r_limits(subgroups: Sequence[Sequence[float]]) -> Limits:
    n = _check_groups(subgroups)
    k = constants(n)
    xbb = statistics.fmean(statistics.fmean(g) for g in subgroups)
    rbar = statistics.fmean(max(g) - min(g) for g in subgroups)
    return Limits("xbar_r", n, xbb, xbb + k.A2 * rbar, xbb - k.A2 * rbar,
                  rbar, k.D4 * rbar, k.D3 * rbar, rbar / k.d2, len(subgroups))


def xbar_s_limits(subgroups: Sequence[Sequence[float]]) -> Limits:
    n = _check_groups(subgroups)
    k = constants(n)
    xbb = statistics.fmean(statistics.fmean(g) for g in subgroups)
    sbar = statistics.fmean(statistics.stdev(g) for g in subgroups)
    return Limits("xbar_s", n, xbb, xbb + k.A3 * sbar, xbb - k.A3 * sbar,
                  sbar, k.B4 * sbar, k.B3 * sbar, sbar / k.c4, len(subgroups))


def imr_limits(values: Sequence[float]) -> Limits:
    if len(values) < 2:
        raise ValueError("I-MR limits need at least two values")
    k = constants(2)
    xbar = statistics.fmean(values)
    mrbar = statistics.fmean(abs(b - a) for a, b in itertools.pairwise(values))
    sigma = mrbar / k.d2
    return Limits("i_mr", 1, xbar, xbar + 3 * sigma, xbar - 3 * sigma,
                  mrbar, k.D4 * mrbar, 0.0, sigma, len(values))


def limits_for(chart: str, subgroups: Sequence[Sequence[float]]) -> Limits:
    """Limits of ``chart`` from complete subgroups (I-MR: the values, one per subgroup)."""
    if chart == "i_mr":
        return imr_limits([v for g in subgroups for v in g])
    if chart == "xbar_r":
        return xbar_r_limits(subgroups)
    if chart == "xbar_s":
        return xbar_s_limits(subgroups)
    raise ValueError(f"unknown chart {chart!r} (allowed: {', '.join(CHARTS)})")


def fixed_limits(chart: str, n: int, center: float, sigma_within: float) -> Limits:
    """Limits given in the plan (centre and σ of individuals), with the dispersion chart."""
    if chart == "i_mr":
        mr = sigma_within * constants(2).d2
        return Limits(chart, 1, center, center + 3 * sigma_within, center - 3 * sigma_within,
                      mr, constants(2).D4 * mr, 0.0, sigma_within)
    k = constants(n)
    s_point = sigma_within / math.sqrt(n)
    if chart == "xbar_r":
        r = sigma_within * k.d2
        return Limits(chart, n, center, center + 3 * s_point, center - 3 * s_point,
                      r, k.D4 * r, k.D3 * r, sigma_within)
    s = sigma_within * k.c4
    return Limits(chart, n, center, center + 3 * s_point, center - 3 * s_point,
                  s, k.B4 * s, k.B3 * s, sigma_within)


def point_of(chart: str, subgroup: Sequence[float], previous: float | None = None
             ) -> tuple[float, float | None]:
    """(location, dispersion) plotted for one subgroup; I-MR: (value, |value - previous|)."""
    if chart == "i_mr":
        x = subgroup[0]
        return x, None if previous is None else abs(x - previous)
    loc = statistics.fmean(subgroup)
    if chart == "xbar_r":
        return loc, max(subgroup) - min(subgroup)
    return loc, statistics.stdev(subgroup)


# --------------------------------------------------------------------------------------
# Capability.
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Capability:
    n: int
    mean: float
    sigma_within: float | None
    sigma_overall: float | None
    cp: float | None
    cpk: float | None
    cpu: float | None
    cpl: float | None
    pp: float | None
    ppk: float | None
    ppu: float | None
    ppl: float | None

    def as_dict(self) -> dict[str, float | int | None]:
        return {f: getattr(self, f) for f in self.__slots__}  # type: ignore[attr-defined]


def _indices(mean: float, sigma: float | None, lsl: float | None, usl: float | None
             ) -> tuple[float | None, float | None, float | None, float | None]:
    """(C, Ck, CU, CL) for one σ; None where undefined (no σ, one-sided tolerance)."""
    if sigma is None or sigma <= 0 or not math.isfinite(sigma):
        return None, None, None, None
    cu = (usl - mean) / (3 * sigma) if usl is not None else None
    cl = (mean - lsl) / (3 * sigma) if lsl is not None else None
    c = (usl - lsl) / (6 * sigma) if usl is not None and lsl is not None else None
    present = [v for v in (cu, cl) if v is not None]
    ck = min(present) if present else None
    return c, ck, cu, cl


def capability(values: Sequence[float], sigma_within: float | None,
               lsl: float | None, usl: float | None) -> Capability:
    """Cp/Cpk from ``sigma_within`` (R̄/d2, s̄/c4 or MR̄/d2), Pp/Ppk from the sample σ (n-1)."""
    if not values:
        raise ValueError("capability needs values")
    mean = statistics.fmean(values)
    overall = statistics.stdev(values) if len(values) >= 2 else None
    cp, cpk, cpu, cpl = _indices(mean, sigma_within, lsl, usl)
    pp, ppk, ppu, ppl = _indices(mean, overall, lsl, usl)
    return Capability(len(values), mean, sigma_within, overall, cp, cpk, cpu, cpl,
                      pp, ppk, ppu, ppl)


def sigma_within_of(chart: str, subgroups: Sequence[Sequence[float]]) -> float | None:
    """σ within from complete subgroups (None when there are too few)."""
    try:
        return limits_for(chart, subgroups).sigma_within
    except ValueError:
        return None


# --------------------------------------------------------------------------------------
# Run rules.
# --------------------------------------------------------------------------------------

NELSON_RULES = (1, 2, 3, 4, 5, 6, 7, 8)
RULE_NAMES = {
    1: "one point beyond 3 sigma",
    2: "run on one side of the centre line",
    3: "trend: steadily increasing or decreasing",
    4: "alternating up and down",
    5: "two of three beyond 2 sigma on the same side",
    6: "four of five beyond 1 sigma on the same side",
    7: "stratification: all within 1 sigma",
    8: "mixture: all beyond 1 sigma, either side",
}


@dataclass(frozen=True, slots=True)
class RuleSet:
    """Which Nelson rules are on, and their run lengths (defaults: Nelson 1984)."""

    enabled: frozenset[int] = frozenset(NELSON_RULES)
    beyond_sigma: float = 3.0      # rule 1
    same_side: int = 9             # rule 2 (AIAG: 7; Western Electric 4: 8)
    trend: int = 6                 # rule 3: points in a row (trend - 1 steps)
    alternating: int = 14          # rule 4
    zone_a: tuple[int, int] = (2, 3)    # rule 5: m of k beyond 2σ, same side
    zone_b: tuple[int, int] = (4, 5)    # rule 6: m of k beyond 1σ, same side
    stratification: int = 15       # rule 7
    mixture: int = 8               # rule 8

    @classmethod
    def western_electric(cls) -> RuleSet:
        """WE rules 1-4 = Nelson 1, 5, 6 and eight in a row on one side."""
        return cls(enabled=frozenset({1, 2, 5, 6}), same_side=8)


@dataclass(frozen=True, slots=True)
class Violation:
    rule: int
    index: int                     # the point that completed the pattern
    points: tuple[int, ...] = field(default=())  # indices of the window

    @property
    def name(self) -> str:
        return RULE_NAMES[self.rule]


def _side(z: float) -> int:
    return 1 if z > 0 else (-1 if z < 0 else 0)


def rules_at(points: Sequence[float], center: float, sigma: float, rules: RuleSet,
             index: int | None = None) -> list[Violation]:
    """The rules broken by a window ending at ``index`` (default: the last point)."""
    if not points or sigma <= 0:
        return []
    i = len(points) - 1 if index is None else index
    z = [(p - center) / sigma for p in points[: i + 1]]
    out: list[Violation] = []

    def window(k: int) -> list[float] | None:
        return z[i - k + 1: i + 1] if k >= 1 and i - k + 1 >= 0 else None

    def add(rule: int, k: int) -> None:
        out.append(Violation(rule, i, tuple(range(i - k + 1, i + 1))))

    on = rules.enabled
    if 1 in on and abs(z[i]) > rules.beyond_sigma:
        add(1, 1)
    if 2 in on and (w := window(rules.same_side)) is not None:
        sides = {_side(v) for v in w}
        if len(sides) == 1 and 0 not in sides:
            add(2, rules.same_side)
    if 3 in on and (w := window(rules.trend)) is not None and len(w) >= 2:
        steps = [b - a for a, b in itertools.pairwise(w)]
        if all(s > 0 for s in steps) or all(s < 0 for s in steps):
            add(3, rules.trend)
    if 4 in on and (w := window(rules.alternating)) is not None and len(w) >= 3:
        steps = [_side(b - a) for a, b in itertools.pairwise(w)]
        if 0 not in steps and all(a == -b for a, b in itertools.pairwise(steps)):
            add(4, rules.alternating)
    for rule, (m, k), bound in ((5, rules.zone_a, 2.0), (6, rules.zone_b, 1.0)):
        if rule in on and (w := window(k)) is not None:
            side = _side(z[i])
            beyond = sum(1 for v in w if _side(v) == side and abs(v) > bound)
            if side != 0 and abs(z[i]) > bound and beyond >= m:
                add(rule, k)
    w = window(rules.stratification)
    if 7 in on and w is not None and all(abs(v) < 1.0 for v in w):
        add(7, rules.stratification)
    w = window(rules.mixture)
    if 8 in on and w is not None and all(abs(v) > 1.0 for v in w):  # either side (Minitab 8)
        add(8, rules.mixture)
    return out


def evaluate(points: Sequence[float], center: float, sigma: float,
             rules: RuleSet) -> list[Violation]:
    """Every violation over a whole series, in point order (each at the point completing it)."""
    out: list[Violation] = []
    for i in range(len(points)):
        out += rules_at(points, center, sigma, rules, i)
    return out
