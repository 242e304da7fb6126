"""The workflow snapshot: one section per component, each the component's ``dump``.

Version 2 (issue 13)::

    {"version": 2, "press_id": "p1", "machine": {...}, "setup": {...},
     "counter": {...}, "first_article": {...}, "spc": {...}, "patrol": {...},
     "inspection_100": {...}, "last_piece": {...}, "operator_log": {...},
     "sign_off": {...}, "containment": {...}}

``sign_off`` and ``containment`` came with issue 14 (joint sign-off, containment); a
version 2 snapshot without them (and a version 1 one) loads them fresh: no containment
open, the setup counted as verified. A malformed ``sign_off`` while the press waits for
confirmations sends it back to ``awaiting_first_article`` (measured and confirmed again:
never released without them).

Inside a section the keys are the component's field names (``codec.Record``). Version 1
(one hand-written dict, until 2026-12-05) is still read (``collector/workflow/legacy.py``),
so a daemon restarted after the upgrade resumes its presses (tests/test_workflow_upgrade.py).

``load`` validates and reports whether the snapshot was usable; ``PressWorkflow.restore``
starts fresh (``offline``, no baseline: the first poll is a ``job_start``) when it was
not: unknown state, wrong press, unknown version or a malformed core section (machine,
setup, counter, first article). A malformed quality section (SPC phase, patrol, 100 %
inspection, last piece, operator log) gives fresh quality parts for the same press (a
new phase), as version 1 did with its quality block. An open first article whose plan
revision or characteristics no longer match the plans is emptied (same attempt number);
one whose part has no plan any more is dropped and the press waits for a first article.
Restored, the press continues exactly where it was: no setup is invented, and idle time
across the restart counts towards a long stop.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from collector.workflow import containment, legacy, sign_off
from collector.workflow.codec import BadSnapshot, want
from collector.workflow.commands import OperatorLog
from collector.workflow.counter import StrokeCounter
from collector.workflow.first_article import FirstArticle
from collector.workflow.inspection import Inspection100
from collector.workflow.kernel import (
    AWAITING_CONFIRMATION,
    AWAITING_FIRST_ARTICLE,
    FIRST_ARTICLE,
    OFFLINE,
    Machine,
)
from collector.workflow.last_piece import LastPiece
from collector.workflow.patrol import Patrol, SpcPhase
from collector.workflow.setup import SetupDetection

if TYPE_CHECKING:
    from collector.workflow.core import PressWorkflow

VERSION = 2
# what a malformed snapshot can raise on the way (Decimal('sNaN') == 1 raises
# InvalidOperation, an ArithmeticError)
MALFORMED = (BadSnapshot, TypeError, ValueError, KeyError, IndexError, AttributeError,
             ArithmeticError)
# section -> attribute of PressWorkflow; the core first, then the quality parts
CORE = (("machine", "machine"), ("setup", "setup"), ("counter", "counter"),
        ("first_article", "first_article"))
QUALITY = (("spc", "spc"), ("patrol", "patrol"), ("inspection_100", "inspection"),
           ("last_piece", "last_piece"), ("operator_log", "log"))


# sections added later (issue 14) without a new version: a snapshot without them loads
# them fresh (no containment open, the setup counted as verified)
ADDED = (("sign_off", "sign_off"), ("containment", "containment"))


def dump(wf: PressWorkflow) -> dict[str, Any]:
    out: dict[str, Any] = {"version": VERSION, "press_id": wf.press_id}
    for section, attr in (*CORE, *QUALITY, *ADDED):
        out[section] = getattr(wf, attr).dump()
    return out


def load(wf: PressWorkflow, snap: Any) -> bool:
    """Load ``snap`` into the fresh ``wf``; False when it is unusable (``wf`` is then
    half loaded and must be thrown away)."""
    try:
        want(isinstance(snap, Mapping), "not a mapping")
        if snap.get("version") == legacy.VERSION:
            snap = legacy.upgrade(snap)
        want(snap.get("version") == VERSION, "version")
        want(snap.get("press_id") == wf.press_id, "press_id")
        _load(wf, snap)
    except MALFORMED:
        return False
    return True


def _load(wf: PressWorkflow, snap: Mapping[str, Any]) -> None:
    machine = Machine.load(snap["machine"])
    wf.setup = SetupDetection.load(snap["setup"])
    wf.counter = StrokeCounter.load(snap["counter"])
    wf.machine = machine
    plan = wf.plan()
    wf.first_article = FirstArticle.load(snap["first_article"], plan, machine.effective)
    try:
        spc = SpcPhase.load(snap["spc"], plan)
        patrol = Patrol.load(snap["patrol"], plan)
        parts = (Inspection100.load(snap["inspection_100"]),
                 LastPiece.load(snap["last_piece"]), OperatorLog.load(snap["operator_log"]))
    except MALFORMED:  # quality state unusable: fresh quality parts, same press
        spc, patrol = SpcPhase.fresh(plan), Patrol()
        parts = (Inspection100(), LastPiece(), OperatorLog())
    wf.spc, wf.patrol = spc, patrol
    wf.inspection, wf.last_piece, wf.log = parts
    try:
        wf.containment = containment.load(snap.get("containment"))
    except MALFORMED:  # a quality part: fresh (no containment open)
        wf.containment = containment.Containment()
    try:
        wf.sign_off = sign_off.load(snap.get("sign_off"))
    except MALFORMED:
        wf.sign_off = sign_off.SignOff(verified=False)
    unconfirmed = machine.effective == AWAITING_CONFIRMATION and wf.sign_off.open is None
    if (machine.effective == FIRST_ARTICLE and plan is None) or unconfirmed:
        # measuring a first article whose part has no plan any more, or one waiting for
        # confirmations nobody can tell any more: wait for a (new) first article
        if machine.state == OFFLINE:
            machine.previous = AWAITING_FIRST_ARTICLE
        else:
            machine.state = AWAITING_FIRST_ARTICLE
    if machine.effective != AWAITING_CONFIRMATION:
        wf.sign_off.open = None
