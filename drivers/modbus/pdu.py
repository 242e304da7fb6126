"""Modbus PDUs (no I/O): the requests this collector sends and the checks on answers.

Shared by both framings (``rtu``: unit + PDU + CRC with silence; ``tcp``: MBAP header +
unit + PDU), so a read or a write means the same bytes and the same checks whatever the
wire. An answer must be *the* answer to its request: function code (or its exception
code), byte count exactly as asked, and for a write the echo of address and value /
quantity; anything else is :class:`BadAnswer`, never cut down or guessed at.
"""

from __future__ import annotations

import functools
import struct
from dataclasses import dataclass

__all__ = ["EXCEPTION_NAMES", "FUNCTIONS", "BadAnswer", "ExceptionAnswer", "NoAnswer",
           "Request", "decode_bits", "exception_name", "read_request", "write_request"]

# Read functions by area; writes are 5/15 (coils) and 6/16 (holding registers).
FUNCTIONS = {"coil": 1, "discrete": 2, "holding": 3, "input": 4}
WRITABLE = ("coil", "holding")

# Modbus exception codes by their names in the Modbus application protocol spec.
EXCEPTION_NAMES: dict[int, str] = {
    1: "IllegalFunction",
    2: "IllegalDataAddress",
    3: "IllegalDataValue",
    4: "ServerDeviceFailure",
    5: "Acknowledge",
    6: "ServerDeviceBusy",
    7: "NegativeAcknowledge",
    8: "MemoryParityError",
    10: "GatewayPathUnavailable",
    11: "GatewayTargetDeviceFailedToRespond",
}


def exception_name(code: int) -> str:
    return EXCEPTION_NAMES.get(code, f"ModbusException{code}")


class NoAnswer(Exception):
    """The unit did not answer in time (after the retries)."""


class BadAnswer(Exception):
    """Something answered, but not the answer to this request (detail in the message)."""


class ExceptionAnswer(Exception):
    """The unit answered with a Modbus exception code."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


@dataclass(frozen=True, slots=True)
class Request:
    """One request PDU and what its answer must look like.

    ``answer_data``: for a read, the byte count the answer must carry; for a write, 0
    (the answer is the 4-byte echo ``echo``).
    """

    function: int
    pdu: bytes
    area: str
    count: int
    answer_data: int = 0
    echo: bytes = b""

    @property
    def is_read(self) -> bool:
        return self.function <= 4

    def answer_length(self, head: bytes | bytearray) -> int | None:
        """Length of the answer PDU once its first bytes are in (function code, byte
        count); None while too few are in. Raises BadAnswer for a function code that is
        not this request's (or its exception)."""
        if not head:
            return None
        if head[0] == self.function | 0x80:
            return 2
        if head[0] != self.function:
            raise BadAnswer(f"function {head[0]} answered a request of function "
                            f"{self.function}")
        if not self.is_read:
            return 5
        if len(head) < 2:
            return None
        if head[1] != self.answer_data:
            raise BadAnswer(f"byte count {head[1]} for a read that asked for "
                            f"{self.answer_data}")
        return 2 + self.answer_data

    def check(self, answer: bytes) -> list[int] | list[bool] | None:
        """The registers / bits of a read's answer PDU, None for a write's; raises
        ExceptionAnswer or BadAnswer."""
        length = self.answer_length(answer[:2])
        if length is None or len(answer) != length:
            raise BadAnswer(f"answer of {len(answer)} bytes "
                            f"({answer[:16].hex()}) for function {self.function}")
        if answer[0] & 0x80:
            raise ExceptionAnswer(answer[1])
        if not self.is_read:
            if answer[1:5] != self.echo:
                raise BadAnswer(f"write echo {answer[1:5].hex()} is not "
                                f"{self.echo.hex()}")
            return None
        data = answer[2:]
        if self.area in ("coil", "discrete"):
            return decode_bits(data, self.count)
        return list(struct.unpack(f">{self.count}H", data))


def decode_bits(data: bytes, count: int) -> list[bool]:
    """Bits of a read answer, least significant bit of the first byte first."""
    return [bool(data[i // 8] >> (i % 8) & 1) for i in range(count)]


@functools.lru_cache(maxsize=4096)
def read_request(area: str, start: int, count: int) -> Request:
    """A read of ``count`` registers / bits of ``area`` from ``start`` (functions 1-4).
    Cached: a poll repeats the same few reads, and a Request is immutable."""
    function = FUNCTIONS[area]
    data = (count + 7) // 8 if area in ("coil", "discrete") else 2 * count
    return Request(function, struct.pack(">BHH", function, start, count), area, count, data)


def write_request(area: str, start: int, values: list[int] | list[bool]) -> Request:
    """A write of coils (5 for one, 15 for several) or holding registers (6 / 16).

    Raises ValueError for an area that cannot be written (inputs are read-only by the
    protocol) or values out of range."""
    if area not in WRITABLE:
        raise ValueError(f"{area} cannot be written (only coil and holding)")
    count = len(values)
    if not 1 <= count <= (1968 if area == "coil" else 123):
        raise ValueError(f"{count} values in one write (1..{1968 if area == 'coil' else 123})")
    if area == "coil":
        if count == 1:
            word = 0xFF00 if values[0] else 0x0000
            pdu = struct.pack(">BHH", 5, start, word)
            return Request(5, pdu, area, 1, echo=pdu[1:5])
        packed = bytearray((count + 7) // 8)
        for i, bit in enumerate(values):
            if bit:
                packed[i // 8] |= 1 << (i % 8)
        pdu = struct.pack(">BHHB", 15, start, count, len(packed)) + bytes(packed)
        return Request(15, pdu, area, count, echo=struct.pack(">HH", start, count))
    if any(not 0 <= int(v) <= 0xFFFF for v in values):
        raise ValueError("register values must be 0..65535")
    if count == 1:
        pdu = struct.pack(">BHH", 6, start, int(values[0]))
        return Request(6, pdu, area, 1, echo=pdu[1:5])
    pdu = (struct.pack(">BHHB", 16, start, count, 2 * count)
           + struct.pack(f">{count}H", *(int(v) for v in values)))
    return Request(16, pdu, area, count, echo=struct.pack(">HH", start, count))
