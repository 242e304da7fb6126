"""Serial ports: open them without leaking, and say which line setting a port refused.

Opening: ``serial_asyncio_fast`` opens the port with pyserial and *then* sets
``timeout = 0``, which applies the line settings a second time; a port that takes them
on the first ``tcsetattr`` and refuses them on the second (a Linux pty does this with
7 data bits) raises from inside the transport with the port still open and locked,
until the garbage collector closes it: the daemon then finds its own port "busy".
:func:`open_serial` does both steps itself and closes the port on any failure.

Why a serial port refused its line settings, in words that name the setting:

A USB adapter or a pty that cannot do a setting (7 data bits, a parity, 2 stop bits, a
baud rate) makes the kernel refuse the whole ``tcsetattr`` with ``EINVAL``; pyserial then
raises ``(22, 'Invalid argument')`` and says nothing about which setting it was. The
user needs to know which key to change. So after such a failure we open the port once
more with plain 9600 8N1 and apply each configured setting on its own: the ones the
port refuses are the answer. The probe port is closed again at once (and pyserial
releases its lock on failure), so a diagnosis never leaves the port held.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import termios
from collections.abc import Callable
from dataclasses import dataclass

import serial
import serial_asyncio_fast

__all__ = ["LineSettings", "explain_refusal", "is_settings_refusal", "open_serial",
           "open_serial_streams", "refused_settings"]

# What to put in the config instead, per setting: the value every adapter can do.
_SAFE = {"baudrate": 9600, "bytesize": 8, "parity": "N", "stopbits": 1}


@dataclass(frozen=True, slots=True)
class LineSettings:
    """The four line settings of a serial port."""

    baudrate: int
    bytesize: int
    parity: str
    stopbits: float

    def describe(self) -> str:
        stop = int(self.stopbits) if float(self.stopbits).is_integer() else self.stopbits
        return f"{self.baudrate} {self.bytesize}{self.parity}{stop}"


def is_settings_refusal(exc: BaseException) -> bool:
    """True for the error a port gives when it cannot apply its line settings."""
    if isinstance(exc, termios.error):
        return bool(exc.args) and exc.args[0] == errno.EINVAL
    if isinstance(exc, ValueError):  # pyserial: a value it does not know at all
        return True
    code = getattr(exc, "errno", None)
    text = str(exc)
    return code == errno.EINVAL or "Invalid argument" in text or "(22," in text


def refused_settings(port: str, settings: LineSettings) -> list[str]:
    """The settings ``port`` refuses, e.g. ``['bytesize 7']``; [] when each works on its
    own (or the port cannot be opened at all: that is another problem)."""
    probe = serial.Serial()
    probe.port = port
    probe.baudrate, probe.bytesize, probe.parity, probe.stopbits = 9600, 8, "N", 1
    try:
        probe.open()
    except (OSError, ValueError, termios.error, serial.SerialException):
        return []
    refused: list[str] = []
    try:
        for name in ("baudrate", "bytesize", "parity", "stopbits"):
            wanted = getattr(settings, name)
            if wanted == _SAFE[name]:
                continue
            try:
                setattr(probe, name, wanted)
            except (OSError, ValueError, termios.error, serial.SerialException):
                refused.append(f"{name} {wanted}")
            with contextlib.suppress(OSError, ValueError, termios.error,
                                     serial.SerialException):
                setattr(probe, name, _SAFE[name])
    finally:
        with contextlib.suppress(Exception):
            probe.close()
    return refused


_CLI = {"baudrate": "--baud", "bytesize": "--bytesize", "parity": "--parity",
        "stopbits": "--stopbits"}


def explain_refusal(port: str, settings: LineSettings, refused: list[str],
                    where: str = "", cli: bool = False) -> str:
    """One line: which setting the port refused and what to try instead.

    ``where`` names the place of the keys, e.g. "in [[gauges]] g3"; with ``cli`` the
    override is given as command-line options (probes)."""
    line = settings.describe()
    if not refused:
        return (f"serial port {port} refuses the line settings {line} (Invalid argument): "
                "the adapter or driver cannot do them; try "
                + ("--baud 9600 --bytesize 8 --parity N --stopbits 1" if cli
                   else f"9600 8N1 {where}".rstrip()))
    keys = [item.split()[0] for item in refused]
    if cli:
        tries = " ".join(f"{_CLI[key]} {_SAFE[key]}" for key in keys)
    else:
        tries = ", ".join(f"{key} = {_SAFE[key]!r}".replace("'", '"') for key in keys)
        tries = f"{tries} {where}".rstrip()
    what = " and ".join(refused)
    hint = ""
    if "bytesize" in keys:
        hint = (" (7-bit gauges: use an adapter that can do 7 data bits, or set the "
                "instrument itself to 8 data bits)")
    return (f"serial port {port} refuses {what} (line {line}): this adapter or pty "
            f"cannot do it; try {tries}, with the device set to match{hint}")


# --------------------------------------------------------------------------- opening

def _open_sync(port: str, settings: LineSettings, exclusive: bool) -> serial.Serial:
    """Open with the settings, non-blocking; on any failure the port is closed again."""
    ser = serial.Serial(port, baudrate=settings.baudrate, bytesize=settings.bytesize,
                        parity=settings.parity, stopbits=settings.stopbits, timeout=0,
                        exclusive=exclusive)
    try:
        ser.timeout = 0  # what the asyncio transport does first: fail here, not there
    except BaseException:
        with contextlib.suppress(Exception):
            ser.close()
        raise
    return ser


async def open_serial(port: str, settings: LineSettings,
                      protocol_factory: Callable[[], asyncio.Protocol],
                      exclusive: bool = True) -> tuple[asyncio.Transport, asyncio.Protocol]:
    """An asyncio transport on ``port``; raises (OSError, ValueError, termios.error,
    SerialException) with the port released."""
    opening = asyncio.ensure_future(asyncio.to_thread(_open_sync, port, settings, exclusive))
    try:
        ser = await asyncio.shield(opening)
    except asyncio.CancelledError:  # the thread still opens it: close it when it has
        opening.add_done_callback(_close_opened)
        raise
    try:
        return await serial_asyncio_fast.connection_for_serial(
            asyncio.get_running_loop(), protocol_factory, ser)
    except BaseException:
        with contextlib.suppress(Exception):
            ser.close()
        raise


def _close_opened(opening: asyncio.Future[serial.Serial]) -> None:
    if not opening.cancelled() and opening.exception() is None:
        with contextlib.suppress(Exception):
            opening.result().close()


async def open_serial_streams(port: str, settings: LineSettings,
                              exclusive: bool = True,
                              ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """(reader, writer) on ``port``, as ``serial_asyncio_fast.open_serial_connection``
    gives them, without its leak on a refused setting."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(loop=loop)
    protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
    transport, _ = await open_serial(port, settings, lambda: protocol, exclusive)
    return reader, asyncio.StreamWriter(transport, protocol, reader, loop)


def port_problem(path: str) -> str:
    """Why a serial device cannot be opened, in words: missing, busy (someone holds the
    exclusive lock pyserial and pymodbus take), not permitted, or '' if it looks fine."""
    import fcntl
    import os

    try:
        fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    except FileNotFoundError:
        return f"serial port {path} does not exist"
    except OSError as exc:
        return f"cannot open serial port {path}: {exc.strerror}"
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return f"serial port {path} is busy (another program holds it open)"
    finally:
        os.close(fd)  # closing drops the lock too
    return ""
