"""Commissioning probes: ``press-collector probe modbus | gauge | press``.

Thin shells over the drivers, for the engineer bringing a press online: each talks to
one device with exactly the code the daemon uses and prints what it got, and says in
plain words what is wrong when it gets nothing (unreachable, wrong unit id, wrong type,
port missing or busy). Exit codes: 0 ok, 1 the device answered with errors (exception
responses, device errors), 2 it could not be reached / bad arguments / bad config.

Heavy imports (pymodbus, pyserial) happen inside the commands so ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

ADDRESS_HELP = (
    "what to read: Modbus notation 4xxxx (holding), 3xxxx (input), 0xxxx (coil), "
    "1xxxx (discrete input), 1-based, 5 or 6 digits (40001 = holding 0; 400001 also); or "
    "hr:N, ir:N, co:N, di:N with N the 0-based protocol address. Append :COUNT for COUNT "
    "values of --type (default 1), e.g. 40001:10 or hr:0:10")
_PREFIX = {"hr": "holding", "ir": "input", "co": "coil", "di": "discrete"}
_DIGIT = {"4": "holding", "3": "input", "0": "coil", "1": "discrete"}
_NOTATION = {"holding": "4", "input": "3", "coil": "0", "discrete": "1"}
_SHORT = {area: prefix for prefix, area in _PREFIX.items()}
EXIT_OK, EXIT_DEVICE_ERRORS, EXIT_UNREACHABLE = 0, 1, 2


class ProbeError(Exception):
    """A problem to print as one clear line (exit code 2)."""


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


def _print(out: TextIO, line: str) -> None:
    out.write(line + "\n")
    out.flush()


# ---------------------------------------------------------------------------- modbus

def _tags_for(addr: Address, type_: str, order: str, length: int) -> tuple[list, list]:
    """Typed tags (one per value) and raw uint16 tags over the same registers."""
    from drivers.modbus_codec import BIT_AREAS, TagSpec

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
    from drivers.modbus_bus import SerialLink, TcpLink, read_once_rtu
    from drivers.modbus_tcp import TagError, read_once

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
            got = await read_once_rtu(link, args.unit, typed + raw, args.timeout,
                                      retries=args.retries)
        else:
            got = await read_once(host, port, args.unit, typed + raw, args.timeout)
    except ConnectionError as exc:
        raise ProbeError(_explain(str(exc), args.unit, args.timeout)) from None
    _print(out, f"{where}: {addr.count} x {typed[0].type} "
                f"{'order ' + args.order if typed[0].width > 1 else ''}".rstrip())
    errors = 0
    for tag in typed:
        value = got.get(tag.name)
        regs = [got.get(f"_raw{a}") for a in range(tag.address, tag.end)] if raw else []
        raw_text = " ".join(f"{r:04x}" if isinstance(r, int) else "----" for r in regs)
        where_0 = f"{_SHORT[tag.area]}:{tag.address}"
        if isinstance(value, TagError):
            errors += 1
            _print(out, f"  {tag.name:>6}  {where_0:<9} ERROR {value.reason}")
        else:
            _print(out, f"  {tag.name:>6}  {where_0:<9} {value!r:<24} {raw_text}".rstrip())
    return EXIT_DEVICE_ERRORS if errors else EXIT_OK


def _explain(reason: str, unit: int, timeout: float) -> str:
    if "timeout" in reason or "did not answer" in reason:
        return (f"no answer from unit {unit} within {timeout:g} s: wrong unit id, device "
                f"off, or wrong line settings ({reason})")
    if "connect" in reason and "failed" in reason:
        return f"cannot reach the device: {reason} (address, port, cable, firewall?)"
    return reason


# ---------------------------------------------------------------------------- gauge

async def probe_gauge(args: argparse.Namespace, out: TextIO) -> int:
    from drivers.base import ConnectionChange, GaugeError, GaugeValue
    from drivers.gauge_parsers import PRESETS, make_parser
    from drivers.modbus_bus import port_problem
    from drivers.serial_gauge import SerialGauge

    if args.preset not in PRESETS:
        raise ProbeError(f"--preset {args.preset!r} is unknown (allowed: {', '.join(PRESETS)})")
    problem = port_problem(args.port)
    if problem:
        raise ProbeError(problem)
    try:
        parser = make_parser(args.preset, pattern=args.pattern or None)
    except ValueError as exc:
        raise ProbeError(str(exc)) from None
    poll_command = args.poll_command.encode("latin-1").decode("unicode_escape").encode(
        "latin-1") if args.poll_command else b""
    gauge = SerialGauge("probe/gauge", args.port, parser, baudrate=args.baud,
                        bytesize=args.bytesize, parity=args.parity, stopbits=args.stopbits,
                        unit_default=args.unit, poll_command=poll_command,
                        channels=tuple(args.channel or ()),
                        poll_interval_s=args.interval if args.poll else 0.0,
                        poll_timeout_s=min(1.0, args.interval), settings_cli=True)
    if args.poll and not gauge.poll_commands:
        raise ProbeError(f"preset {args.preset} has no poll command: give --poll-command")
    done = asyncio.Event()
    counts = {"values": 0, "errors": 0}
    failed: list[str] = []  # the port never opened: why (one error line, exit 2)
    started = time.monotonic()

    def stamp() -> str:
        return f"{time.monotonic() - started:8.3f}s"

    def sink(event: object) -> None:
        if isinstance(event, GaugeValue):
            counts["values"] += 1
            flag = (f" flag {event.flag}" + (f" ({event.verdict})" if event.verdict else "")
                    if event.flag else "")
            channel = f" ch {event.channel}" if event.channel is not None else ""
            _print(out, f"{stamp()}  raw {event.raw!r:<28} -> {event.value} {event.unit}"
                        f"{channel}{flag}")
            if args.count and counts["values"] >= args.count:
                done.set()
        elif isinstance(event, GaugeError):
            counts["errors"] += 1
            _print(out, f"{stamp()}  raw {event.raw!r:<28} -> {event.reason}")
        elif isinstance(event, ConnectionChange):
            if event.online:
                _print(out, f"{stamp()}  opened {args.port} {gauge.baudrate} {gauge.bytesize}"
                            f"{gauge.parity}{gauge.stopbits} preset {args.preset}"
                            + (f", polling {gauge.poll_commands!r} every {args.interval:g} s"
                               if args.poll else ", waiting for DATA key / footswitch"))
            elif not gauge.ever_opened:
                failed.append(event.reason)
                done.set()
            else:
                _print(out, f"{stamp()}  port lost: {event.reason}")

    task = asyncio.create_task(gauge.run(sink))
    try:
        await asyncio.wait_for(done.wait(), args.duration)
    except TimeoutError:
        pass
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    if failed:
        raise ProbeError(failed[0])
    _print(out, f"{counts['values']} values, {counts['errors']} errors/garbage lines, "
                f"{gauge.stats['poll_timeouts']} unanswered polls")
    return EXIT_OK if counts["values"] else EXIT_DEVICE_ERRORS


# ---------------------------------------------------------------------------- press

async def probe_press(args: argparse.Namespace, out: TextIO) -> int:
    from collector.config import ConfigError, load_press_file
    from collector.daemon import make_bus, tag_specs
    from drivers.modbus_bus import read_once_rtu
    from drivers.modbus_tcp import TagError, read_once

    try:
        press = load_press_file(args.press_file)
    except ConfigError as exc:
        raise ProbeError(str(exc)) from None
    plc = press.plc
    if plc.protocol == "opcua":  # asyncua only for an OPC UA press
        import logging

        from collector import probe_opcua

        logging.getLogger("asyncua").setLevel(logging.CRITICAL)  # our lines say what failed
        return await probe_opcua.probe_press(press, args, out)
    specs = tag_specs(press)
    roles = {t.name: t.role or "" for t in plc.tags}
    timeout = plc.timeout_ms / 1000
    bus = make_bus(plc) if plc.bus_key() else None
    where = bus.link.describe() if bus else f"{plc.host}:{plc.port}"
    _print(out, f"press {press.id} ({plc.protocol} {where} unit {plc.unit}), "
                f"{len(specs)} tags")
    rounds = 0
    errors = 0
    while True:
        try:
            if bus is not None:
                got = await read_once_rtu(bus.link, plc.unit, specs, timeout, plc.retries,
                                          plc.max_gap, bus.inter_frame_s,
                                          f"in [plc] of {Path(args.press_file).name}",
                                          settings_cli=False)
            else:
                got = await read_once(plc.host, int(plc.port), plc.unit, specs, timeout,
                                      plc.max_gap)
        except ConnectionError as exc:
            raise ProbeError(_explain(str(exc), plc.unit, timeout)) from None
        rounds += 1
        if args.watch:
            _print(out, f"-- {time.strftime('%H:%M:%S')} poll {rounds}")
        errors = 0
        for spec in specs:
            value = got[spec.name]
            role = roles[spec.name]
            text = f"ERROR {value.reason}" if isinstance(value, TagError) else repr(value)
            errors += isinstance(value, TagError)
            _print(out, f"  {spec.name:<16} {role:<14} {spec.area}:{spec.address:<6} "
                        f"{spec.type:<8} {text}")
        if not args.watch or (args.count and rounds >= args.count):
            break
        await asyncio.sleep(args.interval or plc.poll_interval_ms / 1000)
    return EXIT_DEVICE_ERRORS if errors else EXIT_OK


# ---------------------------------------------------------------------------- argparse

def _run(probe: Callable[[argparse.Namespace, TextIO], Any]) -> Callable[[argparse.Namespace], int]:
    def command(args: argparse.Namespace) -> int:
        return run_probe(probe, args)
    return command


def run_probe(probe: Callable[[argparse.Namespace, TextIO], Any], args: argparse.Namespace,
              out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Run one probe coroutine; a ProbeError is one line on stderr and exit code 2."""
    import logging

    for noisy in ("pymodbus", "drivers", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.CRITICAL)
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        return int(asyncio.run(probe(args, out)))
    except ProbeError as exc:
        err.write(f"error: {exc}\n")
        return EXIT_UNREACHABLE
    except KeyboardInterrupt:
        return EXIT_OK


