"""Commands as an operator terminal sends them: the role topic and the issue time."""

from __future__ import annotations

import time

from collector import messages
from collector.quality import COMMANDS


def command_topic(root: str, press: str, name: str) -> str:
    """``{root}/{press}/cmd/{role}/{name}``; an unknown name goes to the production topic."""
    spec = COMMANDS.get(name)
    return f"{root}/{press}/cmd/{spec.cls if spec else 'production'}/{name}"


def issued(ts: float | None = None) -> str:
    return messages.iso_utc(time.time() if ts is None else ts)


def stamped(payload: dict, ts: float | None = None) -> dict:
    """The payload with ``issued_at`` (now, or ``ts``) unless it has one."""
    return {"issued_at": issued(ts), **payload}
