"""Simulated RS-485 bus: several press PLCs (unit ids) behind one pymodbus RTU server.

Two wirings, the two a line PC meets:

- ``serial``: a real pymodbus ``ModbusSerialServer`` on one end of a socat pty pair; the
  collector opens the other end exactly as it opens ``/dev/ttyUSB0``;
- ``tcp``: a pymodbus ``ModbusTcpServer`` with the RTU framer, as a serial device server
  in transparent mode puts the bus on a TCP port.

Each unit is a :class:`~sim.press.PressSimulator` register image (its own strokes,
die, part ...), served under its own unit id. ``set_dead(unit, True)`` makes one unit
stop answering (its response frames are swallowed on the way out), as a powered-down
PLC on a shared bus does; the others keep answering.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from pymodbus.framer import FramerType
from pymodbus.server import ModbusSerialServer, ModbusTcpServer

from sim.press import PressSimulator

SOCAT = shutil.which("socat") or "/usr/bin/socat"


class PtyPair:
    """Two linked ptys made by socat: bytes written to one end come out of the other.

    ``a`` and ``b`` are stable symlinks in a private temp dir. ``open()`` waits until
    socat has created both links (socat's own readiness signal: the links exist)."""

    def __init__(self) -> None:
        self._dir = Path(tempfile.mkdtemp(prefix="ptypair-"))
        self.a = str(self._dir / "a")
        self.b = str(self._dir / "b")
        self._proc: subprocess.Popen[bytes] | None = None

    async def open(self, timeout: float = 5.0) -> None:
        self._proc = subprocess.Popen(
            [SOCAT, f"pty,raw,echo=0,link={self.a}", f"pty,raw,echo=0,link={self.b}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not (os.path.exists(self.a) and os.path.exists(self.b)):
            if self._proc.poll() is not None or loop.time() > deadline:
                raise RuntimeError("socat did not create the pty pair")
            await asyncio.sleep(0.01)

    def close(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(5)
            self._proc = None
        shutil.rmtree(self._dir, ignore_errors=True)


class BusSimulator:
    """Units ``{unit id: PressSimulator}`` on one RTU bus (``wiring`` 'serial' or 'tcp').

    After ``start()``: ``client_port`` is the path (serial) the collector opens, or
    ``port`` the TCP port (tcp)."""

    def __init__(self, units: dict[int, PressSimulator], wiring: str = "serial",
                 baudrate: int = 19200, host: str = "127.0.0.1", port: int = 0) -> None:
        if wiring not in ("serial", "tcp"):
            raise ValueError("wiring must be 'serial' or 'tcp'")
        self.units = units
        self.wiring = wiring
        self.baudrate = baudrate
        self.host = host
        self.port = port
        self.dead: set[int] = set()
        self.answered: dict[int, int] = dict.fromkeys(units, 0)
        self.pty: PtyPair | None = None
        self._server: ModbusSerialServer | ModbusTcpServer | None = None

    @property
    def client_port(self) -> str:
        assert self.pty is not None, "serial bus not started"
        return self.pty.b

    def set_dead(self, unit: int, dead: bool) -> None:
        (self.dead.add if dead else self.dead.discard)(unit)

    def _trace_packet(self, sending: bool, data: bytes) -> bytes:
        if sending and data:
            # A dead unit, or a unit id nobody on the bus has, stays silent (pymodbus
            # would answer the latter with an exception, which no RS-485 line does).
            if data[0] in self.dead or data[0] not in self.answered:
                return b""
            self.answered[data[0]] += 1
        return data

    async def start(self) -> None:
        devices = [sim._device(unit) for unit, sim in self.units.items()]
        if self.wiring == "serial":
            self.pty = PtyPair()
            await self.pty.open()
            self._server = ModbusSerialServer(
                devices, framer=FramerType.RTU, port=self.pty.a, baudrate=self.baudrate,
                trace_packet=self._trace_packet)
        else:
            self._server = ModbusTcpServer(devices, framer=FramerType.RTU,
                                           address=(self.host, self.port),
                                           trace_packet=self._trace_packet)
        await self._server.serve_forever(background=True)
        if self.wiring == "tcp":
            self.port = self._server.transport.sockets[0].getsockname()[1]  # type: ignore[attr-defined]

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            await server.shutdown()
        if self.pty is not None:
            self.pty.close()
            self.pty = None

    async def __aenter__(self) -> BusSimulator:
        await self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.stop()
