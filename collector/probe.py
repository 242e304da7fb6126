"""Commissioning probes: ``press-collector probe modbus | gauge | opcua | press``.

Thin shells over the drivers, for the engineer bringing a press online: each talks to
one device with exactly the code the daemon uses and prints what it got, and says in
plain words what is wrong when it gets nothing (unreachable, wrong unit id, wrong type,
port missing or busy). Exit codes: 0 ok, 1 the device answered with errors (exception
responses, device errors), 2 it could not be reached / bad arguments / bad config.

The protocol probes live with their drivers (``drivers/<package>/probe.py``) and come in
through the registry (``drivers.registry``); this module runs them and owns ``probe
press``, which reads a press file and hands its ``[plc]`` table to the protocol's
package. Heavy imports (pyserial, asyncua) happen inside the commands so ``--help``
stays fast.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from drivers.probing import EXIT_DEVICE_ERRORS, EXIT_OK, EXIT_UNREACHABLE, ProbeError

__all__ = ["EXIT_DEVICE_ERRORS", "EXIT_OK", "EXIT_UNREACHABLE", "ProbeError",
           "add_probe_commands", "probe_press", "run_probe"]


# ---------------------------------------------------------------------------- press

async def probe_press(args: argparse.Namespace, out: TextIO) -> int:
    """Every tag of a press file's PLC once (or ``--watch``), whatever its protocol."""
    from collector.config import ConfigError, load_press_file
    from drivers.registry import ProbeOptions, plc_plugin

    try:
        press = load_press_file(args.press_file)
    except ConfigError as exc:
        raise ProbeError(str(exc)) from None
    plc = press.plc
    options = ProbeOptions(watch=args.watch, count=args.count, interval_s=args.interval,
                           file_name=Path(args.press_file).name)
    implementation = plc_plugin(plc.protocol).load()
    from collector.security import logs_in, read_plc_password

    if logs_in(plc):  # a PLC that logs in: its password, read as run does
        try:
            password = read_plc_password(press.id, plc, Path(args.press_file).parent.parent)
        except Exception as exc:  # a missing / unreadable password file: one line
            raise ProbeError(f"{press.id}: {exc}") from None
        return int(await implementation.probe_press(press.id, plc, options, out,
                                                    {"password": password}))
    return int(await implementation.probe_press(press.id, plc, options, out))


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
    """``press-collector probe ...``: each driver package's own probes (registry order),
    then ``probe press`` (every protocol)."""
    from drivers.registry import all_plugins

    for plugin in all_plugins():
        plugin.load().add_probe_commands(sub, _run)
    add_press(sub)
