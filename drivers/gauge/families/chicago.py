"""Chicago Dial Indicator: '+   0.500, MM'."""

from __future__ import annotations

import re

from drivers.gauge.records import (
    Parsed,
    Parser,
    Preset,
    Rejected,
    canonical_unit,
    sign_body,
    signed,
)

# Chicago Dial Indicator: sign, an 8-character value field padded with blanks, ', ' and
# the unit, e.g. '+   0.500, MM' or '-  0.0125, IN'.
_CHICAGO = re.compile(r"(?P<sign>[+\-])(?P<field>[ 0-9.]{8}), ?(?P<unit>IN|MM|in|mm)")
_PLAIN_NUMBER = re.compile(r" *(?P<number>\d+\.\d*|\d*\.\d+|\d+) *")


def _parse_chicago(_parser: Parser, text: str) -> Parsed | Rejected:
    """Blanks pad the value field (before or after the number); a blank between digits
    is not padding and makes the line garbage."""
    match = _CHICAGO.fullmatch(text.rstrip(" "))
    if match is None:
        return Rejected("garbage")
    number = _PLAIN_NUMBER.fullmatch(match["field"])
    if number is None:
        return Rejected("garbage")
    value = signed(match["sign"], number["number"])
    if value is None:
        return Rejected("bad_value")
    return Parsed(value, canonical_unit(match["unit"]))


def format_record(value: str, _channel: int = 1, unit: str = "mm",
                  _flag: str = "") -> bytes:
    sign, body = sign_body(value)
    return f"{sign}{body.rjust(8)}, {unit.upper()}".encode("ascii")


PRESET = Preset("chicago", _parse_chicago, 9600, 8, "N", 1, b"\r\n", unit_in_record=True,
                poll=b"R\r", format=format_record)
