"""The gauge families this collector reads, by preset name, and what one gauge's config
makes of its family (``make_parser``, ``poll_commands``).

Adding a family: a module in ``families/`` (its ``PRESET``: line settings, record
parser, record formatter) and one entry in ``FAMILIES`` below; the config's ``preset``
vocabulary, ``probe gauge --preset``, the simulator and the docs' list follow from it.
"""

from __future__ import annotations

import re

from drivers.gauge.families import (
    chicago,
    generic,
    mahr_optors,
    metro,
    millimar,
    mitutoyo,
    sylvac,
)
from drivers.gauge.records import Parser, Preset

__all__ = ["PRESETS", "make_parser", "poll_commands"]

FAMILIES = (mitutoyo, generic, sylvac, millimar, mahr_optors, chicago, metro)

PRESETS: dict[str, Preset] = {family.PRESET.name: family.PRESET for family in FAMILIES}


def poll_commands(preset: Preset, channels: tuple[int, ...] = (), command: bytes = b"") -> (
        list[bytes]):
    """The bytes one poll sends: the configured command, else the preset's; a Metro
    multiplexer gets one channel digit per configured channel (no terminator)."""
    if command:
        return [command]
    if preset.poll_by_channel:
        return [str(c).encode("ascii") for c in (channels or (1,))]
    return [preset.poll] if preset.poll else []


def make_parser(preset: str, pattern: str | None = None,
                error_strings: tuple[str, ...] | list[str] = ()) -> Parser:
    """Build the parser of one gauge. Raises ValueError for an unknown preset, a generic
    preset without a pattern, or a pattern without a named group 'value'."""
    try:
        spec = PRESETS[preset]
    except KeyError:
        raise ValueError(f"unknown gauge preset {preset!r} "
                         f"(allowed: {', '.join(PRESETS)})") from None
    compiled = re.compile(pattern) if pattern else None
    if spec.needs_pattern and compiled is None:
        raise ValueError(f"preset {preset!r} needs a pattern with a named group 'value'")
    if compiled is not None and not spec.needs_pattern:
        raise ValueError(f"preset {preset!r} takes no pattern")
    if compiled is not None and "value" not in compiled.groupindex:
        raise ValueError(f"pattern {pattern!r} has no named group 'value'")
    extra = tuple(s for s in error_strings if s)
    return Parser(spec, compiled, spec.error_strings + extra)
