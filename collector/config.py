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
from datetime import date
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, Union, get_args, get_origin

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from collector import domain, mqtt_names, roles

__all__ = [
    "PASSWORD_ENV",
    "BrokerConfig",
    "BrokerTlsConfig",
    "BufferConfig",
    "CharacteristicConfig",
    "CollectorConfig",
    "ConfigError",
    "ConfigProblem",
    "GaugeConfig",
    "LoadedConfig",
    "MetricsConfig",
    "OpcuaPlcConfig",
    "OpcuaTagConfig",
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
    "workflow_settings_for",
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
Preset = Literal["mitutoyo", "generic", "sylvac", "millimar", "mahr_optors", "chicago", "metro"]
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
    # true/false roles: a bool, or a number / text read through a map (docs/roles.md)
    "setup_mode": ("bool", *INTEGER_TYPES, "string"),
    "running": ("bool", *INTEGER_TYPES, "string"),
    "repair": ("bool", *INTEGER_TYPES, "string"),
}

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
# PLC protocols; the RTU ones put several presses (unit ids) on one shared bus.
RTU_PROTOCOLS = ("modbus_rtu", "modbus_rtu_tcp")
# Keys of [plc] that only the serial RTU protocol uses.
RTU_SERIAL_KEYS = ("baudrate", "bytesize", "parity", "stopbits")
# A gauge poll trigger that is not a tag name: every step of the stroke counter.
STROKE_TRIGGER = "stroke"

ID_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"  # collector/mqtt_names.py says why
NAME_PATTERN = r"^[A-Za-z0-9_-]+$"
_PATTERN_HINTS = {
    ID_PATTERN: "use 1 to 64 lowercase letters, digits, '_' and '-', starting with a letter "
                "or a digit; it is used in MQTT topics",
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
    prev: str | int | None = None
    for part, prev in zip(loc, (None, *loc), strict=False):
        if isinstance(part, str) and part in _UNION_TAGS.get(prev, {}):  # type: ignore[arg-type]
            continue  # a tagged union's tag is not a key the user wrote
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


def _to_date(value: Any) -> date | None:
    """A TOML date (2027-03-31) or the string 'YYYY-MM-DD'."""
    if value is None or (isinstance(value, date) and not hasattr(value, "hour")):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value.strip())
        except ValueError:
            raise ValueError(f"{_show(value)} is not a date (write 'YYYY-MM-DD', "
                             "e.g. '2027-03-31')") from None
    raise ValueError(f"expected a date 'YYYY-MM-DD', got {_show(value)} ({_kind(value)})")


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
        problem = mqtt_names.topic_root_problem(value, _show(value))
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("host_id")
    @classmethod
    def _host_id(cls, value: str) -> str:
        problem = value and mqtt_names.topic_level_problem(value, _show(value))
        if problem:
            raise ValueError(problem)
        return value


