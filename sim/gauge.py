"""Simulated gauge on a pseudo-terminal: writes real gauge records to a real tty.

Why a pty and not a mock: the reader under test opens a path with pyserial, exactly as it
opens ``/dev/ttyUSB0``, and sees the same failure modes when the "cable" is pulled (EIO
on read, then ENOENT on reopen). ``link_path`` plays the part of a stable
``/dev/serial/by-id/...`` symlink: it points at the current pty slave, vanishes on
``unplug()`` and comes back (to a new pty) on ``replug()``.

Writes are non-blocking and small: the simulator works from inside the event loop that
also runs the reader (tests, demo) without ever stalling it. Bytes the pty cannot take
right now (nobody reading, buffer full) or sent while unplugged are dropped and counted
in ``dropped``, as a gauge with nobody listening loses its reading.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tty
from decimal import Decimal
from pathlib import Path

from drivers.gauge import records
from drivers.gauge.presets import PRESETS, poll_commands


def format_record(preset: str, value: str | Decimal, channel: int = 1, unit: str = "mm",
                  flag: str = "") -> bytes:
    """The record (without terminator) a gauge of ``preset`` sends for ``value``: the
    family's own formatter (``drivers/gauge/families/<preset>.py``), next to its parser."""
    if preset not in PRESETS:
        raise ValueError(f"no simulator format for preset {preset!r}")
    return records.format_record(PRESETS[preset], value, channel, unit, flag)


