"""Gauge line parsers: one framed line of bytes in, a value or a rejection out (no I/O).

Why this shape: gauge families differ in line settings, record layout and error strings
(see DOMAIN.md §2), but every family shares the same rules — a line that does not fully
match its format is never a value, the value stays a decimal string whose decimals are
the gauge's resolution, and the unit comes from the record or else from config. So the
shared rules live in :func:`parse_line`, and a family is a :class:`Preset` entry in
:data:`PRESETS` plus one small record function ``(parser, text) -> Parsed | Rejected``.
Adding Sylvac, Mahr, Chicago or Metro means writing that function and one entry.

Values are validated with :class:`~decimal.Decimal` and never pass through float: a
float would turn ``0.1`` into ``0.1000000000000000055...`` and lose the resolution.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation, localcontext

__all__ = [
    "PRESETS",
    "UNITS",
    "Parsed",
    "Parser",
    "Preset",
    "Rejected",
    "canonical_unit",
    "convert_unit",
    "format_mitutoyo",
    "make_parser",
    "normalise_decimal",
    "parse_line",
]


@dataclass(slots=True, frozen=True)
class Parsed:
    """A value read from one line. ``unit`` is None when the record carries none."""

    value: str
    unit: str | None = None
    channel: int | None = None
    flag: str | None = None


@dataclass(slots=True, frozen=True)
class Rejected:
    """A line that is not a value. ``reason`` is ``device_error: <text>`` for a known
    error string of the gauge, else a short code: ``garbage``, ``bad_value``,
    ``too_long``, ``empty``."""

    reason: str

    @property
    def device_error(self) -> bool:
        return self.reason.startswith("device_error")


RecordParser = Callable[["Parser", str], "Parsed | Rejected"]


@dataclass(slots=True, frozen=True)
class Preset:
    """What one gauge family looks like on the wire.

    Line settings are defaults (the config may override each); ``terminator`` is what
    the gauge sends after a record; ``unit_in_record`` says whether the record names its
    unit (else the configured unit applies); ``error_strings`` are line prefixes the
    family uses to report a device error; ``record`` parses the text of one line.
    """

    name: str
    record: RecordParser
    baudrate: int = 9600
    bytesize: int = 8
    parity: str = "N"
    stopbits: int = 1
    terminator: bytes = b"\r"
    unit_in_record: bool = False
    error_strings: tuple[str, ...] = ()
    needs_pattern: bool = False


@dataclass(slots=True, frozen=True)
class Parser:
    """A preset made concrete by one gauge's config (pattern, extra error strings)."""

    preset: Preset
    pattern: re.Pattern[str] | None = None
    error_strings: tuple[str, ...] = field(default=())

    @property
    def name(self) -> str:
        return self.preset.name


# --------------------------------------------------------------------------- decimals

# A plain decimal as gauges write it: optional sign, digits, optional point. No
# exponent, no blanks, no thousands separators, no "NaN"/"Infinity" (which Decimal()
# itself would accept).
_DECIMAL = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)")


def normalise_decimal(text: str) -> str | None:
    """'+0000.123' -> '0.123', '-001.2340' -> '-1.2340'; None if not a plain decimal.

    Leading zeros and a '+' go; trailing zeros stay (they are the resolution). Zero has
    no sign: '-0.000' is '0.000', so that a negative zero never reaches statistics.
    """
    if not text.isascii() or _DECIMAL.fullmatch(text) is None:
        return None
    try:
        number = Decimal(text)
    except InvalidOperation:  # pragma: no cover - the regex admits only valid literals
        return None
    if number.is_zero():
        number = number.copy_abs()
    return f"{number:f}"


# --------------------------------------------------------------------------- units

UNITS = ("mm", "in", "um")
_UNIT_ALIASES = {
    "mm": "mm", "in": "in", "inch": "in", "inches": "in", '"': "in",
    "um": "um", "µm": "um", "μm": "um", "micron": "um", "microns": "um",
}
_MM_PER_INCH = Decimal("25.4")  # exact by definition (1959)


def canonical_unit(unit: str) -> str | None:
    """'MM' -> 'mm', 'inch' -> 'in', 'µm' -> 'um'; None for anything else."""
    return _UNIT_ALIASES.get(unit.strip().lower())


def _to_mm(number: Decimal, unit: str) -> Decimal:
    if unit == "mm":
        return number
    if unit == "um":
        return number.scaleb(-3)  # shifts the exponent: 123 um -> 0.123 mm, same resolution
    return number * _MM_PER_INCH  # exact: 0.0005 in -> 0.01270 mm


def _from_mm(number: Decimal, unit: str) -> Decimal:
    if unit == "mm":
        return number
    if unit == "um":
        return number.scaleb(3)
    # 1/25.4 has no finite decimal expansion: keep two more decimals than the source
    # shows (0.001 mm -> 0.00004 in), so the result is never coarser than the reading.
    decimals = max(0, -number.as_tuple().exponent) + 2
    return (number / _MM_PER_INCH).quantize(Decimal(1).scaleb(-decimals))


