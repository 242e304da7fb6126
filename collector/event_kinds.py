"""One registry of event kinds: name, typed body, who emits it, its stream and schema.

Every event a subscriber can get on ``{root}/{press}/events/{kind}`` (and the collector's
own alarms) is listed in ``KINDS`` with the ``TypedDict`` of its body (``data`` in the
envelope). The bodies stay plain dicts on the hot path (no object per event, the
encoder's key order unchanged, so the wire format is byte for byte what it was); the
types say what each body holds, and tests/test_event_kinds.py checks them both ways:
every type against its JSON Schema in ``collector/schemas`` (same keys; what the schema
requires, the type requires) and every event the workflow emits in the property tests
and the long story against its type (``problems``). Why check and not generate: the
schema files are the subscribers' contract, with descriptions, enums, patterns and
conditions a Python type does not carry; generating them would rewrite that contract
from code on every change, checking keeps both authoritative for their readers and fails
the suite when they drift (docs/DESIGN.md "How to add an event kind").
"""

# no "from __future__ import annotations" here: Python 3.11 reads NotRequired only
# from evaluated annotations (with strings every key of a TypedDict class is required)

import typing
from dataclasses import dataclass
from typing import Any, NotRequired, TypedDict

# ---- bodies --------------------------------------------------------------------------------

Ids = dict[str, str | None]  # die_id, part_number, material_lot, heat_number


class SetupBody(TypedDict):
    reasons: list[str]
    previous: Ids
    new: Ids
    previous_state: str
    state: str
    setup_mode: bool | None
    discarded_first_article: bool
    discarded_attempt: int | None
    previous_attempt: int
    previous_unreleased_strokes: int
    unreleased_strokes: int
    idle_s: float | None
    amended: bool
    added_reasons: list[str]
    command: NotRequired[str]  # the request id of the command that started it


class _Judged(TypedDict):
    """One value judged against its characteristic (first article, patrol, last piece)."""

    characteristic: str
    name: str
    char_class: str
    nominal: str | None
    lsl: str | None
    usl: str | None
    unit: str
    resolution: str | None
    value: str | None
    verdict: str
    deviation: str | None
    reading_id: str | None
    gauge: str  # drivers always name the gauge (its config id)
    channel: int | None
    raw_value: str
    raw_unit: str
    measured_ts: float
    calibration_overdue: NotRequired[bool]
    gauge_flag: NotRequired[dict[str, Any]]


class LastGood(TypedDict):
    source: str | None  # 'patrol' | 'release' | None (none on record)
    subgroup: str | None


class Disposition(TypedDict):
    """What became of the suspect parts (the quality release's fields)."""

    sorted_good: int
    reworked: int
    scrapped: int
    accounted: int
    suspect_parts: int | None
    note: str | None


class ContainmentRange(TypedDict):
    """A suspect range (collector/workflow/containment.py): in a failing measurement, an
    alarm that holds, the context while a containment is open, the release's effect."""

    id: str | None
    characteristics: list[str]
    causes: list[str]
    first_stroke: int | None
    last_stroke: int | None
    since: float | None
    until: float
    parts: int | None
    last_good: LastGood
    detected_ts: float
    detected_stroke: int | None
    range_open: bool
    disposition: NotRequired[Disposition | None]  # the release's effect only


class FirstArticleResult(_Judged):
    piece: NotRequired[int]  # plans with first_article_sample_size > 1


class FirstArticleBody(TypedDict):
    attempt: int
    verdict: str
    results: list[FirstArticleResult]
    failed: list[str]
    unreleased_strokes: int
    started_ts: float
    confirm_roles: NotRequired[list[str]]  # a pass waiting for the joint sign-off


class MeasurementBody(_Judged):
    stroke_count: int | None
    action: str
    subgroup: dict[str, Any] | None
    phase: int
    due_id: str | None
    purpose: str
    containment: NotRequired[ContainmentRange]  # a failing value: its suspect range


class ConnectionBody(TypedDict):
    online: bool
    reason: str
    previous_state: str
    state: str


