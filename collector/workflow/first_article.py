"""First article: the verification since the last setup (attempts, unreleased strokes)
and the open attempt (results per characteristic and piece)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from collector.domain import Characteristic, Event, Plan
from collector.workflow.codec import opt_int, want
from collector.workflow.kernel import FIRST_ARTICLE
from collector.workflow.routing import piece_key, pieces

if TYPE_CHECKING:
    from collector.workflow.core import PressWorkflow


@dataclass(slots=True)
class Attempt:
    """An open first-article attempt: results by characteristic id (``id#k`` for the
    k-th piece when the plan asks for more than one)."""

    attempt: int
    started_ts: float
    part_number: str
    plan_revision: str
    results: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass(slots=True)
class FirstArticle:
    attempt: int = 0  # attempts since the last setup
    unreleased: int = 0  # strokes since the last setup while not released
    open: Attempt | None = None

    def restart(self) -> None:
        """A new setup: the count starts again, an open attempt is discarded."""
        self.open = None
        self.attempt = 0
        self.unreleased = 0

    def order(self, plan: Plan, in_first_article: bool) -> list[int]:
        """Characteristics still open, fewest pieces first, then plan order."""
        chars = plan.characteristics
        done = self.open.results if in_first_article and self.open is not None else {}
        size = plan.first_article_sample_size
        counts = {c.id: pieces(done, c.id) for c in chars}
        return sorted((i for i, c in enumerate(chars) if counts[c.id] < size),
                      key=lambda i: (counts[chars[i].id], i))

    def reading(self, wf: PressWorkflow, ts: float, plan: Plan, char: Characteristic,
                result: dict[str, Any]) -> list[Event]:
        """A value for the first article: starts attempt n+1 if none is open; the
        completing value emits the ``first_article`` event and passes or holds."""
        events: list[Event] = []
        if wf.state != FIRST_ARTICLE or self.open is None:
            self.attempt += 1
            self.open = Attempt(self.attempt, ts, plan.part_number, plan.revision)
            if wf.state != FIRST_ARTICLE:
                wf.append(events, wf.go(ts, "reading"))
        fa = self.open
        if not fa.results:
            fa.started_ts = ts  # also after a restore that had to empty the attempt
        size = plan.first_article_sample_size
        piece = pieces(fa.results, char.id) + 1
        key = piece_key(char.id, piece)
        if size > 1:
            result = {**result, "piece": piece}
        fa.results[key] = result
        wf.log.measured("first_article", char.id, result, key=key)
        if any(pieces(fa.results, c.id) < size for c in plan.characteristics):
            return events
        results = [fa.results[piece_key(c.id, k)] for k in range(1, size + 1)
                   for c in plan.characteristics]
        verdict = "pass" if all(r["verdict"] == "pass" for r in results) else "fail"
        self.open = None
        wf.log.last = None
        change = wf.go(ts, "first_article_pass" if verdict == "pass" else "first_article_fail")
        wf.patrol.position = -1
        if verdict == "pass":
            wf.patrol.restart_clock(wf.counter.count, ts)
        comparison = wf.last_piece.compare(wf, ts, plan, fa.attempt, results)
        events.append(wf.event("first_article", ts, {
            "attempt": fa.attempt,
            "verdict": verdict,
            "results": results,
            "failed": list(dict.fromkeys(r["characteristic"] for r in results
                                         if r["verdict"] != "pass")),
            "unreleased_strokes": self.unreleased,
            "started_ts": fa.started_ts,
        }))
        events += comparison
        wf.append(events, change)
        return events

    def void(self, key: str) -> None:
        """repeat_measurement: take one value out of the open attempt."""
        if self.open is not None:
            self.open.results.pop(key, None)

    # ---- snapshot ----------------------------------------------------------------
    def dump(self) -> dict[str, Any]:
        fa = self.open
        return {"attempt": self.attempt, "unreleased_strokes": self.unreleased,
                "first_article": None if fa is None else {
                    "attempt": fa.attempt, "started_ts": fa.started_ts,
                    "part_number": fa.part_number, "plan_revision": fa.plan_revision,
                    "results": {k: dict(v) for k, v in fa.results.items()}}}

    @classmethod
    def load(cls, raw: Mapping[str, Any], plan: Plan | None, effective_state: str
             ) -> tuple[FirstArticle, bool]:
        """The component and whether the press must wait for a first article instead
        (it was measuring one, and the part has no plan any more)."""
        attempt = opt_int(raw.get("attempt"), "attempt")
        unreleased = opt_int(raw.get("unreleased_strokes"), "unreleased_strokes")
        want(attempt is not None and attempt >= 0, "attempt")
        want(unreleased is not None and unreleased >= 0, "unreleased_strokes")
        assert attempt is not None and unreleased is not None
        self = cls(attempt, unreleased, None)
        if effective_state != FIRST_ARTICLE:
            return self, False
        want(attempt >= 1, "attempt")
        if plan is None:
            return self, True  # no plan any more: it cannot be completed
        self.open = _load_attempt(raw.get("first_article"), plan, attempt) or Attempt(
            attempt, 0.0, plan.part_number, plan.revision)  # changed plan: same attempt
        return self, False


def _load_attempt(raw: Any, plan: Plan, attempt: int) -> Attempt | None:
    """The open attempt, if it still fits the plan (else None: measured again)."""
    if not isinstance(raw, Mapping):
        return None
    if raw.get("attempt") != attempt or raw.get("plan_revision") != plan.revision:
        return None
    if raw.get("part_number") != plan.part_number:
        return None
    started = raw.get("started_ts")
    results = raw.get("results")
    if not isinstance(started, (int, float)) or isinstance(started, bool):
        return None
    if not isinstance(results, Mapping):
        return None
    known = {piece_key(c.id, k) for c in plan.characteristics
             for k in range(1, plan.first_article_sample_size + 1)}
    if not set(results) <= known or len(results) >= len(known):
        return None
    if not all(isinstance(v, Mapping) and v.get("characteristic") == k.split("#")[0]
               for k, v in results.items()):
        return None
    return Attempt(attempt, float(started), plan.part_number, plan.revision,
                   {k: dict(v) for k, v in results.items()})
