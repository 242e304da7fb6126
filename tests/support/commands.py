"""Commands as an operator terminal sends them: the role topic and the issue time."""

from __future__ import annotations

import time

from collector import messages
from collector.quality import COMMANDS


def command_topic(root: str, press: str, name: str, role: str | None = None) -> str:
    """``{root}/{press}/cmd/{role}/{name}``; an unknown name goes to the production topic;
    ``role`` for a command several roles send (confirm_first_article)."""
    spec = COMMANDS.get(name)
    return f"{root}/{press}/cmd/{role or (spec.cls if spec else 'production')}/{name}"


def issued(ts: float | None = None) -> str:
    return messages.iso_utc(time.time() if ts is None else ts)


def stamped(payload: dict, ts: float | None = None) -> dict:
    """The payload with ``issued_at`` (now, or ``ts``) unless it has one."""
    return {"issued_at": issued(ts), **payload}
