"""``[[gauges]]`` of a press: serial gauges by preset; docs/gauges.md is the user's page.

The vocabularies come from the gauge families themselves (``drivers.gauge.presets``):
the allowed presets are the families, and a preset's line defaults (baud rate, data
bits, parity, stop bits, terminator) are its ``Preset``'s. Adding a family changes
nothing here.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, model_validator

from drivers.config_base import (
    NAME_PATTERN,
    Baudrate,
    ConfigModel,
    Date,
    Loc,
    Parity,
    Unit,
    raise_problems,
    show,
    show_raw,
)
from drivers.gauge.presets import PRESETS

Preset = Literal[tuple(PRESETS)]  # type: ignore[valid-type]
TERMINATOR_NAMES = {b"\r": "CR", b"\n": "LF", b"\r\n": "CRLF"}
Terminator = Literal[tuple(TERMINATOR_NAMES.values())]  # type: ignore[valid-type]

# Serial line settings per gauge preset (the family's own); a key given in the file wins.
PRESET_LINE: dict[str, dict[str, Any]] = {
    name: {"baudrate": p.baudrate, "bytesize": p.bytesize, "parity": p.parity,
           "stopbits": p.stopbits, "terminator": TERMINATOR_NAMES[p.terminator]}
    for name, p in PRESETS.items()}


def _preset_table() -> str:
    """PRESET_LINE as a Markdown table, for docs/config-reference.md."""
    keys = ("baudrate", "bytesize", "parity", "stopbits", "terminator")
    rows = ["Line defaults per preset (a key given in the file wins):", "",
            "| preset | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    for preset, line in PRESET_LINE.items():
        rows.append(f"| `{preset}` | " + " | ".join(str(line[k]) for k in keys) + " |")
    return "\n".join(rows)


class GaugeConfig(ConfigModel):
    """``[[gauges]]``: a serial (RS-232 / USB) measuring instrument at the press
    (docs/gauges.md). The line settings default to the preset's (table below)."""

    doc_notes: ClassVar[str] = _preset_table()

    id: str = Field(pattern=NAME_PATTERN, description="Unique per press; plans route "
                    "readings by it (`gauge = \"g1\"`).")
    port: str = Field(min_length=1, description="Serial device: `/dev/serial/by-id/...` "
                      "(stable across replugging), `/dev/ttyUSB0`, `COM3`.")
    preset: Preset = Field(description="The gauge family: record format, line settings and "
                           "poll command (docs/gauges.md).")
    baudrate: Baudrate = Field(9600, description="Line speed; default: the preset's.",
                               json_schema_extra={"doc_default": "the preset's"})
    bytesize: int = Field(8, ge=5, le=8, description="Data bits; default: the preset's.",
                          json_schema_extra={"doc_default": "the preset's"})
    parity: Parity = Field("N", description="Parity; default: the preset's.",
                           json_schema_extra={"doc_default": "the preset's"})
    stopbits: Literal[1, 2] = Field(1, description="Stop bits; default: the preset's.",
                                    json_schema_extra={"doc_default": "the preset's"})
    terminator: Terminator = Field("CRLF", description="End of a record; default: the "
                                   "preset's.", json_schema_extra={"doc_default": "the preset's"})
    unit: Unit = Field("mm", description="Unit of a record that carries none.")
    pattern: str = Field("", description="Preset generic only, and required there: a regex "
                         "with a named group `value` (optional `unit`, `channel`, `flag`).")
    error_strings: list[str] = Field(default_factory=list, description="Records starting "
                                     "with one of these are device errors, not values.")
    max_line: int = Field(256, ge=16, le=65536, description="Longest record accepted, "
                          "bytes; a longer one is counted as garbage.")
    poll: str = Field("", description="Poll command (TOML escapes: `\"?\\r\"`); \"\" = "
                      "the preset's, if it has one.")
    poll_interval_ms: int = Field(0, ge=0, le=3_600_000, description="Poll on a drift-free "
                                  "schedule; 0 = no schedule.")
    poll_on: list[str] = Field(default_factory=list, description="Poll triggers: "
                               "`\"stroke\"` (each step of the stroke counter) or the name of "
                               "a PLC tag of this press (its rising edge).")
    channels: list[Annotated[int, Field(ge=1, le=9)]] = Field(
        default_factory=list, description="Preset metro only: the multiplexer channels "
        "polled by digit, one after the other.", json_schema_extra={"doc_allowed": "1..9 "
                                                                    "each"})
    dtr: bool | None = Field(None, description="Modem line DTR after opening (Sylvac cables "
                             "take power from DTR on); unset = the preset's need, else left "
                             "alone.")
    rts: bool | None = Field(None, description="Modem line RTS after opening (Sylvac: off); "
                             "unset = the preset's need, else left alone.")
    calibration_due: Date = Field(None, description="Calibration due date `YYYY-MM-DD` (or a "
                                  "TOML date); a reading after it is flagged "
                                  "`calibration_overdue`.")

    @model_validator(mode="before")
    @classmethod
    def _preset_defaults(cls, data: Any) -> Any:
        if isinstance(data, dict):
            preset = data.get("preset")
            defaults = PRESET_LINE.get(preset, {}) if isinstance(preset, str) else {}
            data = {**defaults, **data}
        return data

    @model_validator(mode="after")
    def _check(self) -> GaugeConfig:
        problems: list[tuple[Loc, str]] = []
        if self.preset == "generic":
            if not self.pattern:
                problems.append((("pattern",), "preset 'generic' needs a pattern: a regex with "
                                 "a named group 'value', e.g. "
                                 r"'(?P<value>[-+]?\d+\.\d+)\s*(?P<unit>mm|in|um)?'"))
            else:
                try:
                    compiled = re.compile(self.pattern)
                except re.error as exc:
                    problems.append((("pattern",), f"{show_raw(self.pattern)} is not a "
                                     f"valid regular expression ({exc})"))
                else:
                    if "value" not in compiled.groupindex:
                        problems.append((("pattern",), f"{show_raw(self.pattern)} has no named "
                                         "group 'value' (write (?P<value>...) around the "
                                         "number)"))
        elif self.pattern:
            problems.append((("pattern",), f"pattern is only used with preset 'generic' "
                             f"(preset is {show(self.preset)})"))
        if self.channels and self.preset != "metro":
            problems.append((("channels",), f"channels are polled by digit on preset 'metro' "
                             f"only (preset is {show(self.preset)})"))
        if (self.poll_interval_ms or self.poll_on) and not self.poll_command() \
                and self.preset != "metro":
            problems.append((("poll",), f"preset {show(self.preset)} has no poll command: "
                             "give one (e.g. poll = \"?\\r\") or remove "
                             "poll_interval_ms / poll_on"))
        raise_problems(problems)
        return self

    def poll_command(self) -> bytes:
        """The configured poll command, else the preset's default (b"" = push only)."""
        if self.poll:
            return self.poll.encode("latin-1")
        return PRESETS[self.preset].poll
