"""Routing and judging a gauge reading (pure): which characteristic takes it, and the
judged value as the JSON-able result that first article, patrol and last piece share."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from collector.domain import Characteristic, GaugeReading
from collector.tolerance import check
from collector.workflow.values import dec, to_id


def piece_key(char_id: str, piece: int) -> str:
    """Key of a first-article result: the id for piece 1 (as before), id#k after."""
    return char_id if piece == 1 else f"{char_id}#{piece}"


def pieces(results: Mapping[str, Any], char_id: str) -> int:
    """How many pieces of a first article have a value for ``char_id``."""
    n = 0
    while piece_key(char_id, n + 1) in results:
        n += 1
    return n


def takes(char: Characteristic, gauge: str | None, channel: int | None) -> bool:
    """Does ``char`` declare this gauge (and channel, if it names one)?"""
    declared = to_id(char.gauge)
    if declared is None or declared != gauge:
        return False
    return char.channel is None or char.channel == channel


def route(
    chars: tuple[Characteristic, ...], gauge: str | None, channel: int | None,
    order: list[int],
) -> int | None:
    """Index of the characteristic a reading goes to, searching ``order``; None if none.

    The first characteristic in ``order`` that declares the gauge (and channel); else,
    when no characteristic of the plan declares it at all, the first one in ``order``
    without a gauge.
    """
    for i in order:
        if takes(chars[i], gauge, channel):
            return i
    if any(takes(c, gauge, channel) for c in chars):
        return None
    for i in order:
        if to_id(chars[i].gauge) is None:
            return i
    return None


def result(char: Characteristic, raw: Decimal, r: GaugeReading) -> dict[str, Any]:
    """One judged value as a JSON-able dict (``UnitError`` when units do not convert)."""
    judged = check(raw, r.unit, char.unit, char.nominal, char.lsl, char.usl)
    return {
        "characteristic": char.id,
        "name": char.name,
        "char_class": char.char_class,
        "nominal": dec(char.nominal),
        "lsl": dec(char.lsl),
        "usl": dec(char.usl),
        "unit": char.unit,
        "resolution": dec(char.resolution),  # the plan's gauge step, for MSA / export
        "value": dec(judged.value),
        "verdict": judged.verdict,
        "deviation": dec(judged.deviation),
        "reading_id": r.reading_id,
        "gauge": r.gauge,
        "channel": r.channel,
        "raw_value": r.value,
        "raw_unit": r.unit,
        "measured_ts": r.ts,
    }
