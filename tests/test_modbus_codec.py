"""Codec tests: known byte patterns per type x order, scaling, strings, block planning."""

from __future__ import annotations

import itertools
import math
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.modbus.codec import (
    BIT_AREAS,
    ORDERS,
    TagSpec,
    decode_block,
    decode_value,
    encode_value,
    make_block,
    plan_blocks,
)

# Known register images for each order. float32 1.5 = 0x3FC00000, int32 -2 = 0xFFFFFFFE,
# uint32 0x12345678, float64 1.5 = 0x3FF8000000000000.
FLOAT32_15 = {
    "ABCD": [0x3FC0, 0x0000],
    "CDAB": [0x0000, 0x3FC0],
    "BADC": [0xC03F, 0x0000],
    "DCBA": [0x0000, 0xC03F],
}
UINT32_12345678 = {
    "ABCD": [0x1234, 0x5678],
    "CDAB": [0x5678, 0x1234],
    "BADC": [0x3412, 0x7856],
    "DCBA": [0x7856, 0x3412],
}
FLOAT64_15 = {
    "ABCD": [0x3FF8, 0, 0, 0],
    "CDAB": [0, 0, 0, 0x3FF8],
    "BADC": [0xF83F, 0, 0, 0],
    "DCBA": [0, 0, 0, 0xF83F],
}
FLOAT64_BYTES = {  # 0x0102030405060708 as float64 bit pattern, to pin word positions
    "ABCD": [0x0102, 0x0304, 0x0506, 0x0708],
    "CDAB": [0x0708, 0x0506, 0x0304, 0x0102],
    "BADC": [0x0201, 0x0403, 0x0605, 0x0807],
    "DCBA": [0x0807, 0x0605, 0x0403, 0x0201],
}


def tag(type_: str = "uint16", order: str = "ABCD", **kw) -> TagSpec:
    kw.setdefault("name", "t")
    kw.setdefault("area", "holding")
    kw.setdefault("address", 0)
    return TagSpec(type=type_, order=order, **kw)


@pytest.mark.parametrize("order", ORDERS)
def test_float32_orders(order: str) -> None:
    assert decode_value(tag("float32", order), FLOAT32_15[order]) == 1.5
    assert encode_value(tag("float32", order), 1.5) == FLOAT32_15[order]


@pytest.mark.parametrize("order", ORDERS)
def test_uint32_orders(order: str) -> None:
    assert decode_value(tag("uint32", order), UINT32_12345678[order]) == 0x12345678
    assert encode_value(tag("uint32", order), 0x12345678) == UINT32_12345678[order]


@pytest.mark.parametrize("order", ORDERS)
def test_int32_orders(order: str) -> None:
    regs = {"ABCD": [0xFFFF, 0xFFFE], "CDAB": [0xFFFE, 0xFFFF],
            "BADC": [0xFFFF, 0xFEFF], "DCBA": [0xFEFF, 0xFFFF]}[order]
    value = decode_value(tag("int32", order), regs)
    assert value == -2 and isinstance(value, int)


@pytest.mark.parametrize("order", ORDERS)
def test_float64_orders(order: str) -> None:
    assert decode_value(tag("float64", order), FLOAT64_15[order]) == 1.5
    expected = struct.unpack(">d", bytes(range(1, 9)))[0]
    assert decode_value(tag("float64", order), FLOAT64_BYTES[order]) == expected


@pytest.mark.parametrize("order", ORDERS)
def test_16bit_types_ignore_order(order: str) -> None:
    assert decode_value(tag("int16", order), [0xFFFE]) == -2
    assert decode_value(tag("uint16", order), [0xFFFE]) == 0xFFFE
    assert decode_value(tag("bool", order), [0x0100]) is True
    assert decode_value(tag("bool", order), [0]) is False


@pytest.mark.parametrize("order", ORDERS)
def test_string_orders(order: str) -> None:
    spec = tag("string", order, length=3)
    swapped = order in ("BADC", "DCBA")
    regs = [0x4241, 0x4443, 0x0045] if swapped else [0x4142, 0x4344, 0x4500]
    assert decode_value(spec, regs) == "ABCDE"
    assert encode_value(spec, "ABCDE") == regs


def test_string_strips_nul_and_trailing_spaces() -> None:
    spec = tag("string", length=4)
    assert decode_value(spec, [0x4142, 0x2020, 0x0000, 0x0000]) == "AB"
    assert decode_value(spec, [0x4142, 0x0058, 0x5858, 0x5858]) == "AB"  # stale after NUL
    assert decode_value(spec, [0x2041, 0x2020, 0x2020, 0x2020]) == " A"


def test_string_too_long_for_encode() -> None:
    with pytest.raises(ValueError):
        encode_value(tag("string", length=1), "ABC")


