"""``press-collector probe gauge PORT``: a serial gauge's raw lines and parsed readings live.

The same reader the daemon uses (``drivers.gauge.reader.SerialGauge``) with the same
family rules, so what parses here parses in the daemon; a port that cannot be opened
(missing, busy, refused line settings) is one clear line.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import TextIO

from drivers.probing import EXIT_DEVICE_ERRORS, EXIT_OK, ProbeError, Runner, say, serial_args


async def probe_gauge(args: argparse.Namespace, out: TextIO) -> int:
    from drivers.base import ConnectionChange, GaugeError, GaugeValue
    from drivers.gauge.presets import PRESETS, make_parser
    from drivers.gauge.reader import SerialGauge
    from drivers.serial_settings import port_problem

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
            say(out, f"{stamp()}  raw {event.raw!r:<28} -> {event.value} {event.unit}"
                        f"{channel}{flag}")
            if args.count and counts["values"] >= args.count:
                done.set()
        elif isinstance(event, GaugeError):
            counts["errors"] += 1
            say(out, f"{stamp()}  raw {event.raw!r:<28} -> {event.reason}")
        elif isinstance(event, ConnectionChange):
            if event.online:
                say(out, f"{stamp()}  opened {args.port} {gauge.baudrate} {gauge.bytesize}"
                            f"{gauge.parity}{gauge.stopbits} preset {args.preset}"
                            + (f", polling {gauge.poll_commands!r} every {args.interval:g} s"
                               if args.poll else ", waiting for DATA key / footswitch"))
            elif not gauge.ever_opened:
                failed.append(event.reason)
                done.set()
            else:
                say(out, f"{stamp()}  port lost: {event.reason}")

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
    say(out, f"{counts['values']} values, {counts['errors']} errors/garbage lines, "
                f"{gauge.stats['poll_timeouts']} unanswered polls")
    return EXIT_OK if counts["values"] else EXIT_DEVICE_ERRORS


def add_gauge(sub: argparse._SubParsersAction, run: Runner) -> None:
    from drivers.gauge.presets import PRESETS

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
    serial_args(p, None, None, None, None)
    p.set_defaults(func=run(probe_gauge))


