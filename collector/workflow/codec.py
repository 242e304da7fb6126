"""Snapshot helpers: the error a malformed snapshot raises and the checks that raise it.

Each workflow component turns itself into a JSON-able dict (``dump``) and back
(``load``); most of them by their fields (``Record``, ``dump``/``load`` below). ``load``
raises ``BadSnapshot`` (a ``ValueError``) on anything malformed; the coordinator then
starts that part fresh (see ``PressWorkflow.restore``).
"""

from __future__ import annotations

import copy
import dataclasses
import types
import typing
from collections.abc import Mapping
from fractions import Fraction
from typing import Any


class BadSnapshot(ValueError):
    """A snapshot (or one component's part of it) that cannot be used."""


def want(condition: bool, what: str) -> None:
    if not condition:
        raise BadSnapshot(what)


def opt_int(value: Any, what: str) -> int | None:
    if value is None:
        return None
    want(isinstance(value, int) and not isinstance(value, bool), what)
    return int(value)


def opt_num(value: Any, what: str) -> float | None:
    if value is None:
        return None
    want(isinstance(value, (int, float)) and not isinstance(value, bool), what)
    return float(value)


def opt_str(value: Any, what: str) -> str | None:
    want(value is None or isinstance(value, str), what)
    return value


# ---- dataclasses to JSON and back, by their type hints -----------------------------------
# The small records of the workflow (a due check, a missed check, an open last piece...)
# are dataclasses whose field names are their snapshot keys: ``dump`` and ``load`` walk
# the fields and the type hints, so a field is named once, in the class. ``load``
# checks every value against its hint (``BadSnapshot`` otherwise): int (not bool), float
# (int accepted), str, bool, None in a union, list / tuple / set / dict of those, nested
# dataclasses, classes with their own ``load``, ``Fraction`` (its exact 'p/q' string: the
# summed SPC history, ``collector.quality.SpcHistory``) and ``Any`` (JSON, copied).

_HINTS: dict[type, dict[str, Any]] = {}


def dump(obj: Any) -> Any:
    """A JSON-able copy of ``obj`` (dataclasses as dicts of their fields)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: dump(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {k: dump(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [dump(v) for v in obj]
    if isinstance(obj, (set, frozenset)):
        return sorted(dump(v) for v in obj)
    if isinstance(obj, Fraction):
        return str(obj)
    if hasattr(obj, "dump"):
        return obj.dump()
    return obj


def load(tp: Any, raw: Any, what: str = "snapshot") -> Any:
    """``raw`` (JSON) as a value of type ``tp``; ``BadSnapshot`` when it is not one."""
    if tp is Any:
        return copy.deepcopy(raw)
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if raw is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        want(len(inner) == 1, what)
        return load(inner[0], raw, what)
    if tp is bool:
        want(isinstance(raw, bool), what)
        return raw
    if tp is int:
        want(isinstance(raw, int) and not isinstance(raw, bool), what)
        return int(raw)
    if tp is float:
        want(isinstance(raw, (int, float)) and not isinstance(raw, bool), what)
        return float(raw)
    if tp is str:
        want(isinstance(raw, str), what)
        return raw
    if tp is Fraction:
        want(isinstance(raw, str), what)
        try:
            return Fraction(raw)
        except (ValueError, ZeroDivisionError):
            raise BadSnapshot(what) from None
    if origin is list:
        want(isinstance(raw, list), what)
        return [load(args[0], v, what) for v in raw]
    if origin is set:
        want(isinstance(raw, list), what)
        return {load(args[0], v, what) for v in raw}
    if origin is tuple:
        want(isinstance(raw, list), what)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(load(args[0], v, what) for v in raw)
        want(len(raw) == len(args), what)
        return tuple(load(a, v, what) for a, v in zip(args, raw, strict=True))
    if origin is dict:
        want(isinstance(raw, Mapping), what)
        return {load(args[0], k, what): load(args[1], v, what) for k, v in raw.items()}
    if dataclasses.is_dataclass(tp):
        want(isinstance(raw, Mapping), what)
        hints = _HINTS.get(tp)
        if hints is None:
            hints = _HINTS[tp] = typing.get_type_hints(tp)
        values = {}
        for f in dataclasses.fields(tp):
            if f.name in raw:
                values[f.name] = load(hints[f.name], raw[f.name], f"{what}.{f.name}")
            else:
                want(f.default is not dataclasses.MISSING
                     or f.default_factory is not dataclasses.MISSING, f"{what}.{f.name}")
        return tp(**values)
    if hasattr(tp, "load"):
        return tp.load(raw)
    raise TypeError(f"no snapshot codec for {tp!r}")


class Record:
    """Mixin of a workflow component: ``dump`` / ``load`` by the fields' names and type
    hints (a field is named once, in its class). A component with invariants beyond the
    types overrides ``validate`` (raise ``BadSnapshot``)."""

    __slots__ = ()

    def dump(self) -> dict[str, Any]:
        out: dict[str, Any] = dump(self)
        return out

    @classmethod
    def load(cls, raw: Any) -> Any:
        obj = load(cls, raw, cls.__name__)
        obj.validate()
        return obj

    def validate(self) -> None:
        """Invariants a loaded component must hold."""
