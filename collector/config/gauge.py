"""``[[gauges]]`` of a press: serial gauges by preset; docs/gauges.md is the user's page.

Depends on ``base`` only, so that it can move next to its driver.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from collector.config.base import (
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

Preset = Literal["mitutoyo", "generic", "sylvac", "millimar", "mahr_optors", "chicago", "metro"]
Terminator = Literal["CR", "LF", "CRLF"]

# Serial line settings per gauge preset; a key given in the file wins.
PRESET_LINE: dict[str, dict[str, Any]] = {
    "mitutoyo": {"baudrate": 9600, "bytesize": 8, "parity": "N", "stopbits": 1,
                 "terminator": "CR"},
    "generic": {"baudrate": 9600, "bytesize": 8, "parity": "N", "stopbits": 1,
                "terminator": "CRLF"},
    "sylvac": {"baudrate": 4800, "bytesize": 7, "parity": "E", "stopbits": 2,
               "terminator": "CR"},
    "millimar": {"baudrate": 9600, "bytesize": 7, "parity": "E", "stopbits": 2,
                 "terminator": "CRLF"},
    "mahr_optors": {"baudrate": 9600, "bytesize": 7, "parity": "E", "stopbits": 2,
                    "terminator": "CRLF"},
    "chicago": {"baudrate": 9600, "bytesize": 8, "parity": "N", "stopbits": 1,
                "terminator": "CRLF"},
    "metro": {"baudrate": 9600, "bytesize": 8, "parity": "N", "stopbits": 1,
              "terminator": "CRLF"},
}


class GaugeConfig(ConfigModel):
    id: str = Field(pattern=NAME_PATTERN)
    port: str = Field(min_length=1)
    preset: Preset
    # Line settings: defaults come from the preset (see PRESET_LINE).
    baudrate: Baudrate = 9600
    bytesize: int = Field(8, ge=5, le=8)
    parity: Parity = "N"
    stopbits: Literal[1, 2] = 1
    terminator: Terminator = "CRLF"
    unit: Unit = "mm"
    pattern: str = ""
    error_strings: list[str] = Field(default_factory=list)
    max_line: int = Field(256, ge=16, le=65536)
    # Polled gauges: the command (TOML escapes: "?\r"; "" = the preset's), a schedule
    # (0 = none) and triggers: "stroke" (each stroke count step) or a PLC tag name (its
    # rising edge); Metro multiplexers poll these channels by digit.
    poll: str = ""
    poll_interval_ms: int = Field(0, ge=0, le=3_600_000)
    poll_on: list[str] = Field(default_factory=list)
    channels: list[Annotated[int, Field(ge=1, le=9)]] = Field(default_factory=list)
    # Modem lines after opening (Sylvac cables: DTR on powers them, RTS off); unset = the
    # preset's need (Sylvac) or left alone.
    dtr: bool | None = None
    rts: bool | None = None
    # Gauge identity for calibration: a reading after this date is flagged overdue.
    calibration_due: Date = None

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
        from drivers.gauge_parsers import PRESETS as GAUGE_PRESETS

        if self.poll:
            return self.poll.encode("latin-1")
        return GAUGE_PRESETS[self.preset].poll