class BrokerTlsConfig(_Model):
    """``[broker.tls]``: present = TLS on, with the server certificate verified against
    ``ca_file`` (or the system CAs) and its host name checked, unless ``insecure``.
    ``cert_file`` + ``key_file``: a client certificate (mTLS). A relative path is looked
    up in ``$CREDENTIALS_DIRECTORY`` (systemd ``LoadCredential=``) first, then in the
    config dir (resolved by collector.security)."""

    ca_file: str = ""  # "" = the system's CA store
    cert_file: str = ""
    key_file: str = ""
    insecure: bool = False  # true = no certificate / host name check (tests only!)

    @model_validator(mode="after")
    def _pair(self) -> BrokerTlsConfig:
        if bool(self.cert_file) != bool(self.key_file):
            missing = "key_file" if self.cert_file else "cert_file"
            _raise_problems([((missing,), "required with "
                              f"{'cert_file' if self.cert_file else 'key_file'} (a client "
                              "certificate needs its private key)")])
        return self


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
    tls: BrokerTlsConfig | None = None  # [broker.tls]; absent = plain MQTT
    # Plain MQTT (no [broker.tls]) to a broker that is not on this machine: refused unless
    # this says so explicitly (then a warning at every start; docs/security.md).
    allow_plaintext: bool = False
    # Replay after an outage: at most this many telemetry backlog messages per second
    # (0 = no limit). Events, live telemetry, retained state and status are never throttled.
    replay_rate: int = Field(2000, ge=0, le=1_000_000)
    # MQTT version of the command connection: "5" (retain-as-published, clean start, max
    # packet size; docs/security.md) or "3.1.1" for brokers without MQTT 5 (RabbitMQ 3.x,
    # NATS 2.9; what is lost then: docs/brokers.md). The outbox publisher speaks 3.1.1
    # with every broker.
    protocol: Literal["5", "3.1.1"] = "5"

    @field_validator("protocol", mode="before")
    @classmethod
    def _protocol_number(cls, value: Any) -> Any:
        return "5" if value == 5 and not isinstance(value, bool) else value  # protocol = 5

    @field_validator("client_id")
    @classmethod
    def _client_id(cls, value: str) -> str:
        problem = mqtt_names.client_id_problem(value, _show(value))
        if problem:
            raise ValueError(problem)
        return value

    @model_validator(mode="after")
    def _tls_required(self) -> BrokerConfig:
        """TLS for every broker off this machine, unless ``allow_plaintext`` says otherwise:
        the password and every quality record would otherwise cross the plant network in
        clear, and anyone on the path could forge commands and records."""
        if self.tls is None and not self.allow_plaintext and not is_loopback(self.host):
            _raise_problems([(("tls",), f"required: broker host {_show(self.host)} is not "
                              "this machine (add [broker.tls] with the broker's CA, port 8883; "
                              "or set broker.allow_plaintext = true to send the password and "
                              "all data in clear)")])
        return self


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 or 'localhost': traffic that never leaves the machine. Names are
    not resolved (a DNS answer could change under us); only 'localhost' is trusted."""
    import ipaddress

    if host.lower() in ("localhost", "localhost.") or host.lower().endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)  # ::ffff:127.0.0.1
    return address.is_loopback or bool(mapped and mapped.is_loopback)


class BufferConfig(_Model):
    # A relative path resolves against the config dir; load_config stores it absolute.
    path: str = Field("/var/lib/press-collector/buffer.sqlite", min_length=1)
    # 2 ms: the latency the bench figures are measured with (+~0.5 % of a core at line
    # load vs 50 ms); quality records are fsynced in their batch either way
    commit_interval_ms: int = Field(2, ge=1, le=1000)
    retention_h: float = Field(168.0, gt=0)
    # Size bound of the buffer file (MiB). Over it: delivered history goes first, then the
    # oldest undelivered telemetry; undelivered quality events are never dropped (an
    # `alarm` event and the log say so, collection goes on).
    max_mb: int = Field(1024, ge=1, le=1_000_000)
    # Memory bound of the rows queued while the buffer cannot be written (disk full): over
    # it the oldest queued telemetry is dropped (counted, alarmed); quality events never.
    memory_max_mb: float = Field(64.0, gt=0, le=65536)
    # SQLite page-cache budget of the buffer (MiB), shared by its connections: the writer
    # half, the publisher's reader a quarter, the checkpointer and the prune / size-bound
    # passes an eighth each. It bounds the daemon's memory (SQLite's caches were its only
    # growth: docs/telemetry-and-health.md, "Memory"); the OS page cache serves the rest.
    cache_mb: int = Field(16, ge=2, le=4096)


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
    # How a true/false role reads a number or text (docs/roles.md)
    true_values: list[int | str] | None = None
    true_bit: int | None = Field(None, ge=0, le=63)
    enum: list[str] | None = None

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
        problems += roles.role_map_problems(self.role, self.type, self.true_values,
                                            self.true_bit, self.enum)
        _raise_problems(problems)
        return self


class PlcConfig(_Model):
    protocol: Literal["modbus_tcp", "modbus_rtu", "modbus_rtu_tcp"] = "modbus_tcp"
    host: str = ""  # required for modbus_tcp and modbus_rtu_tcp
    # modbus_tcp / modbus_rtu_tcp: TCP port (default 502); modbus_rtu: the serial device
    # path. Checked by _check_link (one key, two meanings, our own messages).
    port: Any = None
    unit: int = Field(1, ge=0, le=247)
    poll_interval_ms: int = Field(100, ge=10, le=60000)
    timeout_ms: int = Field(1000, ge=10, le=60000)
    max_gap: int = Field(8, ge=0, le=125)
    max_registers: int = Field(125, ge=1, le=125)
    max_bits: int = Field(2000, ge=1, le=2000)
    # RTU only: serial line (modbus_rtu), repeats of an unanswered request, gap between
    # frames (0 = 3.5 character times as the Modbus serial spec asks).
    baudrate: Baudrate = 19200
    bytesize: Literal[7, 8] = 8
    parity: Parity = "E"
    stopbits: Literal[1, 2] = 1
    retries: int = Field(1, ge=0, le=5)
    inter_frame_ms: float = Field(0.0, ge=0, le=1000)
    tags: list[TagConfig] = Field(min_length=1)

    @model_validator(mode="after")
    def _check_link(self) -> PlcConfig:
        """host/port per protocol; serial keys only for modbus_rtu; no broadcast unit."""
        problems: list[tuple[Loc, str]] = []
        given = self.model_fields_set
        if self.protocol == "modbus_rtu":
            if self.port is None:
                problems.append((("port",), "required key missing (the serial device, e.g. "
                                 "'/dev/ttyUSB0' or '/dev/serial/by-id/...')"))
            elif not isinstance(self.port, str) or not self.port:
                problems.append((("port",), f"expected the serial device path as a string, "
                                 f"got {_show(self.port)} ({_kind(self.port)})"))
            if "host" in given:
                problems.append((("host",), "host is not used with protocol 'modbus_rtu' "
                                 "(the bus is the serial port)"))
        else:
            if not self.host:
                problems.append((("host",), "required key missing" if "host" not in given
                                 else "must not be empty"))
            if self.port is None:
                self.port = 502
            elif isinstance(self.port, bool) or not isinstance(self.port, int):
                problems.append((("port",), f"expected an integer, got {_show(self.port)} "
                                 f"({_kind(self.port)})"))
            elif not 1 <= self.port <= 65535:
                problems.append((("port",), f"{self.port} is out of range (allowed: 1..65535)"))
            for key in RTU_SERIAL_KEYS:
                if key in given:
                    problems.append(((key,), f"{key} is only for protocol 'modbus_rtu' "
                                     f"(protocol is {_show(self.protocol)})"))
        if self.protocol == "modbus_tcp":
            for key in ("retries", "inter_frame_ms"):
                if key in given:
                    problems.append(((key,), f"{key} is only for the RTU protocols "
                                     f"({', '.join(RTU_PROTOCOLS)})"))
        elif self.unit == 0:
            problems.append((("unit",), "0 is the broadcast address, no unit answers it "
                             "(allowed on an RTU bus: 1..247)"))
        _raise_problems(problems)
        return self

    def bus_key(self) -> str | None:
        """The shared bus this PLC is on (RTU protocols), else None."""
        if self.protocol == "modbus_rtu":
            return str(self.port)
        if self.protocol == "modbus_rtu_tcp":
            return f"{self.host}:{self.port}"
        return None

    @model_validator(mode="after")
    def _check(self) -> PlcConfig:
        _raise_problems(_tag_problems(self.tags))
        return self

    def role_tags(self) -> dict[str, str]:
        """Tag name -> role for the tags that have one."""
        return {t.name: t.role for t in self.tags if t.role}


# OPC UA variant of [plc] (protocol = "opcua"); see docs/opcua.md -----------------

OPCUA_PASSWORD_ENV = "PRESS_COLLECTOR_OPCUA_PASSWORD"  # + "_<PRESS_ID>" for one press
DeadbandType = Literal["none", "absolute", "percent"]


class OpcuaTagConfig(_Model):
    """One OPC UA value: a node (namespace URI + identifier), subscribed or polled."""

    name: str = Field(min_length=1)
    node: str = Field(min_length=1)
    role: Role | None = None
    mode: Literal["subscribe", "poll"] = "subscribe"
    sampling_interval_ms: int | None = Field(None, ge=0, le=3_600_000)  # None: publishing
    queue_size: int = Field(1, ge=1, le=10_000)
    deadband_type: DeadbandType = "none"
    deadband_value: float = Field(0.0, ge=0)
    # How a true/false role reads a number or text (docs/roles.md)
    true_values: list[int | str] | None = None
    true_bit: int | None = Field(None, ge=0, le=63)
    enum: list[str] | None = None

    @model_validator(mode="after")
    def _check(self) -> OpcuaTagConfig:
        from drivers.opcua_nodes import parse_node

        problems: list[tuple[Loc, str]] = []
        try:
            parse_node(self.node)
        except ValueError as exc:
            problems.append((("node",), str(exc)))
        if self.mode == "poll":
            for key in ("sampling_interval_ms", "queue_size", "deadband_type", "deadband_value"):
                if key in self.model_fields_set:
                    problems.append(((key,), f"{key} is only for mode 'subscribe' (mode is "
                                     "'poll'; a polled tag is read every poll_interval_ms)"))
        if self.deadband_type == "none" and self.deadband_value != 0:
            problems.append((("deadband_value",), "needs deadband_type 'absolute' or "
                             "'percent' (deadband_type is 'none')"))
        if self.deadband_type == "percent" and self.deadband_value > 100:
            problems.append((("deadband_value",), f"{self.deadband_value} is out of range "
                             "(allowed: 0..100 for deadband_type 'percent')"))
        if not math.isfinite(self.deadband_value):
            problems.append((("deadband_value",), "must be a finite number"))
        problems += roles.role_map_problems(self.role, None, self.true_values, self.true_bit,
                                            self.enum)
        _raise_problems(problems)
        return self


class OpcuaPlcConfig(_Model):
    """A press whose PLC speaks OPC UA. Secrets: password_file or the environment."""

    protocol: Literal["opcua"]
    endpoint: str = Field(min_length=1)
    security_policy: Literal["None", "Basic256Sha256"] = "None"
    security_mode: Literal["None", "Sign", "SignAndEncrypt"] = "None"
    # Relative paths resolve against the config dir; load_config stores them absolute.
    certificate: str = ""
    private_key: str = ""
    trust_dir: str = ""
    username: str = ""
    password_file: str = ""
    # A user name with security_policy "None" sends the password in clear: refused unless
    # this says so explicitly (then a warning at every start; docs/security.md).
    allow_plaintext_password: bool = False
    publishing_interval_ms: int = Field(100, ge=10, le=60000)
    poll_interval_ms: int = Field(500, ge=10, le=60000)
    heartbeat_ms: int = Field(1000, ge=100, le=60000)
    timeout_ms: int = Field(4000, ge=100, le=60000)
    watchdog_ms: int = Field(1000, ge=100, le=60000)
    tags: list[OpcuaTagConfig] = Field(min_length=1)

    def bus_key(self) -> str | None:
        """OPC UA sessions are never shared between presses (see PlcConfig.bus_key)."""
        return None
    @model_validator(mode="after")
    def _check(self) -> OpcuaPlcConfig:
        problems: list[tuple[Loc, str]] = []
        if not self.endpoint.startswith("opc.tcp://"):
            problems.append((("endpoint",), f"{_show(self.endpoint)} is not an OPC UA endpoint "
                             "(write e.g. 'opc.tcp://192.168.0.10:4840')"))
        secure = self.security_policy != "None"
        if secure and self.security_mode == "None":
            problems.append((("security_mode",), f"security_policy "
                             f"{_show(self.security_policy)} needs security_mode 'Sign' or "
                             "'SignAndEncrypt'"))
        if not secure and self.security_mode != "None":
            problems.append((("security_policy",), f"security_mode {_show(self.security_mode)} "
                             "needs security_policy 'Basic256Sha256'"))
        for key in ("certificate", "private_key", "trust_dir"):
            if secure and not getattr(self, key):
                hint = ("a directory holding the server's certificate" if key == "trust_dir"
                        else "create one with: press-collector opcua-cert --out DIR")
                problems.append(((key,), f"required with security_policy "
                                 f"{_show(self.security_policy)} ({hint})"))
            if not secure and getattr(self, key):
                problems.append(((key,), "only used with security_policy 'Basic256Sha256' "
                                 "(security_policy is 'None')"))
        if self.password_file and not self.username:
            problems.append((("password_file",), "needs username"))
        if self.username and not secure and not self.allow_plaintext_password:
            problems.append((("username",), "with security_policy 'None' the password would "
                             "cross the network in clear (use security_policy "
                             "'Basic256Sha256' with security_mode 'SignAndEncrypt'; or set "
                             "plc.allow_plaintext_password = true to accept that)"))
        if self.allow_plaintext_password and secure:
            problems.append((("allow_plaintext_password",), "only used with security_policy "
                             f"'None' (security_policy is {_show(self.security_policy)})"))
        problems.extend(_tag_problems(self.tags))
        _raise_problems(problems)
        return self

    def role_tags(self) -> dict[str, str]:
        """Tag name -> role for the tags that have one."""
        return {t.name: t.role for t in self.tags if t.role}


def _tag_problems(tags: list[Any]) -> list[tuple[Loc, str]]:
    """Unique tag names and roles per press (same rules and words as PlcConfig)."""
    problems: list[tuple[Loc, str]] = []
    names: dict[str, int] = {}
    roles: dict[str, int] = {}
    for i, tag in enumerate(tags):
        if tag.name in names:
            problems.append((("tags", i, "name"), f"{_show(tag.name)} is already used by "
                             f"plc.tags[{names[tag.name]}] (tag names must be unique per "
                             "press)"))
        else:
            names[tag.name] = i
        if tag.role is None:
            continue
        if tag.role in roles:
            first = tags[roles[tag.role]].name
            problems.append((("tags", i, "role"), f"role {_show(tag.role)} is already given to "
                             f"tag {_show(first)} (each role at most once per press)"))
        else:
            roles[tag.role] = i
    return problems


def _plc_kind(data: Any) -> str | None:
    """Which [plc] model validates this table: 'opcua', else the Modbus one."""
    if isinstance(data, dict):
        return "opcua" if data.get("protocol") == "opcua" else "modbus"
    if isinstance(data, OpcuaPlcConfig):
        return "opcua"
    return "modbus" if isinstance(data, PlcConfig) else None


AnyPlcConfig = Annotated[
    Annotated[PlcConfig, Tag("modbus")] | Annotated[OpcuaPlcConfig, Tag("opcua")],
    Discriminator(_plc_kind, custom_error_type="plc_table", custom_error_message="not a table"),
]
# Tagged unions: the tag pydantic puts into an error's loc -> the model it names. The tag is
# not shown in key paths ("plc.tags[0].node", not "plc.opcua.tags[0].node").
_UNION_TAGS: dict[str, dict[str, type[BaseModel]]] = {
    "plc": {"modbus": PlcConfig, "opcua": OpcuaPlcConfig},
}


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
    calibration_due: Annotated[date | None, BeforeValidator(_to_date)] = None

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
        if self.channels and self.preset != "metro":
            problems.append((("channels",), f"channels are polled by digit on preset 'metro' "
                             f"only (preset is {_show(self.preset)})"))
        if (self.poll_interval_ms or self.poll_on) and not self.poll_command() \
                and self.preset != "metro":
            problems.append((("poll",), f"preset {_show(self.preset)} has no poll command: "
                             "give one (e.g. poll = \"?\\r\") or remove "
                             "poll_interval_ms / poll_on"))
        _raise_problems(problems)
        return self

    def poll_command(self) -> bytes:
        """The configured poll command, else the preset's default (b"" = push only)."""
        from drivers.gauge_parsers import PRESETS as GAUGE_PRESETS

        if self.poll:
            return self.poll.encode("latin-1")
        return GAUGE_PRESETS[self.preset].poll