def test_scale_and_offset() -> None:
    temp = tag("int16", scale=0.1)
    assert decode_value(temp, [0xFF38]) == pytest.approx(-20.0)  # -200 * 0.1
    shifted = tag("uint16", scale=2.0, offset=-10.0)
    assert decode_value(shifted, [5]) == 0.0
    assert encode_value(shifted, 0.0) == [5]
    assert encode_value(temp, -20.0) == [0xFF38]


def test_ints_stay_int_without_scaling() -> None:
    value = decode_value(tag("uint32"), [0, 7])
    assert value == 7 and type(value) is int
    assert type(decode_value(tag("uint16", scale=1.0, offset=0.5), [1])) is float


def test_bits_decode() -> None:
    specs = [TagSpec("a", "coil", 3, "bool"), TagSpec("b", "coil", 5, "bool")]
    block = make_block("coil", specs)
    assert (block.start, block.count) == (3, 3)
    # pymodbus pads bit reads to whole bytes: longer data is fine
    assert decode_block(block, [True, False, False, False, False, False, False, False]) == {
        "a": True, "b": False}
    assert decode_block(make_block("discrete", [TagSpec("d", "discrete", 0, "bool")]),
                        [1]) == {"d": True}


def test_short_response_raises() -> None:
    block = make_block("holding", [tag("uint32")])
    with pytest.raises(ValueError):
        decode_block(block, [1])


def test_overlapping_tags_in_one_block() -> None:
    specs = [
        TagSpec("whole", "holding", 0, "uint32"),
        TagSpec("hi", "holding", 0, "uint16"),
        TagSpec("lo", "holding", 1, "uint16"),
        TagSpec("swapped", "holding", 0, "uint32", "CDAB"),
    ]
    [block] = plan_blocks(specs, max_gap=0)
    assert decode_block(block, [0x1234, 0x5678]) == {
        "whole": 0x12345678, "hi": 0x1234, "lo": 0x5678, "swapped": 0x56781234}


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        ({"area": "memory"}, "area"),
        ({"type": "int8"}, "type"),
        ({"order": "XYZW"}, "order"),
        ({"type": "string", "length": 0}, "length"),
        ({"area": "coil", "type": "uint16"}, "bool"),
        ({"address": 65535, "type": "uint32"}, "address"),
        ({"scale": 0.0}, "scale"),
    ],
)
def test_tagspec_validation(bad: dict, match: str) -> None:
    kw = {"name": "t", "area": "holding", "address": 0, "type": "uint16"} | bad
    with pytest.raises(ValueError, match=match):
        TagSpec(**kw)


# ---------------------------------------------------------------------------- planning


def u16(name: str, address: int, area: str = "holding") -> TagSpec:
    return TagSpec(name, area, address, "bool" if area in BIT_AREAS else "uint16")


def spans(blocks) -> list[tuple[str, int, int]]:
    return [(b.area, b.start, b.count) for b in blocks]


def test_plan_coalesces_within_gap() -> None:
    tags = [u16("a", 0), u16("b", 5), u16("c", 20)]
    assert spans(plan_blocks(tags, max_gap=4)) == [("holding", 0, 6), ("holding", 20, 1)]
    assert spans(plan_blocks(tags, max_gap=14)) == [("holding", 0, 21)]
    assert spans(plan_blocks(tags, max_gap=0)) == [
        ("holding", 0, 1), ("holding", 5, 1), ("holding", 20, 1)]


def test_plan_adjacent_tags_join_with_zero_gap() -> None:
    tags = [TagSpec("a", "holding", 0, "uint32"), u16("b", 2), u16("c", 3)]
    assert spans(plan_blocks(tags, max_gap=0)) == [("holding", 0, 4)]


def test_plan_respects_register_limit() -> None:
    tags = [u16(f"t{i}", i) for i in range(300)]
    blocks = plan_blocks(tags, max_gap=8)
    assert spans(blocks) == [("holding", 0, 125), ("holding", 125, 125), ("holding", 250, 50)]
    assert spans(plan_blocks(tags[:10], max_gap=8, max_registers=4))[0] == ("holding", 0, 4)


def test_plan_respects_bit_limit_and_mixed_areas() -> None:
    tags = [u16(f"c{i}", i, "coil") for i in range(0, 30, 3)]
    tags += [u16("h", 0), u16("i", 0, "input"), u16("d", 7, "discrete")]
    blocks = plan_blocks(tags, max_gap=2, max_bits=10)
    assert spans(blocks) == [
        ("holding", 0, 1), ("input", 0, 1),
        ("coil", 0, 10), ("coil", 12, 10), ("coil", 24, 4),
        ("discrete", 7, 1),
    ]


def test_plan_rejects_duplicates_and_oversize() -> None:
    with pytest.raises(ValueError, match="duplicate"):
        plan_blocks([u16("a", 0), u16("a", 1)], max_gap=0)
    with pytest.raises(ValueError, match="spans"):
        plan_blocks([TagSpec("s", "holding", 0, "string", length=10)], 0, max_registers=8)