class UnassignedReadingBody(TypedDict):
    gauge: str  # drivers always name the gauge (its config id)
    channel: int | None
    value: str
    unit: str
    reading_id: str | None
    reason: str
    detail: str


StateChangeBody = TypedDict("StateChangeBody", {"from": str, "to": str, "cause": str})


class MeasurementDueBody(TypedDict):
    due_id: str
    reason: str
    strokes_since: int | None
    minutes_since: float
    every_strokes: int | None
    every_min: float | None
    grace_min: float
    subgroup_size: int
    characteristics: list[str]
    inspection_100: bool


class OverdueBody(TypedDict):
    due_id: str
    due_ts: float
    grace_min: float
    missing: list[str]
    reason: str


class AlarmBody(TypedDict):
    cause: str
    characteristic: str | None
    name: NotRequired[str]  # alarms of a characteristic
    char_class: str | None
    actions: list[str]
    evidence: dict[str, Any]
    reading_ids: list[str | None]
    phase: int
    containment: NotRequired[ContainmentRange]  # out of tolerance, or it holds the press


class Confirmation(TypedDict):
    role: str
    operator: str
    ts: float
    request_id: str
    note: str | None


class SignOffBody(TypedDict):
    attempt: int
    part_number: str
    plan_revision: str
    judged_ts: float
    required: list[str]
    confirmations: list[Confirmation]


class ControlLimitsBody(TypedDict):
    characteristic: str
    phase: int
    source: str
    limits: dict[str, Any]
    subgroups: list[str]


class CapabilityBody(TypedDict):
    characteristic: str
    char_class: str
    trigger: str
    phase: int
    chart: str
    subgroup_size: int
    subgroups: int
    n: int
    mean: float | None
    sigma_within: float | None
    sigma_overall: float | None
    cp: float | None
    cpk: float | None
    cpu: float | None
    cpl: float | None
    pp: float | None
    ppk: float | None
    ppu: float | None
    ppl: float | None
    cpm: float | None
    target: str
    ppm: dict[str, Any] | None
    lsl: str | None
    usl: str | None
    stable: bool
    rule_violations: int
    limits: dict[str, Any] | None
    minimum: float
    review_threshold: float
    verdict: str


class CapabilityReviewBody(TypedDict):
    characteristic: str
    phase: int
    cpk: float  # a review needs both indices
    ppk: float
    n: int
    stable: bool
    review_threshold: float
    suggestion: str


class AnnotationBody(TypedDict):
    type: str
    reason: str
    phase: int
    source: str  # 'plc' | 'command' | 'config'
    previous: dict[str, Any]
    new: dict[str, Any]
    amended: NotRequired[bool]


class LastPieceBody(TypedDict):
    die_id: str | None
    part_number: str
    plan_revision: str
    started_ts: float
    results: list[_Judged]
    stored: bool
    reading_ids: list[str | None]


class LastPieceComparisonBody(TypedDict):
    die_id: str  # only a known die has a stored last piece
    attempt: int
    last_piece_ts: float
    last_piece_plan_revision: str
    items: list[dict[str, Any]]


CommandBody = TypedDict("CommandBody", {
    "request_id": str, "command": str, "operator": str, "class": str,
    "fields": dict[str, str], "state_before": str, "effect": dict[str, Any],
    "auth": NotRequired[dict[str, Any]],  # added by the press: how it was authorised
})


class GaugeErrorBody(TypedDict):
    gauge: str
    reason: str
    raw: bytes  # the line as received; JSON: ASCII with backslash escapes


class GaugeConnectionBody(TypedDict):
    gauge: str
    online: bool
    reason: str


class OutputAlarmBody(TypedDict):
    """A write to one of the press's outputs failed (active) or works again (cleared);
    collector/outputs.py, docs/outputs.md."""

    role: str  # release_permissive, hold_lamp, first_article_request, patrol_due, heartbeat
    output: str  # where: 'coil 8', 'holding 90' or the OPC UA node id
    active: bool
    value: bool | int  # the value the collector wanted to write
    reason: str  # refused / not answered / read back different (the clear: the last one)
    failures: int  # failed writes in this episode
    since: float  # the episode's first failure (epoch seconds)