def _serial_args(p: argparse.ArgumentParser, baud_default: int | None, parity: str | None,
                 bytesize: int | None, stopbits: int | None) -> None:
    p.add_argument("--baud", type=int, default=baud_default,
                   help="baud rate" + (f" (default {baud_default})" if baud_default else
                                       " (default: the preset's)"))
    p.add_argument("--bytesize", type=int, choices=(7, 8), default=bytesize)
    p.add_argument("--parity", choices=("N", "E", "O"), default=parity)
    p.add_argument("--stopbits", type=int, choices=(1, 2), default=stopbits)


def add_modbus(sub: argparse._SubParsersAction) -> None:
    from drivers.modbus_codec import ORDERS, TYPES

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
    _serial_args(p, 19200, "E", 8, 1)
    p.set_defaults(func=_run(probe_modbus))


def add_gauge(sub: argparse._SubParsersAction) -> None:
    from drivers.gauge_parsers import PRESETS

    p = sub.add_parser("gauge", help="show a serial gauge's raw lines and parsed readings live",
                       description="Open a gauge port and print every line raw and parsed, "
                                   "until Ctrl-C, --count values or --duration seconds.")
    p.add_argument("port", help="serial device, e.g. /dev/ttyUSB0 or /dev/serial/by-id/...")
    p.add_argument("--preset", required=True, help=f"one of: {', '.join(PRESETS)}")
    p.add_argument("--pattern", default="", help="regex for preset generic (group 'value')")
    p.add_argument("--unit", default="mm", choices=("mm", "in", "um"),
                   help="unit when the record has none (default mm)")
    p.add_argument("--poll", action="store_true", help="send the poll command every --interval")
    p.add_argument("--poll-command", default="",
                   help=r"poll command instead of the preset's, escapes allowed: '?\r'")
    p.add_argument("--channel", type=int, action="append",
                   help="Metro: channel to poll (repeatable)")
    p.add_argument("--interval", type=float, default=1.0, help="poll period, s (default 1)")
    p.add_argument("--count", type=int, default=0, help="stop after N values")
    p.add_argument("--duration", type=float, default=None, help="stop after S seconds")
    _serial_args(p, None, None, None, None)
    p.set_defaults(func=_run(probe_gauge))


def add_press(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("press", help="read every tag of a press config once (or --watch)",
                       description="Connect with a press file's [plc] settings and print "
                                   "each tag's decoded value and role.")
    p.add_argument("press_file", type=Path, help="e.g. /etc/press-collector/presses/p7.toml")
    p.add_argument("--watch", action="store_true", help="keep polling and printing")
    p.add_argument("--interval", type=float, default=0.0,
                   help="seconds between polls with --watch (default: the press's period)")
    p.add_argument("--count", type=int, default=0, help="with --watch: stop after N polls")
    p.set_defaults(func=_run(probe_press))


def add_probe_commands(sub: argparse._SubParsersAction) -> None:
    """The probes of this module, for ``press-collector probe ...``."""
    add_modbus(sub)
    add_gauge(sub)
    add_press(sub)
