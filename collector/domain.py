"""The quality vocabulary shared by config, workflow and events: plans and settings.

Plain frozen dataclasses: the config loader builds them from TOML, the workflow reads
them, and tests can build them by hand without any file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

# Roles a PLC tag can play for the workflow. A press config maps tag names to roles.
ROLES = (
    "stroke_count",   # monotonically increasing stroke counter
    "die_id",         # identifier of the mounted die (number or string)
    "part_number",    # job / recipe / part number
    "material_lot",   # coil / lot number
    "heat_number",    # heat number of the material (traceability only)
    "setup_mode",     # true while the press is in setup (die clamps open, inch mode)
    "running",        # true while the press runs in production mode (informational)
    "repair",         # maintenance / repair signal (rising edge starts a setup)
)

# What the collector can drive back into the PLC (issue 14; docs/outputs.md,
# collector/outputs.py): one [[plc.outputs]] entry per role at most.
OUTPUT_ROLES = (
    "release_permissive",     # true only while released: the press may make good parts
    "hold_lamp",              # true while on hold
    "first_article_request",  # true while a first article is awaited or being measured
    "patrol_due",             # true while a patrol check is due or overdue
    "heartbeat",              # a word counted up every second while the collector runs
)
FLAG_OUTPUT_ROLES = OUTPUT_ROLES[:-1]

STATES = (
    "offline",
    "stopped",
    "setup",
    "awaiting_first_article",
    "first_article",
    "awaiting_confirmation",  # first article passed; the plan's roles have to confirm it
    "released",
    "hold",
)


REACTIONS = ("hold", "inspection_100")  # what a reaction plan can add to the alarm
CHAR_CLASSES = ("critical", "significant", "standard")
COMMAND_CLASSES = ("production", "quality")


@dataclass(frozen=True, slots=True)
class SpcOptions:
    """SPC of one characteristic: which chart, where the limits come from, which rules.

    ``limits``: 'baseline' = computed from the first ``baseline_subgroups`` complete
    subgroups of a phase, then frozen for that phase; 'fixed' = ``center`` and ``sigma``
    (σ of individual values) from the plan. ``chart`` None = by subgroup size.
    """

    enabled: bool = True
    chart: str | None = None
    limits: str = "baseline"
    baseline_subgroups: int = 20
    center: Decimal | None = None
    sigma: Decimal | None = None
    rules: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 7, 8)
    same_side: int = 9
    trend: int = 6
    alternating: int = 14
    zone_a: tuple[int, int] = (2, 3)
    zone_b: tuple[int, int] = (4, 5)
    stratification: int = 15
    mixture: int = 8
    mixture_sides: str = "both"  # rule 8: 'both' (Nelson) or 'any' (one-sided reading)
    individuals_sigma: str = "moving_range"  # I-MR σ: 'moving_range' or 'stdev' (s/c4)


@dataclass(frozen=True, slots=True)
class Reaction:
    """Reaction plan of one characteristic class: what each trigger adds to the alarm."""

    out_of_tolerance: tuple[str, ...] = ()
    rule: tuple[str, ...] = ()
    low_capability: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Characteristic:
    """One measured feature of a part with its tolerance.

    Limits are absolute (``lsl``/``usl``); either may be None for a one-sided tolerance.
    ``gauge`` (and optionally ``channel``) route a reading to this characteristic.
    """

    id: str
    name: str
    nominal: Decimal
    lsl: Decimal | None
    usl: Decimal | None
    unit: str = "mm"
    gauge: str | None = None
    channel: int | None = None
    char_class: str = "standard"  # critical | significant | standard
    resolution: Decimal | None = None
    spc: SpcOptions = field(default_factory=SpcOptions)


@dataclass(frozen=True, slots=True)
class Plan:
    """A measurement plan for one part number at one revision.

    Patrol: a check is due every ``patrol_every_strokes`` strokes and/or every
    ``patrol_every_min`` minutes of released production (None = not by that measure);
    one check is one subgroup of ``subgroup_size`` pieces, every characteristic; it is
    overdue ``overdue_grace_min`` after it fell due. Capability: ``capability_min``
    (Cpk below -> low_capability reaction) and ``capability_review`` (Cpk and Ppk at or
    above -> a capability_review event), published every ``capability_every``
    complete subgroups of a characteristic once ``capability_min_values`` values exist.
    """

    part_number: str
    revision: str
    characteristics: tuple[Characteristic, ...]
    description: str = ""
    first_article_sample_size: int = 1
    # roles ('production', 'quality') that must each confirm a passing first article
    # before the press is released (joint setup verification); () = released at once
    first_article_confirm_roles: tuple[str, ...] = ()
    patrol_every_strokes: int | None = None
    patrol_every_min: float | None = None
    overdue_grace_min: float = 10.0
    subgroup_size: int = 1
    capability_min: float = 1.33
    capability_review: float = 3.0
    capability_every: int = 25
    capability_min_values: int = 20
    reactions: dict[str, Reaction] = field(default_factory=dict)  # by char class

    def reaction(self, char_class: str) -> Reaction:
        return self.reactions.get(char_class, Reaction())


BOOL_ROLES = ("setup_mode", "running", "repair")  # roles read as true / false


@dataclass(frozen=True, slots=True)
class RoleMap:
    """How a true/false role reads a numeric or text PLC value (issue 11).

    Without a map a role is true for any non-zero number (and 1/true/on/yes). A PLC mode
    word (0 stopped / 1 setup / 2 production) needs a map: ``bit`` = true when that bit
    (0 = least significant) is set; ``true_values`` = true when the value is one of
    these (numbers, or text compared without case and surrounding blanks); ``names`` =
    the names of the values 0, 1, 2, ... (an enumeration), so that ``true_values`` can
    name them. A value the map does not list is false; a missing value stays unknown.
    """

    true_values: frozenset[int | str] = frozenset()
    bit: int | None = None
    names: tuple[str, ...] = ()

    def read(self, value: Any) -> bool | None:
        """The role's truth for one raw value; None when the value is unknown."""
        if value is None:
            return None
        number = _integral(value)
        if self.bit is not None:
            return None if number is None else bool((number >> self.bit) & 1)
        if self.names:
            if number is None or not 0 <= number < len(self.names):
                text = str(value).strip().casefold() if isinstance(value, str) else None
                return text is not None and text in self._texts()
            return self.names[number].strip().casefold() in self._texts()
        if number is not None and number in self.true_values:
            return True
        if isinstance(value, str):
            return value.strip().casefold() in self._texts()
        return False

    def _texts(self) -> set[str]:
        return {v.strip().casefold() for v in self.true_values if isinstance(v, str)}


