"""``[plc]`` of an OPC UA press (protocol = "opcua") and its ``[[plc.tags]]``;
docs/opcua.md is the user's page.

Depends on ``base`` and on ``collector.roles`` (the role map checks) only, so that it can
move next to its driver.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field, model_validator

from collector import domain, roles
from collector.config.base import ConfigModel, Loc, raise_problems, show, tag_problems

Role = Literal[domain.ROLES]  # type: ignore[valid-type]

OPCUA_PASSWORD_ENV = "PRESS_COLLECTOR_OPCUA_PASSWORD"  # + "_<PRESS_ID>" for one press
DeadbandType = Literal["none", "absolute", "percent"]


class OpcuaTagConfig(ConfigModel):
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
        raise_problems(problems)
        return self


class OpcuaPlcConfig(ConfigModel):
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
            problems.append((("endpoint",), f"{show(self.endpoint)} is not an OPC UA endpoint "
                             "(write e.g. 'opc.tcp://192.168.0.10:4840')"))
        secure = self.security_policy != "None"
        if secure and self.security_mode == "None":
            problems.append((("security_mode",), f"security_policy "
                             f"{show(self.security_policy)} needs security_mode 'Sign' or "
                             "'SignAndEncrypt'"))
        if not secure and self.security_mode != "None":
            problems.append((("security_policy",), f"security_mode {show(self.security_mode)} "
                             "needs security_policy 'Basic256Sha256'"))
        for key in ("certificate", "private_key", "trust_dir"):
            if secure and not getattr(self, key):
                hint = ("a directory holding the server's certificate" if key == "trust_dir"
                        else "create one with: press-collector opcua-cert --out DIR")
                problems.append(((key,), f"required with security_policy "
                                 f"{show(self.security_policy)} ({hint})"))
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
                             f"'None' (security_policy is {show(self.security_policy)})"))
        problems.extend(tag_problems(self.tags))
        raise_problems(problems)
        return self

    def role_tags(self) -> dict[str, str]:
        """Tag name -> role for the tags that have one."""
        return {t.name: t.role for t in self.tags if t.role}
