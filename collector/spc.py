"""Statistical process control, pure: chart constants, control limits, capability, run rules.

No I/O and no state: the workflow keeps the per-characteristic history and calls these
functions on it. Floats are fine here (statistics, not verdicts: a tolerance verdict is
judged exactly in ``collector.tolerance``).

Formulas (AIAG SPC manual, 2nd ed.; Montgomery, *Introduction to Statistical Quality
Control*, ch. 6; see docs/quality.md):

- X-bar/R: centre X̿, limits X̿ ± A2·R̄; range chart R̄ with [D3·R̄, D4·R̄]; σw = R̄/d2.
- X-bar/s: centre X̿, limits X̿ ± A3·s̄; s chart s̄ with [B3·s̄, B4·s̄]; σw = s̄/c4.
- I-MR: centre X̄, limits X̄ ± 3σw; MR chart [0, D4(2)·MR̄]; σw = MR̄/1.128 or s/c4(N).
- Cp = (USL-LSL)/6σw, Cpk = min(CPU, CPL), CPU = (USL-x̄)/3σw, CPL = (x̄-LSL)/3σw;
  Pp/Ppk the same with σ overall (sample standard deviation, n-1). One-sided tolerance:
  only CPU or CPL (PPU/PPL); Cp and Pp are undefined (None).
- Cpm about the target (the nominal); parts per million out of specification, observed
  and expected (normal, σ within / overall).
- Nelson's eight run rules on the plotted statistic (zones at 1, 2, 3 σ of that statistic),
  each switchable and with configurable run lengths (rule 8 with points on both sides,
  or the one-sided reading as an option); Western Electric = rules 1, 5, 6 and "eight in
  a row on one side" (Nelson 2 with run length 8).
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

# --------------------------------------------------------------------------------------
# Constants, n = 2..25 (the range of the AIAG tables). The choice (docs/quality.md):
# - d2 as the standard tables print it, three decimals (AIAG SPC manual, ASTM E2587,
#   Montgomery App. VI, R's qcc): σ = R̄/d2 and MR̄/1.128 then agree digit for digit with
#   those references' worked examples;
# - d3 exact (the normal range's standard deviation, numerical integral, 7 digits:
#   ``d3_exact``); c4 exact (closed form);
# - every derived factor computed from those, never rounded: A2 = 3/(d2·√n),
#   D3/D4 = max(0, 1 ∓ 3·d3/d2), A3 = 3/(c4·√n), B3/B4 = max(0, 1 ∓ 3·√(1-c4²)/c4).
#   The tables' three-decimal A2 = 0.577 and D4 = 2.114 (n = 5) are why the piston-ring
#   limits once came out 73.98804 and 0.04811 instead of 73.98805 and 0.04813.
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


# n, d2 (tables, 3 decimals), d3 (exact, 7 digits)
_TABLE = """
2 1.128 0.8525025
3 1.693 0.8883680
4 2.059 0.8798082
5 2.326 0.8640819
6 2.534 0.8480397
7 2.704 0.8332053
8 2.847 0.8198315
9 2.970 0.8078343
10 3.078 0.7970507
11 3.173 0.7873146
12 3.258 0.7784783
13 3.336 0.7704162
14 3.407 0.7630231
15 3.472 0.7562114
16 3.532 0.7499081
17 3.588 0.7440518
18 3.640 0.7385909
19 3.689 0.7334815
20 3.735 0.7286863
21 3.778 0.7241733
22 3.819 0.7199148
23 3.858 0.7158867
24 3.895 0.7120682
25 3.931 0.7084408
"""

MIN_N, MAX_N = 2, 25


def c4(n: int) -> float:
    """c4 = sqrt(2/(n-1)) · Γ(n/2) / Γ((n-1)/2): E[s] = c4·σ for normal samples of size n."""
    if n < 2:
        raise ValueError("c4 needs n >= 2")
    return math.sqrt(2.0 / (n - 1)) * math.exp(math.lgamma(n / 2) - math.lgamma((n - 1) / 2))


def _derive(n: int, d2: float, d3: float) -> Constants:
    k4 = c4(n)
    s_ratio = 3.0 * math.sqrt(1.0 - k4 * k4) / k4
    return Constants(n=n, A2=3.0 / (d2 * math.sqrt(n)), A3=3.0 / (k4 * math.sqrt(n)), d2=d2,
                     d3=d3, c4=k4, D3=max(0.0, 1.0 - 3.0 * d3 / d2), D4=1.0 + 3.0 * d3 / d2,
                     B3=max(0.0, 1.0 - s_ratio), B4=1.0 + s_ratio)


CONSTANTS: dict[int, Constants] = {}
for _line in _TABLE.strip().splitlines():
    _n, _d2, _d3 = _line.split()
    CONSTANTS[int(_n)] = _derive(int(_n), float(_d2), float(_d3))


def constants(n: int) -> Constants:
    if n not in CONSTANTS:
        raise ValueError(f"subgroup size {n} is outside the constants table ({MIN_N}..{MAX_N})")
    return CONSTANTS[n]


def _phi_cdf(x: float) -> float:
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


def _simpson(f: Callable[[float], float], a: float, b: float, m: int) -> float:
    m += m % 2
    h = (b - a) / m
    total = f(a) + f(b) + sum(f(a + i * h) * (4 if i % 2 else 2) for i in range(1, m))
    return total * h / 3.0


def d2_exact(n: int) -> float:
    """E[R]/σ of a normal sample of size n: ∫ 1 - Φ(x)^n - (1-Φ(x))^n dx (Tippett)."""
    return _simpson(lambda x: 1.0 - _phi_cdf(x) ** n - (1.0 - _phi_cdf(x)) ** n,
                    -10.0, 10.0, 4000)


def d3_exact(n: int) -> float:
    """sd(R)/σ: E[R²] = ∫ 2w·P(R > w) dw with P(R ≤ w) = n∫ φ(x)(Φ(x+w)-Φ(x))^(n-1) dx.

    How the d3 column above was made (the tests recompute it); pure Python, no SciPy."""
    lim, m = 9.0, 600
    h = 2 * lim / m
    xs = [-lim + i * h for i in range(m + 1)]
    ws = [(1 if i in (0, m) else (4 if i % 2 else 2)) * h / 3 for i in range(m + 1)]
    dens = [w * math.exp(-0.5 * x * x) / math.sqrt(2 * math.pi) for w, x in zip(ws, xs,
                                                                                  strict=True)]
    cdf = [_phi_cdf(x) for x in xs]

    def below(w: float) -> float:
        return n * sum(d * (_phi_cdf(x + w) - c) ** (n - 1)
                       for d, x, c in zip(dens, xs, cdf, strict=True))

    second = _simpson(lambda w: 2.0 * w * (1.0 - below(w)), 0.0, 14.0, 1200)
    return math.sqrt(second - d2_exact(n) ** 2)


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
    xbb = statistics.fmean(statistics.fmean(g) for g in subgroups)
    rbar = statistics.fmean(max(g) - min(g) for g in subgroups)
    return xbar_r_from(n, xbb, rbar, len(subgroups))


def xbar_r_from(n: int, xbb: float, rbar: float, subgroups: int) -> Limits:
    """X-bar/R limits from X̿ and R̄ (the workflow's summarised history gives these)."""
    k = constants(n)
    return Limits("xbar_r", n, xbb, xbb + k.A2 * rbar, xbb - k.A2 * rbar,
                  rbar, k.D4 * rbar, k.D3 * rbar, rbar / k.d2, subgroups)


def xbar_s_limits(subgroups: Sequence[Sequence[float]]) -> Limits:
    n = _check_groups(subgroups)
    xbb = statistics.fmean(statistics.fmean(g) for g in subgroups)
    sbar = statistics.fmean(statistics.stdev(g) for g in subgroups)
    return xbar_s_from(n, xbb, sbar, len(subgroups))


def xbar_s_from(n: int, xbb: float, sbar: float, subgroups: int) -> Limits:
    """X-bar/s limits from X̿ and s̄."""
    k = constants(n)
    return Limits("xbar_s", n, xbb, xbb + k.A3 * sbar, xbb - k.A3 * sbar,
                  sbar, k.B4 * sbar, k.B3 * sbar, sbar / k.c4, subgroups)


INDIVIDUALS_SIGMA = ("moving_range", "stdev")


def imr_limits(values: Sequence[float], sigma: str = "moving_range") -> Limits:
    """I-MR limits. σ of the individuals from the average moving range, MR̄/d2(2)
    (default, robust against a drift), or ``sigma='stdev'``: s/c4(N) of the N values
    (qcc's ``std.dev = "SD"``). The MR chart is MR̄ with D4(2)·MR̄ either way."""
    if len(values) < 2:
        raise ValueError("I-MR limits need at least two values")
    if sigma not in INDIVIDUALS_SIGMA:
        raise ValueError(f"unknown sigma {sigma!r} (allowed: {', '.join(INDIVIDUALS_SIGMA)})")
    xbar = statistics.fmean(values)
    mrbar = statistics.fmean(abs(b - a) for a, b in itertools.pairwise(values))
    stdev = statistics.stdev(values) if sigma == "stdev" else None
    return imr_from(xbar, mrbar, stdev, len(values), sigma)


def imr_from(xbar: float, mrbar: float, stdev: float | None, count: int,
             sigma: str = "moving_range") -> Limits:
    """I-MR limits from X̄, MR̄ and (``sigma='stdev'``) the sample σ of the ``count`` values."""
    k = constants(2)
    if sigma == "moving_range":
        sd = mrbar / k.d2
    else:
        if stdev is None:
            raise ValueError("sigma='stdev' needs the values' standard deviation")
        sd = stdev / c4(count)
    return Limits("i_mr", 1, xbar, xbar + 3 * sd, xbar - 3 * sd,
                  mrbar, k.D4 * mrbar, 0.0, sd, count)


def limits_for(chart: str, subgroups: Sequence[Sequence[float]],
               individuals_sigma: str = "moving_range") -> Limits:
    """Limits of ``chart`` from complete subgroups (I-MR: the values, one per subgroup)."""
    if chart == "i_mr":
        return imr_limits([v for g in subgroups for v in g], individuals_sigma)
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
    """Capability of one characteristic's values. Indices are None where undefined (no
    σ, σ = 0, a one-sided tolerance for Cp/Pp, no target for Cpm); PPM figures are
    parts per million out of specification below LSL / above USL: ``observed`` counted,
    ``expected_*`` from the normal distribution with the mean and σ within / overall
    (a σ of 0 is the limit of the normal: everything on the mean's side)."""

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
    cpm: float | None = None
    target: float | None = None
    ppm: dict[str, dict[str, float | None]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
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


def cpm_of(mean: float, sigma: float, lsl: float | None, usl: float | None,
           target: float) -> float | None:
    """Cpm = min(USL-T, T-LSL) / 3τ with τ = √(σ² + (μ-T)²) (Chan, Cheng and Spiring;
    = (USL-LSL)/6τ for a centred target; one-sided: the side given). None when τ = 0
    or there is no limit."""
    tau = math.sqrt(sigma * sigma + (mean - target) ** 2)
    sides = [d for d in ((usl - target) if usl is not None else None,
                         (target - lsl) if lsl is not None else None) if d is not None]
    if tau <= 0 or not sides or not math.isfinite(tau):
        return None
    return min(sides) / (3 * tau)


def _normal_tail(z_limit: float, mean: float, sigma: float | None, below: bool
                 ) -> float | None:
    """Share of a normal(mean, sigma) below (or above) ``z_limit``; σ = 0: a point mass."""
    if sigma is None or not math.isfinite(sigma) or sigma < 0:
        return None
    if sigma == 0:
        if mean == z_limit:
            return 0.5
        return 1.0 if (mean < z_limit) == below else 0.0
    z = (z_limit - mean) / sigma
    return 0.5 * math.erfc(z / math.sqrt(2.0)) if not below else 0.5 * math.erfc(
        -z / math.sqrt(2.0))


def ppm_of(values: Sequence[float], mean: float, sigma_within: float | None,
           sigma_overall: float | None, lsl: float | None, usl: float | None
           ) -> dict[str, dict[str, float | None]]:
    """Parts per million out of specification: observed, expected within, expected
    overall; each {below, above, total} (below/above 0 for a missing limit)."""
    return ppm_from(len(values), sum(1 for v in values if lsl is not None and v < lsl),
                    sum(1 for v in values if usl is not None and v > usl), mean,
                    sigma_within, sigma_overall, lsl, usl)


def ppm_from(n: int, below: int, above: int, mean: float, sigma_within: float | None,
             sigma_overall: float | None, lsl: float | None, usl: float | None
             ) -> dict[str, dict[str, float | None]]:
    """``ppm_of`` from the counts of values below LSL / above USL out of ``n``."""
    def block(below: float | None, above: float | None) -> dict[str, float | None]:
        total = None if below is None or above is None else below + above
        return {"below": below, "above": above, "total": total}

    obs_below = below * 1e6 / n
    obs_above = above * 1e6 / n
    out = {"observed": block(obs_below, obs_above)}
    for name, sigma in (("expected_within", sigma_within), ("expected_overall", sigma_overall)):
        lo = 0.0 if lsl is None else _normal_tail(lsl, mean, sigma, below=True)
        hi = 0.0 if usl is None else _normal_tail(usl, mean, sigma, below=False)
        out[name] = block(None if lo is None else lo * 1e6, None if hi is None else hi * 1e6)
    return out


def capability(values: Sequence[float], sigma_within: float | None,
               lsl: float | None, usl: float | None, target: float | None = None
               ) -> Capability:
    """Cp/Cpk from ``sigma_within`` (R̄/d2, s̄/c4 or MR̄/d2), Pp/Ppk from the sample σ
    (n-1); Cpm about ``target`` (the plan's nominal) with τ² = Σ(x-T)²/(n-1) (the sample
    form of σ² + (μ-T)²); PPM out of specification."""
    if not values:
        raise ValueError("capability needs values")
    n = len(values)
    tau = None
    if target is not None and n >= 2:
        tau = math.sqrt(math.fsum((v - target) ** 2 for v in values) / (n - 1))
    moments = Moments(n, statistics.fmean(values),
                      statistics.stdev(values) if n >= 2 else None,
                      sum(1 for v in values if lsl is not None and v < lsl),
                      sum(1 for v in values if usl is not None and v > usl), tau)
    return capability_of(moments, sigma_within, lsl, usl, target)


@dataclass(frozen=True, slots=True)
class Moments:
    """What capability needs of the values: count, mean, sample σ (n-1; None below 2),
    values below LSL / above USL, and τ = √(Σ(x-T)²/(n-1)) about the target (None without
    one). The workflow's SPC history keeps only a window of subgroups and sums of the rest
    (collector/quality.py); from those sums it builds the same figures."""

    n: int
    mean: float
    stdev: float | None
    below: int
    above: int
    tau: float | None = None


def capability_of(m: Moments, sigma_within: float | None, lsl: float | None,
                  usl: float | None, target: float | None = None) -> Capability:
    """``capability`` from the values' moments."""
    if m.n < 1:
        raise ValueError("capability needs values")
    cp, cpk, cpu, cpl = _indices(m.mean, sigma_within, lsl, usl)
    pp, ppk, ppu, ppl = _indices(m.mean, m.stdev, lsl, usl)
    cpm = None
    if target is not None and m.tau is not None:
        cpm = cpm_of(target, m.tau, lsl, usl, target)  # τ already holds the offset
    return Capability(m.n, m.mean, sigma_within, m.stdev, cp, cpk, cpu, cpl,
                      pp, ppk, ppu, ppl, cpm, target,
                      ppm_from(m.n, m.below, m.above, m.mean, sigma_within, m.stdev, lsl,
                               usl))


def sigma_within_of(chart: str, subgroups: Sequence[Sequence[float]],
                    individuals_sigma: str = "moving_range") -> float | None:
    """σ within from complete subgroups (None when there are too few)."""
    try:
        return limits_for(chart, subgroups, individuals_sigma).sigma_within
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
    8: "mixture: all beyond 1 sigma (on both sides, as Nelson defines it)",
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
    # rule 8: 'both' = the run has points on both sides of the centre line (Nelson 1984,
    # the AIAG manual, qcc); 'any' = every point beyond 1σ, whatever the side (the
    # one-sided reading some software uses)
    mixture_sides: str = "both"

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
    if 8 in on and w is not None and all(abs(v) > 1.0 for v in w) and (
            rules.mixture_sides == "any" or {_side(v) for v in w} == {1, -1}):
        add(8, rules.mixture)
    return out


def evaluate(points: Sequence[float], center: float, sigma: float,
             rules: RuleSet) -> list[Violation]:
    """Every violation over a whole series, in point order (each at the point completing it)."""
    out: list[Violation] = []
    for i in range(len(points)):
        out += rules_at(points, center, sigma, rules, i)
    return out
