"""Metro (Datavac) Mux 2/4/8 multiplexers, polled by a channel digit:
'V2: mm       -00001.250000'."""

from __future__ import annotations

import re

from drivers.gauge.records import (
    Parsed,
    Parser,
    Preset,
    Rejected,
    clean_flag,
    flag_verdict,
    record_unit,
    sign_body,
    signed,
)

# Metro (Datavac) Mux 2/4/8: 'Vx: uuuu ttt seeeee.dddddd' in fixed columns, e.g.
# 'V2: mm       -00001.250000'. uuuu is the unit (mm, inch, IN, ...; blanks when the
# instrument sends none), ttt the instrument's tolerance verdict (GO, +NG, -NG) or mode
# (ABS, REL, MIN, MAX, ...; blanks when none), s the sign (+, - or a blank).
# Errors 'Nxy:Ex' (E1 communication, E3 reading).
_METRO = re.compile(r"V(?P<channel>[1-8]):(?P<head>[ -~]*?)(?P<sign>[+\- ])(?P<number>\d+\.\d+)")
_METRO_FIXED = re.compile(r" (?P<unit>[A-Za-z/ ]{4}) (?P<tol>[A-Za-z+\- ]{3}) ")
# a unit or a code, unpadded: one column, at most 4 characters (the unit column is 4 wide,
# the verdict 3), so "+AAAA" is no flag but garbage
_METRO_WORD = re.compile(r"(?=.{1,4}\Z)[+\-]?[A-Za-z][A-Za-z/]{0,3}")
_METRO_ERROR = re.compile(r"N(?P<channel>\d)(?P<sub>\d):E(?P<code>\d)")
_METRO_ERRORS = {"1": "communication error", "3": "reading error"}
_METRO_CODES = frozenset({"GO", "+NG", "-NG", "NG", "ABS", "REL", "MIN", "MAX"})


def _metro_fields(head: str, sign: str) -> tuple[str | None, str | None] | None:
    """(unit, tolerance/mode code) from the text between 'Vx:' and the sign; None if it
    is neither the fixed columns nor (as some firmware sends) 1-2 blank-separated words."""
    fixed = _METRO_FIXED.fullmatch(head)
    if fixed is not None:
        return fixed["unit"].strip() or None, fixed["tol"].strip() or None
    words = head.split()
    if not head.startswith(" ") or len(words) > 2 or not all(map(_METRO_WORD.fullmatch, words)):
        return None
    if words and not (head.endswith(" ") or sign == " "):
        return None  # a word glued to the number's sign is not a column
    if len(words) == 2:
        return words[0], words[1]
    if len(words) == 1:
        word = words[0]
        return (None, word) if word.upper() in _METRO_CODES or word[0] in "+-" else (word, None)
    return None, None


def _parse_metro(_parser: Parser, text: str) -> Parsed | Rejected:
    error = _METRO_ERROR.fullmatch(text.strip())
    if error is not None:
        meaning = _METRO_ERRORS.get(error["code"], "undocumented error code")
        return Rejected(f"device_error: {error.group(0)} ({meaning})")
    match = _METRO.fullmatch(text.rstrip(" "))
    if match is None:
        return Rejected("garbage")
    fields = _metro_fields(match["head"], match["sign"])
    if fields is None:
        return Rejected("garbage")
    unit, code = fields
    value = signed(match["sign"], match["number"])
    if value is None:  # pragma: no cover
        return Rejected("bad_value")
    flag = clean_flag(code)
    return Parsed(value, record_unit(unit), int(match["channel"]), flag, flag_verdict(flag))


def format_record(value: str, channel: int = 1, unit: str = "mm", flag: str = "") -> bytes:
    """Fixed columns: 'Vx: uuuu ttt seeeee.dddddd'."""
    sign, body = sign_body(value)
    whole, _, frac = body.partition(".")
    return (f"V{channel}: {unit:<4} {flag:<3} {sign}{whole.zfill(5)}.{frac.ljust(6, '0')}"
            .encode("ascii"))


PRESET = Preset("metro", _parse_metro, 9600, 8, "N", 1, b"\r\n", unit_in_record=True,
                poll_by_channel=True, format=format_record)
