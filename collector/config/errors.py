"""Config problems and the translation of pydantic's errors into our own words.

Every message reads ``{file}: {key.path}: {message}`` and names the value and what is
allowed, e.g. ``presses/p1.toml: plc.tags[2].type: 'float33' is not allowed (allowed:
bool, ...)``; pydantic's raw text never reaches the user. tests/config_cases pins them.
"""

from __future__ import annotations

import types
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel

from collector.config.site import PASSWORD_ENV
from drivers.config_base import PATTERN_HINTS, Loc, kind_of, show

# Keys that must never be in a file, with what to do instead (a root model's
# ``secret_hints`` may say it better for the keys below one of its tables).
_SECRET_HINTS = {
    "password": "passwords are not allowed in config files; use password_file or the "
                f"environment variable {PASSWORD_ENV}",
}


# --------------------------------------------------------------------------- problems

@dataclass(frozen=True, slots=True)
class ConfigProblem:
    """One thing wrong in one file. ``file`` is relative to the config dir."""

    file: str
    key_path: str
    message: str

    def __str__(self) -> str:
        if self.key_path:
            return f"{self.file}: {self.key_path}: {self.message}"
        return f"{self.file}: {self.message}"


class ConfigError(Exception):
    """The config dir is invalid; ``problems`` lists everything that is wrong."""

    def __init__(self, problems: Iterable[ConfigProblem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))




def _union_tags(root: Any) -> dict[str, dict[str, type[BaseModel]]]:
    return getattr(root, "union_tags", {})


def _key_path(loc: Loc, union_tags: dict[str, dict[str, type[BaseModel]]]) -> str:
    out = ""
    prev: str | int | None = None
    for part, prev in zip(loc, (None, *loc), strict=False):
        if isinstance(part, str) and part in union_tags.get(prev, {}):  # type: ignore[arg-type]
            continue  # a tagged union's tag is not a key the user wrote
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out



def unwrap(annotation: Any) -> Any:
    """Optional[X] -> X, list[X] -> X, Annotated[X, ...] -> X (for walking a loc)."""
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
        elif origin in (Union, types.UnionType):
            args = [a for a in get_args(annotation) if a is not type(None)]
            if len(args) != 1:
                return annotation
            annotation = args[0]
        elif origin is list:
            annotation = get_args(annotation)[0]
        else:
            return annotation


def is_model(obj: Any) -> bool:
    return isinstance(obj, type) and issubclass(obj, BaseModel)


def _field(model: type[BaseModel], key: str | int) -> Any:
    for name, info in model.model_fields.items():
        if (info.alias or name) == key:
            return info
    return None


def _walk(root: type[BaseModel], loc: Loc) -> tuple[Any, Any]:
    """(model class or type at loc, FieldInfo of the last key) — None when unknown."""
    current: Any = root
    info = None
    last_key = ""
    for part in loc:
        if isinstance(part, int):
            continue  # a list index: the annotation was already unwrapped to the item
        branch = _union_tags(root).get(last_key, {}).get(part)
        if branch is not None and not is_model(current):
            current = branch  # a tagged union's tag picks the model
            continue
        last_key = part
        if not is_model(current):
            return None, None
        info = _field(current, part)
        if info is None:
            return None, None
        current = unwrap(info.annotation)
    return current, info


def _allowed_keys(model: Any) -> str:
    if not is_model(model):
        return ""
    return ", ".join(info.alias or name for name, info in model.model_fields.items())


def literal_args(annotation: Any) -> tuple[Any, ...]:
    annotation = unwrap(annotation)
    if get_origin(annotation) is Literal:
        return get_args(annotation)
    return ()


