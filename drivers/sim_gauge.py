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

import contextlib
import os
import tty
from decimal import Decimal
from pathlib import Path

from drivers.gauge_parsers import PRESETS, format_mitutoyo


def format_record(preset: str, value: str | Decimal, channel: int = 1, unit: str = "mm") -> bytes:
    """The record (without terminator) a gauge of ``preset`` sends for ``value``."""
    if preset == "mitutoyo":
        return format_mitutoyo(value, channel)
    if preset == "generic":
        return f"{value} {unit}".encode("ascii")
    raise ValueError(f"no simulator format for preset {preset!r}")


class GaugeSimulator:
    """One simulated gauge port. ``open()`` first; ``close()`` (or ``with``) at the end."""

    def __init__(self, link_path: str | None, preset: str = "mitutoyo",
                 terminator: bytes | None = None) -> None:
        if preset not in PRESETS:
            raise ValueError(f"unknown gauge preset {preset!r}")
        self.link_path = link_path
        self.preset = preset
        self.terminator = terminator if terminator is not None else PRESETS[preset].terminator
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

    def send_value(self, value: str | Decimal, channel: int = 1, unit: str = "mm") -> int:
        """Send one record as the gauge would when its DATA key is pressed."""
        return self.send_raw(format_record(self.preset, value, channel, unit) + self.terminator)

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
