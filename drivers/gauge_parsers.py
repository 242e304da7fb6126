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
    "FLAG_VERDICTS",
    "PRESETS",
    "UNITS",
    "Parsed",
    "Parser",
    "Preset",
    "Rejected",
    "canonical_unit",
    "convert_unit",
    "flag_verdict",
    "format_mitutoyo",
    "make_parser",
    "normalise_decimal",
    "parse_line",
    "parse_records",
    "poll_commands",
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


def _flag(text: str | None) -> str | None:
    """The flag as sent, blanks around dropped and inner runs of blanks made one."""
    if text is None:
        return None
    return " ".join(text.split()) or None


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
    unit = _record_unit(groups.get("unit"))
    channel_text = groups.get("channel")
    if channel_text is not None and not (channel_text.isascii() and channel_text.isdigit()):
        return Rejected("bad_value")
    flag = _flag(groups.get("flag"))
    return Parsed(value, unit, int(channel_text) if channel_text else None, flag,
                  flag_verdict(flag))


def _record_unit(unit: str | None) -> str | None:
    """Length units become canonical ('MM' -> 'mm'); others (e.g. 'Nm' of a torque
    tool) pass through as sent, because the pattern that captured them is the user's."""
    if not unit or not unit.strip():
        return None
    return canonical_unit(unit) or unit.strip()



def _signed(sign: str | None, number: str) -> str | None:
    """Sign character (``+``, ``-``, blank or none) and digits -> normalised decimal."""
    return normalise_decimal(("-" if sign == "-" else "") + number)


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
    value = _signed(match["sign"], match["number"])
    if value is None:  # pragma: no cover - the regex admits only decimals
        return Rejected("bad_value")
    unit = canonical_unit(match["unit"]) if match["unit"] else None
    return Parsed(value, unit, None, match["flag"], flag_verdict(match["flag"]))


# Mahr Millimar C1202: features separated by ';', each 'N +012.34 mm' with the tolerance
# symbol when tolerances are on ('<' below, '=' within, '>' above) and a second symbol
# when warning limits are on too ('1 +012.34 mm = <'); 'N ERR6' for a deactivated
# feature. Units mm, um, inch, deg, rad, or dms with the value as deg:min:s.
_MAHR_FEATURE = re.compile(r"(?P<feature>\d{1,2}) +(?:(?P<err>ERR\d+)|(?P<sign>[+\-])?"
                           r"(?:(?P<number>\d+(?:\.\d+)?)|(?P<dms>\d+:\d\d:\d\d(?:\.\d+)?))"
                           r" *(?P<unit>mm|in|um|µm|inch|deg|rad|dms)?"
                           r"(?P<flag>(?: *[<=>]){0,2}))")
_MAHR_ERRORS = {"ERR6": "feature deactivated"}


def _parse_millimar(_parser: Parser, text: str) -> list[Parsed | Rejected] | Rejected:
    """One Parsed per feature (channel = feature number); a feature in error is a
    device error for that feature only. Any part that is not a feature makes the whole
    line garbage: a half-understood record must not yield values."""
    parts = [p.strip() for p in text.strip().removesuffix(";").split(";")]
    out: list[Parsed | Rejected] = []
    for part in parts:
        match = _MAHR_FEATURE.fullmatch(part)
        if match is None:
            return Rejected("garbage")
        feature = int(match["feature"])
        if match["err"]:
            meaning = _MAHR_ERRORS.get(match["err"], "undocumented error code")
            out.append(Rejected(f"device_error: feature {feature} {match['err']} ({meaning})"))
            continue
        if match["dms"] is not None or match["unit"] == "dms":
            if match["dms"] is None or match["unit"] not in (None, "dms"):
                return Rejected("garbage")
            out.append(Rejected(f"unsupported: feature {feature} angle {match['dms']} dms "
                                "(deg:min:s has no decimal resolution: set the C1202's "
                                "unit to deg)"))
            continue
        value = _signed(match["sign"], match["number"])
        if value is None:  # pragma: no cover
            return Rejected("bad_value")
        unit = _record_unit(match["unit"])
        flag = " ".join(re.findall(r"[<=>]", match["flag"])) or None
        out.append(Parsed(value, unit, feature, flag, flag_verdict(flag)))
    return out


