"""The ``press-collector demo`` command, plugged into the product's CLI through the
entry point group ``press_collector.commands`` (sim/pyproject.toml). Light on purpose:
the CLI builds its parser for every command, so the demo itself is imported only when
it runs."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path


def cmd_demo(args: argparse.Namespace) -> int:
    from collector.cli import setup_logging
    from sim.demo import run_demo

    setup_logging(args.log_level, stream=sys.stderr)  # stdout is the event view
    return asyncio.run(run_demo(config_dir=args.config_dir, duration=args.duration,
                                broker=args.broker, workdir=args.workdir))


def add_command(sub: argparse._SubParsersAction) -> None:
    demo = sub.add_parser("demo", help="run the whole pipeline on simulated presses and gauges")
    demo.add_argument("--config-dir", type=Path, default=None,
                      help="example config to use (default: the repo's config/)")
    demo.add_argument("--duration", type=float, default=None,
                      help="stop after this many seconds (default: until Ctrl-C)")
    demo.add_argument("--broker", default=None,
                      help="HOST:PORT of an existing broker (default: start a private Mosquitto)")
    demo.add_argument("--workdir", type=Path, default=None,
                      help="where the demo keeps its buffer and broker files (default: a temp dir)")
    demo.set_defaults(func=cmd_demo)
