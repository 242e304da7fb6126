"""Q-DAS ASCII transfer format / AQDEF (``.dfq``): description and values in one file.

Layout (docs/quality.md, "Q-DAS AQDEF export", has the field table and an example):

- ``K0100`` (number of characteristics in the file) first, then the part fields
  (``K1001`` part number, ``K1002`` description, ``K1004`` plan revision, ``K1081``
  machine = press when the values come from one press), then per characteristic ``i``
  the ``K2xxx/i`` fields (number, description, type, class, decimal places, nominal,
  lower and upper specification limit, unit);
- then the values in K-field notation, one block per value: ``K0001/i`` value,
  ``K0002/i`` attribute, ``K0004/i`` date/time and the additional data (``K0005``
  events, ``K0006`` batch = material lot, ``K0008`` operator, ``K0009`` text,
  ``K0012`` gauge, ``K0014`` part ident, ``K0015`` reason for test, ``K0080``/``K0081``
  subgroup). K-field notation rather than the compact value lines because patrol values
  of different characteristics are taken at different times and subgroups, so there is
  no "one line per part" to write without padding placeholders.

Why the header can name every characteristic before the values while the rows are read
once, in bounded memory: the value blocks go to a spool file next to the output as they
come, characteristics are numbered on first sight, and the header is written in front of
the spool at the end (the output appears atomically: temp file + rename).

A characteristic whose nominal, limits or unit differ between plan revisions in the
period is a different characteristic for SPC: each variant gets its own number
(``C1 (rev B)``), never a mix of values judged against different limits.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TextIO

from collector.export.measurements import Measurement

NEWLINE = "\r\n"  # the format comes from Windows software; CRLF is what it writes
ENCODINGS = ("utf-8-sig", "cp1252")
ATTR_VALID = 0
ATTR_VOIDED = 129  # shown, not used in calculations (a repeated measurement)
REASON_FIRST_ARTICLE = 30  # K0015: first part measurement
REASON_ONGOING = 0  # K0015: ongoing (patrol, 100 % inspection)
CLASS_CODES = {"critical": 4, "significant": 3, "standard": 2}  # K2005
TEXT_MAX = 255  # K0009
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


class ExportError(Exception):
    """The export cannot be written as asked (message names the field and the value)."""


@dataclass(frozen=True, slots=True)
class _Char:
    id: str
    revision: str | None
    name: str
    char_class: str | None
    unit: str
    nominal: str
    lsl: str | None
    usl: str | None
    resolution: str | None


def clean(text: object) -> str:
    """One line of text: control characters (CR, LF, tab, C1) become spaces, so a value
    can never start a K-field line of its own."""
    return _CONTROL.sub(" ", str(text)).strip()


def qdas_time(ts: float) -> str:
    """K0004: ``DD.MM.YYYY/HH:MM:SS`` in the local time of the exporting machine (the
    field has no zone; the plant's SPC shows plant time)."""
    return datetime.fromtimestamp(ts).strftime("%d.%m.%Y/%H:%M:%S")


def _decimals(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        exp = Decimal(text).as_tuple().exponent
    except InvalidOperation:
        return None
    return max(0, -exp) if isinstance(exp, int) else None


class QdasWriter:
    """Collects values (spooled to disk) and writes the ``.dfq`` on :meth:`close`."""

    def __init__(self, out: Path, part: str, description: str | None = None,
                 encoding: str = "utf-8-sig") -> None:
        if encoding not in ENCODINGS:
            raise ExportError(f"encoding {encoding!r} is not allowed "
                              f"(allowed: {', '.join(ENCODINGS)})")
        self.out = out
        self.part = part
        self.description = description
        self.encoding = encoding
        self._chars: dict[_Char, int] = {}
        self._presses: set[str] = set()
        self.values = 0
        self._spool_path = out.with_name(f".{out.name}.{os.getpid()}.values")
        self._spool: TextIO = _open_private(self._spool_path, "utf-8")

    # -- values ------------------------------------------------------------------------
    def add(self, m: Measurement) -> None:
        key = _Char(m.characteristic, m.plan_revision, m.name, m.char_class, m.unit,
                    m.nominal, m.lsl, m.usl, m.resolution)
        i = self._chars.setdefault(key, len(self._chars) + 1)
        self._presses.add(m.press)
        lines = [(1, m.value), (2, ATTR_VOIDED if m.voided else ATTR_VALID),
                 (4, qdas_time(m.measured_ts))]
        if m.events:
            lines.append((5, ",".join(str(e.code) for e in m.events)))
        if m.material_lot:
            lines.append((6, clean(m.material_lot)))
        if m.operator:
            lines.append((8, _catalogue_ref(m.operator)))
        lines.append((9, self._text(m)))
        if m.gauge:
            lines.append((12, _catalogue_ref(m.gauge)))
        if m.purpose == "first_article":
            # the piece: press / seq of the first_article event / attempt / piece
            lines.append((14, clean(f"{m.press}/{m.seq}/FA{m.attempt}/{m.piece or 1}")))
        lines.append((15, REASON_FIRST_ARTICLE if m.purpose == "first_article"
                      else REASON_ONGOING))
        if m.subgroup_id:
            lines.append((80, clean(m.subgroup_id)))
            lines.append((81, m.subgroup_position))
        self._spool.write("".join(f"K{k:04d}/{i} {v}{NEWLINE}" for k, v in lines))
        self.values += 1

    @staticmethod
    def _text(m: Measurement) -> str:
        parts = [f"{label} {value}" for label, value in (
            ("press", m.press), ("die", m.die_id), ("heat", m.heat_number),
            ("stroke", m.stroke_count)) if value is not None]
        parts.append(m.purpose)
        if m.voided:
            parts.append("voided (repeat measurement)")
        parts += [f"{e.name} {e.detail}".strip() for e in m.events]
        text = clean("; ".join(parts))
        return text if len(text) <= TEXT_MAX else text[:TEXT_MAX - 1] + "…"

    # -- header and file ---------------------------------------------------------------
    def _header(self) -> list[str]:
        chars = sorted(self._chars.items(), key=lambda kv: kv[1])
        variants: dict[str, int] = {}
        for c, _ in chars:
            variants[c.id] = variants.get(c.id, 0) + 1
        revisions = sorted({c.revision for c, _ in chars if c.revision})
        lines = [f"K0100 {len(chars)}", f"K1001 {clean(self.part)}",
                 f"K1002 {clean(self.description or self.part)}"]
        if revisions:
            lines.append(f"K1004 {clean(','.join(revisions))}")
        if len(self._presses) == 1:
            lines.append(f"K1081 {clean(next(iter(self._presses)))}")
        for c, i in chars:
            number = c.id if variants[c.id] == 1 else f"{c.id} (rev {c.revision})"
            decimals = _decimals(c.resolution)
            if decimals is None:
                decimals = max((d for d in map(_decimals, (c.nominal, c.lsl, c.usl))
                                if d is not None), default=None)
            fields: list[tuple[int, object]] = [
                (2001, clean(number)), (2002, clean(c.name or c.id)), (2004, 0)]
            if c.char_class in CLASS_CODES:
                fields.append((2005, CLASS_CODES[c.char_class]))
            if decimals is not None:
                fields.append((2022, decimals))
            fields.append((2101, c.nominal))
            if c.lsl is not None:
                fields.append((2110, c.lsl))
            if c.usl is not None:
                fields.append((2111, c.usl))
            if c.unit:
                fields.append((2142, clean(c.unit)))
            lines += [f"K{k}/{i} {v}" for k, v in fields]
        return lines

    def close(self) -> int:
        """Write the file (atomically); returns the number of values. No value: nothing
        is written and :class:`ExportError` says so."""
        self._spool.close()
        try:
            if not self.values:
                raise ExportError("no values to export")
            tmp = self.out.with_name(f".{self.out.name}.{os.getpid()}.tmp")
            try:
                with _open_private(tmp, self.encoding) as fh, \
                        open(self._spool_path, encoding="utf-8", newline="") as spool:
                    try:
                        fh.write(NEWLINE.join(self._header()) + NEWLINE)
                        while chunk := spool.read(1 << 18):
                            fh.write(chunk)
                    except UnicodeEncodeError as exc:
                        bad = exc.object[exc.start:exc.end]
                        raise ExportError(
                            f"{bad!r} cannot be written in {self.encoding} (in "
                            f"{exc.object[max(0, exc.start - 30):exc.end + 10]!r}); use "
                            "--encoding utf-8-sig") from None
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, self.out)
            except BaseException:
                with contextlib.suppress(OSError):
                    tmp.unlink()
                raise
        finally:
            with contextlib.suppress(OSError):
                self._spool_path.unlink()
        return self.values

    def abort(self) -> None:
        self._spool.close()
        with contextlib.suppress(OSError):
            self._spool_path.unlink()


def _catalogue_ref(value: str) -> str:
    """K0008 / K0012 are catalogue fields: a number is written as the catalogue key, any
    other id as text after ``#`` (docs/quality.md: how to map ids to catalogue numbers)."""
    text = clean(value)
    return text if text.isdigit() else f"#{text}"


def _open_private(path: Path, encoding: str) -> TextIO:
    """A file only its owner can read (quality records), whatever the umask."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    return open(fd, "w", encoding=encoding, newline="")


def write_qdas(rows: Iterable[Measurement], out: Path, part: str,
               description: str | None = None, encoding: str = "utf-8-sig") -> int:
    """Write ``rows`` (one part) as a ``.dfq``; returns the number of values."""
    writer = QdasWriter(out, part, description, encoding)
    try:
        for m in rows:
            writer.add(m)
    except BaseException:
        writer.abort()
        raise
    return writer.close()


__all__ = ["ENCODINGS", "ExportError", "QdasWriter", "clean", "qdas_time", "write_qdas"]
