"""The RSS curves of ``bench/run memory`` runs as a Markdown table (minute -> MB) and an
SVG line chart, for bench/README.md ("Memory").

    python -m bench.memory_curve RUN.jsonl [RUN.jsonl ...] [--label NAME ...] [--svg OUT]

Each file is a ``bench/run`` result holding one ``memory`` line (``rss_mb_by_minute``:
the highest RSS of each minute). Why a script: the curve is the figure the issue asks
for, and a table of 31 numbers per run is easier to check than to read.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd")


def load(path: Path) -> dict[str, Any]:
    for line in path.read_text().splitlines():
        row = json.loads(line)
        if row.get("scenario") == "memory":
            return row
    raise SystemExit(f"{path}: no 'memory' line (run: bench/run memory ...)")


def table(runs: list[tuple[str, dict[str, Any]]]) -> str:
    longest = max(len(r["rss_mb_by_minute"]) for _, r in runs)
    out = ["| minute | " + " | ".join(label for label, _ in runs) + " |",
           "| ---: |" + " ---: |" * len(runs)]
    for minute in range(longest):
        cells = [f"{r['rss_mb_by_minute'][minute]:.1f}" if minute < len(r["rss_mb_by_minute"])
                 else "" for _, r in runs]
        out.append(f"| {minute} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def svg(runs: list[tuple[str, dict[str, Any]]], width: int = 640, height: int = 260) -> str:
    """A plain line chart, RSS (MB) over minutes, y from 0 so a flat curve looks flat."""
    left, right, top, bottom = 48, 12, 12, 36
    longest = max(len(r["rss_mb_by_minute"]) for _, r in runs)
    y_max = max(max(r["rss_mb_by_minute"]) for _, r in runs) * 1.15
    y_max = (int(y_max) // 20 + 1) * 20

    def x(m: float) -> float:
        return left + (width - left - right) * m / max(1, longest - 1)

    def y(v: float) -> float:
        return height - bottom - (height - top - bottom) * v / y_max

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             'font-family="sans-serif" font-size="11">',
             f'<rect width="{width}" height="{height}" fill="white"/>']
    for v in range(0, y_max + 1, 20):
        parts.append(f'<line x1="{left}" x2="{width - right}" y1="{y(v):.1f}" '
                     f'y2="{y(v):.1f}" stroke="#ddd"/>')
        parts.append(f'<text x="{left - 6}" y="{y(v) + 4:.1f}" text-anchor="end">{v}</text>')
    for m in range(0, longest, 5):
        parts.append(f'<text x="{x(m):.1f}" y="{height - bottom + 14}" '
                     f'text-anchor="middle">{m}</text>')
    parts.append(f'<text x="{(left + width - right) / 2}" y="{height - 6}" '
                 'text-anchor="middle">minute</text>')
    parts.append(f'<text x="12" y="{top + 8}">RSS MB</text>')
    for i, (label, r) in enumerate(runs):
        colour = COLOURS[i % len(COLOURS)]
        points = " ".join(f"{x(m):.1f},{y(v):.1f}" for m, v in enumerate(r["rss_mb_by_minute"]))
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" '
                     f'points="{points}"/>')
        parts.append(f'<text x="{left + 10}" y="{top + 14 + 14 * i}" fill="{colour}">'
                     f'{label}</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench.memory_curve", description=__doc__)
    p.add_argument("files", nargs="+", type=Path)
    p.add_argument("--label", action="append", default=[], help="one per file, in order")
    p.add_argument("--svg", type=Path, default=None, help="write the chart here")
    args = p.parse_args(argv)
    labels = args.label + [f.stem for f in args.files[len(args.label):]]
    runs = [(label, load(f)) for label, f in zip(labels, args.files, strict=True)]
    print(table(runs))
    if args.svg is not None:
        args.svg.write_text(svg(runs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
