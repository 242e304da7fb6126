"""How a press's PLC tags become role values for the workflow (issue 11). Pure.

Every role reads one tag (``role = "..."`` on the tag). Ids (die, part, lot, heat) are
compared as stripped strings and the stroke counter is counted as an integer
(``collector.workflow``); the true/false roles (setup_mode, running, repair) read their
tag as non-zero = true unless the tag gives a map:

- ``true_values = [1]``: true when the value is one of these (numbers, or text compared
  without case and blanks): a PLC mode word 0 stopped / 1 setup / 2 production;
- ``true_bit = 3``: true when bit 3 (0 = least significant) of an integer is set: a
  status word;
- ``enum = ["stopped", "setup", "production"]`` with ``true_values = ["setup"]``: the
  names of the values 0, 1, 2, ... so that the map reads like the PLC program.

This module checks those keys (``role_map_problems``, called by the config models, so
errors carry file and key path) and builds ``domain.RoleMap`` and the stroke counter's
wrap from a tag. docs/roles.md is the user's page.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from collector.domain import BOOL_ROLES, RoleMap

MAP_KEYS = ("true_values", "true_bit", "enum")
# Bits of each integer tag type (the stroke counter wraps at 2**bits)
TYPE_BITS = {"int16": 16, "uint16": 16, "int32": 32, "uint32": 32}
OPCUA_BITS = 64  # an OPC UA node's integer type is not declared in the config


def _show(value: Any) -> str:
    return repr(value)


def role_map_problems(role: str | None, type_: str | None, true_values: Sequence[Any] | None,
                      true_bit: int | None, enum: Sequence[str] | None
                      ) -> list[tuple[tuple[str | int, ...], str]]:
    """Problems of a tag's role map keys as (key path within the tag, message).

    ``type_``: the Modbus tag type, or None for an OPC UA node (any integer width)."""
    given = [k for k, v in zip(MAP_KEYS, (true_values, true_bit, enum), strict=True)
             if v is not None]
    if not given:
        return []
    problems: list[tuple[tuple[str | int, ...], str]] = []
    key = given[0]
    if role not in BOOL_ROLES:
        what = "the tag has no role" if role is None else f"role is {_show(role)}"
        return [((key,), f"{key} is only for the roles {', '.join(BOOL_ROLES)} ({what})")]
    if type_ == "bool":
        return [((key,), f"{key} is for numeric or text tags (type is 'bool': it is true or "
                         "false already)")]
    if true_bit is not None:
        if true_values is not None or enum is not None:
            other = "true_values" if true_values is not None else "enum"
            problems.append((("true_bit",), f"give true_bit or {other}, not both"))
        bits = OPCUA_BITS if type_ is None else TYPE_BITS.get(type_)
        if bits is None:
            problems.append((("true_bit",), f"true_bit needs an integer tag (type is "
                             f"{_show(type_)}; allowed: {', '.join(TYPE_BITS)})"))
        elif not 0 <= true_bit < bits:
            kind = "an OPC UA integer" if type_ is None else f"type {_show(type_)}"
            problems.append((("true_bit",), f"{true_bit} is out of range (allowed: "
                             f"0..{bits - 1} for {kind})"))
        return problems
    if enum is not None:
        if true_values is None:
            return [(("enum",), "enum needs true_values (the names for which the role is "
                                "true)")]
        names = [n.strip() for n in enum]
        if not names or any(not n for n in names):
            problems.append((("enum",), "names must be non-empty (the names of the values "
                             "0, 1, 2, ...)"))
        seen: set[str] = set()
        for i, name in enumerate(names):
            if name.casefold() in seen:
                problems.append((("enum", i), f"{_show(name)} is given twice"))
            seen.add(name.casefold())
    assert true_values is not None
    if not true_values:
        problems.append((("true_values",), "needs at least one value"))
    for i, value in enumerate(true_values):
        if enum is not None and (not isinstance(value, str)
                                 or value.strip().casefold() not in
                                 {n.strip().casefold() for n in enum}):
            problems.append((("true_values", i), f"{_show(value)} is not a name in enum "
                             f"(allowed: {', '.join(enum)})"))
        elif isinstance(value, str) and not value.strip():
            problems.append((("true_values", i), "must not be empty"))
        elif enum is None and type_ in TYPE_BITS and not isinstance(value, int):
            problems.append((("true_values", i), f"{_show(value)} is not an integer (type is "
                             f"{_show(type_)}; give numbers, or enum names with enum)"))
    return problems


def role_map(true_values: Sequence[Any] | None, true_bit: int | None,
             enum: Sequence[str] | None) -> RoleMap | None:
    """The ``RoleMap`` of a tag, None when it gives no map (non-zero = true)."""
    if true_bit is not None:
        return RoleMap(bit=true_bit)
    if true_values is None:
        return None
    values = frozenset(v.strip() if isinstance(v, str) else int(v) for v in true_values)
    return RoleMap(true_values=values, names=tuple(n.strip() for n in enum or ()))


def counter_wrap(type_: str | None, scale: float = 1.0, offset: float = 0.0) -> int | None:
    """Where a stroke counter tag wraps to 0: 2**16 / 2**32 by type (an unscaled integer
    tag); None when the config does not say (OPC UA, scaled)."""
    bits = TYPE_BITS.get(type_ or "")
    if bits is None or scale != 1.0 or offset != 0.0:
        return None
    return 2**bits
