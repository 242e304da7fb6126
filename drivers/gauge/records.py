"""Gauge records: the rules every gauge family shares (no I/O).

Why this shape: gauge families differ in line settings, record layout and error strings
(see DOMAIN.md §2), but every family shares the same rules — a line that does not fully
match its format is never a value, the value stays a decimal string whose decimals are
the gauge's resolution, and the unit comes from the record or else from config. So the
shared rules live here (:func:`parse_records`), and a family is one module in
``drivers/gauge/families/`` that holds its :class:`Preset` (line settings, error codes,
poll command), its record parser ``(parser, text) -> Parsed | Rejected`` and its record
*formatter* (what the gauge sends for a value: the simulator and the tests use it, so
no second per-family table exists anywhere). ``drivers/gauge/presets.py`` lists the
families.

Values are validated with :class:`~decimal.Decimal` and never pass through float: a
float would turn ``0.1`` into ``0.1000000000000000055...`` and lose the resolution.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation, localcontext

__all__ = [
    "FLAG_VERDICTS",
    "UNITS",
    "Parsed",
    "Parser",
    "Preset",
    "Rejected",
    "canonical_unit",
    "convert_unit",
    "flag_verdict",
    "format_record",
    "normalise_decimal",
    "parse_line",
    "parse_records",
    "sign_body",
]


@dataclass(slots=True, frozen=True)
class Parsed:
    """A value read from one line. ``unit`` is None when the record carries none.

    ``flag`` is the gauge's own flag exactly as the record carries it (blanks around it
    dropped, inner blanks kept as one): a tolerance verdict (``<``, ``=``, ``>``, ``GO``,
    ``+NG``, ``-NG``; Millimar may append a warning-limit symbol: ``= <``) or a mode
    code (Metro ``ABS``, ``REL``, ``MIN``, ``MAX``). A flagged value is still a value:
    the flag travels with it, the collector still judges against the plan.
    ``verdict`` is what a tolerance flag means, in one vocabulary for every family:
    ``below``, ``within`` or ``above`` (None for a mode code or no flag).
    """

    value: str
    unit: str | None = None
    channel: int | None = None
    flag: str | None = None
    verdict: str | None = None


@dataclass(slots=True, frozen=True)
class Rejected:
    """A line that is not a value. ``reason`` is ``device_error: <text>`` for an error
    code of the gauge (with its meaning, or "undocumented error code"), ``unsupported:
    <text>`` for a well-formed record this collector cannot use (e.g. an angle in
    deg:min:s), else a short code: ``garbage``, ``bad_value``, ``too_long``, ``empty``;
    ``ignored`` for lines that are neither (a power-on id line, the echo of a command),
    which a reader drops without counting them as garbage. Device errors and unsupported
    records are reported (a ``gauge_error`` event): the gauge said something that is not
    noise, and it must not vanish."""

    reason: str

    @property
    def device_error(self) -> bool:
        return self.reason.startswith("device_error")

    @property
    def reportable(self) -> bool:
        """A device error or an unsupported record: an event, not just a counter."""
        return self.reason.startswith(("device_error", "unsupported"))

    @property
    def ignored(self) -> bool:
        return self.reason == "ignored"


Record = "Parsed | Rejected"
RecordParser = Callable[["Parser", str], "Parsed | Rejected | list[Parsed | Rejected]"]
RecordFormatter = Callable[[str, int, str, str], bytes]


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
    # What the family answers a poll with, when sent (b"" = push only, no default);
    # Metro multiplexers are polled by a channel digit, see ``poll_commands``.
    poll: bytes = b""
    poll_by_channel: bool = False
    echoes_commands: bool = False  # duplex instruments echo every command they get
    error_meanings: tuple[tuple[str, str], ...] = ()  # error code -> what it means
    ignore_prefixes: tuple[str, ...] = ()  # lines that are neither values nor errors
    # What the gauge sends for a value (without terminator): (value, channel, unit, flag).
    format: RecordFormatter | None = None


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


# What a tolerance flag means, in one vocabulary for every family (gauges.md lists them).
FLAG_VERDICTS: dict[str, str] = {
    "<": "below", "=": "within", ">": "above",          # Sylvac, Mahr, Millimar
    "-NG": "below", "GO": "within", "+NG": "above",     # Metro (and many counters)
}


def flag_verdict(flag: str | None) -> str | None:
    """'+NG' -> 'above', '= <' -> 'within' (the first symbol is the tolerance verdict, a
    second one is Millimar's warning limit); None for mode codes (ABS, MAX ...)."""
    if not flag:
        return None
    return FLAG_VERDICTS.get(flag.split()[0].upper())


def clean_flag(text: str | None) -> str | None:
    """The flag as sent, blanks around dropped and inner runs of blanks made one."""
    if text is None:
        return None
    return " ".join(text.split()) or None


def record_unit(unit: str | None) -> str | None:
    """Length units become canonical ('MM' -> 'mm'); others (e.g. 'Nm' of a torque
    tool) pass through as sent, because the pattern that captured them is the user's."""
    if not unit or not unit.strip():
        return None
    return canonical_unit(unit) or unit.strip()



def signed(sign: str | None, number: str) -> str | None:
    """Sign character (``+``, ``-``, blank or none) and digits -> normalised decimal."""
    return normalise_decimal(("-" if sign == "-" else "") + number)




def sign_body(value: str | Decimal) -> tuple[str, str]:
    """('+' or '-', digits without sign) of a finite decimal, for record formatters."""
    number = Decimal(value)
    if not number.is_finite():
        raise ValueError(f"not a finite value: {value!r}")
    sign = "-" if number.is_signed() and not number.is_zero() else "+"
    return sign, f"{number.copy_abs():f}"


def format_record(preset: Preset, value: str | Decimal, channel: int = 1, unit: str = "mm",
                  flag: str = "") -> bytes:
    """The record (without terminator) a gauge of ``preset`` sends for ``value``."""
    if preset.format is None:
        raise ValueError(f"no record format for preset {preset.name!r}")
    return preset.format(str(value), channel, unit, flag)


# --------------------------------------------------------------------------- lines

_PRINTABLE = re.compile(r"[\x20-\x7e\t]*")


def parse_line(parser: Parser, line: bytes) -> Parsed | Rejected:
    """Parse one framed line holding one record (see :func:`parse_records` for lines that
    hold several, e.g. Millimar features). Never raises."""
    results = parse_records(parser, line)
    if len(results) == 1:
        return results[0]
    return Rejected("multiple_records")


def parse_records(parser: Parser, line: bytes) -> list[Parsed | Rejected]:
    """Parse one framed line (terminator already removed) into its records. Never raises.

    Shared rules first: a line with bytes outside printable ASCII is garbage (line noise,
    wrong baud rate); a line starting with one of the gauge's error strings is a device
    error, whatever follows; only then does the preset's record function look at it.
    """
    if not line:
        return [Rejected("empty")]
    try:
        text = line.decode("ascii")
    except UnicodeDecodeError:
        return [Rejected("garbage")]
    if _PRINTABLE.fullmatch(text) is None:
        return [Rejected("garbage")]
    error = _device_error(parser, text)
    if error is not None:
        return [error]
    if text.strip().startswith(parser.preset.ignore_prefixes or ("\x00",)):
        return [Rejected("ignored")]
    result = parser.preset.record(parser, text)
    return result if isinstance(result, list) else [result]


def _device_error(parser: Parser, text: str) -> Rejected | None:
    """A line starting with one of the gauge's error strings, with the code's meaning
    when the family documents it ('undocumented error code' when the family has a list
    of codes and this one is not on it: still an error, never a value or silence)."""
    stripped = text.strip()
    for prefix in parser.error_strings:
        if stripped.startswith(prefix):
            meanings = dict(parser.preset.error_meanings)
            meaning = meanings.get(stripped)
            if meaning is None and meanings and prefix in parser.preset.error_strings:
                meaning = "undocumented error code"
            suffix = f" ({meaning})" if meaning else ""
            return Rejected(f"device_error: {stripped}{suffix}")
    return None
