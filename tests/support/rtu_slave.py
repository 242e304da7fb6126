"""An independent Modbus RTU slave for tests: several units behind one pty, written from
the Modbus serial-line spec (not pymodbus), with the misbehaviours real buses show.

It frames as a real slave does: a frame ends after 3.5 characters of silence. With
``enforce_silence`` a request whose first byte comes less than 3.5 characters after the
end of the previous frame on the line (our own answer included) is glued to that frame
by the slave's receiver and dropped, as on a real RS-485 line. Per unit:

- ``delay_s``: answer this much after the request (a slow PLC; beyond the master's
  timeout the answer is late);
- ``extra_registers``: answer a register read with this many registers more than asked;
- ``answer_as``: answer with another unit id (a mis-addressed or echoing device).

Registers are plain dicts; ``holding[address] = value``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import struct
import time
from dataclasses import dataclass, field

from sim.bus import PtyPair


def crc(data: bytes) -> bytes:
    """CRC-16/MODBUS, written out bit by bit (independent of the master's table)."""
    value = 0xFFFF
    for byte in data:
        value ^= byte
        for _ in range(8):
            value = (value >> 1) ^ 0xA001 if value & 1 else value >> 1
    return bytes((value & 0xFF, value >> 8))


@dataclass
class Unit:
    holding: dict[int, int] = field(default_factory=dict)
    coils: dict[int, bool] = field(default_factory=dict)
    delay_s: float = 0.0
    extra_registers: int = 0
    answer_as: int | None = None
    requests: int = 0


class RtuSlave:
    """Units on one pty pair; the master opens ``client_port``."""

    def __init__(self, units: dict[int, Unit], baudrate: int = 19200,
                 enforce_silence: bool = False) -> None:
        self.units = units
        self.baudrate = baudrate
        self.t35 = 3.5 * 11 / baudrate if baudrate <= 19200 else 0.00175
        self.enforce_silence = enforce_silence
        self.pair = PtyPair()
        self.glued = 0  # requests dropped because they broke the silence
        self.min_gap = float("inf")  # shortest silence seen before a frame (seconds)
        self.crc_errors = 0
        self.answers = 0
        self._fd: int | None = None
        self._frame = bytearray()
        self._frame_glued = False
        self._line_end = 0.0  # end of the last frame on the line (rx or our tx)
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def client_port(self) -> str:
        return self.pair.b

    async def start(self) -> None:
        await self.pair.open()
        self._fd = os.open(self.pair.a, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._fd, self._readable)

    async def stop(self) -> None:
        if self._loop is not None and self._fd is not None:
            self._loop.remove_reader(self._fd)
        if self._timer is not None:
            self._timer.cancel()
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None
        self.pair.close()

    async def __aenter__(self) -> RtuSlave:
        await self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.stop()

    # -- receiving ---------------------------------------------------------------------
    def _readable(self) -> None:
        assert self._fd is not None and self._loop is not None
        try:
            data = os.read(self._fd, 4096)
        except (BlockingIOError, OSError):
            return
        now = time.monotonic()
        if not self._frame:  # first byte of a frame: was the line silent long enough?
            if self._line_end:
                self.min_gap = min(self.min_gap, now - self._line_end)
            self._frame_glued = self.enforce_silence and now - self._line_end < self.t35
        self._frame += data
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._loop.call_later(self.t35, self._frame_end)

    def _frame_end(self) -> None:
        frame, self._frame = bytes(self._frame), bytearray()
        self._line_end = time.monotonic()
        if self._frame_glued:
            self.glued += 1
            return
        if len(frame) < 4 or crc(frame[:-2]) != frame[-2:]:
            self.crc_errors += 1
            return
        unit = self.units.get(frame[0])
        if unit is None or len(frame) != 8:
            return  # not ours, or not a read: a slave stays silent
        unit.requests += 1
        answer = self._answer(frame[0], unit, frame[1], *struct.unpack(">HH", frame[2:6]))
        assert self._loop is not None
        if unit.delay_s:
            self._loop.call_later(unit.delay_s, self._send, answer)
        else:
            self._send(answer)

    def _answer(self, unit_id: int, unit: Unit, function: int, start: int, count: int) -> bytes:
        head = unit.answer_as if unit.answer_as is not None else unit_id
        if function in (3, 4):
            n = count + unit.extra_registers
            words = [unit.holding.get(start + i, 0) for i in range(n)]
            body = bytes((head, function, 2 * n)) + struct.pack(f">{n}H", *words)
        elif function in (1, 2):
            bits = [unit.coils.get(start + i, False) for i in range(count)]
            packed = bytearray((count + 7) // 8)
            for i, bit in enumerate(bits):
                packed[i // 8] |= int(bit) << (i % 8)
            body = bytes((head, function, len(packed))) + bytes(packed)
        else:
            body = bytes((head, function | 0x80, 1))
        return body + crc(body)

    def _send(self, answer: bytes) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            os.write(self._fd, answer)
        self.answers += 1
        self._line_end = time.monotonic()


def set_u32(regs: dict[int, int], address: int, value: int) -> None:
    regs[address], regs[address + 1] = value >> 16, value & 0xFFFF


def set_string(regs: dict[int, int], address: int, text: bytes, registers: int) -> None:
    raw = text.ljust(2 * registers, b"\x00")
    for i in range(registers):
        regs[address + i] = raw[2 * i] << 8 | raw[2 * i + 1]
