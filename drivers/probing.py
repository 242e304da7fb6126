"""What every commissioning probe shares (``press-collector probe ...``): the error a
probe reports as one line, the exit codes, and line output that is flushed at once (a
technician watches it live).

Exit codes: 0 ok, 1 the device answered with errors (exception responses, device
errors, unreadable nodes), 2 it could not be reached / bad arguments / bad config.
"""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable
from typing import TextIO

__all__ = ["EXIT_DEVICE_ERRORS", "EXIT_OK", "EXIT_UNREACHABLE", "ProbeError", "Runner", "say",
           "serial_args"]

EXIT_OK, EXIT_DEVICE_ERRORS, EXIT_UNREACHABLE = 0, 1, 2


# A probe coroutine, and what turns it into an argparse command (the CLI's run_probe:
# runs it, prints a ProbeError as one line, returns the exit code).
Probe = Callable[[argparse.Namespace, TextIO], Awaitable[int]]
Runner = Callable[[Probe], Callable[[argparse.Namespace], int]]


class ProbeError(Exception):
    """A problem to print as one clear line (exit code 2)."""


def say(out: TextIO, line: str) -> None:
    out.write(line + "\n")
    out.flush()


def serial_args(p: argparse.ArgumentParser, baud_default: int | None, parity: str | None,
                 bytesize: int | None, stopbits: int | None) -> None:
    p.add_argument("--baud", type=int, default=baud_default,
                   help="baud rate" + (f" (default {baud_default})" if baud_default else
                                       " (default: the preset's)"))
    p.add_argument("--bytesize", type=int, choices=(7, 8), default=bytesize)
    p.add_argument("--parity", choices=("N", "E", "O"), default=parity)
    p.add_argument("--stopbits", type=int, choices=(1, 2), default=stopbits)
