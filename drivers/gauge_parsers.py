"""Moved to the ``drivers.gauge`` package (``records``: the shared rules; ``presets``:
the families; ``families/<name>``: one family each). This name re-exports them until
the config models move into ``drivers/gauge/config.py`` (issue 13)."""

from drivers.gauge.families.mitutoyo import format_mitutoyo
from drivers.gauge.presets import PRESETS, make_parser, poll_commands
from drivers.gauge.records import (
    FLAG_VERDICTS,
    UNITS,
    Parsed,
    Parser,
    Preset,
    Rejected,
    canonical_unit,
    convert_unit,
    flag_verdict,
    normalise_decimal,
    parse_line,
    parse_records,
)

__all__ = ["FLAG_VERDICTS", "PRESETS", "UNITS", "Parsed", "Parser", "Preset", "Rejected",
           "canonical_unit", "convert_unit", "flag_verdict", "format_mitutoyo",
           "make_parser", "normalise_decimal", "parse_line", "parse_records", "poll_commands"]
