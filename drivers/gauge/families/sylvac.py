"""Sylvac Opto-RS (duplex: answers '?' and echoes every command): '+12.345', '-0.0020<'."""

from __future__ import annotations

import re

from drivers.gauge.records import (
    Parsed,
    Parser,
    Preset,
    Rejected,
    canonical_unit,
    flag_verdict,
    sign_body,
    signed,
)

# Sylvac Opto-RS: sign '+', '-' or a blank, digits with a decimal point, then in
# tolerance mode one of '<' '=' '>'. Some instruments append a unit: accepted when it is
# a length unit, so that an inch-mode instrument is never read as mm.
_SYLVAC = re.compile(r"(?P<sign>[+\- ])?(?P<number>\d+\.\d+|\d+)"
                     r"(?: ?(?P<unit>mm|in|inch|MM|IN))?(?P<flag>[<=>])?")


def _parse_sylvac(_parser: Parser, text: str) -> Parsed | Rejected:
    """Opto-RS record, e.g. '+12.345', ' 0.010', '-0.0020<'. Trailing blanks ignored."""
    match = _SYLVAC.fullmatch(text.rstrip(" "))
    if match is None:
        return Rejected("garbage")
    value = signed(match["sign"], match["number"])
    if value is None:  # pragma: no cover - the regex admits only decimals
        return Rejected("bad_value")
    unit = canonical_unit(match["unit"]) if match["unit"] else None
    return Parsed(value, unit, None, match["flag"], flag_verdict(match["flag"]))


def format_record(value: str, _channel: int = 1, unit: str = "mm", flag: str = "") -> bytes:
    """A blank is the plus sign; the unit only when not mm."""
    sign, body = sign_body(value)
    return f"{' ' if sign == '+' else '-'}{body}{' IN' if unit == 'in' else ''}{flag}".encode(
        "ascii")


_SYLVAC_ERRORS = (("ERR0", "sensor error"), ("ERR1", "bad command"), ("ERR2", "parity error"),
                  ("ERR3", "over range"))

PRESET = Preset("sylvac", _parse_sylvac, 4800, 7, "E", 2, b"\r", error_strings=("ERR",),
                poll=b"?\r", echoes_commands=True, error_meanings=_SYLVAC_ERRORS,
                ignore_prefixes=("SY",), format=format_record)
