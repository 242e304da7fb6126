"""First article: the verification since the last setup (attempts, unreleased strokes)
and the open attempt (results per characteristic and piece)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from collector.domain import Characteristic, Event, Plan
from collector.workflow import codec
from collector.workflow.codec import Record, want
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
class FirstArticle(Record):
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
        confirm = list(plan.first_article_confirm_roles) if verdict == "pass" else []
        if confirm:  # joint setup verification: released when every role confirmed
            wf.sign_off.begin(plan, fa.attempt, ts)
            change = wf.go(ts, "first_article_pass_to_confirm")
        else:
            change = wf.go(ts, "first_article_pass" if verdict == "pass"
                           else "first_article_fail")
        wf.patrol.position = -1
        if verdict == "pass" and not confirm:
            wf.production_released(ts)
        comparison = wf.last_piece.compare(wf, ts, plan, fa.attempt, results)
        body: dict[str, Any] = {
            "attempt": fa.attempt,
            "verdict": verdict,
            "results": results,
            "failed": list(dict.fromkeys(r["characteristic"] for r in results
                                         if r["verdict"] != "pass")),
            "unreleased_strokes": self.unreleased,
            "started_ts": fa.started_ts,
        }
        if confirm:
            body["confirm_roles"] = confirm
        events.append(wf.event("first_article", ts, body))
        events += comparison
        wf.append(events, change)
        return events

    def void(self, key: str) -> None:
        """repeat_measurement: take one value out of the open attempt."""
        if self.open is not None:
            self.open.results.pop(key, None)

    # ---- snapshot ----------------------------------------------------------------
    @classmethod
    def load(cls, raw: Any, plan: Plan | None = None, effective_state: str = ""
             ) -> FirstArticle:
        """The component as the plans are now: an open attempt only while measuring
        one (``effective_state``), emptied (same attempt number) when it no longer fits
        the plan. ``BadSnapshot`` for impossible counts."""
        want(isinstance(raw, Mapping), "first_article")
        self: FirstArticle = codec.load(cls, {k: v for k, v in raw.items() if k != "open"},
                                        "first_article")
        want(self.attempt >= 0 and self.unreleased >= 0, "counts")
        try:  # a malformed open attempt is measured again, like one that does not fit
            opened = codec.load(Attempt | None, raw.get("open"), "first_article.open")
        except (codec.BadSnapshot, TypeError, ValueError, KeyError):
            opened = None
        if effective_state == FIRST_ARTICLE:
            want(self.attempt >= 1, "attempt")
            if plan is not None:
                self.open = opened if opened is not None and _fits(
                    opened, plan, self.attempt) else Attempt(
                    self.attempt, 0.0, plan.part_number, plan.revision)
        return self


def _fits(fa: Attempt, plan: Plan, attempt: int) -> bool:
    """Does the open attempt still fit the plan (else it is measured again)?"""
    if (fa.attempt, fa.part_number, fa.plan_revision) != (
            attempt, plan.part_number, plan.revision):
        return False
    known = {piece_key(c.id, k) for c in plan.characteristics
             for k in range(1, plan.first_article_sample_size + 1)}
    if not set(fa.results) <= known or len(fa.results) >= len(known):
        return False
    return all(v.get("characteristic") == k.split("#")[0] for k, v in fa.results.items())
