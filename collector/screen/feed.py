"""What the line-side screen remembers of one press's recent events. Pure, bounded.

The workflow keeps what it needs to decide (the open first article, the SPC state of
the current phase, the due check); a screen also needs what happened *before* that: the
values of earlier phases on the chart, the die change between them, the alarms and who
acknowledged them, the last first-article verdict, when the press was last released.
``PressFeed`` keeps exactly that, fed with every event the press emits (with its
outbox ``seq``, so an alarm has the reference subscribers see: ``{press}/events/{seq}``),
and nothing more: every collection is bounded, so a press running for months costs the
same few kilobytes as one started an hour ago.

It is fed from ``PressRuntime`` (``observers``) and, at start-up, from the tail of the
press's event stream in the buffer (``collector.screen.history``), so the chart and the
alarms survive a restart of the daemon.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any

POINTS_KEPT = 60  # plotted subgroups per characteristic (about one shift of patrol checks)
VALUES_KEPT = 25  # single values per characteristic (last values, voids)
ANNOTATIONS_KEPT = 30
ALARMS_KEPT = 30
ACK_COMMAND = "acknowledge_alarm"


def alarm_ref(press: str, seq: int) -> str:
    """The reference of an alarm: its press, stream and seq, as in its envelope."""
    return f"{press}/events/{seq}"


@dataclass(slots=True)
class Point:
    """One plotted subgroup of one characteristic (a value for an individuals chart)."""

    sid: str
    phase: int
    size: int
    ts: float
    values: dict[str, float] = field(default_factory=dict)  # by reading id
    rules: list[int] = field(default_factory=list)  # rule numbers that marked this point
    signal: bool = False  # the point a rule fired on (the last of its window)

    @property
    def complete(self) -> bool:
        return len(self.values) >= self.size

    def stat(self) -> float | None:
        """The plotted statistic: the value (n = 1) or the subgroup mean (X-bar)."""
        if not self.values:
            return None
        return sum(self.values.values()) / len(self.values)


@dataclass(slots=True)
class CharFeed:
    points: OrderedDict[str, Point] = field(default_factory=OrderedDict)
    values: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=VALUES_KEPT))
    limits: dict[int, dict[str, Any]] = field(default_factory=dict)  # by phase


@dataclass
class PressFeed:
    """The recent history of one press, built from its events (see module doc)."""

    press: str
    chars: dict[str, CharFeed] = field(default_factory=dict)
    annotations: deque[dict[str, Any]] = field(
        default_factory=lambda: deque(maxlen=ANNOTATIONS_KEPT))
    alarms: OrderedDict[str, dict[str, Any]] = field(default_factory=OrderedDict)
    first_article: dict[str, Any] | None = None  # the last first_article event
    released: dict[str, Any] | None = None  # the last release: ts, stroke_count, cause
    hold: dict[str, Any] | None = None  # the last move to hold: ts, cause, from
    unassigned: dict[str, Any] | None = None  # the last reading nothing took
    last_command: dict[str, Any] | None = None
    last_piece: dict[str, Any] | None = None
    seq: int = 0  # the last event seen
    version: int = 0  # bumped by every event: the server's "something changed"

    # -- input ------------------------------------------------------------------------
    def add(self, seq: int, kind: str, ts: float, body: dict[str, Any],
            context: dict[str, Any]) -> None:
        """One event of this press, in seq order (a replayed older seq is ignored)."""
        if seq and seq <= self.seq:
            return
        self.seq = seq or self.seq
        self.version += 1
        handler = _HANDLERS.get(kind)
        if handler is not None:
            handler(self, seq, ts, body, context)

    def char(self, char_id: str) -> CharFeed:
        feed = self.chars.get(char_id)
        if feed is None:
            feed = self.chars[char_id] = CharFeed()
        return feed

    # -- handlers (one per event kind the screen shows) --------------------------------
    def _measurement(self, seq: int, ts: float, body: dict[str, Any],
                     context: dict[str, Any]) -> None:
        char_id = body.get("characteristic")
        if not isinstance(char_id, str):
            return
        feed = self.char(char_id)
        feed.values.append({
            "seq": seq, "ts": ts, "value": body.get("value"), "verdict": body.get("verdict"),
            "deviation": body.get("deviation"), "unit": body.get("unit"),
            "nominal": body.get("nominal"), "lsl": body.get("lsl"), "usl": body.get("usl"),
            "reading_id": body.get("reading_id"), "purpose": body.get("purpose"),
            "phase": body.get("phase"), "voided": False})
        subgroup = body.get("subgroup")
        number = _number(body.get("value"))
        if not isinstance(subgroup, dict) or number is None:
            return
        sid = str(subgroup.get("id"))
        point = feed.points.get(sid)
        if point is None:
            point = Point(sid, int(body.get("phase") or context.get("phase") or 0),
                          int(subgroup.get("size") or 1), ts)
            feed.points[sid] = point
            while len(feed.points) > POINTS_KEPT:
                feed.points.popitem(last=False)
        point.values[str(body.get("reading_id") or seq)] = number
        point.ts = ts
        self._trim_limits(feed)

    def _control_limits(self, seq: int, ts: float, body: dict[str, Any],
                        context: dict[str, Any]) -> None:
        char_id, limits = body.get("characteristic"), body.get("limits")
        if isinstance(char_id, str) and isinstance(limits, dict):
            feed = self.char(char_id)
            feed.limits[int(body.get("phase") or 0)] = dict(limits)
            self._trim_limits(feed)

    @staticmethod
    def _trim_limits(feed: CharFeed) -> None:
        phases = {p.phase for p in feed.points.values()}
        newest = max(feed.limits, default=None)
        for phase in [p for p in feed.limits if p not in phases and p != newest]:
            del feed.limits[phase]

    def _alarm(self, seq: int, ts: float, body: dict[str, Any],
               context: dict[str, Any]) -> None:
        ref = alarm_ref(self.press, seq)
        evidence = body.get("evidence") if isinstance(body.get("evidence"), dict) else {}
        rules = [r for r in evidence.get("rules", []) if isinstance(r, dict)]
        self.alarms[ref] = {
            "ref": ref, "seq": seq, "ts": ts, "cause": body.get("cause"),
            "characteristic": body.get("characteristic"), "name": body.get("name"),
            "actions": list(body.get("actions") or []),
            "phase": body.get("phase", context.get("phase")),
            "rules": [{"rule": r.get("rule"), "name": r.get("name")} for r in rules],
            "value": evidence.get("value"), "unit": evidence.get("unit"),
            "lsl": evidence.get("lsl"), "usl": evidence.get("usl"),
            "cpk": evidence.get("cpk"), "unmeasured_pieces": evidence.get("unmeasured_pieces"),
            "acknowledged": None}
        while len(self.alarms) > ALARMS_KEPT:
            self.alarms.popitem(last=False)
        char_id = body.get("characteristic")
        if body.get("cause") == "rule" and isinstance(char_id, str):
            feed = self.char(char_id)
            for rule in rules:
                window = [s for s in rule.get("subgroups", []) if s in feed.points]
                for sid in window:
                    if rule.get("rule") not in feed.points[sid].rules:
                        feed.points[sid].rules.append(rule.get("rule"))
                if window:
                    feed.points[window[-1]].signal = True

    def _annotation(self, seq: int, ts: float, body: dict[str, Any],
                    context: dict[str, Any]) -> None:
        self.annotations.append({"seq": seq, "ts": ts, "type": body.get("type"),
                                 "phase": body.get("phase", context.get("phase")),
                                 "amended": bool(body.get("amended"))})

    def _first_article(self, seq: int, ts: float, body: dict[str, Any],
                       context: dict[str, Any]) -> None:
        self.first_article = {"seq": seq, "ts": ts, "attempt": body.get("attempt"),
                              "verdict": body.get("verdict"),
                              "results": list(body.get("results") or []),
                              "failed": list(body.get("failed") or []),
                              "phase": context.get("phase")}

    def _state_change(self, seq: int, ts: float, body: dict[str, Any],
                      context: dict[str, Any]) -> None:
        to, source = body.get("to"), body.get("from")
        if to == "released" and source not in ("stopped", "offline"):
            self.released = {"ts": ts, "stroke_count": context.get("stroke_count"),
                             "cause": body.get("cause")}
        elif to == "hold" and source != "offline":
            self.hold = {"ts": ts, "cause": body.get("cause"), "from": source,
                         "stroke_count": context.get("stroke_count"),
                         "operator": context.get("operator")}
        if to in ("setup", "awaiting_first_article") and source not in ("offline", None):
            self.released = None

    def _command(self, seq: int, ts: float, body: dict[str, Any],
                 context: dict[str, Any]) -> None:
        name = body.get("command")
        effect = body.get("effect") if isinstance(body.get("effect"), dict) else {}
        fields = body.get("fields") if isinstance(body.get("fields"), dict) else {}
        self.last_command = {"ts": ts, "command": name, "operator": body.get("operator"),
                             "fields": dict(fields)}
        if name == ACK_COMMAND:
            alarm = self.alarms.get(str(effect.get("alarm")))
            if alarm is not None and alarm["acknowledged"] is None:
                alarm["acknowledged"] = {"operator": body.get("operator"), "ts": ts,
                                         "note": fields.get("note")}
        elif name == "repeat_measurement":
            voided = effect.get("voided") if isinstance(effect.get("voided"), dict) else {}
            self._void(voided)
        elif name == "hold" and self.hold is not None:
            self.hold["why"] = fields.get("why")

    def _void(self, voided: dict[str, Any]) -> None:
        char_id, rid = voided.get("characteristic"), voided.get("reading_id")
        feed = self.chars.get(str(char_id))
        if feed is None or rid is None:
            return
        for value in feed.values:
            if value["reading_id"] == rid:
                value["voided"] = True
        for sid, point in list(feed.points.items()):
            if point.values.pop(str(rid), None) is not None and not point.values:
                del feed.points[sid]

    def _unassigned(self, seq: int, ts: float, body: dict[str, Any],
                    context: dict[str, Any]) -> None:
        self.unassigned = {"ts": ts, "gauge": body.get("gauge"), "value": body.get("value"),
                           "unit": body.get("unit"), "reason": body.get("reason"),
                           "detail": body.get("detail")}

    def _last_piece(self, seq: int, ts: float, body: dict[str, Any],
                    context: dict[str, Any]) -> None:
        self.last_piece = {"ts": ts, "die_id": body.get("die_id")}

    def _setup(self, seq: int, ts: float, body: dict[str, Any],
               context: dict[str, Any]) -> None:
        self.unassigned = None  # a new setup: an old "not taken" notice is stale


def _number(text: Any) -> float | None:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if value == value and value not in (float("inf"), float("-inf")) else None


_HANDLERS = {
    "measurement": PressFeed._measurement,
    "control_limits": PressFeed._control_limits,
    "alarm": PressFeed._alarm,
    "annotation": PressFeed._annotation,
    "first_article": PressFeed._first_article,
    "state_change": PressFeed._state_change,
    "command": PressFeed._command,
    "unassigned_reading": PressFeed._unassigned,
    "last_piece": PressFeed._last_piece,
    "setup": PressFeed._setup,
}
