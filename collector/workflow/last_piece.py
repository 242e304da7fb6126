"""Last piece: ``start_last_piece`` routes the next readings (one per characteristic) to
the last piece of the run -> ``last_piece``, kept per die; when the next first article
on that die completes, ``last_piece_comparison`` reports both values."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from collector.domain import Characteristic, Event, Plan
from collector.workflow.codec import Record

if TYPE_CHECKING:
    from collector.workflow.core import PressWorkflow


@dataclass(slots=True)
class OpenLastPiece:
    started_ts: float
    results: dict[str, dict[str, Any]] = field(default_factory=dict)  # by characteristic


@dataclass(slots=True)
class StoredLastPiece:
    ts: float
    part_number: str
    plan_revision: str
    values: dict[str, str]  # by characteristic
    reading_ids: dict[str, str | None]


@dataclass(slots=True)
class LastPiece(Record):
    open: OpenLastPiece | None = None
    stored: dict[str, StoredLastPiece] = field(default_factory=dict)  # by die id
    compare_die: str | None = None  # die whose last piece the next first article compares

    def order(self, plan: Plan) -> list[int]:
        assert self.open is not None
        return [i for i, c in enumerate(plan.characteristics) if c.id not in self.open.results]

    def reading(self, wf: PressWorkflow, ts: float, plan: Plan, char: Characteristic,
                result: dict[str, Any]) -> list[Event]:
        lp = self.open
        assert lp is not None
        lp.results[char.id] = result
        wf.log.measured("last_piece", char.id, result)
        if any(c.id not in lp.results for c in plan.characteristics):
            return []
        self.open = None
        wf.log.last = None
        results = [lp.results[c.id] for c in plan.characteristics]
        die = wf.setup.ids["die_id"]
        body = {"die_id": die, "part_number": plan.part_number,
                "plan_revision": plan.revision, "started_ts": lp.started_ts,
                "results": results, "stored": die is not None,
                "reading_ids": [r["reading_id"] for r in results]}
        if die is not None:
            self.stored[die] = StoredLastPiece(
                ts, plan.part_number, plan.revision,
                {r["characteristic"]: r["value"] for r in results},
                {r["characteristic"]: r["reading_id"] for r in results})
        return [wf.event("last_piece", ts, body)]

    def compare(self, wf: PressWorkflow, ts: float, plan: Plan, attempt: int,
                results: list[dict[str, Any]]) -> list[Event]:
        die, self.compare_die = self.compare_die, None
        stored = self.stored.get(die) if die is not None else None
        if stored is None or stored.part_number != plan.part_number:
            return []
        items = []
        for r in results:
            cid = r["characteristic"]
            if r.get("piece", 1) != 1 or cid not in stored.values:
                continue
            last = Decimal(stored.values[cid])
            items.append({"characteristic": cid, "last_value": stored.values[cid],
                          "first_value": r["value"],
                          "difference": str(Decimal(r["value"]) - last),
                          "last_reading_id": stored.reading_ids.get(cid),
                          "first_reading_id": r["reading_id"]})
        return [wf.event("last_piece_comparison", ts, {
            "die_id": die, "attempt": attempt, "last_piece_ts": stored.ts,
            "last_piece_plan_revision": stored.plan_revision, "items": items})]

    def void(self, char_id: str) -> None:
        if self.open is not None:
            self.open.results.pop(char_id, None)