def _integral(value: Any) -> int | None:
    """An integer for int / integral float / integer text; None otherwise."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if value.is_integer() else None
    if isinstance(value, str):
        text = value.strip()
        digits = text.lstrip("+-")
        if digits.isascii() and digits.isdigit() and len(digits) < 20:
            return int(text)
    return None


SPC_HISTORY_DEFAULT = 100  # [workflow] spc_history_subgroups (docs/quality.md)


@dataclass(frozen=True, slots=True)
class WorkflowSettings:
    """Timings and options of one press's workflow (from the press's [workflow] table)."""

    long_stop_s: float = 1800.0      # idle longer than this -> setup on restart
    stopped_after_s: float = 60.0    # released press idle longer than this shows 'stopped'
    # an out-of-tolerance patrol value puts the press on hold
    hold_on_measurement_fail: bool = False
    # operator ids allowed per command class ('production', 'quality'); "*" accepts any
    # non-empty operator id; a class that is missing or empty refuses every command of
    # that class (fail closed, docs/security.md)
    authorized: dict[str, tuple[str, ...]] = field(
        default_factory=lambda: {"production": (), "quality": ()})
    # a reading from a gauge past its calibration due date is refused for first article
    refuse_overdue_for_first_article: bool = False
    # under 100 % inspection: more strokes than this without a measured piece -> alarm
    inspection_100_max_unmeasured: int = 10
    # How true/false roles read their tag (role -> map); a role without one: non-zero
    role_maps: dict[str, RoleMap] = field(default_factory=dict)
    # Stroke counter (issue 11): it wraps to 0 at this value (2**16 / 2**32 from the tag
    # type); None = no wrap known. More strokes between two readings than the press can
    # make at this rate (per minute, over at least one second) is a counter anomaly;
    # None = no rate check (the config always gives one: docs/roles.md).
    stroke_counter_wrap: int | None = None
    max_strokes_per_min: float | None = None
    # complete SPC subgroups kept whole per characteristic; older ones of the phase are
    # summed (collector.quality.SpcHistory): memory stays bounded over a long phase
    spc_history_subgroups: int = SPC_HISTORY_DEFAULT


@dataclass(frozen=True, slots=True)
class GaugeReading:
    """One gauge value as the workflow takes it, every field travelling together.

    The workflow hands this one frozen value from path to path (plan sync, routing,
    first article, patrol, last piece) instead of a list of arguments, so no path can
    drop a field on the way (issue 11: a re-entry after a plan reload once dropped
    ``calibration_overdue`` and accepted an overdue gauge for first article).
    Build it with ``collector.workflow.reading`` (it normalises ids and channel).

    ``value`` is the decimal string as the gauge sent it; ``calibration_overdue``: the
    gauge was past its calibration due date; ``flag``: the gauge's own tolerance flag
    (carried for the event; the workflow judges against the plan, never the flag).
    """

    ts: float
    gauge: str | None
    channel: int | None
    value: str
    unit: str
    reading_id: str | None = None
    calibration_overdue: bool = False
    flag: str | None = None

    def as_body(self) -> dict[str, Any]:
        """The reading's fields as they appear in ``unassigned_reading`` events."""
        return {"gauge": self.gauge, "channel": self.channel, "value": self.value,
                "unit": self.unit, "reading_id": self.reading_id}


@dataclass(frozen=True, slots=True)
class Event:
    """Something subscribers get: a kind, the acquisition time, a body and the context.

    ``durable`` events (quality records) are committed with fsync before anyone is told.
    """

    kind: str
    ts: float
    body: dict[str, Any]
    context: dict[str, Any] = field(default_factory=dict)
    durable: bool = True
