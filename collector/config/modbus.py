"""``[plc]`` of a Modbus press (protocol modbus_tcp, modbus_rtu, modbus_rtu_tcp) and its
``[[plc.tags]]``; docs/modbus.md is the user's page.

Depends on ``base`` and on ``collector.roles`` / ``collector.domain`` (the role
vocabulary and the role map checks) only, so that it can move next to its driver.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import Field, model_validator

from collector import domain, roles
from collector.config.base import (
    Baudrate,
    ConfigModel,
    Loc,
    Parity,
    kind_of,
    raise_problems,
    show,
    tag_problems,
)

TagArea = Literal["holding", "input", "coil", "discrete"]
TagType = Literal["bool", "int16", "uint16", "int32", "uint32", "float32", "float64", "string"]
WordOrder = Literal["ABCD", "CDAB", "BADC", "DCBA"]
Role = Literal[domain.ROLES]  # type: ignore[valid-type]

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
# PLC protocols; the RTU ones put several presses (unit ids) on one shared bus.
RTU_PROTOCOLS = ("modbus_rtu", "modbus_rtu_tcp")
# Keys of [plc] that only the serial RTU protocol uses.
RTU_SERIAL_KEYS = ("baudrate", "bytesize", "parity", "stopbits")


class TagConfig(ConfigModel):
    """``[[plc.tags]]`` of a Modbus press: one PLC value. Field names match
    ``drivers.modbus_codec.TagSpec``."""

    name: str = Field(min_length=1, description="Unique per press; the key in telemetry "
                      "messages.")
    area: TagArea = Field("holding", description="Modbus table: holding / input registers, "
                          "coils / discrete inputs (bits).")
    address: int = Field(ge=0, le=65535, description="0-based protocol address (holding "
                         "register 40001 in PLC documentation = address 0).")
    type: TagType = Field("uint16", description="Value type; strings take `length` "
                          "registers. Default: bool in coil / discrete, uint16 in registers.",
                          json_schema_extra={"doc_default": "uint16; bool in coil, discrete"})
    order: WordOrder = Field("ABCD", description="Word / byte order of 32 and 64-bit values: "
                             "ABCD = big-endian, high word first; CDAB = word-swapped (common "
                             "on PLCs). Ignored for 16-bit and bool.")
    length: int = Field(0, ge=0, description="Registers of a string (2 characters each); "
                        "type string only, and required there.")
    scale: float = Field(1.0, description="value = raw x scale + offset (numbers only; not "
                         "0).")
    offset: float = Field(0.0, description="Added after `scale` (numbers only).")
    role: Role | None = Field(None, description="What the value means for the quality "
                              "workflow, each role at most once per press; the types allowed "
                              "depend on the role (docs/roles.md).")
    # Telemetry publish filter (the buffer keeps every reading whatever these say):
    on_change: bool | None = Field(None, description="Publish this tag only when its value "
                                   "changed; unset = the press's `[telemetry] on_change`.")
    deadband: float = Field(0.0, ge=0, description="Publish when the value moved more than "
                            "this from the last published one (numbers only; implies "
                            "on_change).")
    deadband_pct: float = Field(0.0, ge=0, le=1000, description="... or more than this "
                                "percentage of the last published value (with both: the "
                                "larger threshold).")
    publish_every: int | None = Field(None, ge=1, le=100000, description="Publish every Nth "
                                      "poll only; unset = the press's `[telemetry] "
                                      "publish_every`.")
    true_values: list[int | str] | None = Field(None, description="A true/false role "
                                                "(setup_mode, running, repair) is true when "
                                                "the value is one of these numbers or texts "
                                                "(docs/roles.md); default: non-zero = true.")
    true_bit: int | None = Field(None, ge=0, le=63, description="A true/false role is true "
                                 "when this bit (0 = least significant) of an integer is set.")
    enum: list[str] | None = Field(None, description="Names of the values 0, 1, 2, ... so "
                                   "that `true_values` can name them (a PLC mode word).")

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
            problems.append((("type",), f"{show(self.type)} is not possible in area "
                             f"{show(self.area)} (allowed: bool; coils and discrete inputs "
                             "are bits)"))
        if self.type == "string" and self.length == 0:
            problems.append((("length",), "type 'string' needs length > 0 "
                             "(number of registers, 2 characters each)"))
        if self.type != "string" and self.length != 0:
            problems.append((("length",), f"length is only for type 'string' "
                             f"(type is {show(self.type)})"))
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
                             f"(type is {show(self.type)})"))
        if self.type in ("bool", "string") and (self.deadband or self.deadband_pct):
            key = "deadband" if self.deadband else "deadband_pct"
            problems.append(((key,), f"a deadband applies to numbers only (type is "
                             f"{show(self.type)}; use on_change = true)"))
        if not math.isfinite(self.deadband):
            problems.append((("deadband",), f"{self.deadband} is not allowed "
                             "(allowed: a finite number >= 0)"))
        if self.role is not None and self.type not in ROLE_TYPES[self.role]:
            problems.append((("role",), f"role {show(self.role)} needs another type "
                             f"(got {show(self.type)}; allowed: "
                             f"{', '.join(ROLE_TYPES[self.role])})"))
        problems += roles.role_map_problems(self.role, self.type, self.true_values,
                                            self.true_bit, self.enum)
        raise_problems(problems)
        return self


class PlcConfig(ConfigModel):
    """``[plc]`` of a Modbus press (docs/modbus.md). Presses naming the same serial port
    (or host:port with modbus_rtu_tcp) share one bus and must agree on its settings."""

    protocol: Literal["modbus_tcp", "modbus_rtu", "modbus_rtu_tcp"] = Field(
        "modbus_tcp", description="Modbus TCP; Modbus RTU on a serial port; RTU frames over "
        "TCP through a serial device server.")
    host: str = Field("", description="PLC, gateway or device server address; required for "
                      "modbus_tcp and modbus_rtu_tcp, not used with modbus_rtu.")
    # One key, two meanings: checked by _check_link with our own messages.
    port: Any = Field(None, description="modbus_tcp / modbus_rtu_tcp: the TCP port (default "
                      "502); modbus_rtu: the serial device (required), e.g. "
                      "`/dev/serial/by-id/...`.",
                      json_schema_extra={"doc_type": "integer or string",
                                         "doc_default": "502 (TCP)",
                                         "doc_allowed": "1..65535 or a device path"})
    unit: int = Field(1, ge=0, le=247, description="Modbus unit (slave) id; 1..247 on an "
                      "RTU bus (0 is broadcast and never answers).")
    poll_interval_ms: int = Field(100, ge=10, le=60000, description="Every tag is read once "
                                  "per interval, on a drift-free grid (late polls are "
                                  "skipped and counted).")
    timeout_ms: int = Field(1000, ge=10, le=60000, description="Per request.")
    max_gap: int = Field(8, ge=0, le=125, description="Unused registers / bits a block read "
                         "may bridge to read neighbouring tags in one request.")
    max_registers: int = Field(125, ge=1, le=125, description="Registers per request "
                               "(Modbus limit 125).")
    max_bits: int = Field(2000, ge=1, le=2000, description="Coils / discrete inputs per "
                          "request (Modbus limit 2000).")
    baudrate: Baudrate = Field(19200, description="modbus_rtu only: serial line speed.")
    bytesize: Literal[7, 8] = Field(8, description="modbus_rtu only: data bits.")
    parity: Parity = Field("E", description="modbus_rtu only: parity (E = the Modbus "
                           "spec's 8E1).")
    stopbits: Literal[1, 2] = Field(1, description="modbus_rtu only: stop bits.")
    retries: int = Field(1, ge=0, le=5, description="RTU only: repeats of a request the "
                         "unit left unanswered before it counts as offline.")
    inter_frame_ms: float = Field(0.0, ge=0, le=1000, description="RTU only: silence kept "
                                  "before every frame; 0 = 3.5 character times at the baud "
                                  "rate (1.75 ms above 19200 baud), as the Modbus serial spec "
                                  "asks.")
    tags: list[TagConfig] = Field(min_length=1, description="`[[plc.tags]]`: the values "
                                  "read, at least one.")

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
                                 f"got {show(self.port)} ({kind_of(self.port)})"))
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
                problems.append((("port",), f"expected an integer, got {show(self.port)} "
                                 f"({kind_of(self.port)})"))
            elif not 1 <= self.port <= 65535:
                problems.append((("port",), f"{self.port} is out of range (allowed: 1..65535)"))
            for key in RTU_SERIAL_KEYS:
                if key in given:
                    problems.append(((key,), f"{key} is only for protocol 'modbus_rtu' "
                                     f"(protocol is {show(self.protocol)})"))
        if self.protocol == "modbus_tcp":
            for key in ("retries", "inter_frame_ms"):
                if key in given:
                    problems.append(((key,), f"{key} is only for the RTU protocols "
                                     f"({', '.join(RTU_PROTOCOLS)})"))
        elif self.unit == 0:
            problems.append((("unit",), "0 is the broadcast address, no unit answers it "
                             "(allowed on an RTU bus: 1..247)"))
        raise_problems(problems)
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
        raise_problems(tag_problems(self.tags))
        return self

    def role_tags(self) -> dict[str, str]:
        """Tag name -> role for the tags that have one."""
        return {t.name: t.role for t in self.tags if t.role}