class CommandKeyConfig(_Model):
    """``[[workflow.commands.keys]]``: an Ed25519 public key allowed to sign commands of
    one role (docs/security.md, "Signed commands"); ``press-collector keygen`` prints it."""

    name: str = Field(min_length=1, max_length=64)  # who holds the key, for the audit
    role: Literal["production", "quality"]
    public_key: str  # base64 of the 32 raw bytes

    @field_validator("public_key")
    @classmethod
    def _public_key(cls, value: str) -> str:
        from collector.signing import SigningError, load_public_key

        try:
            load_public_key(value)
        except SigningError as exc:
            raise ValueError(str(exc)) from None
        return value


class CommandsConfig(_Model):
    """Who may command this press, and how a command must look (docs/security.md).

    Operator ids allowed per command class; "*" = any non-empty operator id; an empty
    list (the default) refuses every command of that class (fail closed).
    production: set_material, start_setup, start_first_article, start_last_piece,
    repeat_measurement, request_capability, missed_check_reason; quality: release, hold.
    """

    production: list[str] = Field(default_factory=list)
    quality: list[str] = Field(default_factory=list)
    require_signature: bool = False  # true: unsigned / badly signed commands are refused
    max_age_s: float = Field(300.0, gt=0, le=86400)  # older issued_at: refused (expired)
    max_future_s: float = Field(30.0, ge=0, le=3600)  # issued_at ahead of our clock
    rate_per_min: float = Field(60.0, gt=0, le=6000)  # token bucket refill per press
    burst: int = Field(20, ge=1, le=1000)  # token bucket size
    keys: list[CommandKeyConfig] = Field(default_factory=list)

    @model_validator(mode="after")
    def _consistent(self) -> CommandsConfig:
        from collector.text_safety import problem

        problems: list[tuple[Loc, str]] = []
        for role in ("production", "quality"):
            for i, operator in enumerate(getattr(self, role)):
                bad = problem(operator)
                if not operator.strip() or len(operator) > 200:
                    problems.append(((role, i), f"{_show(operator)} is not an operator id "
                                     "(1..200 characters)"))
                elif bad is not None:
                    problems.append(((role, i), f"the operator id {bad}"))
        if self.require_signature and not self.keys:
            problems.append((("require_signature",), "true needs at least one "
                             "[[workflow.commands.keys]] entry (press-collector keygen "
                             "prints one)"))
        seen: dict[str, int] = {}
        for i, key in enumerate(self.keys):
            if key.public_key in seen:
                problems.append((("keys", i, "public_key"),
                                 f"the same key as keys[{seen[key.public_key]}]"))
            seen.setdefault(key.public_key, i)
        _raise_problems(problems)
        return self


