"""A daemon restarted after an upgrade resumes its presses from the old snapshots.

``tests/fixtures/workflow_v1.json`` was produced by the workflow of 2026-12-05 (one
module, snapshot version 1; generator: ``tests/support/workflow_story.py``): snapshots
taken after chosen steps of a long story, each with the events the old code emitted for
the steps that followed. Today's workflow restored from each old snapshot must emit
exactly those events, and must end where a workflow that ran the whole story ends.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from collector.workflow import PressWorkflow
from tests.support.workflow_story import HORIZON, PLANS, SETTINGS, as_json, feed

FIXTURE = json.loads((Path(__file__).parent / "fixtures" / "workflow_v1.json").read_text())
POINTS = FIXTURE["points"]


# What issue 14 added to the events of the old story, and asks of its old steps:
# suspect ranges in failing measurements and holding alarms and in the context while a
# containment is open, the joint sign-off round in the context, and the disposition a
# release after a containment hold must carry (given here as "every part sorted good").
ISSUE14_FIELDS = ("sorted_good", "reworked", "scrapped", "note")
ISSUE14_EFFECT = ("containment", "disposition")


def feed14(wf: PressWorkflow, step: list[Any]) -> list[Any]:
    """A step of the old story as a terminal sends it today."""
    if step[0] == "cmd" and step[2] == "release":
        view = wf.containment.view(wf)
        if view is not None:
            step = [*step[:3], {**step[3], "sorted_good": str(view["parts"] or 0),
                                "reworked": "0", "scrapped": "0"}]
    return feed(wf, step)


def old_shape(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Events without what issue 14 added (JSON events, changed in place)."""
    for e in events:
        e["body"].pop("containment", None)
        e["context"].pop("containment", None)
        e["context"].pop("confirmations", None)
        effect = e["body"].get("effect") if e["kind"] in ("command", "_cmd_result") else None
        for key in ISSUE14_EFFECT if isinstance(effect, dict) else ():
            effect.pop(key, None)
        if e["kind"] == "command":
            for key in ISSUE14_FIELDS:
                e["body"]["fields"].pop(key, None)
    return events


def _plans_at(step: int) -> str:
    """The plan set in force after ``step`` (the story swaps them once)."""
    key = "A"
    for s in FIXTURE["steps"][:step + 1]:
        if s[0] == "plans":
            key = s[2]
    return key


@pytest.mark.parametrize("point", POINTS, ids=[f"after-{p['after_step']}" for p in POINTS])
def test_old_snapshot_resumes_with_the_old_events(point: dict[str, Any]) -> None:
    assert point["snapshot"]["version"] == 1  # pinned: the format of 2026-12-05
    i = point["after_step"]
    # as the daemon reads it: a fresh JSON value from the buffer
    wf = PressWorkflow.restore("p1", SETTINGS, PLANS[point["plans"]],
                               copy.deepcopy(point["snapshot"]))
    emitted = []
    for step in FIXTURE["steps"][i + 1:i + 1 + HORIZON]:
        emitted += feed14(wf, step)
    assert old_shape(as_json(emitted)) == point["events"]


def test_every_old_snapshot_restores_to_the_running_twin() -> None:
    """Restored from an old snapshot, the workflow's own snapshot equals the one of a
    workflow that ran the story up to the same step with today's code."""
    wf = PressWorkflow("p1", SETTINGS, PLANS["A"])
    points = {p["after_step"]: p for p in POINTS}
    for i, step in enumerate(FIXTURE["steps"]):
        feed14(wf, step)
        if i in points:
            old = points[i]
            restored = PressWorkflow.restore("p1", SETTINGS, PLANS[_plans_at(i)],
                                             copy.deepcopy(old["snapshot"]))
            # version 1 knew no containment and no sign-off: those start fresh
            assert _old_context(restored) == _old_context(wf), i
            assert restored.containment.open is None and restored.sign_off.open is None
            ours = json.loads(json.dumps(wf.snapshot()))
            theirs = restored.snapshot()
            for section in ("containment", "sign_off"):
                ours.pop(section), theirs.pop(section)
            assert theirs == ours, i


def _old_context(wf: PressWorkflow) -> dict[str, Any]:
    return {k: v for k, v in wf.context().items() if k not in ("containment",
                                                                "confirmations")}


@pytest.mark.parametrize("mutate", [
    lambda s: s.update(state="running"),
    lambda s: s.update(press_id="p2"),
    lambda s: s.update(attempt=-1),
    lambda s: s.update(unreleased_strokes="3"),
    lambda s: s.update(ids=None),
    lambda s: s.update(baselined="yes"),
    lambda s: s.update(state="offline", previous_state=None),
    lambda s: s.update(counter_suspect=[1]),
    lambda s: s.clear(),
])
def test_bad_old_snapshot_starts_fresh(mutate: Any) -> None:
    """A malformed version 1 snapshot starts fresh, as it did before the upgrade."""
    point = next(p for p in POINTS if p["snapshot"]["state"] == "released")
    snap = copy.deepcopy(point["snapshot"])
    mutate(snap)
    wf = PressWorkflow.restore("p1", SETTINGS, PLANS[point["plans"]], snap)
    assert wf.state == "offline"
    assert wf.context()["part_number"] is None


def test_bad_old_quality_block_keeps_the_press() -> None:
    """Version 1's quality block was all or nothing: malformed, the press keeps its state
    and gets fresh quality parts (a new phase 1 for its plan)."""
    point = next(p for p in POINTS if p["snapshot"]["state"] == "released")
    snap = copy.deepcopy(point["snapshot"])
    snap["quality"]["due_seq"] = "x"
    wf = PressWorkflow.restore("p1", SETTINGS, PLANS[point["plans"]], snap)
    assert wf.state == "released"
    assert wf.context()["die_id"] == snap["ids"]["die_id"]
    fresh = wf.snapshot()
    assert fresh["spc"]["phase"] == 1 and fresh["patrol"]["due"] is None
    assert all(c["groups"] == [] for c in fresh["spc"]["chars"].values())
