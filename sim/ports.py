"""Free TCP ports on 127.0.0.1 for simulators, brokers and daemons started by tests.

Why not "bind to port 0 and hand the number on": that port comes from the kernel's
ephemeral range, which every outgoing connection and every other test worker draws
from too, so it can be taken between the check and the server's own bind (seen as
EADDRINUSE when the suite ran on three pytest-xdist workers). Ports here come from
below the ephemeral range (``net.ipv4.ip_local_port_range``), from a block of their own
per xdist worker, walked in turn from a random start, so no two calls in one process
return the same port and no two workers share a block; a port something else holds
(another suite, a helper's bench) fails the bind check and is skipped.
"""

from __future__ import annotations

import itertools
import os
import random
import socket
from collections.abc import Iterator

FIRST = 20000  # above the fixed ports of the services tests talk to (1883 ... 6379)
WORKER_BLOCKS = 8


def _ephemeral_low() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range", encoding="ascii") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _block() -> range:
    low = _ephemeral_low()
    if low - FIRST < WORKER_BLOCKS * 100:  # a machine with a wide ephemeral range
        return range(0)
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if not (worker.startswith("gw") and worker[2:].isdigit()):
        return range(FIRST, low)
    size = (low - FIRST) // WORKER_BLOCKS
    start = FIRST + (int(worker[2:]) % WORKER_BLOCKS) * size
    return range(start, start + size)


def _candidates() -> Iterator[int]:
    block = _block()
    if not block:
        return iter(())
    offset = random.randrange(len(block))
    return itertools.cycle([*block[offset:], *block[:offset]])


_next_ports: Iterator[int] | None = None


def _kernel_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now and that this process has not handed out lately."""
    global _next_ports
    if _next_ports is None:
        _next_ports = _candidates()
    for port, _ in zip(_next_ports, range(2000), strict=False):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
            return port
    return _kernel_port(host)