class WorkflowConfig(_Model):
    long_stop_min: float = Field(30.0, ge=0)
    stopped_after_s: float = Field(60.0, gt=0)
    hold_on_measurement_fail: bool = False
    commands: CommandsConfig = Field(default_factory=CommandsConfig)
    # A reading from a gauge past its calibration due date is flagged in any case; with
    # this it is also refused for first article (unassigned_reading, calibration_overdue).
    refuse_overdue_for_first_article: bool = False
    # Under 100 % inspection, strokes not yet matched by a measured piece (every
    # characteristic) beyond this many raise an alarm (cause unmeasured_pieces).
    inspection_100_max_unmeasured: int = Field(10, ge=0)
    # Stroke counter plausibility (docs/roles.md): the press's maximum stroke rate, and
    # where the counter wraps to 0 (default: 2**16 / 2**32 from the tag type).
    max_strokes_per_min: float = Field(2000.0, gt=0, le=100_000)
    stroke_counter_wrap: int | None = Field(None, ge=2, le=2**64)


class PressTelemetryConfig(_Model):
    """Per-press telemetry publish defaults (a tag's own keys win)."""

    on_change: bool = False  # publish a tag only when its value changed (or left its deadband)
    publish_every: int = Field(1, ge=1, le=100000)  # publish every Nth poll (N x poll interval)


