"""Any gauge whose record a configured regex describes (group 'value'; optional
'unit', 'channel', 'flag')."""

from __future__ import annotations

from drivers.gauge.records import (
    Parsed,
    Parser,
    Preset,
    Rejected,
    clean_flag,
    flag_verdict,
    normalise_decimal,
    record_unit,
)


def _parse_generic(parser: Parser, text: str) -> Parsed | Rejected:
    """Configured regex: group 'value' required; 'unit', 'channel', 'flag' optional.

    The regex must match the whole line (surrounding blanks ignored): a partial match
    inside a longer line is garbage, not a value. Whatever the 'flag' group captures is
    kept as the gauge's flag (its verdict when it is one of FLAG_VERDICTS).
    """
    if parser.pattern is None:
        return Rejected("garbage")
    match = parser.pattern.fullmatch(text.strip())
    if match is None:
        return Rejected("garbage")
    groups = match.groupdict()
    value = normalise_decimal(groups.get("value") or "")
    if value is None:
        return Rejected("bad_value")
    unit = record_unit(groups.get("unit"))
    channel_text = groups.get("channel")
    if channel_text is not None and not (channel_text.isascii() and channel_text.isdigit()):
        return Rejected("bad_value")
    flag = clean_flag(groups.get("flag"))
    return Parsed(value, unit, int(channel_text) if channel_text else None, flag,
                  flag_verdict(flag))


def format_record(value: str, _channel: int = 1, unit: str = "mm",
                  _flag: str = "") -> bytes:
    """What the tests' and the demo's generic gauges send: '<value> <unit>'."""
    return f"{value} {unit}".encode("ascii")


PRESET = Preset("generic", _parse_generic, 9600, 8, "N", 1, b"\r\n", unit_in_record=True,
                needs_pattern=True, format=format_record)
