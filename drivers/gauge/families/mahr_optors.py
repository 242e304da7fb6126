"""Mahr Millimar C12xx over OPTORS: '012.345mm', '-0.0123in'."""

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

# Mahr Millimar C12xx over OPTORS: 'xxx.xxx<unit>', e.g. '012.345mm', '-0.0123in'.
_OPTORS = re.compile(r" *(?P<sign>[+\-])? *(?P<number>\d+\.\d+) *(?P<unit>mm|in|inch|um|µm)",
                     re.IGNORECASE)


def _parse_optors(_parser: Parser, text: str) -> Parsed | Rejected:
    match = _OPTORS.fullmatch(text.rstrip(" "))
    if match is None:
        return Rejected("garbage")
    value = signed(match["sign"], match["number"])
    unit = canonical_unit(match["unit"])
    if value is None or unit is None:  # pragma: no cover
        return Rejected("bad_value")
    return Parsed(value, unit)


def format_record(value: str, _channel: int = 1, unit: str = "mm",
                  _flag: str = "") -> bytes:
    sign, body = sign_body(value)
    return f"{'-' if sign == '-' else ''}{body.zfill(7)}{unit}".encode("ascii")


PRESET = Preset("mahr_optors", _parse_optors, 9600, 7, "E", 2, b"\r\n", unit_in_record=True,
                poll=b"?\r", format=format_record)
