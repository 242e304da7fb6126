"""CSV of the measurements: one row per measured value, for spreadsheets.

Choices (docs/quality.md, "CSV export"):

- UTF-8 *with* a byte order mark by default: Excel opens a CSV by double-click in the
  Windows ANSI code page unless the file starts with a BOM, and the plants this is for
  write operator names, units (µm) and notes in Chinese. ``--no-bom`` for tools that
  stumble on it (most Unix tools and pandas read either).
- RFC 4180 quoting (``csv.QUOTE_MINIMAL``: fields holding the delimiter, a quote or a line
  break are quoted, quotes doubled), CRLF line ends, ``,`` as delimiter (``--delimiter
  ';'`` for a German-locale Excel, which expects semicolons).
- Numbers are written exactly as the gauge and the plan gave them (decimal strings with
  a ``.``), never through a float.
- Text fields that a spreadsheet would run as a formula (starting with ``=``, ``+``,
  ``-``, ``@``, tab or CR) get a leading ``'`` (CSV injection); numeric columns are
  never touched (a negative deviation stays a number).
- Times: ``measured_local`` as ``YYYY-MM-DD HH:MM:SS.mmm`` in the exporting machine's
  time zone (Excel reads it as a date), ``measured_utc`` and ``judged_utc`` as ISO 8601
  UTC for machines.
"""

from __future__ import annotations

import contextlib
import csv
import os
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path

from collector.export.measurements import Measurement
from collector.export.qdas import ExportError, _open_private, clean

COLUMNS = (
    "press", "part_number", "plan_revision", "characteristic", "name", "char_class",
    "unit", "nominal", "lsl", "usl", "value", "deviation", "verdict", "voided", "purpose",
    "measured_local", "measured_utc", "judged_utc", "first_article_attempt", "piece",
    "subgroup", "subgroup_position", "die_id", "material_lot", "heat_number", "operator",
    "gauge", "channel", "stroke_count", "phase", "event_codes", "events", "reading_id",
    "event_id", "seq",
)
TEXT_COLUMNS = frozenset({"part_number", "plan_revision", "characteristic", "name",
                          "die_id", "material_lot", "heat_number", "operator", "gauge",
                          "events", "subgroup", "reading_id", "press"})
_FORMULA = ("=", "+", "-", "@", "\t", "\r")


def _safe(text: str) -> str:
    return "'" + text if text.startswith(_FORMULA) else text


def row(m: Measurement) -> dict[str, object]:
    """The CSV row of one value (also what the tests compare against)."""
    out: dict[str, object] = {
        "press": m.press, "part_number": m.part_number, "plan_revision": m.plan_revision,
        "characteristic": m.characteristic, "name": m.name, "char_class": m.char_class,
        "unit": m.unit, "nominal": m.nominal, "lsl": m.lsl, "usl": m.usl, "value": m.value,
        "deviation": m.deviation, "verdict": m.verdict, "voided": "yes" if m.voided else "",
        "purpose": m.purpose,
        "measured_local": datetime.fromtimestamp(m.measured_ts).strftime(
            "%Y-%m-%d %H:%M:%S.%f")[:-3],
        "measured_utc": m.measured_iso, "judged_utc": m.event_ts,
        "first_article_attempt": m.attempt, "piece": m.piece, "subgroup": m.subgroup_id,
        "subgroup_position": m.subgroup_position, "die_id": m.die_id,
        "material_lot": m.material_lot, "heat_number": m.heat_number,
        "operator": m.operator, "gauge": m.gauge, "channel": m.channel,
        "stroke_count": m.stroke_count, "phase": m.phase,
        "event_codes": " ".join(str(e.code) for e in m.events),
        "events": "; ".join(f"{e.name} {e.detail}".strip() for e in m.events),
        "reading_id": m.reading_id, "event_id": m.event_id, "seq": m.seq,
    }
    for key in TEXT_COLUMNS:
        value = out[key]
        if isinstance(value, str):
            out[key] = _safe(clean(value))
    return {k: "" if v is None else v for k, v in out.items()}


def write_csv(rows: Iterable[Measurement], out: Path, bom: bool = True,
              delimiter: str = ",") -> int:
    """Write one row per value (atomically: temp file + rename); returns the row count.
    No value: nothing is written and :class:`ExportError` says so."""
    if len(delimiter) != 1 or delimiter in "\"'\r\n" or delimiter.isalnum():
        raise ExportError(f"delimiter {delimiter!r} is not allowed (one character, e.g. "
                          "',' or ';')")
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    count = 0
    try:
        with _open_private(tmp, "utf-8-sig" if bom else "utf-8") as fh:
            writer = csv.DictWriter(fh, COLUMNS, delimiter=delimiter, lineterminator="\r\n",
                                    quoting=csv.QUOTE_MINIMAL)
            writer.writeheader()
            for m in rows:
                writer.writerow(row(m))
                count += 1
            fh.flush()
            os.fsync(fh.fileno())
        if not count:
            raise ExportError("no values to export")
        os.replace(tmp, out)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    return count


__all__ = ["COLUMNS", "row", "write_csv"]
