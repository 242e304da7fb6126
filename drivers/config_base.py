"""What every config model shares: the strict base model, the problem helpers and the
vocabularies more than one file uses.

Here, at the bottom layer (stdlib and pydantic only), because the driver packages' own
config models (``drivers/<package>/config.py``) build on it as much as the collector's
site, press and plan models (``collector/config/``) do; ``drivers`` never imports
``collector`` (docs/DESIGN.md, "Layering").

A model validator that finds several problems reports them all at once with
:func:`raise_problems`; ``errors.translate`` turns them into ``file: key.path: message``.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict
from pydantic_core import PydanticCustomError

Loc = tuple[str | int, ...]

# Shared vocabularies (a gauge and a plan both speak units; a gauge and an RTU line both
# have a serial line).
Unit = Literal["mm", "in", "um"]
Baudrate = Literal[300, 600, 1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200]
Parity = Literal["N", "E", "O"]

ID_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"  # collector/mqtt_names.py says why
NAME_PATTERN = r"^[A-Za-z0-9_-]+$"
PATTERN_HINTS = {
    ID_PATTERN: "use 1 to 64 lowercase letters, digits, '_' and '-', starting with a letter "
                "or a digit; it is used in MQTT topics",
    NAME_PATTERN: "use letters, digits, '_' and '-'",
}


class ConfigModel(BaseModel):
    """Every config table: unknown keys are errors, no silent ``"502"`` -> ``502``.

    A root model (one per file) may declare, for the error translation:
    ``union_tags``: key -> {tag -> model} of its tagged unions (the tag pydantic puts into
    an error's loc is not a key the user wrote); ``secret_hints``: key -> {secret key ->
    message} for a secret written anywhere below that key. Any model may give
    ``doc_notes``: Markdown shown after its table in docs/config-reference.md.
    """

    model_config = ConfigDict(extra="forbid", strict=True)
    union_tags: ClassVar[dict[str, dict[str, type[BaseModel]]]] = {}
    secret_hints: ClassVar[dict[str, dict[str, str]]] = {}
    doc_notes: ClassVar[str] = ""


def raise_problems(problems: list[tuple[Loc, str]]) -> None:
    """Report several problems (sub-path, message) from one model validator at once."""
    if problems:
        raise PydanticCustomError("config_problems", "{count} config problem(s)",
                                  {"count": len(problems), "problems": problems})


def show(value: Any) -> str:
    """A value as the user wrote it (TOML-ish), shortened."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, dict):
        text = "{" + ", ".join(map(str, value)) + "}"
    else:
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def show_raw(text: str) -> str:
    """A string as written in a TOML literal string: quotes, but no escaped backslashes."""
    return f"'{text}'" if len(text) <= 60 else f"'{text[:55]}...'"


def kind_of(value: Any) -> str:
    """What a value is, in TOML words (for "got VALUE (a string)")."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return "a date/time" if hasattr(value, "isoformat") else type(value).__name__


def to_decimal(value: Any) -> Decimal:
    """Decimal from a TOML string or number; floats go through repr (25.05 stays 25.05)."""
    if isinstance(value, bool):
        raise ValueError(f"expected a decimal number, got {show(value)} (a boolean)")
    if isinstance(value, Decimal):
        result = value
    elif isinstance(value, int):
        result = Decimal(value)
    elif isinstance(value, float):
        result = Decimal(repr(value))
    elif isinstance(value, str):
        try:
            result = Decimal(value.strip())
        except InvalidOperation:
            hint = " (use a decimal point: '25.00')" if "," in value else " (e.g. '25.00')"
            raise ValueError(f"{show(value)} is not a decimal number{hint}") from None
    else:
        raise ValueError(f"expected a decimal number as string or number, got "
                         f"{show(value)} ({kind_of(value)})")
    if not result.is_finite():
        raise ValueError(f"{show(value)} is not a finite number")
    return result


def to_date(value: Any) -> date | None:
    """A TOML date (2027-03-31) or the string 'YYYY-MM-DD'."""
    if value is None or (isinstance(value, date) and not hasattr(value, "hour")):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value.strip())
        except ValueError:
            raise ValueError(f"{show(value)} is not a date (write 'YYYY-MM-DD', "
                             "e.g. '2027-03-31')") from None
    raise ValueError(f"expected a date 'YYYY-MM-DD', got {show(value)} ({kind_of(value)})")


Dec = Annotated[Decimal, BeforeValidator(to_decimal)]
Date = Annotated[date | None, BeforeValidator(to_date)]


def repeats(keys: list[Any]) -> list[tuple[int, int]]:
    """(index, index of its first occurrence) of every key seen before; None keys are
    never repeats. The one rule behind "unique per press / plan" checks."""
    first: dict[Any, int] = {}
    out = []
    for i, key in enumerate(keys):
        if key is None:
            continue
        if key in first:
            out.append((i, first[key]))
        else:
            first[key] = i
    return out


def tag_problems(tags: list[Any]) -> list[tuple[Loc, str]]:
    """Unique tag names and roles per press (same rules and words as PlcConfig)."""
    problems: list[tuple[Loc, str]] = []
    for i, first in repeats([t.name for t in tags]):
        problems.append((("tags", i, "name"), f"{show(tags[i].name)} is already used by "
                         f"plc.tags[{first}] (tag names must be unique per press)"))
    for i, first in repeats([t.role for t in tags]):
        problems.append((("tags", i, "role"), f"role {show(tags[i].role)} is already given to "
                         f"tag {show(tags[first].name)} (each role at most once per press)"))
    return sorted(problems, key=lambda p: p[0][1])


# Outputs (``[[plc.outputs]]``, issue 14): the driver writes them under this name, beside
# the polled tags of the same driver (drivers' ``write(tag, value)`` takes one name).
OUTPUT_PREFIX = "output:"


def output_problems(outputs: list[Any], tags: list[Any]) -> list[tuple[Loc, str]]:
    """Each output role at most once per press, and no tag named like an output's
    write name (``output:<role>``)."""
    problems: list[tuple[Loc, str]] = [
        (("tags", i, "name"), f"{show(tag.name)}: names starting with {show(OUTPUT_PREFIX)} "
         "are kept for [[plc.outputs]]")
        for i, tag in enumerate(tags) if tag.name.startswith(OUTPUT_PREFIX)]
    for i, first in repeats([o.role for o in outputs]):
        problems.append((("outputs", i, "role"), f"role {show(outputs[i].role)} is already "
                         f"given to plc.outputs[{first}] (each output role at most once per "
                         "press)"))
    return problems
