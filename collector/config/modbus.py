"""``[plc]`` of a Modbus press as the collector reads it: the driver's models
(``drivers/modbus/config.py``: link, codec keys, vocabularies from the driver's own
tables) with the collector's meaning of a tag added: its role (each role's allowed
types, role maps) and its telemetry publish filter. docs/modbus.md is the user's page.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field

from collector import domain, roles
from drivers.config_base import Loc, show
from drivers.modbus.config import (
    BIT_AREAS,
    RTU_PROTOCOLS,
    RTU_SERIAL_KEYS,
    TYPE_WIDTH,
    ModbusOutputModel,
    ModbusPlcConfig,
    ModbusTagConfig,
    TagArea,
    TagType,
    WordOrder,
)

__all__ = ["BIT_AREAS", "INTEGER_TYPES", "ROLE_TYPES", "RTU_PROTOCOLS", "RTU_SERIAL_KEYS",
           "TYPE_WIDTH", "OutputConfig", "OutputRole", "PlcConfig", "Role", "TagArea",
           "TagConfig", "TagType", "WordOrder"]

Role = Literal[domain.ROLES]  # type: ignore[valid-type]
OutputRole = Literal[domain.OUTPUT_ROLES]  # type: ignore[valid-type]
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


class TagConfig(ModbusTagConfig[Role]):  # type: ignore[valid-type]
    """``[[plc.tags]]`` of a Modbus press: one PLC value. Field names match the codec's
    ``TagSpec`` (``drivers.modbus.codec``)."""

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

    def problems(self) -> list[tuple[Loc, str]]:
        """The codec's problems, then the collector's: publish filter and role."""
        problems = super().problems()
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
        return problems


class OutputConfig(ModbusOutputModel[OutputRole]):  # type: ignore[valid-type]
    """``[[plc.outputs]]`` of a Modbus press: a coil or holding register the collector
    writes (docs/outputs.md). Never polled; every write is read back and compared."""

    def problems(self) -> list[tuple[Loc, str]]:
        """The codec's problems, then the role's: the heartbeat is a counter word."""
        problems = super().problems()
        if self.role == "heartbeat" and self.type not in INTEGER_TYPES:
            problems.append((("type",), f"role 'heartbeat' needs a register that counts (got "
                             f"{show(self.type)}; allowed: {', '.join(INTEGER_TYPES)} in area "
                             "'holding')"))
        return problems


class PlcConfig(ModbusPlcConfig[TagConfig, OutputConfig]):
    """``[plc]`` of a Modbus press (docs/modbus.md). Presses naming the same serial port
    (or host:port with modbus_rtu_tcp) share one bus and must agree on its settings."""
