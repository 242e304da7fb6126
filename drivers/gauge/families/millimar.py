"""Mahr Millimar C1202: several features per record, separated by ';'."""

from __future__ import annotations

import re

from drivers.gauge.records import (
    Parsed,
    Parser,
    Preset,
    Rejected,
    flag_verdict,
    record_unit,
    sign_body,
    signed,
)

# Mahr Millimar C1202: features separated by ';', each 'N +012.34 mm' with the tolerance
# symbol when tolerances are on ('<' below, '=' within, '>' above) and a second symbol
# when warning limits are on too ('1 +012.34 mm = <'); 'N ERR6' for a deactivated
# feature. Units mm, um, inch, deg, rad, or dms with the value as deg:min:s.
_MAHR_FEATURE = re.compile(r"(?P<feature>\d{1,2}) +(?:(?P<err>ERR\d+)|(?P<sign>[+\-])?"
                           r"(?:(?P<number>\d+(?:\.\d+)?)|(?P<dms>\d+:\d\d:\d\d(?:\.\d+)?))"
                           r" *(?P<unit>mm|in|um|µm|inch|deg|rad|dms)?"
                           r"(?P<flag>(?: *[<=>]){0,2}))")
_MAHR_ERRORS = {"ERR6": "feature deactivated"}


def _parse_millimar(_parser: Parser, text: str) -> list[Parsed | Rejected] | Rejected:
    """One Parsed per feature (channel = feature number); a feature in error is a
    device error for that feature only. Any part that is not a feature makes the whole
    line garbage: a half-understood record must not yield values."""
    parts = [p.strip() for p in text.strip().removesuffix(";").split(";")]
    out: list[Parsed | Rejected] = []
    for part in parts:
        match = _MAHR_FEATURE.fullmatch(part)
        if match is None:
            return Rejected("garbage")
        feature = int(match["feature"])
        if match["err"]:
            meaning = _MAHR_ERRORS.get(match["err"], "undocumented error code")
            out.append(Rejected(f"device_error: feature {feature} {match['err']} ({meaning})"))
            continue
        if match["dms"] is not None or match["unit"] == "dms":
            if match["dms"] is None or match["unit"] not in (None, "dms"):
                return Rejected("garbage")
            out.append(Rejected(f"unsupported: feature {feature} angle {match['dms']} dms "
                                "(deg:min:s has no decimal resolution: set the C1202's "
                                "unit to deg)"))
            continue
        value = signed(match["sign"], match["number"])
        if value is None:  # pragma: no cover
            return Rejected("bad_value")
        unit = record_unit(match["unit"])
        flag = " ".join(re.findall(r"[<=>]", match["flag"])) or None
        out.append(Parsed(value, unit, feature, flag, flag_verdict(flag)))
    return out


def format_record(value: str, channel: int = 1, unit: str = "mm", flag: str = "") -> bytes:
    """One feature ('1 +012.34 mm='); a record of several joins them with ';'."""
    sign, body = sign_body(value)
    return f"{channel} {sign}{body.zfill(6)} {unit}{flag}".encode("ascii")


PRESET = Preset("millimar", _parse_millimar, 9600, 7, "E", 2, b"\r\n", unit_in_record=True,
                poll=b"?\r", format=format_record)
