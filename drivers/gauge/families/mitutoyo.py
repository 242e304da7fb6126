"""Mitutoyo Digimatic (U-WAVE, DP-1, USB-ITN interfaces): '01A+0000.123'.

Push only (the DATA key or a footswitch sends); no unit in the record (config says).
"""

from __future__ import annotations

import re
from decimal import Decimal

from drivers.gauge.records import (
    Parsed,
    Parser,
    Preset,
    Rejected,
    normalise_decimal,
)

_MITUTOYO = re.compile(r"0(?P<channel>\d)A(?P<value>[+-]\d+(?:\.\d+)?)")


def _parse_mitutoyo(_parser: Parser, text: str) -> Parsed | Rejected:
    """Digimatic "01A" record: '0', channel digit, 'A', sign, digits with a floating
    decimal point, e.g. '01A+0000.123'. No unit in the record."""
    match = _MITUTOYO.fullmatch(text)
    if match is None:
        return Rejected("garbage")
    value = normalise_decimal(match["value"])
    if value is None:  # pragma: no cover - the record regex admits only decimals
        return Rejected("bad_value")
    return Parsed(value, None, int(match["channel"]))


def format_mitutoyo(value: str | Decimal, channel: int = 1) -> bytes:
    """The record a Mitutoyo interface sends for ``value`` (without terminator).

    Used by the simulator and the tests: '0.123' -> b'01A+0000.123' (8 characters of
    number, zero-padded, decimals kept as given).
    """
    if not 0 <= channel <= 9:
        raise ValueError(f"Mitutoyo channel must be one digit, got {channel}")
    number = Decimal(value)
    if not number.is_finite():
        raise ValueError(f"not a finite value: {value!r}")
    sign = "-" if number.is_signed() and not number.is_zero() else "+"
    body = f"{number.copy_abs():f}"
    return f"0{channel}A{sign}{body.zfill(8)}".encode("ascii")


def format_record(value: str, channel: int = 1, _unit: str = "mm",
                  _flag: str = "") -> bytes:
    return format_mitutoyo(value, channel)


PRESET = Preset("mitutoyo", _parse_mitutoyo, 9600, 8, "N", 1, b"\r", unit_in_record=False,
                format=format_record)
