"""``[plc]`` of a Modbus press (protocol modbus_tcp, modbus_rtu, modbus_rtu_tcp) and its
``[[plc.tags]]``, as the Modbus driver reads them; docs/modbus.md is the user's page.

The vocabularies are the driver's own tables: areas, types, word orders and register
widths from the codec (``drivers.modbus.codec``), the protocol values from the
package's registry entry. What a tag *means* for the quality workflow (its role, role
maps, publish filter) is the collector's: it parametrizes these models with its role
vocabulary and adds its keys (``collector/config/modbus.py``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, ClassVar, Generic, Literal, TypeVar

from pydantic import Field, model_validator

from drivers.config_base import (
    OUTPUT_PREFIX,
    Baudrate,
    ConfigModel,
    Loc,
    Parity,
    kind_of,
    output_problems,
    raise_problems,
    show,
    tag_problems,
)
from drivers.modbus import PLUGIN
from drivers.modbus.codec import AREAS, BIT_AREAS, ORDERS, TYPE_WIDTH, TYPES

RoleT = TypeVar("RoleT")
TagT = TypeVar("TagT", bound="ModbusTagConfig[Any]")
OutT = TypeVar("OutT", bound="ModbusOutputModel[Any]")

TagArea = Literal[AREAS]  # type: ignore[valid-type]
TagType = Literal[TYPES]  # type: ignore[valid-type]
WordOrder = Literal[ORDERS]  # type: ignore[valid-type]
Protocol = Literal[PLUGIN.protocols]  # type: ignore[valid-type]
# PLC protocols; the RTU ones put several presses (unit ids) on one shared bus.
RTU_PROTOCOLS = tuple(p for p in PLUGIN.protocols if p != "modbus_tcp")
# Keys of [plc] that only the serial RTU protocol uses.
RTU_SERIAL_KEYS = ("baudrate", "bytesize", "parity", "stopbits")


class ModbusTagConfig(ConfigModel, Generic[RoleT]):
    """``[[plc.tags]]`` of a Modbus press: one PLC value. Field names match the codec's
    ``TagSpec``; ``role`` is a slot whose vocabulary the collector gives
    (``ModbusTagConfig[Role]``): drivers deliver values, the collector gives them meaning."""

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
    role: RoleT | None = Field(None, description="What the value means for the quality "
                              "workflow, each role at most once per press; the types allowed "
                              "depend on the role (docs/roles.md).")

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

    def problems(self) -> list[tuple[Loc, str]]:
        """What is wrong with this tag for the codec (all of it; a subclass adds its own
        after these, so that one message lists every problem in a fixed order)."""
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
        return problems

    @model_validator(mode="after")
    def _check(self) -> ModbusTagConfig[RoleT]:
        raise_problems(self.problems())
        return self


# What the collector may write (issue 14's outputs): the two writable tables, and the
# types a flag (bool, or 1/0 in a register) or a counter word can have.
OUTPUT_AREAS = ("coil", "holding")
OUTPUT_TYPES = ("bool", "int16", "uint16", "int32", "uint32")
OutputArea = Literal[OUTPUT_AREAS]  # type: ignore[valid-type]
OutputType = Literal[OUTPUT_TYPES]  # type: ignore[valid-type]


class ModbusOutputModel(ConfigModel, Generic[RoleT]):
    """``[[plc.outputs]]`` of a Modbus press: a coil or holding register the collector
    writes (docs/outputs.md). Never polled; every write is read back and compared.
    ``role`` is a slot whose vocabulary the collector gives."""

    role: RoleT = Field(description="What the collector drives into this address, each "
                        "role at most once per press (docs/outputs.md).")
    area: OutputArea = Field("coil", description="coil (a bit) or holding (a register): "
                             "the only Modbus tables a client can write.")
    address: int = Field(ge=0, le=65535, description="0-based protocol address; the PLC "
                         "must let this address be written.")
    type: OutputType = Field("bool", description="bool in a coil; bool (written 1 / 0), "
                             "int16, uint16, int32, uint32 in holding registers.",
                             json_schema_extra={"doc_default": "bool; uint16 in holding"})
    order: WordOrder = Field("ABCD", description="Word order of a 32-bit type (ABCD = high "
                             "word first, CDAB = word-swapped); ignored for 16-bit and bool.")

    @model_validator(mode="before")
    @classmethod
    def _default_type(cls, data: Any) -> Any:
        if isinstance(data, dict) and "type" not in data and data.get("area") == "holding":
            data = {**data, "type": "uint16"}
        return data

    @property
    def name(self) -> str:
        """The name the driver writes it under (never a polled tag's name)."""
        return f"{OUTPUT_PREFIX}{self.role}"

    @property
    def width(self) -> int:
        return TYPE_WIDTH[self.type]

    def problems(self) -> list[tuple[Loc, str]]:
        """What is wrong for the codec (a subclass adds the role's rules after these)."""
        problems: list[tuple[Loc, str]] = []
        if self.area == "coil" and self.type != "bool":
            problems.append((("type",), f"{show(self.type)} is not possible in area 'coil' "
                             "(allowed: bool; a coil is a bit)"))
        if self.address + self.width - 1 > 65535:
            problems.append((("address",), f"{self.address} + {self.width} registers runs past "
                             "the last address 65535"))
        return problems

    @model_validator(mode="after")
    def _check(self) -> ModbusOutputModel[RoleT]:
        raise_problems(self.problems())
        return self


class ModbusPlcConfig(ConfigModel, Generic[TagT, OutT]):
    """``[plc]`` of a Modbus press (docs/modbus.md). Presses naming the same serial port
    (or host:port with modbus_rtu_tcp) share one bus and must agree on its settings."""

    protocol: Protocol = Field(
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
    tags: list[TagT] = Field(min_length=1, description="`[[plc.tags]]`: the values "
                                  "read, at least one.")
    outputs: list[OutT] = Field(default_factory=list, description="`[[plc.outputs]]`: "
                                "coils / holding registers the collector writes "
                                "(release permissive, lamps, heartbeat; docs/outputs.md); "
                                "none by default.")

    @model_validator(mode="after")
    def _check_link(self) -> ModbusPlcConfig[TagT, OutT]:
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

    # Keys every press on one shared line must agree on (``check`` compares them).
    shared_line_keys: ClassVar[tuple[str, ...]] = (*RTU_SERIAL_KEYS, "inter_frame_ms")

    def resolve_paths(self, config_dir: Path) -> None:
        """No file names in a Modbus [plc] table (the serial port is a device path)."""

    def bus_key(self) -> str | None:
        """The shared bus this PLC is on (RTU protocols), else None."""
        if self.protocol == "modbus_rtu":
            return str(self.port)
        if self.protocol == "modbus_rtu_tcp":
            return f"{self.host}:{self.port}"
        return None

    @model_validator(mode="after")
    def _check(self) -> ModbusPlcConfig[TagT, OutT]:
        raise_problems(tag_problems(self.tags) + output_problems(self.outputs, self.tags))
        return self

    def role_tags(self) -> dict[str, str]:
        """Tag name -> role for the tags that have one."""
        return {t.name: t.role for t in self.tags if t.role}