class GaugeSimulator:
    """One simulated gauge port. ``open()`` first; ``close()`` (or ``with``) at the end."""

    def __init__(self, link_path: str | None, preset: str = "mitutoyo",
                 terminator: bytes | None = None, *, echo: bool | None = None,
                 unit: str = "mm", power_on_line: bytes = b"") -> None:
        if preset not in PRESETS:
            raise ValueError(f"unknown gauge preset {preset!r}")
        self.link_path = link_path
        self.preset = preset
        self.terminator = terminator if terminator is not None else PRESETS[preset].terminator
        # Polled gauges: the current reading per channel, answered on each poll command;
        # a duplex instrument (Sylvac) first echoes the command it got.
        self.echo = PRESETS[preset].echoes_commands if echo is None else echo
        self.unit = unit
        self.values: dict[int, str] = {}
        self.flags: dict[int, str] = {}
        self.error: bytes = b""  # answered instead of a value while set (e.g. b"ERR3")
        self.power_on_line = power_on_line
        self.polls_received = 0
        self._inbuf = bytearray()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.slave_name: str | None = None
        self.dropped = 0
        self.sent = 0
        self._master: int | None = None
        self._slave: int | None = None

    @property
    def path(self) -> str:
        """The path a reader should open: the symlink if any, else the pty slave."""
        if self.link_path is not None:
            return self.link_path
        if self.slave_name is None:
            raise RuntimeError("simulator is not open")
        return self.slave_name

    @property
    def plugged(self) -> bool:
        return self._master is not None

    def open(self) -> str:
        """Create the pty (and the symlink); return the path to open."""
        if self._master is None:
            self._create_pty()
        return self.path

    def replug(self) -> str:
        """A new pty behind the same path, as when a USB gauge is plugged in again."""
        self.unplug()
        return self.open()

    def unplug(self) -> None:
        """Remove the path and hang up the pty: the reader gets EIO/EOF, then ENOENT."""
        self._remove_link()
        if self._loop is not None and self._master is not None:
            with contextlib.suppress(Exception):
                self._loop.remove_reader(self._master)
            self._loop = None
        for fd in (self._master, self._slave):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._master = self._slave = None
        self.slave_name = None

    def close(self) -> None:
        self.unplug()

    def __enter__(self) -> GaugeSimulator:
        self.open()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def send_value(self, value: str | Decimal, channel: int = 1, unit: str = "mm",
                   flag: str = "") -> int:
        """Send one record as the gauge would when its DATA key is pressed."""
        return self.send_raw(format_record(self.preset, value, channel, unit, flag)
                             + self.terminator)

    # -- polled gauges -------------------------------------------------------------------
    def set_value(self, value: str | Decimal, channel: int = 1, flag: str = "") -> None:
        """What the gauge shows now: the answer to the next poll of ``channel``."""
        self.values[channel] = str(value)
        self.flags[channel] = flag

    def answer_polls(self) -> None:
        """Start answering poll commands (from the running event loop)."""
        if self._master is None:
            raise RuntimeError("simulator is not open")
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._master, self._on_readable)
        if self.power_on_line:
            self.send_raw(self.power_on_line + self.terminator)

    def _on_readable(self) -> None:
        if self._master is None:
            return
        try:
            data = os.read(self._master, 4096)
        except (BlockingIOError, OSError):
            return
        self._inbuf += data
        self._serve_commands()

    def _serve_commands(self) -> None:
        commands = poll_commands(PRESETS[self.preset], tuple(range(1, 10)))
        while self._inbuf:
            for command in commands:
                if self._inbuf.startswith(command):
                    del self._inbuf[: len(command)]
                    self._answer(command)
                    break
            else:
                if any(c.startswith(bytes(self._inbuf)) for c in commands):
                    return  # an incomplete command: wait for the rest
                del self._inbuf[:1]  # unknown byte: a real gauge ignores it too

    def _answer(self, command: bytes) -> None:
        self.polls_received += 1
        if self.echo:
            self.send_raw(command.rstrip(b"\r\n") + self.terminator)
        if self.error:
            self.send_raw(self.error + self.terminator)
            return
        if self.preset == "millimar":  # one record carries every feature
            parts = [format_record("millimar", v, ch, self.unit, self.flags.get(ch, ""))
                     for ch, v in sorted(self.values.items())]
            self.send_raw(b";".join(parts) + self.terminator)
            return
        channel = int(command[:1]) if PRESETS[self.preset].poll_by_channel else 1
        value = self.values.get(channel)
        if value is not None:
            self.send_raw(format_record(self.preset, value, channel, self.unit,
                                        self.flags.get(channel, "")) + self.terminator)

    def send_raw(self, data: bytes) -> int:
        """Write bytes as they are; return how many the pty took (the rest is dropped)."""
        if self._master is None:
            self.dropped += len(data)
            return 0
        written = 0
        view = memoryview(data)
        while written < len(data):
            try:
                written += os.write(self._master, view[written:])
            except BlockingIOError:
                break
            except OSError:  # EIO: the slave side is gone
                break
        self.sent += written
        self.dropped += len(data) - written
        return written

    # -- internals ---------------------------------------------------------------------
    def _create_pty(self) -> None:
        master, slave = os.openpty()
        # Raw on the slave: no echo, no CR->LF translation, no line buffering, so bytes
        # written before the reader configures the port arrive unchanged.
        tty.setraw(slave)
        os.set_blocking(master, False)
        self._master, self._slave = master, slave
        self.slave_name = os.ttyname(slave)
        if self.link_path is not None:
            self._make_link(self.slave_name)

    def _make_link(self, target: str) -> None:
        """Point link_path at target atomically (a reader never sees a half-made link)."""
        link = Path(self.link_path or "")
        link.parent.mkdir(parents=True, exist_ok=True)
        tmp = link.with_name(f".{link.name}.{os.getpid()}.tmp")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        tmp.symlink_to(target)
        os.replace(tmp, link)

    def _remove_link(self) -> None:
        if self.link_path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.link_path)


class ProcessSimulator:
    """The values a stamping process gives for one feature, piece after piece.

    Normal noise of ``sigma`` around ``centre``, plus ``drift`` per piece while a drift is
    on (a die wearing, a coil getting harder), rounded to the gauge's ``resolution`` and
    kept within ``low`` .. ``high`` (a physical stop: a burr height is never negative).
    Seeded, so a demo run shows the same story every time.
    """

    def __init__(self, centre: Decimal, sigma: Decimal, resolution: Decimal = Decimal("0.001"),
                 seed: str | int = 0, low: Decimal | None = None,
                 high: Decimal | None = None) -> None:
        import random

        self.centre, self.sigma, self.resolution = centre, sigma, resolution
        self.low, self.high = low, high
        self.drift = Decimal(0)
        self._offset = Decimal(0)
        self._random = random.Random(seed)

    def start_drift(self, per_piece: Decimal) -> None:
        self.drift = per_piece

    def stop_drift(self) -> None:
        """The cause is removed: back to the centre."""
        self.drift = Decimal(0)
        self._offset = Decimal(0)

    def next(self) -> Decimal:
        self._offset += self.drift
        noise = Decimal(repr(self._random.gauss(0.0, 1.0))) * self.sigma
        value = self.centre + self._offset + noise
        if self.low is not None:
            value = max(value, self.low)
        if self.high is not None:
            value = min(value, self.high)
        return value.quantize(self.resolution)
