"""Joint setup verification: a passing first article confirmed by the plan's roles.

The shop's procedure has the setup verification record filled in jointly, typically by
production (the setter) and quality. A plan with ``[first_article] confirm_roles`` does
not release the press when its first article passes: the press waits in
``awaiting_confirmation`` (trigger ``first_article_pass_to_confirm``) and each required
role confirms with the ``confirm_first_article`` command, sent on that role's command
topic by an operator of that role's allow-list (the same gate, allow-lists and
signatures as every command). A different operator per role: one person cannot fill in
a joint record alone, even when the allow-lists name them for both roles. When the last
required role confirms, a ``sign_off`` event lists who confirmed and when, and the press
is released (trigger ``confirmed``).

``verified`` says whether the setup since the last setup trigger has been released by a
passing first article (and its sign-off): a quality ``release`` from ``hold`` before that
is refused under a plan with confirm roles, since it would release a setup nobody
verified jointly (after a first-article fail: measure again and confirm).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from collector.domain import COMMAND_CLASSES, Plan
from collector.workflow.codec import Record, want


@dataclass(slots=True)
class Confirmation:
    role: str
    operator: str
    ts: float
    request_id: str
    note: str | None = None

    def body(self) -> dict[str, Any]:
        return {"role": self.role, "operator": self.operator, "ts": self.ts,
                "request_id": self.request_id, "note": self.note}


@dataclass(slots=True)
class Round:
    """A passing first article waiting for its confirmations (the roles are the plan's
    when it passed: a plan reload does not change what is being confirmed)."""

    attempt: int
    judged_ts: float
    part_number: str
    plan_revision: str
    roles: list[str]
    received: list[Confirmation] = field(default_factory=list)

    def pending(self) -> list[str]:
        got = {c.role for c in self.received}
        return [r for r in self.roles if r not in got]


@dataclass(slots=True)
class SignOff(Record):
    open: Round | None = None
    # the setup since the last trigger was released through its first article (True for
    # snapshots from before the section existed: nothing to hold back there)
    verified: bool = True

    def restart(self) -> None:
        """A new setup: nothing verified, an open round discarded."""
        self.open = None
        self.verified = False

    def begin(self, plan: Plan, attempt: int, ts: float) -> None:
        self.open = Round(attempt, ts, plan.part_number, plan.revision,
                          list(plan.first_article_confirm_roles))

    def context(self) -> dict[str, Any] | None:
        """``context()["confirmations"]`` while a first article waits for them."""
        r = self.open
        if r is None:
            return None
        return {"attempt": r.attempt, "judged_ts": r.judged_ts, "required": list(r.roles),
                "received": [{"role": c.role, "operator": c.operator, "ts": c.ts}
                             for c in r.received],
                "pending": r.pending()}

    def validate(self) -> None:
        r = self.open
        if r is None:
            return
        want(bool(r.roles) and set(r.roles) <= set(COMMAND_CLASSES)
             and len(set(r.roles)) == len(r.roles), "sign_off.open.roles")
        roles = [c.role for c in r.received]
        want(set(roles) <= set(r.roles) and len(set(roles)) == len(roles)
             and len(r.received) < len(r.roles), "sign_off.open.received")
        want(r.attempt >= 1, "sign_off.open.attempt")


def load(raw: Any) -> SignOff:
    """The section, or a fresh one when the snapshot has none (before issue 14)."""
    if raw is None:
        return SignOff()
    want(isinstance(raw, Mapping), "sign_off")
    loaded: SignOff = SignOff.load(raw)
    return loaded


__all__ = ["Confirmation", "Round", "SignOff", "load"]
