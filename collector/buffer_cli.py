"""``press-collector buffer export``: a thin shell over :mod:`buffer.export`.

Kept out of collector/cli.py so that the buffer commands grow here without reshuffling
the CLI module others edit.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path


def _since(text: str) -> float:
    """ISO 8601 time (naive = UTC) -> epoch seconds, for --since."""
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO 8601 time "
                                         "(e.g. 2026-11-25T06:00:00Z)") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def cmd_buffer_export(args: argparse.Namespace) -> int:
    from buffer.export import export_rows, open_private, write_export
    from buffer.store import BufferFileError

    try:
        rows = export_rows(Path(args.path), press=args.press, stream=args.stream,
                           pending=args.pending, since=args.since, limit=args.limit)
        if args.out:
            with open_private(Path(args.out)) as out:
                count = write_export(rows, out, args.format)
        else:
            count = write_export(rows, sys.stdout, args.format)
    except (BufferFileError, OSError) as exc:
        print(exc if isinstance(exc, BufferFileError) else f"{args.path}: {exc}",
              file=sys.stderr)
        return 2
    print(f"{count} rows exported", file=sys.stderr)
    return 0


def add_export_parser(buffer_sub: argparse._SubParsersAction) -> None:
    export = buffer_sub.add_parser(
        "export", help="rows of the buffer as JSON lines or CSV (read-only; runs beside "
                       "the daemon)")
    export.add_argument("path", help="path of the buffer file")
    export.add_argument("--press", help="only this press")
    export.add_argument("--stream", help="only this stream (events, telemetry, ...)")
    export.add_argument("--pending", action="store_true", help="only rows not yet delivered")
    export.add_argument("--since", type=_since, help="only rows acquired at or after this "
                        "ISO 8601 time (UTC when no offset is given)")
    export.add_argument("--limit", type=int, help="at most this many rows")
    export.add_argument("--format", choices=("jsonl", "csv"), default="jsonl")
    export.add_argument("--out", help="write to this file (created 0600) instead of stdout")
    export.set_defaults(func=cmd_buffer_export)
