"""The SPC history window (issue 12, memory): a characteristic keeps its last
``spc_history_subgroups`` subgroups whole and sums the older ones of the phase exactly.

What must hold: the window holds (memory and snapshot stay bounded over any phase); run
rule verdicts, frozen limits and capability are the same as with the whole history kept
(identical while the phase fits in the window, the same figures to the last few digits
and the same verdicts beyond it); the summed history survives the snapshot.
"""

from __future__ import annotations

import dataclasses
import json
import random
from decimal import Decimal as D
from typing import Any

import pytest

from collector import spc
from collector.domain import Characteristic, Plan, SpcOptions
from collector.quality import CharSpc, capability_body, history_window
from collector.workflow import codec

UNBOUNDED = 10**9


def char(**spc_opts: Any) -> Characteristic:
    return Characteristic("C1", "hole", D("25.00"), D("24.95"), D("25.05"),
                          spc=SpcOptions(**spc_opts))


def stream(n_values: int, seed: int) -> list[float]:
    """Gauge-like values (3 decimals) with a shift, a trend and some out of tolerance,
    so that rules fire and capability is not trivial."""
    rng = random.Random(seed)
    out = []
    for i in range(n_values):
        drift = 0.02 if 600 <= i < 700 else (0.0001 * (i - 900) if 900 <= i < 1000 else 0.0)
        out.append(round(25.0 + drift + rng.gauss(0, 0.012), 3))
    return out


def run(c: Characteristic, n: int, values: list[float], keep: int
        ) -> tuple[CharSpc, list[tuple[Any, ...]]]:
    st = CharSpc.new(c, 1, n)
    verdicts = []
    for i, v in enumerate(values):
        sid, pos, done = st.add(c, f"r{i}", v, keep)
        if done is not None:
            verdicts.append((sid, pos, [(x["rule"], x["chart"], x["subgroups"])
                                        for x in done.violations],
                             done.limits_frozen))
    return st, verdicts


PLAN = Plan("BRK-100", "A", (char(),), subgroup_size=1)


def same_limits(a: spc.Limits, b: spc.Limits) -> None:
    for key, value in a.as_dict().items():
        if isinstance(value, str):
            assert b.as_dict()[key] == value
        else:
            assert b.as_dict()[key] == pytest.approx(value, rel=1e-12), key


