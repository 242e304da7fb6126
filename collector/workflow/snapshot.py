"""The workflow snapshot: every component's ``dump``, and ``load`` back.

``load`` validates and reports whether the snapshot was usable; ``PressWorkflow.restore``
starts fresh (``offline``, no baseline: the first poll is a ``job_start``) when it was
not: unknown state, wrong press, wrong version or a malformed field of the press's core
(machine, setup detection, stroke counter, first article). A malformed quality part
(SPC phase, patrol, 100 % inspection, last piece, operator log) gives fresh quality
parts for the same press (a new phase). An open first article whose plan revision or
characteristics no longer match the plans is emptied (same attempt number). Restored,
the press continues exactly where it was: no setup is invented, and idle time across the
restart counts towards a long stop.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from collector.workflow.codec import BadSnapshot, opt_int, want
from collector.workflow.commands import OperatorLog
from collector.workflow.counter import StrokeCounter
from collector.workflow.first_article import FirstArticle
from collector.workflow.inspection import Inspection100
from collector.workflow.kernel import AWAITING_FIRST_ARTICLE, OFFLINE, Machine
from collector.workflow.last_piece import LastPiece
from collector.workflow.patrol import Patrol, SpcPhase
from collector.workflow.setup import SetupDetection, load_open_setup
from collector.workflow.values import IDS

if TYPE_CHECKING:
    from collector.workflow.core import PressWorkflow

VERSION = 1
# what a malformed snapshot can raise on the way (Decimal('sNaN') == 1 raises
# InvalidOperation, an ArithmeticError)
MALFORMED = (BadSnapshot, TypeError, ValueError, KeyError, IndexError, AttributeError,
             ArithmeticError)
_TOP_SETUP = ("ids", "setup_mode", "repair")


def dump(wf: PressWorkflow) -> dict[str, Any]:
    setup = wf.setup.dump()
    patrol = wf.patrol.dump()
    return {
        "version": VERSION, "press_id": wf.press_id,
        **wf.machine.dump(), **{k: setup.pop(k) for k in _TOP_SETUP}, **wf.counter.dump(),
        **wf.first_article.dump(), "patrol_last": patrol.pop("patrol_last"),
        "quality": {**wf.spc.dump(), **patrol, **wf.inspection.dump(),
                    **wf.last_piece.dump(), **wf.log.dump(), **setup},
    }


def load(wf: PressWorkflow, snap: Any) -> bool:
    """Load ``snap`` into the fresh ``wf``; False when it is unusable (``wf`` is then
    in an undefined state and must be thrown away)."""
    try:
        _load(wf, snap)
    except MALFORMED:
        return False
    return True


def _load(wf: PressWorkflow, snap: Any) -> None:
    want(isinstance(snap, Mapping), "not a mapping")
    want(snap.get("version") == VERSION, "version")
    want(snap.get("press_id") == wf.press_id, "press_id")
    machine = Machine.load(snap)
    wf.setup = SetupDetection.load({k: snap.get(k) for k in _TOP_SETUP})
    wf.counter = StrokeCounter.load(snap)
    position = opt_int(snap.get("patrol_last"), "patrol_last")
    want(position is not None and position >= -1, "patrol_last")
    wf.machine = machine
    plan = wf.plan()
    fa, wait = FirstArticle.load(snap, plan, machine.effective)
    wf.first_article = fa
    try:
        _load_quality(wf, snap.get("quality"), position)
    except MALFORMED:
        # quality state unusable: fresh quality parts, same press
        wf.spc = SpcPhase.fresh(plan)
        wf.patrol = Patrol.load({"patrol_last": position, "patrol_base": None, "due": None,
                                 "due_seq": 0}, plan)
        wf.inspection, wf.last_piece, wf.log = Inspection100(), LastPiece(), OperatorLog()
        wf.setup.plc_ids, wf.setup.open = set(), None
    if wait:  # it was measuring a first article and the part has no plan any more
        if machine.state == OFFLINE:
            machine.previous = AWAITING_FIRST_ARTICLE
        else:
            machine.state = AWAITING_FIRST_ARTICLE


def _load_quality(wf: PressWorkflow, raw: Any, position: int | None) -> None:
    want(isinstance(raw, Mapping), "quality")
    plan = wf.plan()
    spc = SpcPhase.load(raw, plan)
    patrol = Patrol.load({**raw, "patrol_last": position}, plan)
    inspection = Inspection100.load(raw)
    last_piece = LastPiece.load(raw)
    log = OperatorLog.load(raw)
    plc_ids = {k for k in raw["plc_ids"] if k in IDS}
    opened = load_open_setup(raw.get("open_setup"))
    wf.spc, wf.patrol, wf.inspection, wf.last_piece, wf.log = (
        spc, patrol, inspection, last_piece, log)
    wf.setup.plc_ids, wf.setup.open = plc_ids, opened
