"""Config files (TOML) -> validated pydantic models -> domain objects.

A config dir holds ``collector.toml``, ``presses/*.toml`` (one per press) and
``plans/*.toml`` (measurement plans). The contract is the "Config files" section of
docs/DESIGN.md; the commented examples in ``config/`` are the user documentation.

Validation rules:

- every model forbids unknown keys and is strict (no silent ``"502"`` -> ``502``);
- every problem of every file is collected before anything is raised, so that a user
  fixes them all in one go; :class:`ConfigError` carries the list;
- messages are our own, never pydantic's raw text, and read
  ``{file}: {key.path}: {message}``, e.g.
  ``presses/p1.toml: plc.tags[2].type: 'float33' is not allowed (allowed: bool, ...)``.

Public API: :func:`load_config`, :func:`check`, :func:`summary`, :func:`to_plan`,
:func:`to_workflow_settings`, :class:`LoadedConfig`, :class:`ConfigError`,
:class:`ConfigProblem` and the models.
"""

from __future__ import annotations

import dataclasses
import math
import re
import tomllib
import types
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, Union, get_args, get_origin

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from collector import domain

__all__ = [
    "PASSWORD_ENV",
    "BrokerConfig",
    "BufferConfig",
    "CharacteristicConfig",
    "CollectorConfig",
    "ConfigError",
    "ConfigProblem",
    "GaugeConfig",
    "LoadedConfig",
    "MetricsConfig",
    "PlanConfig",
    "PlcConfig",
    "PressConfig",
    "PressTelemetryConfig",
    "SiteConfig",
    "TagConfig",
    "TelemetryConfig",
    "WorkflowConfig",
    "check",
    "load_config",
    "revision_key",
    "summary",
    "to_plan",
    "to_workflow_settings",
]

PASSWORD_ENV = "PRESS_COLLECTOR_MQTT_PASSWORD"

COLLECTOR_FILE = "collector.toml"
PRESSES_DIR = "presses"
PLANS_DIR = "plans"

# --------------------------------------------------------------------------- vocabularies

TagArea = Literal["holding", "input", "coil", "discrete"]
TagType = Literal["bool", "int16", "uint16", "int32", "uint32", "float32", "float64", "string"]
WordOrder = Literal["ABCD", "CDAB", "BADC", "DCBA"]
Role = Literal[domain.ROLES]  # type: ignore[valid-type]
Unit = Literal["mm", "in", "um"]
CharClass = Literal["critical", "significant", "standard"]
Preset = Literal["mitutoyo", "generic"]
Baudrate = Literal[300, 600, 1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200]
Parity = Literal["N", "E", "O"]
Terminator = Literal["CR", "LF", "CRLF"]

BIT_AREAS = ("coil", "discrete")
# Registers per value; strings take ``length`` registers (2 characters each).
TYPE_WIDTH = {"bool": 1, "int16": 1, "uint16": 1, "int32": 2, "uint32": 2,
              "float32": 2, "float64": 4}
INTEGER_TYPES = ("int16", "uint16", "int32", "uint32")
# Which tag types make sense for a role (a wrong one is almost always a typo).
ROLE_TYPES: dict[str, tuple[str, ...]] = {
    "stroke_count": INTEGER_TYPES,
    "die_id": (*INTEGER_TYPES, "string"),
    "part_number": (*INTEGER_TYPES, "string"),
    "material_lot": (*INTEGER_TYPES, "string"),
    "heat_number": (*INTEGER_TYPES, "string"),
    "setup_mode": ("bool", "int16", "uint16"),
    "running": ("bool", "int16", "uint16"),
    "repair": ("bool", "int16", "uint16"),
}

# Serial line settings per gauge preset; a key given in the file wins.
PRESET_LINE: dict[str, dict[str, Any]] = {
    "mitutoyo": {"baudrate": 9600, "bytesize": 8, "parity": "N", "stopbits": 1,
                 "terminator": "CR"},
    "generic": {"baudrate": 9600, "bytesize": 8, "parity": "N", "stopbits": 1,
                "terminator": "CRLF"},
}

