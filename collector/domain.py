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

STATES = (
    "offline",
    "stopped",
    "setup",
    "awaiting_first_article",
    "first_article",
    "released",
    "hold",
)


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


@dataclass(frozen=True, slots=True)
class Plan:
    """A measurement plan for one part number at one revision."""

    part_number: str
    revision: str
    characteristics: tuple[Characteristic, ...]
    description: str = ""


@dataclass(frozen=True, slots=True)
class WorkflowSettings:
    """Timings and options of one press's workflow (from the press's [workflow] table)."""

    long_stop_s: float = 1800.0      # idle longer than this -> setup on restart
    stopped_after_s: float = 60.0    # released press idle longer than this shows 'stopped'
    # an out-of-tolerance patrol value puts the press on hold
    hold_on_measurement_fail: bool = False
    # a reading from a gauge past its calibration due date is refused for first article
    refuse_overdue_for_first_article: bool = False


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