def cap_close(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert a["verdict"] == b["verdict"]
    assert a["n"] == b["n"] and a["subgroups"] == b["subgroups"]
    for key in ("mean", "sigma_within", "sigma_overall", "cp", "cpk", "pp", "ppk", "cpm"):
        if a[key] is None:
            assert b[key] is None, key
        else:
            assert b[key] == pytest.approx(a[key], rel=1e-12, abs=1e-15), key
    assert a["ppm"]["observed"] == b["ppm"]["observed"]


@pytest.mark.parametrize("n,opts", [(1, {}), (1, {"individuals_sigma": "stdev"}),
                                    (5, {}), (10, {}), (5, {"baseline_subgroups": 25})])
def test_window_holds_and_verdicts_match_the_whole_history(n: int, opts: dict[str, Any]
                                                           ) -> None:
    c = char(**opts)
    values = stream(1500 if n == 1 else 300 * n, seed=n)
    keep = 30
    window = history_window(c, keep)
    full, full_verdicts = run(c, n, values, UNBOUNDED)
    bounded, verdicts = run(c, n, values, keep)
    total = len(values) // n
    assert len(bounded.groups) == window < total  # the window holds
    assert bounded.history.subgroups == total - window
    assert bounded.subgroup_count == full.subgroup_count == total
    assert bounded.value_count == len(full.values()) == total * n
    # every run-rule alarm and the frozen limits: the same, subgroup by subgroup
    assert verdicts == full_verdicts
    assert any(v[2] for v in verdicts), "the stream must break some rules"
    plan = dataclasses.replace(PLAN, subgroup_size=n)
    cap_close(capability_body(c, full, plan, "request"),
              capability_body(c, bounded, plan, "request"))


def test_within_the_window_every_figure_is_identical() -> None:
    c = char()
    values = stream(25 * 5, seed=7)  # 25 subgroups of 5, window 30: nothing summed
    full, full_verdicts = run(c, 5, values, UNBOUNDED)
    bounded, verdicts = run(c, 5, values, 30)
    assert bounded.history.subgroups == 0
    assert verdicts == full_verdicts
    plan = dataclasses.replace(PLAN, subgroup_size=5)
    assert capability_body(c, bounded, plan, "request") == \
        capability_body(c, full, plan, "request")


def test_limits_of_a_phase_without_spread_take_every_subgroup() -> None:
    """Limits not frozen yet (no spread in the baseline): when they come, they are the
    limits of every subgroup of the phase, summed ones included."""
    c = char(baseline_subgroups=20)
    flat = [25.0] * 200  # a coarse gauge: no spread, no limits
    values = flat + stream(50 * 5, seed=3)
    full, _ = run(c, 5, values, UNBOUNDED)
    bounded, _ = run(c, 5, values, 20)
    assert bounded.history.subgroups > 0
    assert full.limits is not None and bounded.limits is not None
    # the 40 flat subgroups and the first with spread
    assert full.limits.subgroups == bounded.limits.subgroups > 40
    same_limits(full.limits, bounded.limits)


@pytest.mark.parametrize("chart,n,sigma", [("i_mr", 1, "moving_range"),
                                           ("i_mr", 1, "stdev"), ("xbar_r", 4, "moving_range"),
                                           ("xbar_s", 12, "moving_range")])
def test_phase_limits_from_sums_equal_limits_from_values(chart: str, n: int, sigma: str
                                                         ) -> None:
    c = char(enabled=False, individuals_sigma=sigma)  # no freezing: raw bookkeeping
    values = stream(400 * n, seed=11)
    st, _ = run(c, n, values, 25)
    assert st.history.subgroups == 400 - 25
    groups = [values[i:i + n] for i in range(0, len(values), n)]
    expect = spc.limits_for(chart, groups, sigma)
    same_limits(expect, st._phase_limits(sigma))


def test_void_of_the_last_subgroup_after_trimming() -> None:
    c = char()
    values = stream(500, seed=5)
    full, _ = run(c, 1, values, UNBOUNDED)
    bounded, _ = run(c, 1, values, 30)
    assert full.void("r499") and bounded.void("r499")
    assert bounded.subgroup_count == full.subgroup_count == 499
    cap_close(capability_body(c, full, PLAN, "request"),
              capability_body(c, bounded, PLAN, "request"))


def test_summed_history_survives_the_snapshot_exactly() -> None:
    c = char()
    bounded, _ = run(c, 1, stream(800, seed=9), 30)
    raw = json.loads(json.dumps(codec.dump(bounded)))
    assert isinstance(raw["history"]["sum_xx"], str) and "/" in raw["history"]["sum_xx"]
    back = codec.load(CharSpc, raw)
    assert back == bounded
    assert capability_body(c, back, PLAN, "request") == \
        capability_body(c, bounded, PLAN, "request")
    raw["history"]["sum_x"] = "1/0"
    with pytest.raises(codec.BadSnapshot):
        codec.load(CharSpc, raw)


def test_an_old_snapshot_without_history_loads_and_is_trimmed() -> None:
    c = char()
    full, _ = run(c, 1, stream(400, seed=2), UNBOUNDED)
    raw = json.loads(json.dumps(codec.dump(full)))
    del raw["history"]  # a snapshot written before issue 12: every subgroup whole
    st = codec.load(CharSpc, raw)
    assert len(st.groups) == 400 and st.history.subgroups == 0
    st.add(c, "next", 25.001, 30)
    assert len(st.groups) == history_window(c, 30)
    assert st.subgroup_count == 401


def test_snapshot_size_stays_bounded_over_a_long_phase() -> None:
    c = char()
    st = CharSpc.new(c, 1, 1)
    sizes = []
    for i, v in enumerate(stream(20_000, seed=4)):
        st.add(c, f"p1/gauge/{i}", v, 100)
        if i in (1_000, 19_999):
            sizes.append(len(json.dumps(codec.dump(st))))
    assert len(st.groups) == 100
    assert sizes[1] < sizes[0] * 1.2  # the sums grow by digits, not by values


def test_the_window_never_goes_below_what_the_rules_and_baseline_need() -> None:
    assert history_window(char(), 2) == 20  # the default baseline
    assert history_window(char(baseline_subgroups=5, stratification=40), 2) == 40
    assert history_window(char(baseline_subgroups=5), 500) == 500