class PressConfig(_Model):
    id: str = Field(pattern=ID_PATTERN)
    name: str = ""
    plc: AnyPlcConfig
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

    @model_validator(mode="after")
    def _check_counter_wrap(self) -> PressConfig:
        """A stroke counter cannot wrap beyond what its Modbus type holds."""
        wrap = self.workflow.stroke_counter_wrap
        tag = next((t for t in self.plc.tags if t.role == "stroke_count"), None)
        bits = roles.TYPE_BITS.get(getattr(tag, "type", "") or "")
        if wrap is not None and tag is not None and bits is not None and wrap > 2**bits:
            _raise_problems([(("workflow", "stroke_counter_wrap"), f"{wrap} is more than the "
                              f"stroke_count tag {_show(tag.name)} of type {_show(tag.type)} "
                              f"holds (allowed: 2..{2**bits})")])
        return self

    @model_validator(mode="after")
    def _check_gauge_triggers(self) -> PressConfig:
        """A poll trigger names a PLC tag of this press, or 'stroke' (needs a stroke count)."""
        problems: list[tuple[Loc, str]] = []
        tags = {t.name for t in self.plc.tags}
        has_strokes = any(t.role == "stroke_count" for t in self.plc.tags)
        for i, gauge in enumerate(self.gauges):
            for j, trigger in enumerate(gauge.poll_on):
                if trigger == STROKE_TRIGGER and not has_strokes:
                    problems.append((("gauges", i, "poll_on", j), "'stroke' needs a tag with "
                                     "role 'stroke_count' in plc.tags"))
                elif trigger != STROKE_TRIGGER and trigger not in tags:
                    problems.append((("gauges", i, "poll_on", j), f"{_show(trigger)} is not a "
                                     f"tag of this press (allowed: stroke, "
                                     f"{', '.join(sorted(tags))})"))
        _raise_problems(problems)
        return self


# plans/*.toml ----------------------------------------------------------------

Chart = Literal["i_mr", "xbar_r", "xbar_s"]
LimitsSource = Literal["baseline", "fixed"]
ReactionAction = Literal["hold", "inspection_100"]
NelsonRule = Literal[1, 2, 3, 4, 5, 6, 7, 8]