def bounds(info: Any) -> str:
    lo = hi = None
    lo_op, hi_op = ">=", "<="
    for meta in getattr(info, "metadata", ()):
        if getattr(meta, "ge", None) is not None:
            lo = meta.ge
        if getattr(meta, "gt", None) is not None:
            lo, lo_op = meta.gt, ">"
        if getattr(meta, "le", None) is not None:
            hi = meta.le
        if getattr(meta, "lt", None) is not None:
            hi, hi_op = meta.lt, "<"
    if lo is not None and hi is not None and lo_op == ">=" and hi_op == "<=":
        return f"{lo}..{hi}"
    parts = []
    if lo is not None:
        parts.append(f"{lo_op} {lo}")
    if hi is not None:
        parts.append(f"{hi_op} {hi}")
    return " and ".join(parts)


_EXPECTED = {
    "int_type": "an integer", "int_parsing": "an integer", "int_from_float": "an integer",
    "float_type": "a number", "float_parsing": "a number",
    "string_type": "a string", "bool_type": "true or false", "bool_parsing": "true or false",
    "list_type": "an array", "dict_type": "a table", "model_type": "a table",
    "model_attributes_type": "a table", "decimal_type": "a decimal number",
}


def translate(root: type[BaseModel], error: Any) -> list[tuple[str, str]]:
    """One pydantic error -> [(key path, message)] in our words."""
    kind = error["type"]
    loc: Loc = tuple(error["loc"])
    value = error.get("input")
    ctx = error.get("ctx") or {}
    unions = _union_tags(root)
    path = _key_path(loc, unions)

    if kind == "config_problems":
        return [(_key_path(loc + tuple(sub), unions), msg) for sub, msg in ctx["problems"]]
    if kind == "extra_forbidden":
        key = loc[-1]
        below = getattr(root, "secret_hints", {}).get(loc[0], {}) if len(loc) > 1 else {}
        if key in below:
            return [(path, below[key])]
        if key in _SECRET_HINTS:
            return [(path, _SECRET_HINTS[str(key)])]
        parent, _ = _walk(root, loc[:-1])
        return [(path, f"unknown key (allowed: {_allowed_keys(parent)})")]
    if kind == "missing":
        return [(path, "required key missing")]
    _, info = _walk(root, loc)
    if kind == "plc_table":
        return [(path, f"expected a table ([{path}]), got {show(value)} ({kind_of(value)})")]
    if kind == "literal_error":
        allowed = literal_args(info.annotation) if info is not None else ()
        if len(loc) == 3 and loc[2] == "protocol" and loc[1] in unions.get(str(loc[0]), {}):
            allowed = tuple(sorted({a for m in unions[str(loc[0])].values()
                                    for a in literal_args(m.model_fields["protocol"].annotation)}))
        listed = ", ".join(str(a) for a in allowed) or ctx.get("expected", "")
        return [(path, f"{show(value)} is not allowed (allowed: {listed})")]
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        return [(path, f"{show(value)} is out of range (allowed: {bounds(info)})")]
    if kind in _EXPECTED:
        what = _EXPECTED[kind]
        if kind == "list_type" and info is not None and is_model(unwrap(info.annotation)):
            what = f"an array of tables ([[{path}]])"
        if kind in ("model_type", "dict_type") and loc and isinstance(loc[-1], int):
            what = f"a table ([[{_key_path(loc[:-1], unions)}]])"
        elif kind in ("model_type", "dict_type"):
            what = f"a table ([{path}])"
        return [(path, f"expected {what}, got {show(value)} ({kind_of(value)})")]
    if kind == "string_too_short":
        return [(path, "must not be empty")]
    if kind == "too_short":
        n = ctx.get("min_length", 1)
        return [(path, f"needs at least {n} entr{'y' if n == 1 else 'ies'} ([[{path}]])")]
    if kind == "string_pattern_mismatch":
        pattern = ctx.get("pattern", "")
        hint = PATTERN_HINTS.get(pattern, f"must match {pattern}")
        return [(path, f"{show(value)} is not allowed ({hint})")]
    if kind in ("value_error", "assertion_error"):
        return [(path, str(ctx.get("error", "invalid value")))]
    return [(path, f"invalid value {show(value)} ({kind.replace('_', ' ')})")]
