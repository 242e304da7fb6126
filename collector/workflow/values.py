"""Value coercion: PLC values arrive as int / float / str / bool / bytes, gauge fields as
driver values. Pure functions; the one place that says what an id, a flag, a count and
a channel are (module docstring of ``collector.workflow``: "Values")."""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any

from collector.domain import GaugeReading

_TRUE = {"1", "true", "on", "yes"}
_FALSE = {"0", "false", "off", "no"}
IDS = ("die_id", "part_number", "material_lot", "heat_number")


def to_id(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if isinstance(value, bool):
        value = int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        if value.is_integer():
            value = int(value)
    if (isinstance(value, Decimal) and value.is_finite() and value.adjusted() < 30
            and value == value.to_integral_value()):
        value = int(value)
    text = str(value).replace("\x00", "").strip()
    return text or None


def to_bool(value: Any) -> bool | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value != 0
    if isinstance(value, float):
        return None if math.isnan(value) else value != 0.0
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
    return None


def to_count(value: Any) -> int | None:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if math.isfinite(value) else None
    if isinstance(value, str):
        text = value.strip()
        try:
            return int(text)
        except ValueError:
            try:
                f = float(text)
            except ValueError:
                return None
            return int(f) if math.isfinite(f) else None
    return None


def to_channel(value: Any) -> int | None:
    if isinstance(value, str):
        text = value.strip()
        digits = text.lstrip("+-")
        # isascii: '¹' and other Unicode digits pass isdigit() but not int()
        value = int(text) if digits.isascii() and digits.isdigit() and len(text) < 12 else None
    elif isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) < 2**31:
        return value
    return None


def dec(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


def reading(ts: float, gauge: Any, channel: Any, value: Any, unit: Any,
            reading_id: Any = None, calibration_overdue: bool = False,
            flag: str | None = None) -> GaugeReading:
    """A ``GaugeReading`` from driver values: ids and channel normalised as everywhere in
    the workflow, value and unit stripped strings."""
    return GaugeReading(
        ts=float(ts), gauge=to_id(gauge), channel=to_channel(channel),
        value=value.strip() if isinstance(value, str) else str(value),
        unit=unit.strip() if isinstance(unit, str) else str(unit),
        reading_id=None if reading_id is None else str(reading_id),
        calibration_overdue=bool(calibration_overdue),
        flag=None if flag is None else str(flag))