class SpcConfig(_Model):
    """SPC of one characteristic ([characteristics.spc]); see docs/quality.md."""

    enabled: bool = True
    chart: Chart | None = None              # default: i_mr for n = 1, xbar_r to 8, xbar_s
    limits: LimitsSource = "baseline"
    baseline_subgroups: int = Field(20, ge=2, le=1000)
    center: Dec | None = None               # limits = "fixed": centre line
    sigma: Dec | None = None                # limits = "fixed": sigma of individual values
    rules: list[NelsonRule] = Field(default_factory=lambda: [1, 2, 3, 4, 5, 6, 7, 8])
    same_side: int = Field(9, ge=2, le=50)
    trend: int = Field(6, ge=3, le=50)
    alternating: int = Field(14, ge=3, le=50)
    zone_a: list[int] = Field(default_factory=lambda: [2, 3])
    zone_b: list[int] = Field(default_factory=lambda: [4, 5])
    stratification: int = Field(15, ge=2, le=50)
    mixture: int = Field(8, ge=2, le=50)
    # rule 8: "both" = points on both sides (Nelson, AIAG, qcc); "any" = one-sided reading
    mixture_sides: Literal["both", "any"] = "both"
    # I-MR: sigma from the average moving range (default) or s/c4 of the values
    individuals_sigma: Literal["moving_range", "stdev"] = "moving_range"

    @model_validator(mode="after")
    def _check(self) -> SpcConfig:
        problems: list[tuple[Loc, str]] = []
        if self.limits == "fixed":
            for key in ("center", "sigma"):
                if getattr(self, key) is None:
                    problems.append(((key,), "required key missing (limits = 'fixed' needs "
                                     "center and sigma)"))
            if self.sigma is not None and self.sigma <= 0:
                problems.append((("sigma",), f"{self.sigma} is out of range (allowed: > 0)"))
        else:
            for key in ("center", "sigma"):
                if getattr(self, key) is not None:
                    problems.append(((key,), f"{key} is only used with limits = 'fixed' "
                                     "(limits is 'baseline')"))
        for key in ("zone_a", "zone_b"):
            pair = getattr(self, key)
            if len(pair) != 2 or not 1 <= pair[0] <= pair[1] <= 50:
                problems.append(((key,), f"{_show(pair)} is not allowed (allowed: [m, k], "
                                 "m of k points, 1 <= m <= k <= 50, e.g. [2, 3])"))
        if len(set(self.rules)) != len(self.rules):
            problems.append((("rules",), f"{_show(self.rules)} names a rule twice"))
        _raise_problems(problems)
        return self


class FirstArticleConfig(_Model):
    sample_size: int = Field(1, ge=1, le=50)


class PatrolConfig(_Model):
    """Patrol inspection: a check (one subgroup of every characteristic) is due every
    ``every_strokes`` strokes and/or ``every_min`` minutes of released production."""

    every_strokes: int | None = Field(None, ge=1)
    every_min: float | None = Field(None, gt=0)
    grace_min: float = Field(10.0, gt=0)
    subgroup_size: int = Field(1, ge=1, le=25)  # the control-chart constants go to 25


class CapabilityConfig(_Model):
    minimum: float = Field(1.33, gt=0)       # Cpk below -> reaction low_capability
    review: float = Field(3.0, gt=0)         # Cpk and Ppk at/above -> capability_review
    every_subgroups: int = Field(25, ge=1)
    min_values: int = Field(20, ge=2)

    @model_validator(mode="after")
    def _check(self) -> CapabilityConfig:
        if self.review <= self.minimum:
            _raise_problems([(("review",), f"{self.review} is not above minimum "
                              f"{self.minimum} (review threshold must be higher)")])
        return self


class ReactionConfig(_Model):
    """What an alarm adds, per trigger: [] = alarm only, "hold", "inspection_100"."""

    out_of_tolerance: list[ReactionAction] = Field(default_factory=list)
    rule: list[ReactionAction] = Field(default_factory=list)
    low_capability: list[ReactionAction] = Field(default_factory=list)