def convert_unit(value: str, from_unit: str, to_unit: str) -> str:
    """Convert a decimal string between mm, in and um, without float.

    mm <-> um and in -> mm/um are exact; mm/um -> in is rounded half-even to the
    source's decimals + 2 (see :func:`_from_mm`). Raises ValueError for a unit outside
    mm/in/um (aliases such as 'inch' or 'µm' are accepted) or a value that is not a
    plain decimal — never guess a unit.
    """
    src, dst = canonical_unit(from_unit), canonical_unit(to_unit)
    if src is None or dst is None:
        bad = from_unit if src is None else to_unit
        raise ValueError(f"unknown unit {bad!r} (allowed: {', '.join(UNITS)})")
    normal = normalise_decimal(value.strip())
    if normal is None:
        raise ValueError(f"not a decimal value: {value!r}")
    if src == dst:
        return normal
    with localcontext() as ctx:
        ctx.prec = 60
        result = _from_mm(_to_mm(Decimal(normal), src), dst)
    return normalise_decimal(f"{result:f}") or "0"


# --------------------------------------------------------------------------- presets

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


_FLAGS = frozenset("<=>")


def _parse_generic(parser: Parser, text: str) -> Parsed | Rejected:
    """Configured regex: group 'value' required; 'unit', 'channel', 'flag' optional.

    The regex must match the whole line (surrounding blanks ignored): a partial match
    inside a longer line is garbage, not a value.
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
    unit = _record_unit(groups.get("unit"))
    channel_text = groups.get("channel")
    if channel_text is not None and not (channel_text.isascii() and channel_text.isdigit()):
        return Rejected("bad_value")
    flag = groups.get("flag") or None
    if flag is not None and flag not in _FLAGS:
        return Rejected("bad_value")
    return Parsed(value, unit, int(channel_text) if channel_text else None, flag)


def _record_unit(unit: str | None) -> str | None:
    """Length units become canonical ('MM' -> 'mm'); others (e.g. 'Nm' of a torque
    tool) pass through as sent, because the pattern that captured them is the user's."""
    if not unit or not unit.strip():
        return None
    return canonical_unit(unit) or unit.strip()


PRESETS: dict[str, Preset] = {
    "mitutoyo": Preset("mitutoyo", _parse_mitutoyo, 9600, 8, "N", 1, b"\r",
                       unit_in_record=False),
    "generic": Preset("generic", _parse_generic, 9600, 8, "N", 1, b"\r\n",
                      unit_in_record=True, needs_pattern=True),
}


def make_parser(preset: str, pattern: str | None = None,
                error_strings: tuple[str, ...] | list[str] = ()) -> Parser:
    """Build the parser of one gauge. Raises ValueError for an unknown preset, a generic
    preset without a pattern, or a pattern without a named group 'value'."""
    try:
        spec = PRESETS[preset]
    except KeyError:
        raise ValueError(f"unknown gauge preset {preset!r} "
                         f"(allowed: {', '.join(PRESETS)})") from None
    compiled = re.compile(pattern) if pattern else None
    if spec.needs_pattern and compiled is None:
        raise ValueError(f"preset {preset!r} needs a pattern with a named group 'value'")
    if compiled is not None and not spec.needs_pattern:
        raise ValueError(f"preset {preset!r} takes no pattern")
    if compiled is not None and "value" not in compiled.groupindex:
        raise ValueError(f"pattern {pattern!r} has no named group 'value'")
    extra = tuple(s for s in error_strings if s)
    return Parser(spec, compiled, spec.error_strings + extra)


# --------------------------------------------------------------------------- lines

_PRINTABLE = re.compile(r"[\x20-\x7e\t]*")


def parse_line(parser: Parser, line: bytes) -> Parsed | Rejected:
    """Parse one framed line (terminator already removed). Never raises.

    Shared rules first: a line with bytes outside printable ASCII is garbage (line noise,
    wrong baud rate); a line starting with one of the gauge's error strings is a device
    error, whatever follows; only then does the preset's record function look at it.
    """
    if not line:
        return Rejected("empty")
    try:
        text = line.decode("ascii")
    except UnicodeDecodeError:
        return Rejected("garbage")
    if _PRINTABLE.fullmatch(text) is None:
        return Rejected("garbage")
    error = _device_error(parser, text)
    if error is not None:
        return error
    return parser.preset.record(parser, text)


def _device_error(parser: Parser, text: str) -> Rejected | None:
    stripped = text.strip()
    for prefix in parser.error_strings:
        if stripped.startswith(prefix):
            return Rejected(f"device_error: {stripped}")
    return None
