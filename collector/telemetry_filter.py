"""Which tag values of a poll are *published* (the buffer keeps every one regardless).

Per tag, from its ``[[plc.tags]]`` keys or the press's ``[telemetry]`` defaults:

- ``publish_every = N``: the tag is due on every Nth poll only (N x poll interval);
- ``on_change = true``: a due tag is published only when its value differs from the last
  value *published* for it (the first poll after start always publishes);
- ``deadband`` / ``deadband_pct`` (numbers): a due tag is published only when it moved by
  more than the deadband from the last published value; with both, the larger threshold
  applies (``deadband_pct`` is a percentage of the last published value's magnitude).
  A deadband implies ``on_change``.

The filter is built once per press and is only installed when some tag needs it, so the
default configuration pays nothing per poll.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

_MISSING = object()


@dataclass(frozen=True, slots=True)
class TagRule:
    every: int = 1
    on_change: bool = False
    deadband: float = 0.0
    deadband_pct: float = 0.0

    @property
    def trivial(self) -> bool:
        return self.every == 1 and not self.on_change


class TelemetryFilter:
    """``select(values)`` -> the values to publish (``values`` itself when all are)."""

    def __init__(self, rules: Mapping[str, TagRule], default: TagRule = TagRule()) -> None:
        self.rules = dict(rules)
        self.default = default
        self.polls = 0
        self.last: dict[str, Any] = {}

    @classmethod
    def from_config(cls, press: Any) -> TelemetryFilter | None:
        """From a ``PressConfig``; None when every tag publishes on every poll."""
        base_every = press.telemetry.publish_every
        base_change = press.telemetry.on_change
        rules: dict[str, TagRule] = {}
        for tag in press.plc.tags:
            # OPC UA tags have no per-tag publish keys (their deadband is the server's):
            # the press's [telemetry] defaults apply to them
            tag_every = getattr(tag, "publish_every", None)
            tag_change = getattr(tag, "on_change", None)
            deadband = getattr(tag, "deadband", 0.0)
            deadband_pct = getattr(tag, "deadband_pct", 0.0)
            every = tag_every or base_every
            change = (tag_change if tag_change is not None else base_change) \
                or deadband > 0 or deadband_pct > 0
            rules[tag.name] = TagRule(every, bool(change), deadband, deadband_pct)
        if all(r.trivial for r in rules.values()):
            return None
        return cls(rules, TagRule(base_every, base_change))

    def select(self, values: Mapping[str, Any]) -> Mapping[str, Any]:
        poll = self.polls
        self.polls += 1
        out: dict[str, Any] = {}
        dropped = False
        rules, default, last = self.rules, self.default, self.last
        for name, value in values.items():
            rule = rules.get(name, default)
            if poll % rule.every:
                dropped = True
                continue
            if rule.on_change:
                prev = last.get(name, _MISSING)
                if prev is not _MISSING and not _moved(prev, value, rule):
                    dropped = True
                    continue
                last[name] = value
            out[name] = value
        return out if dropped else values

    def names(self) -> Iterable[str]:
        return self.rules


def _moved(prev: Any, value: Any, rule: TagRule) -> bool:
    if (rule.deadband or rule.deadband_pct) and isinstance(value, int | float) \
            and isinstance(prev, int | float) and not isinstance(value, bool):
        threshold = max(rule.deadband, abs(prev) * rule.deadband_pct / 100.0)
        return abs(value - prev) > threshold
    return value != prev
