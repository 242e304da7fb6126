"""Every gauge family of DOMAIN.md §2 (Sylvac, Millimar, Mahr OPTORS, Chicago, Metro,
Mitutoyo multiplexer): the exact byte strings of the table, errors, and hypothesis
garbage per parser (never raises, never a value from a line outside the format)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.gauge.presets import PRESETS, make_parser, poll_commands
from drivers.gauge.records import Parsed, Rejected, parse_line, parse_records

SYLVAC = make_parser("sylvac")
MILLIMAR = make_parser("millimar")
OPTORS = make_parser("mahr_optors")
CHICAGO = make_parser("chicago")
METRO = make_parser("metro")
MITUTOYO = make_parser("mitutoyo")


# --------------------------------------------------------------------------- line settings

@pytest.mark.parametrize(("preset", "line", "poll"), [
    ("sylvac", (4800, 7, "E", 2), b"?\r"),
    ("millimar", (9600, 7, "E", 2), b"?\r"),
    ("chicago", (9600, 8, "N", 1), b"R\r"),
    ("mitutoyo", (9600, 8, "N", 1), b""),
])
def test_line_settings_and_poll_commands(preset: str, line: tuple, poll: bytes) -> None:
    p = PRESETS[preset]
    assert (p.baudrate, p.bytesize, p.parity, p.stopbits) == line
    assert p.poll == poll


def test_poll_commands() -> None:
    assert poll_commands(PRESETS["sylvac"]) == [b"?\r"]
    assert poll_commands(PRESETS["millimar"], command=b"M1?\r") == [b"M1?\r"]
    # Metro: one channel digit per configured channel, no terminator.
    assert poll_commands(PRESETS["metro"], (1, 2, 4)) == [b"1", b"2", b"4"]
    assert poll_commands(PRESETS["mitutoyo"]) == []


# --------------------------------------------------------------------------- sylvac

@pytest.mark.parametrize(("line", "expected"), [
    (b"+12.345", Parsed("12.345")),
    (b"-0.0020", Parsed("-0.0020")),
    (b" 0.010", Parsed("0.010")),          # a blank is the plus sign
    (b" 12.345", Parsed("12.345")),
    (b"-12.345<", Parsed("-12.345", None, None, "<", "below")),
    (b"+0.500=", Parsed("0.500", None, None, "=", "within")),
    (b" 1.000>", Parsed("1.000", None, None, ">", "above")),
    (b"+0.4920 IN", Parsed("0.4920", "in")),
])
def test_sylvac_records(line: bytes, expected: Parsed) -> None:
    assert parse_line(SYLVAC, line) == expected


@pytest.mark.parametrize(("line", "meaning"), [
    (b"ERR0", "sensor error"), (b"ERR1", "bad command"), (b"ERR2", "parity error"),
    (b"ERR3", "over range"), (b"ERR7", "undocumented error code"),
    (b"ERR12", "undocumented error code"),
])
def test_sylvac_errors(line: bytes, meaning: str) -> None:
    assert parse_line(SYLVAC, line) == Rejected(f"device_error: {line.decode()} ({meaning})")


def test_sylvac_power_on_id_line_is_ignored_not_garbage() -> None:
    result = parse_line(SYLVAC, b"SY289 V2.1")
    assert isinstance(result, Rejected) and result.ignored and not result.device_error


@pytest.mark.parametrize("line", [b"++1.0", b"1.0<<", b"<1.0", b"1.0 <", b"?", b"1,5",
                                  b"+1.0 mm mm", b"- 1.0", b"1.0x"])
def test_sylvac_garbage(line: bytes) -> None:
    assert parse_line(SYLVAC, line) == Rejected("garbage")


# --------------------------------------------------------------------------- millimar

def test_millimar_multi_feature_record() -> None:
    got = parse_records(MILLIMAR, b"1 +012.34 mm;2 -000.05 mm<;3 ERR6")
    assert got == [
        Parsed("12.34", "mm", 1, None),
        Parsed("-0.05", "mm", 2, "<", "below"),
        Rejected("device_error: feature 3 ERR6 (feature deactivated)"),
    ]
    assert parse_records(MILLIMAR, b"1 +012.34 mm") == [Parsed("12.34", "mm", 1)]
    assert parse_records(MILLIMAR, b"1 +012.34 mm =") == [Parsed("12.34", "mm", 1, "=", "within")]
    assert parse_line(MILLIMAR, b"1 +1.0 mm;2 +2.0 mm") == Rejected("multiple_records")


def test_millimar_tolerance_and_warning_flags_units_and_errors() -> None:
    """C1202 manual: with warning limits on, a second symbol follows the tolerance one;
    units mm/um/inch/deg/rad; an angle in dms and any ERRn are reported, never dropped."""
    got = parse_records(MILLIMAR, b"1 +012.34 mm > ;2 -000.05 mm = <;3 +001.50 deg =;"
                                  b"4 ERR9;5 +012:30:15 dms")
    assert got == [
        Parsed("12.34", "mm", 1, ">", "above"),
        Parsed("-0.05", "mm", 2, "= <", "within"),
        Parsed("1.50", "deg", 3, "=", "within"),
        Rejected("device_error: feature 4 ERR9 (undocumented error code)"),
        Rejected("unsupported: feature 5 angle 012:30:15 dms (deg:min:s has no decimal "
                 "resolution: set the C1202's unit to deg)"),
    ]
    assert all(r.reportable for r in got if isinstance(r, Rejected))


@pytest.mark.parametrize("line", [b"1 +012.34 mm;garbage", b"+012.34 mm", b"1 +012.34 mm;;",
                                  b"x +1.0 mm", b"1 +1.0 furlong"])
def test_millimar_half_understood_line_yields_nothing(line: bytes) -> None:
    assert parse_records(MILLIMAR, line) == [Rejected("garbage")]


# --------------------------------------------------------------------------- mahr optors

@pytest.mark.parametrize(("line", "expected"), [
    (b"012.345mm", Parsed("12.345", "mm")),
    (b"-0.0123in", Parsed("-0.0123", "in")),
    (b"000.120 mm", Parsed("0.120", "mm")),
])
def test_optors_records(line: bytes, expected: Parsed) -> None:
    assert parse_line(OPTORS, line) == expected


@pytest.mark.parametrize("line", [b"012.345", b"mm", b"12mm", b"012.345mmm"])
def test_optors_garbage(line: bytes) -> None:
    assert parse_line(OPTORS, line) == Rejected("garbage")


# --------------------------------------------------------------------------- chicago

@pytest.mark.parametrize(("line", "expected"), [
    (b"+   0.500, MM", Parsed("0.500", "mm")),
    (b"-  0.0125, IN", Parsed("-0.0125", "in")),
    (b"+12.34567, MM", Parsed("12.34567", "mm")),
    (b"+0.500   , MM", Parsed("0.500", "mm")),
    (b"-   0.000, MM", Parsed("0.000", "mm")),
])
def test_chicago_records(line: bytes, expected: Parsed) -> None:
    assert parse_line(CHICAGO, line) == expected


@pytest.mark.parametrize("line", [b"+  0. 500, MM", b"+0.5, MM", b"    0.500, MM",
                                  b"+   0.500, CM", b"+        , MM", b"+   0.500 MM"])
def test_chicago_garbage(line: bytes) -> None:
    assert isinstance(parse_line(CHICAGO, line), Rejected)


# --------------------------------------------------------------------------- metro

@pytest.mark.parametrize(("line", "expected"), [
    (b"V2: mm       -00001.250000", Parsed("-1.250000", "mm", 2)),
    (b"V1: in       +00000.012500", Parsed("0.012500", "in", 1)),
    (b"V8: mm   abs  00012.000000", Parsed("12.000000", "mm", 8, "abs")),
    # The instrument's own tolerance verdict in the ttt column: a flagged value is a value.
    (b"V2: mm   +NG +00001.250000", Parsed("1.250000", "mm", 2, "+NG", "above")),
    (b"V3: mm   -NG -00000.750000", Parsed("-0.750000", "mm", 3, "-NG", "below")),
    (b"V4: mm   GO  +00001.000000", Parsed("1.000000", "mm", 4, "GO", "within")),
    (b"V5: inch MAX  00000.012500", Parsed("0.012500", "in", 5, "MAX")),
    (b"V6:      REL -00000.001000", Parsed("-0.001000", None, 6, "REL")),
    (b"V7: m/s  XYZ +00003.000000", Parsed("3.000000", "m/s", 7, "XYZ")),  # unknown: kept
    (b"V1: IN   +NG  00000.500000", Parsed("0.500000", "in", 1, "+NG", "above")),
    # firmware that does not pad the columns
    (b"V2: mm +NG -1.25", Parsed("-1.25", "mm", 2, "+NG", "above")),
    (b"V2: -NG -1.25", Parsed("-1.25", None, 2, "-NG", "below")),
    (b"V2: mm -1.25", Parsed("-1.25", "mm", 2)),
])
def test_metro_records(line: bytes, expected: Parsed) -> None:
    assert parse_line(METRO, line) == expected


@pytest.mark.parametrize(("line", "meaning"), [(b"N21:E1", "communication error"),
                                               (b"N30:E3", "reading error"),
                                               (b"N40:E5", "undocumented error code")])
def test_metro_errors(line: bytes, meaning: str) -> None:
    assert parse_line(METRO, line) == Rejected(f"device_error: {line.decode()} ({meaning})")


# --------------------------------------------------------------------------- mitutoyo mux

def test_mitutoyo_multiplexer_channels() -> None:
    assert [parse_line(MITUTOYO, f"0{c}A+0000.123".encode()).channel  # type: ignore[union-attr]
            for c in range(1, 10)] == list(range(1, 10))


# --------------------------------------------------------------------------- properties

# What a value line must look like, written independently of each parser.
STRICT = {
    "sylvac": re.compile(rb"[+\- ]?\d+(\.\d+)?( ?(mm|in|inch|MM|IN))?[<=>]? *"),
    "millimar": re.compile(rb" *\d{1,2} +([+-]?\d+(\.\d+)? *(mm|in|um|\xc2\xb5m|inch|deg|rad)?"
                           rb"( *[<=>]){0,2}|ERR\d+|[+-]?\d+:\d\d:\d\d *(dms)?)"
                           rb"( *; *\d{1,2} +([+-]?\d+(\.\d+)? *(mm|in|um|inch|deg|rad)?"
                           rb"( *[<=>]){0,2}|ERR\d+|[+-]?\d+:\d\d:\d\d *(dms)?))* *;? *"),
    "mahr_optors": re.compile(rb" *[+-]? *\d+\.\d+ *(mm|in|inch|um)\s*", re.IGNORECASE),
    "chicago": re.compile(rb"[+-] *(\d+\.?\d*|\d*\.\d+) *, ?(IN|MM|in|mm) *"),
    "metro": re.compile(rb"V[1-8]:( [ -~]{4} [ -~]{3} |( +\S{1,4}){0,2} *)[+\- ]\d+\.\d+ *"),
}
SAMPLES = {
    "sylvac": [b"+12.345", b" 0.010<", b"-0.0020=", b"+0.4920 IN"],
    "millimar": [b"1 +012.34 mm;2 -000.05 mm<", b"3 ERR6", b"1 +1.0 mm = <"],
    "mahr_optors": [b"012.345mm", b"-0.0123in"],
    "chicago": [b"+   0.500, MM", b"-  0.0125, IN"],
    "metro": [b"V2: mm       -00001.250000", b"N21:E1", b"V2: mm   +NG +00001.250000"],
}


@st.composite
def _near_misses(draw: st.DrawFn, preset: str) -> bytes:
    line = bytearray(draw(st.sampled_from(SAMPLES[preset])))
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["insert", "delete", "replace"]))
        pos = draw(st.integers(0, len(line)))
        char = draw(st.sampled_from(b"0123456789+-. ,;<=>:VNEmMiInRrx\x00\xff\r"))
        if op == "insert":
            line.insert(pos, char)
        elif line and pos < len(line):
            if op == "delete":
                del line[pos]
            else:
                line[pos] = char
    return bytes(line)


@pytest.mark.parametrize("preset", sorted(STRICT))
@given(data=st.data())
def test_garbage_never_raises_and_never_yields_a_value(preset: str, data: st.DataObject) -> None:
    parser = make_parser(preset)
    line = data.draw(st.one_of(st.binary(max_size=48), _near_misses(preset)))
    results = parse_records(parser, line)
    assert results and all(isinstance(r, Parsed | Rejected) for r in results)
    if any(isinstance(r, Parsed) for r in results):
        assert STRICT[preset].fullmatch(line), line
    for r in results:
        if isinstance(r, Parsed):
            assert re.fullmatch(r"-?\d+(\.\d+)?", r.value)
            assert r.flag is None or (r.flag == r.flag.strip() and r.flag.isprintable())
            assert r.verdict in (None, "below", "within", "above")
            assert r.verdict is None or r.flag is not None


def test_metro_word_column_longer_than_its_field_is_garbage() -> None:
    """Found by the property test above: an unpadded 5-character 'flag' (+AAAA) was taken
    as a tolerance verdict and the line as a value. A column is at most 4 characters."""
    parser = make_parser("metro")
    results = parse_records(parser, b"V1: +AAAA 0.0")
    assert results and not any(isinstance(r, Parsed) for r in results)
    flagged = parse_records(parser, b"V1: +NG 0.0")  # a real verdict, unpadded, still a value
    assert [r.flag for r in flagged if isinstance(r, Parsed)] == ["+NG"]


# --------------------------------------------------------------------------- every family

# The demo's and the tests' generic gauges: '<value> <unit>' (sim/gauge.py, config/)
GENERIC_RECORD = r"(?P<value>[+-]?\d+(?:\.\d+)?) (?P<unit>mm|in|um)"


@pytest.mark.parametrize("preset", sorted(PRESETS))
@pytest.mark.parametrize("value", ["0.123", "-0.250", "1.5", "12.000", "0.000"])
def test_every_family_reads_back_what_its_formatter_writes(preset: str, value: str) -> None:
    """A family brings its parser and its formatter (DESIGN.md, "How to add a gauge
    family"); this runs for every entry of FAMILIES, so a new family is covered the day
    it is registered: what the simulator sends for a value parses back to that value."""
    from decimal import Decimal

    spec = PRESETS[preset]
    assert spec.format is not None, f"{preset}: a family brings its record formatter"
    parser = make_parser(preset, GENERIC_RECORD if spec.needs_pattern else None)
    record = spec.format(value, 1, "mm", "")
    got = parse_line(parser, record)
    assert isinstance(got, Parsed), (record, got)
    assert Decimal(got.value) == Decimal(value), record
    if spec.unit_in_record:
        assert got.unit == "mm", record
