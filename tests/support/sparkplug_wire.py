"""An independent Sparkplug B decoder for the tests: the protobuf wire format by hand.

Written from the Sparkplug 3.0 specification's field table (Payload: 1 timestamp, 2
metrics, 3 seq, 4 uuid, 5 body; Metric: 1 name, 2 alias, 3 timestamp, 4 datatype, 5
is_historical, 6 is_transient, 7 is_null, 10 int_value, 11 long_value, 12 float_value,
13 double_value, 14 boolean_value, 15 string_value, 16 bytes_value) and the protobuf
encoding rules (varints, fixed32/64, length-delimited), without the protobuf runtime or
the production schema: a mistake in the production encoder cannot hide behind the same
mistake here.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any

# datatype numbers of the specification's DataType table
INT8, INT16, INT32, INT64, UINT8, UINT16, UINT32, UINT64 = 1, 2, 3, 4, 5, 6, 7, 8
FLOAT, DOUBLE, BOOLEAN, STRING = 9, 10, 11, 12
_SIGNED_BITS = {INT8: 32, INT16: 32, INT32: 32, INT64: 64}  # two's complement in uint


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def _fields(data: bytes) -> list[tuple[int, int, Any]]:
    """(field number, wire type, raw value) of every field, in order."""
    out = []
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(data, pos)
        elif wire == 1:
            value, pos = data[pos:pos + 8], pos + 8
        elif wire == 2:
            size, pos = _varint(data, pos)
            value, pos = data[pos:pos + size], pos + size
        elif wire == 5:
            value, pos = data[pos:pos + 4], pos + 4
        else:
            raise ValueError(f"wire type {wire} not expected")
        out.append((number, wire, value))
    if pos != len(data):
        raise ValueError("truncated message")
    return out


@dataclass
class Metric:
    name: str | None = None
    alias: int | None = None
    timestamp: int | None = None
    datatype: int | None = None
    is_historical: bool = False
    is_transient: bool = False
    is_null: bool = False
    raw: tuple[int, Any] | None = None  # (value field number, raw value)

    def value(self, datatype: int | None = None) -> Any:
        """The value as the spec defines it for ``datatype`` (this metric's own, or the
        one its alias had in the birth)."""
        dt = datatype if datatype is not None else self.datatype
        if self.raw is None:
            return None
        number, raw = self.raw
        if number == 10:  # int_value (uint32)
            bits = _SIGNED_BITS.get(dt)
            if bits == 32 and raw >= 2**31:
                return raw - 2**32
            return raw
        if number == 11:  # long_value (uint64)
            return raw - 2**64 if dt == INT64 and raw >= 2**63 else raw
        if number == 12:
            return struct.unpack("<f", raw)[0]
        if number == 13:
            return struct.unpack("<d", raw)[0]
        if number == 14:
            return bool(raw)
        if number == 15:
            return raw.decode("utf-8")
        return raw


@dataclass
class Payload:
    timestamp: int | None = None
    seq: int | None = None
    metrics: list[Metric] = field(default_factory=list)

    def by_name(self) -> dict[str, Metric]:
        return {m.name: m for m in self.metrics if m.name is not None}


def decode(data: bytes) -> Payload:
    payload = Payload()
    for number, _wire, value in _fields(data):
        if number == 1:
            payload.timestamp = value
        elif number == 3:
            payload.seq = value
        elif number == 2:
            payload.metrics.append(_metric(value))
    return payload


def _metric(data: bytes) -> Metric:
    metric = Metric()
    for number, _wire, value in _fields(data):
        if number == 1:
            metric.name = value.decode("utf-8")
        elif number == 2:
            metric.alias = value
        elif number == 3:
            metric.timestamp = value
        elif number == 4:
            metric.datatype = value
        elif number == 5:
            metric.is_historical = bool(value)
        elif number == 6:
            metric.is_transient = bool(value)
        elif number == 7:
            metric.is_null = bool(value)
        elif 10 <= number <= 16:
            metric.raw = (number, value)
    return metric


# ---- encoding, for what the tests send to the edge node (NCMD) ----------------------------
def _key(number: int, wire: int) -> bytes:
    return _enc_varint(number << 3 | wire)


def _enc_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def rebirth_request(timestamp_ms: int, value: bool = True,
                    name: str = "Node Control/Rebirth") -> bytes:
    """An NCMD payload: one Boolean metric ``name`` = ``value``."""
    raw = name.encode()
    metric = (_key(1, 2) + _enc_varint(len(raw)) + raw + _key(3, 0) + _enc_varint(timestamp_ms)
              + _key(4, 0) + _enc_varint(BOOLEAN) + _key(14, 0) + _enc_varint(int(value)))
    return (_key(1, 0) + _enc_varint(timestamp_ms) + _key(2, 2) + _enc_varint(len(metric))
            + metric)
