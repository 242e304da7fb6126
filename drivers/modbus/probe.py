"""``press-collector probe modbus``: read registers or bits from one Modbus device.

For the engineer bringing a press online: the same framing and decoding the daemon uses
(``drivers.modbus.engine``), values printed decoded and raw, and in plain words what is
wrong when nothing comes back (unreachable, wrong unit id, wrong line settings).
Also ``probe press`` for a Modbus press (``press_probe``, via the registry).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import time
from dataclasses import dataclass
from typing import Any, TextIO

from drivers.probing import EXIT_DEVICE_ERRORS, EXIT_OK, ProbeError, Runner, say, serial_args

ADDRESS_HELP = (
    "what to read: Modbus notation 4xxxx (holding), 3xxxx (input), 0xxxx (coil), "
    "1xxxx (discrete input), 1-based, 5 or 6 digits (40001 = holding 0; 400001 also); or "
    "hr:N, ir:N, co:N, di:N with N the 0-based protocol address. Append :COUNT for COUNT "
    "values of --type (default 1), e.g. 40001:10 or hr:0:10")
_PREFIX = {"hr": "holding", "ir": "input", "co": "coil", "di": "discrete"}
_DIGIT = {"4": "holding", "3": "input", "0": "coil", "1": "discrete"}
_NOTATION = {"holding": "4", "input": "3", "coil": "0", "discrete": "1"}
_SHORT = {area: prefix for prefix, area in _PREFIX.items()}

@dataclass(frozen=True, slots=True)
class Address:
    area: str
    address: int  # 0-based
    count: int

    def label(self, offset: int) -> str:
        """The Modbus notation of address + offset, e.g. '40003'."""
        return f"{_NOTATION[self.area]}{self.address + offset + 1:04d}"


def parse_address(text: str) -> Address:
    """'40001:10' -> holding 0, 10 values; 'hr:0:10' the same; 'co:5' coil 5, 1 value."""
    text = text.strip()
    match = re.fullmatch(r"(hr|ir|co|di):(\d+)(?::(\d+))?", text, re.IGNORECASE)
    if match:
        area, address = _PREFIX[match[1].lower()], int(match[2])
        count = int(match[3]) if match[3] else 1
    else:
        match = re.fullmatch(r"([0134])(\d{4,5})(?::(\d+))?", text)
        if match is None:
            raise ProbeError(f"--read {text!r} is not an address ({ADDRESS_HELP})")
        area, address = _DIGIT[match[1]], int(match[2]) - 1
        count = int(match[3]) if match[3] else 1
        if address < 0:
            raise ProbeError(f"--read {text!r}: Modbus notation is 1-based ({match[1]}0001 is "
                             "the first address)")
    if address > 65535 or not 1 <= count <= 125:
        raise ProbeError(f"--read {text!r}: address 0..65535 and count 1..125 allowed")
    return Address(area, address, count)


def _split_host(target: str, default_port: int = 502) -> tuple[str, int]:
    host, _, port = target.rpartition(":") if target.count(":") == 1 else (target, "", "")
    if not host:
        host, port = target, ""
    try:
        return host, int(port) if port else default_port
    except ValueError:
        raise ProbeError(f"{target!r}: the port after ':' must be a number") from None


def _tags_for(addr: Address, type_: str, order: str, length: int) -> tuple[list, list]:
    """Typed tags (one per value) and raw uint16 tags over the same registers."""
    from drivers.modbus.codec import BIT_AREAS, TagSpec

    if addr.area in BIT_AREAS and type_ not in ("bool", "auto"):
        raise ProbeError(f"--type {type_} is not possible for {addr.area}s "
                         "(coils and discrete inputs hold bits: use --type bool)")
    type_ = "bool" if addr.area in BIT_AREAS else ("uint16" if type_ == "auto" else type_)
    if type_ == "string" and length < 1:
        raise ProbeError("--type string needs --length N (registers, 2 characters each)")
    typed, raw = [], []
    offset = 0
    for _ in range(addr.count):
        try:
            tag = TagSpec(addr.label(offset), addr.area, addr.address + offset, type_, order,
                          length=length if type_ == "string" else 0)  # type: ignore[arg-type]
        except ValueError as exc:
            raise ProbeError(str(exc)) from None
        typed.append(tag)
        offset += tag.width
    if addr.area not in BIT_AREAS:
        raw = [TagSpec(f"_raw{addr.address + i}", addr.area, addr.address + i, "uint16")
               for i in range(offset)]
    return typed, raw


async def probe_modbus(args: argparse.Namespace, out: TextIO) -> int:
    from drivers.modbus.driver import TagError, read_once
    from drivers.modbus.engine import SerialLink, TcpLink, read_once_line

    addr = parse_address(args.read)
    typed, raw = _tags_for(addr, args.type, args.order, args.length)
    if args.rtu:
        link: Any = SerialLink(args.rtu, args.baud, args.bytesize, args.parity, args.stopbits)
        where = f"{link.describe()} unit {args.unit}"
    elif args.target:
        host, port = _split_host(args.target)
        link = TcpLink(host, port) if args.rtu_over_tcp else None
        where = f"{host}:{port} unit {args.unit}" + (" (RTU over TCP)" if link else "")
    else:
        raise ProbeError("give HOST[:PORT] or --rtu DEVICE")
    try:
        if link is not None:
            got = await read_once_line(link, args.unit, typed + raw, args.timeout,
                                      retries=args.retries)
        else:
            got = await read_once(host, port, args.unit, typed + raw, args.timeout)
    except ConnectionError as exc:
        raise ProbeError(_explain(str(exc), args.unit, args.timeout)) from None
    say(out, f"{where}: {addr.count} x {typed[0].type} "
                f"{'order ' + args.order if typed[0].width > 1 else ''}".rstrip())
    errors = 0
    for tag in typed:
        value = got.get(tag.name)
        regs = [got.get(f"_raw{a}") for a in range(tag.address, tag.end)] if raw else []
        raw_text = " ".join(f"{r:04x}" if isinstance(r, int) else "----" for r in regs)
        where_0 = f"{_SHORT[tag.area]}:{tag.address}"
        if isinstance(value, TagError):
            errors += 1
            say(out, f"  {tag.name:>6}  {where_0:<9} ERROR {value.reason}")
        else:
            say(out, f"  {tag.name:>6}  {where_0:<9} {value!r:<24} {raw_text}".rstrip())
    return EXIT_DEVICE_ERRORS if errors else EXIT_OK


def _explain(reason: str, unit: int, timeout: float) -> str:
    if "timeout" in reason or "did not answer" in reason:
        return (f"no answer from unit {unit} within {timeout:g} s: wrong unit id, device "
                f"off, or wrong line settings ({reason})")
    if "connect" in reason and "failed" in reason:
        return f"cannot reach the device: {reason} (address, port, cable, firewall?)"
    return reason


def add_modbus(sub: argparse._SubParsersAction, run: Runner) -> None:
    from drivers.modbus.codec import ORDERS, TYPES

    p = sub.add_parser(
        "modbus", help="read registers or bits from a Modbus TCP/RTU device",
        description="Read values from one Modbus device and print them decoded and raw. "
                    + ADDRESS_HELP + ".")
    p.add_argument("target", nargs="?", help="HOST[:PORT] (port default 502); omit with --rtu")
    p.add_argument("--unit", type=int, default=1, help="unit / slave id (default 1)")
    p.add_argument("--read", required=True, metavar="ADDRESS[:COUNT]", help=ADDRESS_HELP)
    p.add_argument("--type", default="auto", choices=("auto", *TYPES),
                   help="value type (default: uint16 for registers, bool for bits)")
    p.add_argument("--order", default="ABCD", choices=ORDERS,
                   help="word/byte order of 32/64-bit values (default ABCD)")
    p.add_argument("--length", type=int, default=0, help="registers per string (--type string)")
    p.add_argument("--timeout", type=float, default=1.0, help="seconds (default 1)")
    p.add_argument("--rtu", metavar="DEVICE", help="Modbus RTU on this serial port")
    p.add_argument("--rtu-over-tcp", action="store_true",
                   help="RTU frames over TCP to HOST:PORT (serial device server)")
    p.add_argument("--retries", type=int, default=0, help="RTU: repeats of an unanswered read")
    serial_args(p, 19200, "E", 8, 1)
    p.set_defaults(func=run(probe_modbus))




async def press_probe(press_id: str, plc: Any, options: Any, out: TextIO) -> int:
    """``probe press`` for a Modbus press (TCP or RTU): every tag once per round with its
    role, on a connection of its own (``--watch``: every ``interval_s`` or the press's
    poll period)."""
    from drivers.link import TagError
    from drivers.modbus.engine import read_once_line
    from drivers.modbus.plugin import link_of, tag_specs

    specs = tag_specs(plc)
    roles = {t.name: t.role or "" for t in plc.tags}
    timeout = plc.timeout_ms / 1000
    link = link_of(plc)
    rtu = plc.protocol != "modbus_tcp"
    gap = plc.inter_frame_ms / 1000 if rtu and plc.inter_frame_ms else None
    say(out, f"press {press_id} ({plc.protocol} {link.describe()} unit {plc.unit}), "
             f"{len(specs)} tags")
    rounds = 0
    errors = 0
    while True:
        try:
            got = await read_once_line(link, plc.unit, specs, timeout,
                                       plc.retries if rtu else 0, plc.max_gap, gap,
                                       f"in [plc] of {options.file_name}", settings_cli=False)
        except ConnectionError as exc:
            raise ProbeError(_explain(str(exc), plc.unit, timeout)) from None
        rounds += 1
        if options.watch:
            say(out, f"-- {time.strftime('%H:%M:%S')} poll {rounds}")
        errors = 0
        for spec in specs:
            value = got[spec.name]
            role = roles[spec.name]
            text = f"ERROR {value.reason}" if isinstance(value, TagError) else repr(value)
            errors += isinstance(value, TagError)
            say(out, f"  {spec.name:<16} {role:<14} {spec.area}:{spec.address:<6} "
                     f"{spec.type:<8} {text}")
        if not options.watch or (options.count and rounds >= options.count):
            break
        await asyncio.sleep(options.interval_s or plc.poll_interval_ms / 1000)
    return EXIT_DEVICE_ERRORS if errors else EXIT_OK