class CollectorAlarmBody(TypedDict):
    kind: str  # buffer_full, buffer_write_failed, buffer_rolled_back, task_failing, ...
    active: bool
    used_bytes: NotRequired[int]
    max_bytes: NotRequired[int]
    pending: NotRequired[int]
    telemetry_dropped: NotRequired[int]
    write_errors: NotRequired[int]
    error: NotRequired[str]
    lost: NotRequired[list[dict[str, Any]]]
    task: NotRequired[str]
    failures: NotRequired[int]


# ---- the registry ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EventKind:
    """``source``: who emits it (``workflow``: collector/workflow, ``press``:
    collector/press.py, ``collector``: daemon-level, topic {root}/_collector/{host}/alarm);
    ``schema``: the file stem in collector/schemas; ``stream``: the outbox stream
    (collector/streams.py)."""

    name: str
    body: Any  # a TypedDict class
    source: str
    summary: str
    stream: str = "events"

    @property
    def schema(self) -> str:
        return self.name


KINDS: dict[str, EventKind] = {k.name: k for k in (
    EventKind("setup", SetupBody, "workflow", "setup verification required (or amended)"),
    EventKind("first_article", FirstArticleBody, "workflow", "a judged first article"),
    EventKind("measurement", MeasurementBody, "workflow", "a judged patrol value"),
    EventKind("connection", ConnectionBody, "workflow", "PLC connection changed"),
    EventKind("unassigned_reading", UnassignedReadingBody, "workflow",
              "a gauge reading nothing took, with the reason"),
    EventKind("state_change", StateChangeBody, "workflow", "the press's state moved"),
    EventKind("measurement_due", MeasurementDueBody, "workflow", "a patrol check is due"),
    EventKind("overdue", OverdueBody, "workflow", "a patrol check was missed"),
    EventKind("alarm", AlarmBody, "workflow",
              "out of tolerance, rule, capability, counter, unmeasured pieces"),
    EventKind("control_limits", ControlLimitsBody, "workflow", "baseline limits frozen"),
    EventKind("capability", CapabilityBody, "workflow", "capability indices"),
    EventKind("capability_review", CapabilityReviewBody, "workflow",
              "capability high enough to review the control plan"),
    EventKind("annotation", AnnotationBody, "workflow", "a chart annotation"),
    EventKind("last_piece", LastPieceBody, "workflow", "the last piece of a run"),
    EventKind("last_piece_comparison", LastPieceComparisonBody, "workflow",
              "first article against the die's last piece"),
    EventKind("command", CommandBody, "workflow", "an accepted command (audit)"),
    EventKind("sign_off", SignOffBody, "workflow",
              "a first article confirmed by every role its plan names"),
    EventKind("gauge_error", GaugeErrorBody, "press", "a gauge reported an error"),
    EventKind("gauge_connection", GaugeConnectionBody, "press", "a gauge line changed"),
    EventKind("output_alarm", OutputAlarmBody, "press",
              "a write to a PLC output failed, or works again"),
    EventKind("collector_alarm", CollectorAlarmBody, "collector",
              "a collector-level alarm raised or cleared"),
)}


def kinds(source: str) -> tuple[str, ...]:
    """The kinds one source emits, in registry order."""
    return tuple(k.name for k in KINDS.values() if k.source == source)


def problems(kind: str, body: Any) -> list[str]:
    """What is wrong with ``body`` for ``kind`` (keys only: the schema checks values);
    [] when it fits. For tests and tools, never on the hot path."""
    entry = KINDS.get(kind)
    if entry is None:
        return [f"unknown event kind {kind!r}"]
    if not isinstance(body, dict):
        return [f"{kind}: body is not a dict"]
    required, allowed = keys(entry.body)
    out = [f"{kind}: missing {k}" for k in sorted(required - set(body))]
    out += [f"{kind}: unexpected {k}" for k in sorted(set(body) - allowed)]
    return out


def keys(body_type: Any) -> tuple[frozenset[str], frozenset[str]]:
    """(required keys, all keys) of a body type."""
    hints = typing.get_type_hints(body_type)
    return frozenset(body_type.__required_keys__), frozenset(hints)