# Mahr Millimar C12xx over OPTORS: 'xxx.xxx<unit>', e.g. '012.345mm', '-0.0123in'.
_OPTORS = re.compile(r" *(?P<sign>[+\-])? *(?P<number>\d+\.\d+) *(?P<unit>mm|in|inch|um|µm)",
                     re.IGNORECASE)


def _parse_optors(_parser: Parser, text: str) -> Parsed | Rejected:
    match = _OPTORS.fullmatch(text.rstrip(" "))
    if match is None:
        return Rejected("garbage")
    value = _signed(match["sign"], match["number"])
    unit = canonical_unit(match["unit"])
    if value is None or unit is None:  # pragma: no cover
        return Rejected("bad_value")
    return Parsed(value, unit)


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
    value = _signed(match["sign"], number["number"])
    if value is None:
        return Rejected("bad_value")
    return Parsed(value, canonical_unit(match["unit"]))


# Metro (Datavac) Mux 2/4/8: 'Vx: uuuu ttt seeeee.dddddd' in fixed columns, e.g.
# 'V2: mm       -00001.250000'. uuuu is the unit (mm, inch, IN, ...; blanks when the
# instrument sends none), ttt the instrument's tolerance verdict (GO, +NG, -NG) or mode
# (ABS, REL, MIN, MAX, ...; blanks when none), s the sign (+, - or a blank).
# Errors 'Nxy:Ex' (E1 communication, E3 reading).
_METRO = re.compile(r"V(?P<channel>[1-8]):(?P<head>[ -~]*?)(?P<sign>[+\- ])(?P<number>\d+\.\d+)")
_METRO_FIXED = re.compile(r" (?P<unit>[A-Za-z/ ]{4}) (?P<tol>[A-Za-z+\- ]{3}) ")
_METRO_WORD = re.compile(r"[+\-]?[A-Za-z][A-Za-z/]{0,3}")  # a unit or a code, unpadded
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
    value = _signed(match["sign"], match["number"])
    if value is None:  # pragma: no cover
        return Rejected("bad_value")
    flag = _flag(code)
    return Parsed(value, _record_unit(unit), int(match["channel"]), flag, flag_verdict(flag))


_SYLVAC_ERRORS = (("ERR0", "sensor error"), ("ERR1", "bad command"), ("ERR2", "parity error"),
                  ("ERR3", "over range"))

PRESETS: dict[str, Preset] = {
    "mitutoyo": Preset("mitutoyo", _parse_mitutoyo, 9600, 8, "N", 1, b"\r",
                       unit_in_record=False),
    "generic": Preset("generic", _parse_generic, 9600, 8, "N", 1, b"\r\n",
                      unit_in_record=True, needs_pattern=True),
    "sylvac": Preset("sylvac", _parse_sylvac, 4800, 7, "E", 2, b"\r",
                     error_strings=("ERR",),
                     poll=b"?\r", echoes_commands=True, error_meanings=_SYLVAC_ERRORS,
                     ignore_prefixes=("SY",)),
    "millimar": Preset("millimar", _parse_millimar, 9600, 7, "E", 2, b"\r\n",
                       unit_in_record=True, poll=b"?\r"),
    "mahr_optors": Preset("mahr_optors", _parse_optors, 9600, 7, "E", 2, b"\r\n",
                          unit_in_record=True, poll=b"?\r"),
    "chicago": Preset("chicago", _parse_chicago, 9600, 8, "N", 1, b"\r\n",
                      unit_in_record=True, poll=b"R\r"),
    "metro": Preset("metro", _parse_metro, 9600, 8, "N", 1, b"\r\n",
                    unit_in_record=True, poll_by_channel=True),
}


def poll_commands(preset: Preset, channels: tuple[int, ...] = (), command: bytes = b"") -> (
        list[bytes]):
    """The bytes one poll sends: the configured command, else the preset's; a Metro
    multiplexer gets one channel digit per configured channel (no terminator)."""
    if command:
        return [command]
    if preset.poll_by_channel:
        return [str(c).encode("ascii") for c in (channels or (1,))]
    return [preset.poll] if preset.poll else []


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