class ReactionPlanConfig(_Model):
    critical: ReactionConfig = Field(default_factory=ReactionConfig)
    significant: ReactionConfig = Field(default_factory=ReactionConfig)
    standard: ReactionConfig = Field(default_factory=ReactionConfig)


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
    resolution: Dec | None = None
    spc: SpcConfig = Field(default_factory=SpcConfig)

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
    first_article: FirstArticleConfig = Field(default_factory=FirstArticleConfig)
    patrol: PatrolConfig = Field(default_factory=PatrolConfig)
    capability: CapabilityConfig = Field(default_factory=CapabilityConfig)
    reaction: ReactionPlanConfig = Field(default_factory=ReactionPlanConfig)

    @model_validator(mode="after")
    def _check(self) -> PlanConfig:
        problems: list[tuple[Loc, str]] = []
        seen: dict[str, int] = {}
        n = self.patrol.subgroup_size
        for i, ch in enumerate(self.characteristics):
            chart = ch.spc.chart
            if chart is not None and (chart == "i_mr") != (n == 1):
                need = "i_mr" if n == 1 else "xbar_r or xbar_s"
                problems.append((("characteristics", i, "spc", "chart"), f"{_show(chart)} "
                                 f"does not fit patrol.subgroup_size {n} (allowed: {need})"))
            if ch.resolution is not None and ch.resolution <= 0:
                problems.append((("characteristics", i, "resolution"), f"{ch.resolution} is "
                                 "out of range (allowed: > 0, e.g. '0.001')"))
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
            unit=ch.unit, gauge=ch.gauge, channel=ch.channel, char_class=ch.char_class,
            resolution=ch.resolution, spc=_to_spc(ch.spc)))
    reactions = {cls: domain.Reaction(tuple(r.out_of_tolerance), tuple(r.rule),
                                      tuple(r.low_capability))
                 for cls in domain.CHAR_CLASSES
                 for r in (getattr(plan.reaction, cls),)}
    cap = plan.capability
    return domain.Plan(part_number=plan.part_number, revision=plan.revision,
                       characteristics=tuple(chars), description=plan.description,
                       first_article_sample_size=plan.first_article.sample_size,
                       patrol_every_strokes=plan.patrol.every_strokes,
                       patrol_every_min=plan.patrol.every_min,
                       overdue_grace_min=plan.patrol.grace_min,
                       subgroup_size=plan.patrol.subgroup_size,
                       capability_min=cap.minimum, capability_review=cap.review,
                       capability_every=cap.every_subgroups,
                       capability_min_values=cap.min_values, reactions=reactions)


def _to_spc(spc: SpcConfig) -> domain.SpcOptions:
    return domain.SpcOptions(
        enabled=spc.enabled, chart=spc.chart, limits=spc.limits,
        baseline_subgroups=spc.baseline_subgroups, center=spc.center, sigma=spc.sigma,
        rules=tuple(sorted(spc.rules)), same_side=spc.same_side, trend=spc.trend,
        alternating=spc.alternating, zone_a=(spc.zone_a[0], spc.zone_a[1]),
        zone_b=(spc.zone_b[0], spc.zone_b[1]), stratification=spc.stratification,
        mixture=spc.mixture, mixture_sides=spc.mixture_sides,
        individuals_sigma=spc.individuals_sigma)


def workflow_settings_for(press: PressConfig) -> domain.WorkflowSettings:
    """The press's workflow settings with what its tags say: role maps and where the
    stroke counter wraps (issue 11; docs/roles.md)."""
    maps = {t.role: m for t in press.plc.tags if t.role is not None
            and (m := roles.role_map(t.true_values, t.true_bit, t.enum)) is not None}
    wrap = press.workflow.stroke_counter_wrap
    tag = next((t for t in press.plc.tags if t.role == "stroke_count"), None)
    if wrap is None and isinstance(tag, TagConfig):
        wrap = roles.counter_wrap(tag.type, tag.scale, tag.offset)
    return dataclasses.replace(to_workflow_settings(press.workflow), role_maps=maps,
                               stroke_counter_wrap=wrap)


def to_workflow_settings(workflow: WorkflowConfig) -> domain.WorkflowSettings:
    authorized = {"production": tuple(workflow.commands.production),
                  "quality": tuple(workflow.commands.quality)}
    return domain.WorkflowSettings(long_stop_s=workflow.long_stop_min * 60.0,
                                   stopped_after_s=workflow.stopped_after_s,
                                   hold_on_measurement_fail=workflow.hold_on_measurement_fail,
                                   authorized=authorized,
                                   refuse_overdue_for_first_article=(
                                       workflow.refuse_overdue_for_first_article),
                                   inspection_100_max_unmeasured=(
                                       workflow.inspection_100_max_unmeasured),
                                   max_strokes_per_min=workflow.max_strokes_per_min,
                                   stroke_counter_wrap=workflow.stroke_counter_wrap)


