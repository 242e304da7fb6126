"""``[plc]`` of an OPC UA press as the collector reads it: the driver's models
(``drivers/opcua/config.py``) with the collector's role vocabulary and role maps.
docs/opcua.md is the user's page.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from collector import domain, roles
from drivers.config_base import Loc
from drivers.opcua.config import (
    OPCUA_PASSWORD_ENV,
    DeadbandType,
    OpcuaOutputModel,
    OpcuaPlcModel,
    OpcuaTagModel,
)

__all__ = ["OPCUA_PASSWORD_ENV", "DeadbandType", "OpcuaOutputConfig", "OpcuaPlcConfig",
           "OpcuaTagConfig", "Role"]

Role = Literal[domain.ROLES]  # type: ignore[valid-type]
OutputRole = Literal[domain.OUTPUT_ROLES]  # type: ignore[valid-type]


class OpcuaTagConfig(OpcuaTagModel[Role]):  # type: ignore[valid-type]
    """``[[plc.tags]]`` of an OPC UA press: one node (namespace URI + identifier),
    subscribed or polled."""

    true_values: list[int | str] | None = Field(None, description="A true/false role "
                                                "(setup_mode, running, repair) is true when "
                                                "the value is one of these numbers or texts "
                                                "(docs/roles.md); default: non-zero = true.")
    true_bit: int | None = Field(None, ge=0, le=63, description="A true/false role is true "
                                 "when this bit (0 = least significant) of an integer is set.")
    enum: list[str] | None = Field(None, description="Names of the values 0, 1, 2, ... so "
                                   "that `true_values` can name them (a PLC mode word).")

    def problems(self) -> list[tuple[Loc, str]]:
        """The driver's problems, then the role maps'."""
        return super().problems() + roles.role_map_problems(
            self.role, None, self.true_values, self.true_bit, self.enum)


class OpcuaOutputConfig(OpcuaOutputModel[OutputRole]):  # type: ignore[valid-type]
    """``[[plc.outputs]]`` of an OPC UA press: a node the collector writes
    (docs/outputs.md); its data type is the node's own (Boolean or an integer for a flag,
    an integer for the heartbeat: a wrong one is refused at the first write, an
    ``output_alarm``)."""


class OpcuaPlcConfig(OpcuaPlcModel[OpcuaTagConfig, OpcuaOutputConfig]):
    """``[plc]`` of a press whose PLC speaks OPC UA (docs/opcua.md). Secrets:
    password_file or the environment."""
