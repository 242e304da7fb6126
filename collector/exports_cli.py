"""``press-collector export qdas|csv`` and ``press-collector status``: thin shells over
:mod:`collector.export` and :mod:`collector.status`.

Exit codes: 0 done; 1 nothing to export (no file written) or, for ``status``, something
needs attention; 2 cannot run (bad argument, no buffer, config with errors, no daemon
answering).
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

EXIT_EMPTY = 1
EXIT_ERROR = 2


class UsageError(Exception):
    """A bad argument (message names it and shows what is allowed)."""


def parse_time(text: str | None, option: str, end: bool = False) -> str | None:
    """``--from`` / ``--to`` -> the envelope's ISO 8601 UTC form (string comparison).

    A date (``2026-12-05``) is local midnight; as ``--to`` it means the *end* of that day
    (so ``--from 2026-12-01 --to 2026-12-05`` covers five days). A time without a zone is
    local time; ``Z`` or ``+08:00`` give the zone."""
    if text is None:
        return None
    try:
        if len(text) == 10:
            day = datetime.strptime(text, "%Y-%m-%d")
            when = (day + timedelta(days=1)) if end else day
        else:
            when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"{option} {text!r}: not a date or time (e.g. 2026-12-05, "
                         "2026-12-05T06:00, 2026-12-05T06:00+08:00)") from None
    from collector.export.measurements import iso_utc

    return iso_utc(when.timestamp())  # naive -> local time


def _buffer_and_description(args: argparse.Namespace) -> tuple[Path, str | None]:
    """The buffer file (``--buffer`` or the config's buffer.path) and the plan's part
    description when the config is at hand."""
    description = getattr(args, "description", None)
    if args.buffer is not None and (description is not None or args.format == "csv"):
        return Path(args.buffer), description  # nothing needed from the config
    from collector.config import ConfigError, load_config

    try:
        config = load_config(args.config_dir)
    except ConfigError as exc:
        if args.buffer is not None:
            return Path(args.buffer), description
        lines = [str(p) for p in exc.problems][:10]
        raise UsageError("cannot read the buffer path from the config:\n  " + "\n  ".join(
            lines) + "\n(or name the file with --buffer PATH)") from None
    part = getattr(args, "part", None)
    plan = config.plans.get(part) if part else None
    if description is None and plan is not None:
        description = plan.description or None
    path = Path(args.buffer) if args.buffer is not None else Path(config.collector.buffer.path)
    return path, description


def cmd_export(args: argparse.Namespace) -> int:
    from buffer.store import BufferFileError
    from collector.export.measurements import measurements
    from collector.export.qdas import ExportError

    try:
        start = parse_time(args.start, "--from")
        end = parse_time(args.end, "--to", end=True)
        if start and end and start >= end:
            raise UsageError(f"--from {args.start} is not before --to {args.end}")
        path, description = _buffer_and_description(args)
        rows = measurements(path, args.part, start, end, presses=args.press or None)
        out = Path(args.out)
        if args.format == "qdas":
            from collector.export.qdas import write_qdas

            n = write_qdas(rows, out, args.part, description, args.encoding)
        else:
            from collector.export.csv_out import write_csv

            n = write_csv(rows, out, bom=not args.no_bom, delimiter=args.delimiter)
    except UsageError as exc:
        print(f"press-collector export: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except BufferFileError as exc:
        print(f"press-collector export: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except ExportError as exc:
        what = f"part {args.part}" if args.part else "any part"
        if str(exc) == "no values to export":
            print(f"press-collector export: no measurements of {what} "
                  f"{_period(args)} in {path}; no file written", file=sys.stderr)
            return EXIT_EMPTY
        print(f"press-collector export: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except OSError as exc:
        print(f"press-collector export: {exc}", file=sys.stderr)
        return EXIT_ERROR
    print(f"{n} values of {args.part or 'every part'} {_period(args)} -> {out}")
    return 0


def _period(args: argparse.Namespace) -> str:
    if args.start and args.end:
        return f"from {args.start} to {args.end}"
    if args.start:
        return f"from {args.start}"
    if args.end:
        return f"up to {args.end}"
    return "(whole buffer)"


def cmd_status(args: argparse.Namespace) -> int:
    from collector.status import StatusError, fetch_health, problems, render

    port = args.port
    if port is None:
        from collector.config import ConfigError, load_config

        try:
            port = load_config(args.config_dir).collector.metrics.port
        except ConfigError as exc:
            print("press-collector status: cannot read [metrics] port from the config "
                  "(or give --port):", file=sys.stderr)
            for p in exc.problems[:10]:
                print(f"  {p}", file=sys.stderr)
            return EXIT_ERROR
        if not port:
            print(f"press-collector status: the health endpoint is off ([metrics] port = 0 "
                  f"in {args.config_dir}/collector.toml): set a port (e.g. 9108) and "
                  "restart the daemon", file=sys.stderr)
            return EXIT_ERROR
    try:
        doc: dict[str, Any] = fetch_health(port, timeout=args.timeout)
    except StatusError as exc:
        print(f"press-collector status: {exc}", file=sys.stderr)
        return EXIT_ERROR
    if args.json:
        print(json.dumps(doc, indent=2, sort_keys=True, default=str))
    else:
        print(render(doc, f"127.0.0.1:{port}"), end="")
    return 1 if problems(doc) else 0


def add_commands(sub: Any, default_config_dir: Path) -> None:
    """Register ``export`` and ``status`` on the top-level subparsers."""
    export = sub.add_parser(
        "export", help="measurements from the local buffer for the quality department",
        description="First-article and patrol values of a part and period, read from the "
                    "local SQLite buffer (read-only; works while the daemon runs). "
                    "docs/quality.md, 'Exports'.")
    export_sub = export.add_subparsers(dest="export_format", required=True)
    for fmt, helptext in (("qdas", "Q-DAS AQDEF .dfq file (K-fields)"),
                          ("csv", "CSV, one row per measured value (Excel: UTF-8 with BOM)")):
        p = export_sub.add_parser(fmt, help=helptext)
        p.add_argument("--part", required=fmt == "qdas",
                       help="part number" + ("" if fmt == "qdas" else " (default: every part)"))
        p.add_argument("--from", dest="start", default=None,
                       help="start (2026-12-05, 2026-12-05T06:00, ...+08:00; local time "
                            "without a zone)")
        p.add_argument("--to", dest="end", default=None,
                       help="end, exclusive (a date alone: to the end of that day)")
        p.add_argument("--out", required=True, help="file to write (mode 0600)")
        p.add_argument("--press", action="append", default=None,
                       help="only this press (repeatable; default: every press)")
        p.add_argument("--config-dir", type=Path, default=default_config_dir)
        p.add_argument("--buffer", default=None,
                       help="buffer file (default: buffer.path of the config)")
        if fmt == "qdas":
            p.add_argument("--description", default=None,
                           help="K1002 part description (default: the plan's description)")
            p.add_argument("--encoding", default="utf-8-sig", choices=("utf-8-sig", "cp1252"),
                           help="utf-8-sig (default: UTF-8 with BOM) or cp1252 (ANSI; "
                                "refuses text it cannot hold)")
        else:
            p.add_argument("--no-bom", action="store_true",
                           help="UTF-8 without byte order mark (default: with, for Excel)")
            p.add_argument("--delimiter", default=",",
                           help="field separator (default ','; ';' for a German Excel)")
        p.set_defaults(func=cmd_export, format=fmt)

    status = sub.add_parser(
        "status", help="one screen from the running daemon (its /health endpoint)",
        description="Presses, states, last reading age, backlog, broker connection, gauge "
                    "lines good/bad. Exit 0 all good, 1 needs attention, 2 no answer.")
    status.add_argument("--config-dir", type=Path, default=default_config_dir)
    status.add_argument("--port", type=int, default=None,
                        help="health port (default: [metrics] port of the config)")
    status.add_argument("--json", action="store_true", help="the health document as JSON")
    status.add_argument("--timeout", type=float, default=3.0, help="seconds to wait")
    status.set_defaults(func=cmd_status)


__all__ = ["add_commands", "cmd_export", "cmd_status", "parse_time"]
