"""The gauge package's registry entry: ``[[gauges]]`` config -> ``SerialGauge``, probes."""

from __future__ import annotations

import argparse
from typing import Any

from drivers.gauge.reader import SerialGauge
from drivers.probing import Runner
from drivers.registry import BuildContext

__all__ = ["add_probe_commands", "build", "summary"]

TERMINATORS = {"CR": b"\r", "LF": b"\n", "CRLF": b"\r\n"}


def build(source: str, cfg: Any, ctx: BuildContext) -> SerialGauge:
    """The reader of one gauge (``source`` = 'p1/g1'; values carry ``cfg.id``)."""
    from drivers.gauge.presets import make_parser

    parser = make_parser(cfg.preset, pattern=cfg.pattern or None,
                         error_strings=tuple(cfg.error_strings))
    return SerialGauge(source, cfg.port, parser, name=cfg.id, baudrate=cfg.baudrate,
                       bytesize=cfg.bytesize, parity=cfg.parity, stopbits=cfg.stopbits,
                       terminator=TERMINATORS[cfg.terminator], max_line=cfg.max_line,
                       unit_default=cfg.unit, poll_command=cfg.poll_command(),
                       channels=tuple(cfg.channels),
                       poll_interval_s=cfg.poll_interval_ms / 1000, dtr=cfg.dtr, rts=cfg.rts,
                       calibration_due=cfg.calibration_due,
                       settings_where=ctx.settings_where)


def summary(cfg: Any) -> str:
    return f"{cfg.id} ({cfg.preset} {cfg.port})"


def add_probe_commands(sub: argparse._SubParsersAction, run: Runner) -> None:
    """``probe gauge``."""
    from drivers.gauge.probe import add_gauge

    add_gauge(sub, run)