def revision_key(revision: str) -> tuple[tuple[tuple[int, int, str], ...], str]:
    """Sort key for revisions: natural order, so 'A' < 'B' and '9' < '10'.

    Runs of digits compare as numbers, other text as strings (for single-letter
    revisions this is plain string order); digits sort before letters ('9' < 'A').
    """
    parts = tuple((0, int(p), "") if p.isascii() and p.isdigit() else (1, 0, p)
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
    last_key = ""
    for part in loc:
        if isinstance(part, int):
            continue  # a list index: the annotation was already unwrapped to the item
        branch = _UNION_TAGS.get(last_key, {}).get(part)
        if branch is not None and not _is_model(current):
            current = branch  # a tagged union's tag picks the model
            continue
        last_key = part
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
        if key == "password" and loc[:1] == ("plc",):
            return [(path, "passwords are not allowed in config files; use password_file or "
                     f"the environment variable {OPCUA_PASSWORD_ENV}_<PRESS_ID>")]
        if key in _SECRET_HINTS:
            return [(path, _SECRET_HINTS[str(key)])]
        parent, _ = _walk(root, loc[:-1])
        return [(path, f"unknown key (allowed: {_allowed_keys(parent)})")]
    if kind == "missing":
        return [(path, "required key missing")]
    _, info = _walk(root, loc)
    if kind == "plc_table":
        return [(path, f"expected a table ([{path}]), got {_show(value)} ({_kind(value)})")]
    if kind == "literal_error":
        allowed = _literal_args(info.annotation) if info is not None else ()
        if len(loc) == 3 and loc[2] == "protocol" and loc[1] in _UNION_TAGS.get(loc[0], {}):
            allowed = tuple(sorted({a for m in _UNION_TAGS[str(loc[0])].values()
                                    for a in _literal_args(m.model_fields["protocol"].annotation)}))
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
    if collector is not None and not collector.site.host_id:
        problems.extend(_hostname_problems())

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
    problems.extend(_check_buses(presses, press_files))
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
    for press in presses.values():
        _resolve_opcua_paths(press.plc, config_dir)

    plans: dict[str, domain.Plan] = {}
    for (part_number, _revision), plan in sorted(
            plans_all.items(), key=lambda item: (item[0][0], revision_key(item[0][1]))):
        plans[part_number] = plan  # ascending revision order: the highest one wins
    return LoadedConfig(config_dir=config_dir, collector=collector, presses=presses,
                        plans=plans, plans_all=plans_all, press_files=press_files,
                        plan_files=plan_files), []


def _hostname_problems() -> list[ConfigProblem]:
    """site.host_id defaults to the hostname, which the daemon puts in its topics: check it
    here, so that ``check`` refuses what ``run`` would publish under a broken topic."""
    import socket

    name = socket.gethostname()
    problem = mqtt_names.topic_level_problem(name, _show(name))
    if problem is None:
        return []
    return [ConfigProblem(COLLECTOR_FILE, "site.host_id", f"not set, and this machine's "
                          f"hostname {problem}: set site.host_id")]


def _check_buses(presses: dict[str, PressConfig],
                 press_files: dict[str, str]) -> list[ConfigProblem]:
    """Presses on one RTU bus (same serial port or host:port) share one connection: their
    unit ids must differ and, on a serial port, their line settings must agree."""
    problems: list[ConfigProblem] = []
    first_on_bus: dict[str, PressConfig] = {}
    units: dict[tuple[str, int], str] = {}
    for press in presses.values():
        key = press.plc.bus_key()
        if key is None:
            continue
        rel = press_files[press.id]
        first = first_on_bus.setdefault(key, press)
        if (key, press.plc.unit) in units:
            other = units[(key, press.plc.unit)]
            problems.append(ConfigProblem(rel, "plc.unit", f"{press.plc.unit} is already used "
                                          f"on bus {key} by press {other} "
                                          f"({press_files[other]}); unit ids must be unique "
                                          "per bus"))
        else:
            units[(key, press.plc.unit)] = press.id
        if first is press:
            continue
        if first.plc.protocol != press.plc.protocol:
            problems.append(ConfigProblem(rel, "plc.protocol", f"bus {key} is "
                                          f"{first.plc.protocol} in {press_files[first.id]}"))
            continue
        for name in (*RTU_SERIAL_KEYS, "inter_frame_ms"):
            mine, theirs = getattr(press.plc, name), getattr(first.plc, name)
            if mine != theirs:
                problems.append(ConfigProblem(rel, f"plc.{name}", f"{_show(mine)} differs from "
                                              f"{_show(theirs)} of press {first.id} "
                                              f"({press_files[first.id]}) on the same bus "
                                              f"{key}"))
    return problems


def _resolve_opcua_paths(plc: Any, config_dir: Path) -> None:
    """Certificate, key and trust dir of an OPC UA press: relative to the config dir.

    (password_file stays as written: the daemon looks a relative one up in
    $CREDENTIALS_DIRECTORY, like the broker's.)
    """
    if not isinstance(plc, OpcuaPlcConfig):
        return
    for key in ("certificate", "private_key", "trust_dir"):
        value = getattr(plc, key)
        if value and not Path(value).is_absolute():
            setattr(plc, key, str((config_dir / value).resolve()))


def load_config(config_dir: Path | str) -> LoadedConfig:
    """Load and validate a config dir; raise :class:`ConfigError` listing every problem."""
    loaded, problems = _load(Path(config_dir))
    if problems or loaded is None:
        raise ConfigError(problems)
    return loaded


def load_press_file(path: Path | str) -> PressConfig:
    """One press file on its own (commissioning probe); :class:`ConfigError` lists its
    problems, named by the file's name."""
    path = Path(path).absolute()
    problems: list[ConfigProblem] = []
    data = _read_toml(path.parent, path, problems)
    press = _validate(PressConfig, data, path.name, problems) if data is not None else None
    if press is None:
        raise ConfigError(problems)
    return press


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
        if isinstance(plc, OpcuaPlcConfig):
            lines.append(f"  press {press.id}{title}: opcua {plc.endpoint} security "
                         f"{plc.security_policy}/{plc.security_mode}, publishing every "
                         f"{plc.publishing_interval_ms} ms, {len(plc.tags)} tags "
                         f"(roles: {roles}); gauges: {gauges}")
            continue
        where = plc.port if plc.protocol == "modbus_rtu" else f"{plc.host}:{plc.port}"
        lines.append(f"  press {press.id}{title}: {plc.protocol} {where} "
                     f"unit {plc.unit} every {plc.poll_interval_ms} ms, {len(plc.tags)} tags "
                     f"(roles: {roles}); gauges: {gauges}")
    for part_number, plan in sorted(cfg.plans.items()):
        lines.append(f"  plan {part_number} rev {plan.revision}: "
                     f"{len(plan.characteristics)} characteristics")
    return "\n".join(lines)
