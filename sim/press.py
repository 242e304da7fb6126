"""Simulated press PLC: a real pymodbus Modbus TCP server with a press's register map.

Used by tests, config examples and the demo, so that the whole chain (poller, workflow,
outbox, MQTT) runs against real Modbus frames on a real socket.

Register map: the one of the shipped example press, **read from config/presses/p1.toml**
(``press_tags``): the simulator plays each value by the tag's role (stroke_count,
die_id, part_number, material_lot, setup_mode, running, repair) or, for values without a
role, its name (spm, tonnage, die_temp_c); so the example config and the simulator
cannot drift apart. As shipped (0-based protocol addresses; holding registers unless
noted; input registers mirror holding and discrete inputs mirror coils, so that configs
can exercise every area):

======  ==============  =========  ==========================================
HR      tag             type       meaning
======  ==============  =========  ==========================================
0-1     strokes         uint32     stroke counter, ABCD (high word first)
2       die_id          uint16     die currently clamped
3       spm             uint16     strokes per minute setpoint
10-17   part_number     string     16 ASCII chars, ABCD, NUL padded
20-27   material_lot    string     16 ASCII chars, ABCD, NUL padded
30-31   tonnage         float32    kN, CDAB; noisy around nominal per stroke
32      die_temp        int16      °C * 10 (scale 0.1)
40-79   load_00..39     uint16     benchmark load, new values every stroke (bench only)
90-99   (outputs)       any        writable: what the collector writes back (issue 14)
coil 0  setup_mode      bool
coil 1  running         bool
coil 2  repair          bool       repair signal
coil 8-15 (outputs)     bool       writable
======  ==============  =========  ==========================================

Unused addresses in 0-99 / coils 0-15 read as 0; anything beyond answers
IllegalDataAddress. Only the outputs (HR 90-99, coils 8-15) can be written: a write
anywhere else answers IllegalDataAddress, as a PLC whose program owns those values.

Design: the simulator object holds the truth (a plain register image); pymodbus's new
simulator API (``SimDevice``/``SimData`` served by ``ModbusTcpServer``; the old datastore
is deprecated in 3.16) calls our ``action`` coroutine on every request, which copies the
image into the server's register list before the answer is built. So setters called from
the test's event loop are visible on the very next request, with no locking. The same
hook answers injected faults with a Modbus exception; ``trace_packet`` swallows outgoing
frames in silent mode (the action cannot suppress an answer, only replace it).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import random
import tomllib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pymodbus.constants import ExcCodes
from pymodbus.pdu import ModbusPDU
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from drivers.modbus.codec import BIT_AREAS, TagSpec, encode_value
from sim.strokes import press_arguments, stroke_loop

log = logging.getLogger(__name__)

HR_SIZE = 100
COIL_SIZE = 16
LOAD_START, LOAD_COUNT = 40, 40
OUTPUT_REGISTERS = range(90, 100)  # writable holding registers
OUTPUT_COILS = range(8, 16)  # writable coils
PRESS_FILE = Path(__file__).resolve().parent.parent / "config" / "presses" / "p1.toml"

# What the simulator plays -> how the press file names it: its role, else the tag name.
PLAYS: dict[str, tuple[str, str]] = {
    "strokes": ("role", "stroke_count"),
    "die_id": ("role", "die_id"),
    "spm": ("name", "spm"),
    "part_number": ("role", "part_number"),
    "material_lot": ("role", "material_lot"),
    "tonnage": ("name", "tonnage"),
    "die_temp": ("name", "die_temp_c"),
    "setup_mode": ("role", "setup_mode"),
    "running": ("role", "running"),
    "repair": ("role", "repair"),
}


def press_tags(path: Path = PRESS_FILE) -> tuple[TagSpec, ...]:
    """The simulator's register map from a press file's ``[[plc.tags]]``, each named as
    the simulator plays it (``PLAYS``). Defaults as the config's: area holding, type
    bool in bit areas else uint16. A value the file does not carry is a ValueError."""
    with path.open("rb") as f:
        tags = tomllib.load(f)["plc"]["tags"]
    out = []
    for plays, (key, wanted) in PLAYS.items():
        tag = next((t for t in tags if t.get(key) == wanted), None)
        if tag is None:
            raise ValueError(f"{path}: no tag with {key} {wanted!r} for the simulator's "
                             f"{plays}")
        area = tag.get("area", "holding")
        out.append(TagSpec(plays, area, tag["address"],
                           tag.get("type", "bool" if area in BIT_AREAS else "uint16"),
                           tag.get("order", "ABCD"), tag.get("length", 0),
                           tag.get("scale", 1.0), tag.get("offset", 0.0)))
    return tuple(out)


PRESS_TAGS: tuple[TagSpec, ...] = press_tags()
LOAD_TAGS: tuple[TagSpec, ...] = tuple(
    TagSpec(f"load_{i:02d}", "holding", LOAD_START + i, "uint16") for i in range(LOAD_COUNT)
)
_SPEC = {t.name: t for t in PRESS_TAGS}
_COIL_BIT = {t.name: t.address for t in PRESS_TAGS if t.area in BIT_AREAS}

# function code -> area, for fault matching and request counting
_FC_AREA = {1: "coil", 5: "coil", 15: "coil", 2: "discrete", 3: "holding", 6: "holding",
            16: "holding", 22: "holding", 23: "holding", 4: "input"}


@dataclass(frozen=True, slots=True)
class _Fault:
    area: str
    addresses: range
    code: ExcCodes


class PressSimulator:
    """One press PLC on ``host:port`` (port 0 picks a free port, kept across restarts).

    Answers every unit id. All methods run on the event loop that called ``start()``.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        part: str = "",
        lot: str = "",
        die: int = 0,
        spm: int = 30,
        tonnage_kn: float = 800.0,
        temperature_c: float = 40.0,
        seed: int | None = None,
    ) -> None:
        self.host = host
        self._port = port
        self._hr = [0] * HR_SIZE
        self._coils = 0
        self._strokes = 0
        self._tonnage_kn = tonnage_kn
        self._rng = random.Random(seed)
        self._faults: list[_Fault] = []
        self._silent = False
        self._server: ModbusTcpServer | None = None
        self._generator: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self.requests: Counter[str] = Counter()  # reads served, per area
        self.connections = 0  # client connections accepted since creation
        self.writes = 0  # writes accepted into the outputs
        # A PLC program that overwrites its outputs at once: writes are answered as done
        # but not kept (what a collector's read-back must catch).
        self.drop_writes = False
        self._write_seen = asyncio.Event()  # set at every write kept in the outputs
        self.set_die(die)
        self.set_spm(spm)
        self.set_part(part)
        self.set_lot(lot)
        self.set_temperature(temperature_c)
        self._write("tonnage", 0.0)
        self._update_load()

    # ------------------------------------------------------------------ lifecycle

    @property
    def port(self) -> int:
        """Listening port (the one picked by the OS after the first start with port 0)."""
        return self._port

    @property
    def running_server(self) -> bool:
        return self._server is not None

    async def start(self) -> None:
        """Listen (again) on the same port and start the stroke generator."""
        if self._server is not None:
            return
        server = ModbusTcpServer(
            self._device(),
            address=(self.host, self._port),
            trace_packet=self._trace_packet,
            trace_pdu=self._trace_pdu,
            trace_connect=self._trace_connect,
        )
        await server.serve_forever(background=True)
        self._server = server
        self._port = server.transport.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        self._generator = asyncio.create_task(self._stroke_loop(), name="sim-press-strokes")
        log.info("press simulator listening on %s:%d", self.host, self._port)

    async def stop(self) -> None:
        """Close the listener and every client connection: the PLC vanishes."""
        server, self._server = self._server, None
        generator, self._generator = self._generator, None
        if generator is not None:
            generator.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await generator
        if server is not None:
            await server.shutdown()
            await asyncio.sleep(0)  # let transports deliver their FIN

    async def __aenter__(self) -> PressSimulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _device(self, device_id: int = 0) -> SimDevice:
        """Separate (non-shared) blocks so that coil N is bit N, not a bit of HR N.

        ``device_id`` 0 answers every unit id (TCP); an RTU bus simulator
        (``sim.bus``) gives each press its own unit id."""
        return SimDevice(
            id=device_id,
            simdata=(
                # coils and holding registers: writes are checked by _action (outputs only)
                [SimData(0, values=[False] * COIL_SIZE, datatype=DataType.BITS)],
                [SimData(0, values=[False] * COIL_SIZE, datatype=DataType.BITS, readonly=True)],
                [SimData(0, count=HR_SIZE, datatype=DataType.REGISTERS)],
                [SimData(0, count=HR_SIZE, datatype=DataType.REGISTERS, readonly=True)],
            ),
            action=self._action,
        )

    # ------------------------------------------------------------------ pymodbus hooks

    async def _action(
        self,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        """Answer faults and writes outside the outputs, apply writes to the image, then
        copy the press image into the block about to be read or written."""
        area = _FC_AREA.get(function_code, "")
        if fault := self._fault_for(area, address, count):
            return fault
        if set_values is not None and not self._write_outputs(area, address,
                                                              list(set_values)):
            return ExcCodes.ILLEGAL_ADDRESS
        if area in ("coil", "discrete"):
            registers[0] = self._coils
        else:
            registers[0:HR_SIZE] = self._hr
        return None

    def _write_outputs(self, area: str, address: int, values: list[int] | list[bool]) -> bool:
        """A client's write into the outputs (HR 90-99, coils 8-15); False elsewhere."""
        if self.drop_writes:
            return True
        if area == "coil":
            if not all(a in OUTPUT_COILS for a in range(address, address + len(values))):
                return False
            for i, on in enumerate(values):
                bit = 1 << (address + i)
                self._coils = self._coils | bit if on else self._coils & ~bit
        else:
            if not all(a in OUTPUT_REGISTERS for a in range(address, address + len(values))):
                return False
            self._hr[address : address + len(values)] = [int(v) for v in values]
        self.writes += 1
        self._write_seen.set()
        return True

    async def wait_outputs(self, predicate: Callable[[PressSimulator], bool],
                           timeout: float = 10.0) -> None:
        """Until ``predicate(self)`` holds, checked after every write a client made into
        the outputs (the PLC's side of issue 14's signals; TimeoutError after
        ``timeout``)."""
        async with asyncio.timeout(timeout):
            while not predicate(self):
                self._write_seen.clear()
                await self._write_seen.wait()

    def output_registers(self, address: int, count: int = 1) -> list[int]:
        """What a client wrote into the holding registers (tests read the PLC's side)."""
        return self._hr[address : address + count]

    def coil(self, address: int) -> bool:
        return bool(self._coils >> address & 1)

    def _fault_for(self, area: str, address: int, count: int) -> ExcCodes | None:
        if not self._faults:
            return None
        if area in ("coil", "discrete"):
            # pymodbus hands the action the count in 16-bit words for bit reads; match on
            # the words touched (a read "near" a faulty coil fails too, as on real PLCs
            # that fault whole words).
            count = count * 16 - address % 16
        last = address + count - 1
        for fault in self._faults:
            r = fault.addresses
            if fault.area == area and r.start <= last and address <= r.stop - 1:
                return fault.code
        return None

    def _trace_packet(self, sending: bool, data: bytes) -> bytes:
        return b"" if sending and self._silent else data

    def _trace_pdu(self, sending: bool, pdu: ModbusPDU) -> ModbusPDU:
        if not sending:
            self.requests[_FC_AREA.get(pdu.function_code, "other")] += 1
        return pdu

    def _trace_connect(self, connected: bool) -> None:
        if connected:
            self.connections += 1

    # ------------------------------------------------------------------ press state

    def _write(self, name: str, value: object) -> None:
        spec = _SPEC[name]
        regs = encode_value(spec, value)
        self._hr[spec.address : spec.address + len(regs)] = regs

    def _set_coil(self, name: str, on: bool) -> None:
        bit = 1 << _COIL_BIT[name]
        self._coils = self._coils | bit if on else self._coils & ~bit
        self._wake.set()

    @property
    def strokes(self) -> int:
        return self._strokes

    @property
    def setup_mode(self) -> bool:
        return self.coil(_COIL_BIT["setup_mode"])

    @property
    def running(self) -> bool:
        return self.coil(_COIL_BIT["running"])

    def set_registers(self, address: int, registers: list[int]) -> None:
        """Raw holding registers, as a PLC program may leave them (a NaN float, string
        bytes that are not text): what the collector must survive."""
        self._hr[address : address + len(registers)] = registers

    def set_die(self, die: int) -> None:
        self._write("die_id", die)

    def set_part(self, part: str) -> None:
        self._write("part_number", part)

    def set_lot(self, lot: str) -> None:
        self._write("material_lot", lot)

    def set_spm(self, spm: int) -> None:
        self._spm = spm
        self._write("spm", spm)
        self._wake.set()

    def set_temperature(self, celsius: float) -> None:
        self._write("die_temp", celsius)

    def set_tonnage(self, kn: float) -> None:
        """Nominal tonnage; each stroke reports it with about 1 % noise."""
        self._tonnage_kn = kn

    def set_setup_mode(self, on: bool) -> None:
        self._set_coil("setup_mode", on)

    def set_running(self, on: bool) -> None:
        self._set_coil("running", on)
        if not on:
            self._write("tonnage", 0.0)

    def set_repair(self, on: bool) -> None:
        self._set_coil("repair", on)

    def stroke(self, n: int = 1) -> None:
        """Count ``n`` strokes now (deterministic tests) and refresh stroke-driven values."""
        self._strokes = (self._strokes + n) & 0xFFFFFFFF
        self._write("strokes", self._strokes)
        noise = self._rng.gauss(0.0, 0.01 * self._tonnage_kn)
        self._write("tonnage", self._tonnage_kn + noise)
        self._update_load()

    def _update_load(self) -> None:
        base = self._strokes
        self._hr[LOAD_START : LOAD_START + LOAD_COUNT] = [
            (base * (i + 1) + i) & 0xFFFF for i in range(LOAD_COUNT)
        ]

    # ------------------------------------------------------------------ faults

    def fail_with_exception(
        self, area: str, addresses: range, code: int | ExcCodes = ExcCodes.ILLEGAL_ADDRESS
    ) -> None:
        """Answer every read in ``area`` touching ``addresses`` with exception ``code``."""
        self._faults.append(_Fault(area, addresses, ExcCodes(code)))

    def clear_faults(self) -> None:
        self._faults.clear()

    def set_silent(self, silent: bool) -> None:
        """Keep accepting connections and requests but never answer (client timeouts)."""
        self._silent = silent

    # ------------------------------------------------------------------ stroke generator

    def _stroking(self) -> bool:
        return self.running and not self.setup_mode and self._spm > 0

    async def _stroke_loop(self) -> None:
        """Stroke at ``spm`` on the monotonic clock while running and not in setup."""
        await stroke_loop(self._wake, self._stroking, lambda: self._spm, self.stroke)


# ---------------------------------------------------------------------- manual runs


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = press_arguments("python -m sim.press", __doc__, 5020)
    p.add_argument("--tonnage", type=float, default=800.0, help="nominal kN")
    return p.parse_args(argv)


async def _serve(args: argparse.Namespace) -> None:
    sim = PressSimulator(args.host, args.port, part=args.part, lot=args.lot, die=args.die,
                         spm=args.spm, tonnage_kn=args.tonnage)
    sim.set_running(not args.stopped)
    sim.set_setup_mode(args.setup)
    await sim.start()
    print(f"press simulator on {args.host}:{sim.port} (unit: any); Ctrl-C stops", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await sim.stop()


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO)
    logging.getLogger("pymodbus").setLevel(logging.WARNING)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(_parse_args(argv)))


if __name__ == "__main__":
    main()
