"""Gauge line parsers: the byte strings of DOMAIN.md §2, error strings, units, and
properties (no input raises; nothing that is not the format ever becomes a value)."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from drivers.gauge.families.mitutoyo import format_mitutoyo
from drivers.gauge.presets import PRESETS, make_parser
from drivers.gauge.records import Parsed, Rejected, convert_unit, normalise_decimal, parse_line

GENERIC_PATTERN = r"^(?P<value>[+-]?\d+(\.\d+)?)\s*(?P<unit>mm|in|um)?$"
# The Mitutoyo record, written independently of the parser: what a value line must be.
STRICT_MITUTOYO = re.compile(rb"0[0-9]A[+-][0-9]+(\.[0-9]+)?")

MITUTOYO = make_parser("mitutoyo", error_strings=["ERR"])
GENERIC = make_parser("generic", pattern=GENERIC_PATTERN, error_strings=["ERR", "OVER"])


# --------------------------------------------------------------------------- mitutoyo

@pytest.mark.parametrize(("line", "expected"), [
    (b"01A+0000.123", Parsed("0.123", None, 1)),
    (b"01A-001.2340", Parsed("-1.2340", None, 1)),
    (b"03A+0012.500", Parsed("12.500", None, 3)),
    (b"01A-0000.000", Parsed("0.000", None, 1)),
    (b"01A+00000012", Parsed("12", None, 1)),
    (b"00A+1234.5678", Parsed("1234.5678", None, 0)),
])
def test_mitutoyo_records(line: bytes, expected: Parsed) -> None:
    assert parse_line(MITUTOYO, line) == expected


@pytest.mark.parametrize("line", [
    b"01A", b"01A+", b"01A-", b"01A++0000.123", b"01A+-0000.123", b"01A0000.123",
    b"01A+00x0.123", b"01A+0000.12 3", b" 01A+0000.123", b"01A+0000.123 ", b"01A+.123",
    b"01A+0000.", b"01A+0.1.2", b"01A+1e5", b"01A+NaN", b"01A+Infinity", b"1A+0000.123",
    b"01B+0000.123", b"0xA+0000.123", b"01A+0000.123\x00", b"\x0201A+0000.123",
    b"01A+0000.12\xb3", "01A+0000.\u0661\u0662".encode(), b"01A+\xef\xbc\x91.0",
    b"hello", b"01A+0000.123\t",
])
def test_mitutoyo_rejects_everything_else(line: bytes) -> None:
    assert parse_line(MITUTOYO, line) == Rejected("garbage")


def test_empty_line_is_rejected() -> None:
    assert parse_line(MITUTOYO, b"") == Rejected("empty")


@pytest.mark.parametrize(("line", "reason"), [
    (b"ERR3", "device_error: ERR3"),
    (b"ERR0 sensor", "device_error: ERR0 sensor"),
    (b"  ERR2", "device_error: ERR2"),
])
def test_error_strings_are_device_errors(line: bytes, reason: str) -> None:
    result = parse_line(MITUTOYO, line)
    assert result == Rejected(reason)
    assert isinstance(result, Rejected) and result.device_error


def test_error_strings_are_configured_not_guessed() -> None:
    plain = make_parser("mitutoyo")
    result = parse_line(plain, b"ERR3")
    assert result == Rejected("garbage")
    assert isinstance(result, Rejected) and not result.device_error


def test_preset_line_defaults() -> None:
    mitutoyo = PRESETS["mitutoyo"]
    assert (mitutoyo.baudrate, mitutoyo.bytesize, mitutoyo.parity, mitutoyo.stopbits) == (
        9600, 8, "N", 1)
    assert mitutoyo.terminator == b"\r" and not mitutoyo.unit_in_record
    assert PRESETS["generic"].unit_in_record


# --------------------------------------------------------------------------- generic

@pytest.mark.parametrize(("line", "expected"), [
    (b"4.285 mm", Parsed("4.285", "mm")),
    (b"4.285mm", Parsed("4.285", "mm")),
    (b"-0.0015 in", Parsed("-0.0015", "in")),
    (b"+012 um", Parsed("12", "um")),
    (b"4.285", Parsed("4.285", None)),
    (b"  4.285 mm  ", Parsed("4.285", "mm")),
])
def test_generic_records(line: bytes, expected: Parsed) -> None:
    assert parse_line(GENERIC, line) == expected


@pytest.mark.parametrize("line", [
    b"4.285 Nm", b"4.285 mm x", b"x4.285 mm", b"4,285 mm", b"4.2.85 mm", b"++4.285 mm",
    b"mm", b"4.285 MM", b"4.285 \xb5m",
])
def test_generic_rejects_what_the_pattern_does_not_fully_match(line: bytes) -> None:
    assert parse_line(GENERIC, line) == Rejected("garbage")


@pytest.mark.parametrize(("line", "reason"), [
    (b"ERR6", "device_error: ERR6"), (b"OVER range", "device_error: OVER range")])
def test_generic_error_strings(line: bytes, reason: str) -> None:
    assert parse_line(GENERIC, line) == Rejected(reason)


def test_generic_channel_flag_and_unit_aliases() -> None:
    parser = make_parser("generic", pattern=r"(?P<channel>\d) (?P<value>[+-]\d+\.\d+) "
                                            r"(?P<unit>mm|IN|inch)(?P<flag>[<=>])?")
    assert parse_line(parser, b"1 +012.34 mm=") == Parsed("12.34", "mm", 1, "=", "within")
    assert parse_line(parser, b"2 -000.50 IN") == Parsed("-0.50", "in", 2, None)
    assert parse_line(parser, b"3 +1.0 inch>") == Parsed("1.0", "in", 3, ">", "above")


def test_generic_keeps_any_flag_its_pattern_captures() -> None:
    """A flag outside < = > (e.g. GO/NG of a counter) used to make the line garbage: the
    flagged reading vanished. It is a value with its flag kept."""
    parser = make_parser("generic", pattern=r"(?P<value>[+-]?\d+\.\d+) mm (?P<flag>\S+)")
    assert parse_line(parser, b"+1.250 mm +NG") == Parsed("1.250", None, None, "+NG", "above")
    assert parse_line(parser, b"+1.250 mm NGX") == Parsed("1.250", None, None, "NGX", None)


def test_generic_value_group_must_hold_a_plain_decimal() -> None:
    loose = make_parser("generic", pattern=r"(?P<value>\S+) mm")
    for line in (b"1.2.3 mm", b"1,5 mm", b"NaN mm", b"1e3 mm", b"- mm", b"+-1 mm"):
        assert parse_line(loose, line) == Rejected("bad_value"), line
    assert parse_line(loose, b"007 mm") == Parsed("7", None)  # no unit group: config decides


def test_generic_non_length_units_pass_through() -> None:
    torque = make_parser("generic", pattern=r"(?P<value>[+-]?\d+\.\d+) (?P<unit>Nm)")
    assert parse_line(torque, b"4.285 Nm") == Parsed("4.285", "Nm")


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"preset": "sylvak"}, "unknown gauge preset"),
    ({"preset": "generic"}, "needs a pattern"),
    ({"preset": "generic", "pattern": r"(?P<v>\d+)"}, "no named group 'value'"),
    ({"preset": "mitutoyo", "pattern": r"(?P<value>\d+)"}, "takes no pattern"),
])
def test_make_parser_refuses_bad_config(kwargs: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_parser(**kwargs)


# --------------------------------------------------------------------------- decimals

@pytest.mark.parametrize(("text", "expected"), [
    ("+0000.123", "0.123"), ("-001.2340", "-1.2340"), ("0", "0"), ("-0", "0"),
    ("-0.000", "0.000"), ("000", "0"), (".5", "0.5"), ("5.", "5"), ("12", "12"),
    ("", None), ("+", None), ("-.", None), ("1e3", None), ("NaN", None), ("Infinity", None),
    (" 1", None), ("1 ", None), ("+-1", None), ("\u0661", None), ("1_000", None),
])
def test_normalise_decimal(text: str, expected: str | None) -> None:
    assert normalise_decimal(text) == expected


# --------------------------------------------------------------------------- units

@pytest.mark.parametrize(("value", "src", "dst", "expected"), [
    ("1", "in", "mm", "25.4"),
    ("0.0005", "in", "mm", "0.01270"),
    ("25.400", "mm", "in", "1.00000"),
    ("0.001", "mm", "in", "0.00004"),
    ("-0.001", "mm", "in", "-0.00004"),
    ("0.123", "mm", "um", "123"),
    ("123", "um", "mm", "0.123"),
    ("-1.5", "um", "mm", "-0.0015"),
    ("0.0005", "in", "um", "12.70"),
    ("+0001.20", "mm", "mm", "1.20"),
    ("1", "inch", "MM", "25.4"),
    ("5", "µm", "mm", "0.005"),
])
def test_convert_unit(value: str, src: str, dst: str, expected: str) -> None:
    assert convert_unit(value, src, dst) == expected


@pytest.mark.parametrize(("value", "src", "dst"), [
    ("1", "mm", "Nm"), ("1", "ft", "mm"), ("1", "", "mm"), ("1.2.3", "mm", "in"),
    ("abc", "mm", "um"), ("NaN", "mm", "in"),
])
def test_convert_unit_refuses(value: str, src: str, dst: str) -> None:
    with pytest.raises(ValueError):
        convert_unit(value, src, dst)


def _decimals() -> st.SearchStrategy[Decimal]:
    return st.builds(lambda n, places: Decimal(n).scaleb(-places),
                     st.integers(-10**9, 10**9), st.integers(0, 6))


@given(_decimals())
def test_inch_to_mm_and_back_is_the_identity(value: Decimal) -> None:
    mm = convert_unit(f"{value:f}", "in", "mm")
    assert Decimal(convert_unit(mm, "mm", "in")) == value


@given(_decimals())
def test_mm_to_um_and_back_keeps_the_string(value: Decimal) -> None:
    text = normalise_decimal(f"{value:f}")
    assert text is not None
    back = convert_unit(convert_unit(text, "mm", "um"), "um", "mm")
    assert Decimal(back) == value
    if -value.as_tuple().exponent >= 3:
        # Coarser than 1 um cannot be written as a plain um decimal: '5' mm is '5000' um
        # and comes back as '5.000'; at 0.001 mm resolution and finer the string survives.
        assert back == text


# --------------------------------------------------------------------------- properties

@given(st.binary(max_size=64))
@example(b"01A+0000.123")
@example(b"01A+0000.123\r")
def test_mitutoyo_arbitrary_bytes_never_raise_and_values_match_the_format(line: bytes) -> None:
    result = parse_line(MITUTOYO, line)
    assert isinstance(result, Parsed | Rejected)
    if isinstance(result, Parsed):
        assert STRICT_MITUTOYO.fullmatch(line)
        assert Decimal(result.value) == Decimal(line[3:].decode())


@st.composite
def _mutated_records(draw: st.DrawFn) -> bytes:
    """Valid records with one byte inserted, replaced or removed: near misses."""
    line = bytearray(format_mitutoyo(draw(_decimals()), draw(st.integers(0, 9))))
    pos = draw(st.integers(0, len(line) - 1))
    byte = draw(st.integers(0, 255))
    how = draw(st.sampled_from(["insert", "replace", "delete"]))
    if how == "insert":
        line.insert(pos, byte)
    elif how == "replace":
        line[pos] = byte
    else:
        del line[pos]
    return bytes(line)


@given(st.one_of(_mutated_records(),
                 st.from_regex(rb"\A0[0-9xA]A?[+\- ]{0,2}[0-9.x ]{0,12}\Z")))
def test_mitutoyo_near_misses_are_values_only_when_well_formed(line: bytes) -> None:
    result = parse_line(MITUTOYO, line)
    assert isinstance(result, Parsed) == bool(STRICT_MITUTOYO.fullmatch(line))


@given(st.binary(max_size=64))
@example(b"4.285 mm")
def test_generic_arbitrary_bytes_never_raise_and_values_match_the_pattern(line: bytes) -> None:
    result = parse_line(GENERIC, line)
    assert isinstance(result, Parsed | Rejected)
    if isinstance(result, Parsed):
        assert re.fullmatch(GENERIC_PATTERN, line.decode("ascii").strip())


@given(_decimals(), st.integers(0, 9))
def test_mitutoyo_round_trip(value: Decimal, channel: int) -> None:
    result = parse_line(MITUTOYO, format_mitutoyo(value, channel))
    assert isinstance(result, Parsed)
    parsed = Decimal(result.value)
    assert parsed == value
    assert parsed.as_tuple().exponent == value.as_tuple().exponent  # resolution kept
    assert result.channel == channel and result.unit is None


def test_format_mitutoyo_matches_domain_examples() -> None:
    assert format_mitutoyo("0.123") == b"01A+0000.123"
    assert format_mitutoyo(Decimal("-1.2340")) == b"01A-001.2340"
    assert format_mitutoyo("-0.000", channel=4) == b"04A+0000.000"
    with pytest.raises(ValueError):
        format_mitutoyo("1", channel=10)