ID_PATTERN = r"^[a-z0-9_-]+$"
NAME_PATTERN = r"^[A-Za-z0-9_-]+$"
_PATTERN_HINTS = {
    ID_PATTERN: "use lowercase letters, digits, '_' and '-'; it is used in MQTT topics",
    NAME_PATTERN: "use letters, digits, '_' and '-'",
}

# Keys that must never be in a file, with what to do instead.
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


Loc = tuple[str | int, ...]
M = TypeVar("M", bound=BaseModel)


def _raise_problems(problems: list[tuple[Loc, str]]) -> None:
    """Report several problems (sub-path, message) from one model validator at once."""
    if problems:
        raise PydanticCustomError("config_problems", "{count} config problem(s)",
                                  {"count": len(problems), "problems": problems})


def _show(value: Any) -> str:
    """A value as the user wrote it (TOML-ish), shortened."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, dict):
        text = "{" + ", ".join(map(str, value)) + "}"
    else:
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _show_raw(text: str) -> str:
    """A string as written in a TOML literal string: quotes, but no escaped backslashes."""
    return f"'{text}'" if len(text) <= 60 else f"'{text[:55]}...'"


def _kind(value: Any) -> str:
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


def _key_path(loc: Iterable[str | int]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


# --------------------------------------------------------------------------- decimals

def _to_decimal(value: Any) -> Decimal:
    """Decimal from a TOML string or number; floats go through repr (25.05 stays 25.05)."""
    if isinstance(value, bool):
        raise ValueError(f"expected a decimal number, got {_show(value)} (a boolean)")
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
            raise ValueError(f"{_show(value)} is not a decimal number{hint}") from None
    else:
        raise ValueError(f"expected a decimal number as string or number, got "
                         f"{_show(value)} ({_kind(value)})")
    if not result.is_finite():
        raise ValueError(f"{_show(value)} is not a finite number")
    return result


Dec = Annotated[Decimal, BeforeValidator(_to_decimal)]


# --------------------------------------------------------------------------- models

class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


# collector.toml ------------------------------------------------------------

class SiteConfig(_Model):
    name: str = Field(min_length=1)
    topic_root: str
    host_id: str = ""  # "" = the machine's hostname (resolved by the daemon)

    @field_validator("topic_root")
    @classmethod
    def _topic_root(cls, value: str) -> str:
        if not value:
            raise ValueError("must not be empty (e.g. 'plant/press-shop')")
        for wildcard in ("+", "#"):
            if wildcard in value:
                raise ValueError(f"{_show(value)} contains the MQTT wildcard '{wildcard}' "
                                 "(not allowed in a topic root)")
        if value.startswith("/") or value.endswith("/"):
            raise ValueError(f"{_show(value)} starts or ends with '/' "
                             "(write e.g. 'plant/press-shop')")
        if "//" in value:
            raise ValueError(f"{_show(value)} has an empty topic level ('//')")
        return value

    @field_validator("host_id")
    @classmethod
    def _host_id(cls, value: str) -> str:
        if any(c in value for c in "+#/"):
            raise ValueError(f"{_show(value)} contains '+', '#' or '/' "
                             "(it is one MQTT topic level)")
        return value


class BrokerConfig(_Model):
    host: str = Field("127.0.0.1", min_length=1)
    port: int = Field(1883, ge=1, le=65535)
    client_id: str = ""  # "" = "press-collector-{host_id}" (resolved by the daemon)
    keepalive_s: int = Field(30, ge=1, le=65535)
    max_inflight: int = Field(100, ge=1, le=1000)
    # Longest wait between reconnect attempts (backoff doubles from 0.25 s up to this): the
    # first live message after a broker outage comes at most this long after it is back.
    reconnect_max_s: float = Field(1.0, ge=0.25, le=300)
    username: str = ""
    # The password comes from env PRESS_COLLECTOR_MQTT_PASSWORD or from this file
    # (a relative path is looked up in $CREDENTIALS_DIRECTORY by the daemon).
    password_file: str = ""


class BufferConfig(_Model):
    # A relative path resolves against the config dir; load_config stores it absolute.
    path: str = Field("/var/lib/press-collector/buffer.sqlite", min_length=1)
    commit_interval_ms: int = Field(50, ge=1, le=1000)
    retention_h: float = Field(168.0, gt=0)


class TelemetryConfig(_Model):
    publish: bool = True


class MetricsConfig(_Model):
    """Health (JSON) and Prometheus metrics on 127.0.0.1:port; 0 = off."""

    port: int = Field(0, ge=0, le=65535)


class CollectorConfig(_Model):
    site: SiteConfig
    broker: BrokerConfig = Field(default_factory=BrokerConfig)
    buffer: BufferConfig = Field(default_factory=BufferConfig)
    telemetry: TelemetryConfig = Field(default_factory=TelemetryConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)


# presses/<id>.toml -----------------------------------------------------------

class TagConfig(_Model):
    """One PLC value. Field names match ``drivers.modbus_codec.TagSpec``."""

    name: str = Field(min_length=1)
    area: TagArea = "holding"
    address: int = Field(ge=0, le=65535)
    type: TagType = "uint16"  # default: bool in coil/discrete, uint16 in registers
    order: WordOrder = "ABCD"
    length: int = Field(0, ge=0)  # registers, type = string only
    scale: float = 1.0
    offset: float = 0.0
    role: Role | None = None
    # Telemetry publish filter (the buffer keeps every reading whatever these say):
    on_change: bool | None = None  # None: the press's [telemetry] on_change
    deadband: float = Field(0.0, ge=0)  # publish when |v - last published| > deadband
    deadband_pct: float = Field(0.0, ge=0, le=1000)  # ... or > pct % of |last published|
    publish_every: int | None = Field(None, ge=1, le=100000)  # polls; None: the press's

    @model_validator(mode="before")
    @classmethod
    def _default_type(cls, data: Any) -> Any:
        if isinstance(data, dict) and "type" not in data and data.get("area") in BIT_AREAS:
            data = {**data, "type": "bool"}
        return data

    @property
    def width(self) -> int:
        """Registers (or bits) this tag occupies."""
        return self.length if self.type == "string" else TYPE_WIDTH[self.type]

    @model_validator(mode="after")
    def _check(self) -> TagConfig:
        problems: list[tuple[Loc, str]] = []
        if self.area in BIT_AREAS and self.type != "bool":
            problems.append((("type",), f"{_show(self.type)} is not possible in area "
                             f"{_show(self.area)} (allowed: bool; coils and discrete inputs "
                             "are bits)"))
        if self.type == "string" and self.length == 0:
            problems.append((("length",), "type 'string' needs length > 0 "
                             "(number of registers, 2 characters each)"))
        if self.type != "string" and self.length != 0:
            problems.append((("length",), f"length is only for type 'string' "
                             f"(type is {_show(self.type)})"))
        if self.width and self.address + self.width - 1 > 65535:
            problems.append((("address",), f"{self.address} + {self.width} registers runs past "
                             "the last address 65535"))
        for key in ("scale", "offset"):
            if not math.isfinite(getattr(self, key)):
                problems.append(((key,), f"{getattr(self, key)} is not allowed "
                                 "(allowed: a finite number)"))
        if self.scale == 0:
            problems.append((("scale",), "0 is not allowed (every value would be 0)"))
        if self.type in ("bool", "string") and (self.scale != 1.0 or self.offset != 0.0):
            key = "scale" if self.scale != 1.0 else "offset"
            problems.append(((key,), f"scale and offset apply to numbers only "
                             f"(type is {_show(self.type)})"))
        if self.type in ("bool", "string") and (self.deadband or self.deadband_pct):
            key = "deadband" if self.deadband else "deadband_pct"
            problems.append(((key,), f"a deadband applies to numbers only (type is "
                             f"{_show(self.type)}; use on_change = true)"))
        if not math.isfinite(self.deadband):
            problems.append((("deadband",), f"{self.deadband} is not allowed "
                             "(allowed: a finite number >= 0)"))
        if self.role is not None and self.type not in ROLE_TYPES[self.role]:
            problems.append((("role",), f"role {_show(self.role)} needs another type "
                             f"(got {_show(self.type)}; allowed: "
                             f"{', '.join(ROLE_TYPES[self.role])})"))
        _raise_problems(problems)
        return self


class PlcConfig(_Model):
    protocol: Literal["modbus_tcp"] = "modbus_tcp"
    host: str = Field(min_length=1)
    port: int = Field(502, ge=1, le=65535)
    unit: int = Field(1, ge=0, le=247)
    poll_interval_ms: int = Field(100, ge=10, le=60000)
    timeout_ms: int = Field(1000, ge=10, le=60000)
    max_gap: int = Field(8, ge=0, le=125)
    max_registers: int = Field(125, ge=1, le=125)
    max_bits: int = Field(2000, ge=1, le=2000)
    tags: list[TagConfig] = Field(min_length=1)

    @model_validator(mode="after")
    def _check(self) -> PlcConfig:
        problems: list[tuple[Loc, str]] = []
        names: dict[str, int] = {}
        roles: dict[str, int] = {}
        for i, tag in enumerate(self.tags):
            if tag.name in names:
                problems.append((("tags", i, "name"), f"{_show(tag.name)} is already used by "
                                 f"plc.tags[{names[tag.name]}] (tag names must be unique "
                                 "per press)"))
            else:
                names[tag.name] = i
            if tag.role is None:
                continue
            if tag.role in roles:
                first = self.tags[roles[tag.role]].name
                problems.append((("tags", i, "role"), f"role {_show(tag.role)} is already "
                                 f"given to tag {_show(first)} (each role at most once "
                                 "per press)"))
            else:
                roles[tag.role] = i
        _raise_problems(problems)
        return self

    def role_tags(self) -> dict[str, str]:
        """Tag name -> role for the tags that have one."""
        return {t.name: t.role for t in self.tags if t.role}


class GaugeConfig(_Model):
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
                    problems.append((("pattern",), f"{_show_raw(self.pattern)} is not a "
                                     f"valid regular expression ({exc})"))
                else:
                    if "value" not in compiled.groupindex:
                        problems.append((("pattern",), f"{_show_raw(self.pattern)} has no named "
                                         "group 'value' (write (?P<value>...) around the "
                                         "number)"))
        elif self.pattern:
            problems.append((("pattern",), f"pattern is only used with preset 'generic' "
                             f"(preset is {_show(self.preset)})"))
        _raise_problems(problems)
        return self


class WorkflowConfig(_Model):
    long_stop_min: float = Field(30.0, ge=0)
    stopped_after_s: float = Field(60.0, gt=0)
    hold_on_measurement_fail: bool = False


class PressTelemetryConfig(_Model):
    """Per-press telemetry publish defaults (a tag's own keys win)."""

    on_change: bool = False  # publish a tag only when its value changed (or left its deadband)
    publish_every: int = Field(1, ge=1, le=100000)  # publish every Nth poll (N x poll interval)


class PressConfig(_Model):
    id: str = Field(pattern=ID_PATTERN)
    name: str = ""
    plc: PlcConfig
    gauges: list[GaugeConfig] = Field(default_factory=list)
    workflow: WorkflowConfig = Field(default_factory=WorkflowConfig)
    telemetry: PressTelemetryConfig = Field(default_factory=PressTelemetryConfig)

    @model_validator(mode="after")
    def _check(self) -> PressConfig:
        problems: list[tuple[Loc, str]] = []
        seen: dict[str, int] = {}
        for i, gauge in enumerate(self.gauges):
            if gauge.id in seen:
                problems.append((("gauges", i, "id"), f"{_show(gauge.id)} is already used by "
                                 f"gauges[{seen[gauge.id]}] (gauge ids must be unique per "
                                 "press)"))
            else:
                seen[gauge.id] = i
        _raise_problems(problems)
        return self


# plans/*.toml ----------------------------------------------------------------

class CharacteristicConfig(_Model):
    """One characteristic. Each limit is given one way: ``lower_tol`` (relative to
    ``nominal``) or ``lsl`` (absolute); likewise ``upper_tol`` or ``usl``. At least one
    limit is required. ``nominal`` is required with tolerances and with a one-sided
    absolute limit; with both ``lsl`` and ``usl`` it defaults to their midpoint."""

    id: str = Field(min_length=1)
    name: str = ""
    nominal: Dec | None = None
    lower_tol: Dec | None = None
    upper_tol: Dec | None = None
    lsl: Dec | None = None
    usl: Dec | None = None
    unit: Unit = "mm"
    gauge: str | None = None
    channel: int | None = Field(None, ge=0)
    char_class: CharClass = Field("standard", alias="class")

    def limits(self) -> tuple[Decimal | None, Decimal | None]:
        """Absolute (lsl, usl); either may be None (one-sided)."""
        lsl, usl = self.lsl, self.usl
        if self.lower_tol is not None and self.nominal is not None:
            lsl = self.nominal + self.lower_tol
        if self.upper_tol is not None and self.nominal is not None:
            usl = self.nominal + self.upper_tol
        return lsl, usl

    def nominal_value(self) -> Decimal:
        if self.nominal is not None:
            return self.nominal
        lsl, usl = self.limits()
        assert lsl is not None and usl is not None  # guaranteed by validation
        return (lsl + usl) / 2

    @model_validator(mode="after")
    def _check(self) -> CharacteristicConfig:
        problems: list[tuple[Loc, str]] = []
        if self.lower_tol is not None and self.lsl is not None:
            problems.append((("lsl",), "give either lower_tol or lsl, not both"))
        if self.upper_tol is not None and self.usl is not None:
            problems.append((("usl",), "give either upper_tol or usl, not both"))
        has_tol = self.lower_tol is not None or self.upper_tol is not None
        has_lower = self.lower_tol is not None or self.lsl is not None
        has_upper = self.upper_tol is not None or self.usl is not None
        if not has_lower and not has_upper:
            problems.append(((), "no limits: give lower_tol/upper_tol (with nominal) "
                             "or lsl/usl"))
        elif self.nominal is None and has_tol:
            problems.append((("nominal",), "required key missing (lower_tol and upper_tol "
                             "are relative to nominal)"))
        elif self.nominal is None and not (self.lsl is not None and self.usl is not None):
            problems.append((("nominal",), "required key missing (a one-sided limit needs "
                             "a nominal, e.g. nominal = '0')"))
        if not problems:
            lsl, usl = self.limits()
            if lsl is not None and usl is not None and lsl >= usl:
                key = "usl" if self.usl is not None else "upper_tol"
                hint = "lsl must be < usl"
                if self.lower_tol is not None and self.lower_tol > 0:
                    hint += "; lower_tol is signed: write e.g. '-0.05' for 0.05 below nominal"
                problems.append(((key,), f"lower limit {lsl} is not below upper limit {usl} "
                                 f"({hint})"))
        _raise_problems(problems)
        return self


class PlanConfig(_Model):
    part_number: str = Field(min_length=1)
    revision: str = Field(min_length=1)
    description: str = ""
    characteristics: list[CharacteristicConfig] = Field(min_length=1)

    @model_validator(mode="after")
    def _check(self) -> PlanConfig:
        problems: list[tuple[Loc, str]] = []
        seen: dict[str, int] = {}
        for i, ch in enumerate(self.characteristics):
            if ch.id in seen:
                problems.append((("characteristics", i, "id"), f"{_show(ch.id)} is already "
                                 f"used by characteristics[{seen[ch.id]}] (ids must be "
                                 "unique per plan)"))
            else:
                seen[ch.id] = i
        _raise_problems(problems)
        return self


# --------------------------------------------------------------------------- converters

def to_plan(plan: PlanConfig) -> domain.Plan:
    """PlanConfig -> domain.Plan with absolute Decimal limits."""
    chars = []
    for ch in plan.characteristics:
        lsl, usl = ch.limits()
        chars.append(domain.Characteristic(
            id=ch.id, name=ch.name or ch.id, nominal=ch.nominal_value(), lsl=lsl, usl=usl,
            unit=ch.unit, gauge=ch.gauge, channel=ch.channel, char_class=ch.char_class))
    return domain.Plan(part_number=plan.part_number, revision=plan.revision,
                       characteristics=tuple(chars), description=plan.description)


def to_workflow_settings(workflow: WorkflowConfig) -> domain.WorkflowSettings:
    return domain.WorkflowSettings(long_stop_s=workflow.long_stop_min * 60.0,
                                   stopped_after_s=workflow.stopped_after_s,
                                   hold_on_measurement_fail=workflow.hold_on_measurement_fail)


def revision_key(revision: str) -> tuple[tuple[tuple[int, int, str], ...], str]:
    """Sort key for revisions: natural order, so 'A' < 'B' and '9' < '10'.

    Runs of digits compare as numbers, other text as strings (for single-letter
    revisions this is plain string order); digits sort before letters ('9' < 'A').
    """
    parts = tuple((0, int(p), "") if p.isdigit() else (1, 0, p)
                  for p in re.findall(r"\d+|\D+", revision))
    return parts, revision


# --------------------------------------------------------------------------- translation

def _unwrap(annotation: Any) -> Any:
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


def _is_model(obj: Any) -> bool:
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
    for part in loc:
        if isinstance(part, int):
            continue  # a list index: the annotation was already unwrapped to the item
        if not _is_model(current):
            return None, None
        info = _field(current, part)
        if info is None:
            return None, None
        current = _unwrap(info.annotation)
    return current, info


def _allowed_keys(model: Any) -> str:
    if not _is_model(model):
        return ""
    return ", ".join(info.alias or name for name, info in model.model_fields.items())


def _literal_args(annotation: Any) -> tuple[Any, ...]:
    annotation = _unwrap(annotation)
    if get_origin(annotation) is Literal:
        return get_args(annotation)
    return ()


def _bounds(info: Any) -> str:
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


def _translate(root: type[BaseModel], error: Any) -> list[tuple[str, str]]:
    """One pydantic error -> [(key path, message)] in our words."""
    kind = error["type"]
    loc: Loc = tuple(error["loc"])
    value = error.get("input")
    ctx = error.get("ctx") or {}
    path = _key_path(loc)

    if kind == "config_problems":
        return [(_key_path(loc + tuple(sub)), msg) for sub, msg in ctx["problems"]]
    if kind == "extra_forbidden":
        key = loc[-1]
        if key in _SECRET_HINTS:
            return [(path, _SECRET_HINTS[str(key)])]
        parent, _ = _walk(root, loc[:-1])
        return [(path, f"unknown key (allowed: {_allowed_keys(parent)})")]
    if kind == "missing":
        return [(path, "required key missing")]
    _, info = _walk(root, loc)
    if kind == "literal_error":
        allowed = _literal_args(info.annotation) if info is not None else ()
        listed = ", ".join(str(a) for a in allowed) or ctx.get("expected", "")
        return [(path, f"{_show(value)} is not allowed (allowed: {listed})")]
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        return [(path, f"{_show(value)} is out of range (allowed: {_bounds(info)})")]
    if kind in _EXPECTED:
        what = _EXPECTED[kind]
        if kind == "list_type" and info is not None and _is_model(_unwrap(info.annotation)):
            what = f"an array of tables ([[{path}]])"
        if kind in ("model_type", "dict_type") and loc and isinstance(loc[-1], int):
            what = f"a table ([[{_key_path(loc[:-1])}]])"
        elif kind in ("model_type", "dict_type"):
            what = f"a table ([{path}])"
        return [(path, f"expected {what}, got {_show(value)} ({_kind(value)})")]
    if kind == "string_too_short":
        return [(path, "must not be empty")]
    if kind == "too_short":
        n = ctx.get("min_length", 1)
        return [(path, f"needs at least {n} entr{'y' if n == 1 else 'ies'} ([[{path}]])")]
    if kind == "string_pattern_mismatch":
        pattern = ctx.get("pattern", "")
        hint = _PATTERN_HINTS.get(pattern, f"must match {pattern}")
        return [(path, f"{_show(value)} is not allowed ({hint})")]
    if kind in ("value_error", "assertion_error"):
        return [(path, str(ctx.get("error", "invalid value")))]
    return [(path, f"invalid value {_show(value)} ({kind.replace('_', ' ')})")]


# --------------------------------------------------------------------------- loading

@dataclass
class LoadedConfig:
    """A validated config dir.

    ``plans`` maps part number -> the plan with the highest revision (see
    :func:`revision_key`); ``plans_all`` keeps every (part_number, revision).
    """

    config_dir: Path
    collector: CollectorConfig
    presses: dict[str, PressConfig]
    plans: dict[str, domain.Plan]
    plans_all: dict[tuple[str, str], domain.Plan] = field(default_factory=dict)
    press_files: dict[str, str] = field(default_factory=dict)   # press id -> file
    plan_files: dict[tuple[str, str], str] = field(default_factory=dict)

    def model_copy(self, *, update: dict[str, Any] | None = None) -> LoadedConfig:
        """A copy with some fields replaced (same spelling as the pydantic models)."""
        return dataclasses.replace(self, **(update or {}))


def _read_toml(config_dir: Path, path: Path,
               problems: list[ConfigProblem]) -> dict[str, Any] | None:
    rel = path.relative_to(config_dir).as_posix()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        problems.append(ConfigProblem(rel, "", "file not found"))
        return None
    except UnicodeDecodeError as exc:
        problems.append(ConfigProblem(rel, "", f"not UTF-8 text (byte {exc.start})"))
        return None
    except OSError as exc:
        problems.append(ConfigProblem(rel, "", f"cannot read: {exc.strerror or exc}"))
        return None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        msg = str(exc)
        match = re.fullmatch(r"(.*) \(at line (\d+), column (\d+)\)", msg, re.DOTALL)
        if match:
            where = f"line {match[2]}, column {match[3]}"
            msg = match[1]
        else:
            where = "end of file"
            msg = msg.removesuffix(" (at end of document)")
        problems.append(ConfigProblem(rel, "", f"TOML syntax error at {where}: {msg}"))
        return None


def _validate(model: type[M], data: dict[str, Any], rel: str,
              problems: list[ConfigProblem]) -> M | None:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        for error in exc.errors():
            for key_path, message in _translate(model, error):
                problems.append(ConfigProblem(rel, key_path, message))
        return None


def _load_file(config_dir: Path, path: Path, model: type[M],
               problems: list[ConfigProblem]) -> M | None:
    data = _read_toml(config_dir, path, problems)
    if data is None:
        return None
    return _validate(model, data, path.relative_to(config_dir).as_posix(), problems)


def _load(config_dir: Path) -> tuple[LoadedConfig | None, list[ConfigProblem]]:
    problems: list[ConfigProblem] = []
    if not config_dir.is_dir():
        return None, [ConfigProblem(str(config_dir), "", "config directory not found")]

    collector_path = config_dir / COLLECTOR_FILE
    collector: CollectorConfig | None = None
    if not collector_path.is_file():
        problems.append(ConfigProblem(COLLECTOR_FILE, "", "file not found (a config dir holds "
                                      "collector.toml, presses/*.toml and plans/*.toml)"))
    else:
        collector = _load_file(config_dir, collector_path, CollectorConfig, problems)

    press_paths = sorted((config_dir / PRESSES_DIR).glob("*.toml"))
    if not press_paths:
        problems.append(ConfigProblem(f"{PRESSES_DIR}/", "", "no press files found "
                                      "(add presses/<id>.toml, one per press)"))
    presses: dict[str, PressConfig] = {}
    press_files: dict[str, str] = {}
    gauge_ids: set[str] = set()
    valid_presses = 0
    for path in press_paths:
        press = _load_file(config_dir, path, PressConfig, problems)
        if press is None:
            continue
        valid_presses += 1
        gauge_ids.update(g.id for g in press.gauges)
        rel = path.relative_to(config_dir).as_posix()
        if press.id in presses:
            problems.append(ConfigProblem(rel, "id", f"{_show(press.id)} is already used by "
                                          f"{press_files[press.id]} (press ids must be "
                                          "unique)"))
            continue
        presses[press.id] = press
        press_files[press.id] = rel
    # A plan may name a gauge only if some press has it. Checked only when every press file
    # is valid, so that one mistake in a press file does not show up again in every plan.
    check_gauges = bool(press_paths) and valid_presses == len(press_paths)
    known_gauges = ", ".join(sorted(gauge_ids)) or "no press has gauges"

    plans_all: dict[tuple[str, str], domain.Plan] = {}
    plan_files: dict[tuple[str, str], str] = {}
    for path in sorted((config_dir / PLANS_DIR).glob("*.toml")):
        plan = _load_file(config_dir, path, PlanConfig, problems)
        if plan is None:
            continue
        rel = path.relative_to(config_dir).as_posix()
        ok = True
        if check_gauges:
            for i, ch in enumerate(plan.characteristics):
                if ch.gauge is not None and ch.gauge not in gauge_ids:
                    problems.append(ConfigProblem(
                        rel, f"characteristics[{i}].gauge", f"{_show(ch.gauge)} is not a "
                        f"gauge of any press (gauges: {known_gauges})"))
                    ok = False
        key = (plan.part_number, plan.revision)
        if key in plans_all:
            problems.append(ConfigProblem(rel, "revision", f"part_number "
                                          f"{_show(plan.part_number)} revision "
                                          f"{_show(plan.revision)} is already defined in "
                                          f"{plan_files[key]} (plans must be unique by "
                                          "part_number and revision)"))
            continue
        if ok:
            plans_all[key] = to_plan(plan)
            plan_files[key] = rel

    if problems or collector is None:
        return None, problems

    buffer_path = Path(collector.buffer.path)
    if not buffer_path.is_absolute():
        collector.buffer.path = str((config_dir / buffer_path).resolve())

    plans: dict[str, domain.Plan] = {}
    for (part_number, _revision), plan in sorted(
            plans_all.items(), key=lambda item: (item[0][0], revision_key(item[0][1]))):
        plans[part_number] = plan  # ascending revision order: the highest one wins
    return LoadedConfig(config_dir=config_dir, collector=collector, presses=presses,
                        plans=plans, plans_all=plans_all, press_files=press_files,
                        plan_files=plan_files), []


def load_config(config_dir: Path | str) -> LoadedConfig:
    """Load and validate a config dir; raise :class:`ConfigError` listing every problem."""
    loaded, problems = _load(Path(config_dir))
    if problems or loaded is None:
        raise ConfigError(problems)
    return loaded


def check(config_dir: Path | str) -> list[str]:
    """Every problem of a config dir as ``file: key.path: message`` lines; [] = valid."""
    _, problems = _load(Path(config_dir))
    return [str(p) for p in problems]


def summary(config: LoadedConfig | Path | str) -> str:
    """A short human report of a (valid) config for ``press-collector check``."""
    cfg = config if isinstance(config, LoadedConfig) else load_config(config)
    col = cfg.collector
    n_tags = sum(len(p.plc.tags) for p in cfg.presses.values())
    n_gauges = sum(len(p.gauges) for p in cfg.presses.values())
    lines = [
        f"config {cfg.config_dir}: ok",
        f"site {col.site.name!r}, topic root {col.site.topic_root!r}, "
        f"broker {col.broker.host}:{col.broker.port}, buffer {col.buffer.path}",
        f"{len(cfg.presses)} presses, {n_tags} tags, {n_gauges} gauges, "
        f"{len(cfg.plans_all)} plans ({len(cfg.plans)} part numbers)",
    ]
    for press in cfg.presses.values():
        plc = press.plc
        roles = ", ".join(t.role for t in plc.tags if t.role) or "none"
        gauges = ", ".join(f"{g.id} ({g.preset} {g.port})" for g in press.gauges) or "none"
        title = f" {press.name}" if press.name else ""
        lines.append(f"  press {press.id}{title}: {plc.protocol} {plc.host}:{plc.port} "
                     f"unit {plc.unit} every {plc.poll_interval_ms} ms, {len(plc.tags)} tags "
                     f"(roles: {roles}); gauges: {gauges}")
    for part_number, plan in sorted(cfg.plans.items()):
        lines.append(f"  plan {part_number} rev {plan.revision}: "
                     f"{len(plan.characteristics)} characteristics")
    return "\n".join(lines)