def test_plan_decodes_real_press_map() -> None:
    tags = [
        TagSpec("strokes", "holding", 0, "uint32"),
        TagSpec("die", "holding", 2, "uint16"),
        TagSpec("part", "holding", 10, "string", length=8),
        TagSpec("tonnage", "holding", 30, "float32", "CDAB"),
        TagSpec("temp", "holding", 32, "int16", scale=0.1),
    ]
    blocks = plan_blocks(tags, max_gap=6)
    assert spans(blocks) == [("holding", 0, 3), ("holding", 10, 8), ("holding", 30, 3)]
    assert spans(plan_blocks(tags, max_gap=11)) == [("holding", 0, 18), ("holding", 30, 3)]
    blocks = plan_blocks(tags, max_gap=12)
    assert spans(blocks) == [("holding", 0, 33)]
    regs = [0] * 33
    regs[0:2] = encode_value(tags[0], 70000)
    regs[2] = 7
    regs[10:18] = encode_value(tags[2], "4711-A")
    regs[30:32] = encode_value(tags[3], 812.5)
    regs[32] = encode_value(tags[4], 42.5)[0]
    values = decode_block(blocks[0], regs)
    assert values == {"strokes": 70000, "die": 7, "part": "4711-A", "tonnage": 812.5,
                      "temp": pytest.approx(42.5)}


# ---------------------------------------------------------------------------- properties

_INT_BOUNDS = {"int16": (-(2**15), 2**15 - 1), "uint16": (0, 2**16 - 1),
               "int32": (-(2**31), 2**31 - 1), "uint32": (0, 2**32 - 1)}


@st.composite
def spec_and_value(draw):
    type_ = draw(st.sampled_from(["bool", "int16", "uint16", "int32", "uint32",
                                  "float32", "float64", "string"]))
    order = draw(st.sampled_from(ORDERS))
    length = draw(st.integers(1, 10)) if type_ == "string" else 0
    spec = TagSpec("v", "holding", draw(st.integers(0, 1000)), type_, order, length)
    if type_ == "bool":
        value = draw(st.booleans())
    elif type_ in _INT_BOUNDS:
        value = draw(st.integers(*_INT_BOUNDS[type_]))
    elif type_ == "float32":
        value = draw(st.floats(width=32, allow_nan=False))
    elif type_ == "float64":
        value = draw(st.floats(allow_nan=False))
    else:
        alphabet = st.characters(min_codepoint=0x21, max_codepoint=0x7E)
        value = draw(st.text(alphabet, max_size=2 * length))
    return spec, value


@given(spec_and_value())
def test_roundtrip_every_type_and_order(case) -> None:
    spec, value = case
    regs = encode_value(spec, value)
    assert len(regs) == spec.width
    assert all(0 <= r <= 0xFFFF for r in regs)
    decoded = decode_value(spec, regs)
    assert decoded == value and type(decoded) is type(value)


@given(st.floats(-1000, 1000, allow_nan=False), st.sampled_from(["int16", "int32"]))
def test_roundtrip_scaled_within_resolution(value: float, type_: str) -> None:
    spec = TagSpec("v", "holding", 0, type_, scale=0.1, offset=5.0)
    assert math.isclose(decode_value(spec, encode_value(spec, value)), value, abs_tol=0.051)


@st.composite
def tag_sets(draw):
    n = draw(st.integers(1, 40))
    tags = []
    for i in range(n):
        area = draw(st.sampled_from(["holding", "input", "coil", "discrete"]))
        if area in BIT_AREAS:
            tags.append(TagSpec(f"t{i}", area, draw(st.integers(0, 3000)), "bool"))
            continue
        type_ = draw(st.sampled_from(["uint16", "float32", "float64", "string"]))
        length = draw(st.integers(1, 20)) if type_ == "string" else 0
        tags.append(TagSpec(f"t{i}", area, draw(st.integers(0, 400)), type_, "ABCD", length))
    return tags


@settings(max_examples=200)
@given(tag_sets(), st.integers(0, 30), st.integers(20, 125), st.integers(1, 2000))
def test_plan_covers_each_tag_once_within_limits(tags, max_gap, max_regs, max_bits) -> None:
    blocks = plan_blocks(tags, max_gap, max_regs, max_bits)
    seen = [t.name for b in blocks for t in b.tags]
    assert sorted(seen) == sorted(t.name for t in tags)
    for b in blocks:
        limit = max_bits if b.is_bits else max_regs
        assert 1 <= b.count <= limit
        for t in b.tags:
            assert t.area == b.area
            assert b.start <= t.address and t.end <= b.start + b.count
    # a block ends only where the next tag could not join it: gap too wide or read too big
    for area in ("holding", "input", "coil", "discrete"):
        mine = [b for b in blocks if b.area == area]
        limit = max_bits if area in BIT_AREAS else max_regs
        for left, right in itertools.pairwise(mine):
            left_end = left.start + left.count
            first = right.tags[0]
            assert left.start <= right.start
            assert (first.address - left_end > max_gap
                    or max(left_end, first.end) - left.start > limit)
