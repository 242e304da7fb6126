"""``[plc]`` of an OPC UA press (protocol = "opcua") and its ``[[plc.tags]]``, as the
OPC UA driver reads them; docs/opcua.md is the user's page.

The vocabularies are the driver's (``drivers/opcua/vocab.py``: security policies and
modes, deadband types, tag modes; node ids parsed by ``drivers/opcua/nodes.py``); the
protocol value is the package's registry entry. The collector parametrizes these models
with its role vocabulary and adds the role maps (``collector/config/opcua.py``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, ClassVar, Generic, Literal, TypeVar

from pydantic import Field, model_validator

from drivers.config_base import (
    OUTPUT_PREFIX,
    ConfigModel,
    Loc,
    output_problems,
    raise_problems,
    show,
    tag_problems,
)
from drivers.opcua import PLUGIN
from drivers.opcua.nodes import parse_node
from drivers.opcua.vocab import DEADBANDS, MODES, POLICIES, TAG_MODES

RoleT = TypeVar("RoleT")
TagT = TypeVar("TagT", bound="OpcuaTagModel[Any]")
OutT = TypeVar("OutT", bound="OpcuaOutputModel[Any]")

OPCUA_PASSWORD_ENV = PLUGIN.password_env  # + "_<PRESS_ID>" for one press
DeadbandType = Literal[tuple(DEADBANDS)]  # type: ignore[valid-type]
Policy = Literal[POLICIES]  # type: ignore[valid-type]
Mode = Literal[MODES]  # type: ignore[valid-type]
TagMode = Literal[TAG_MODES]  # type: ignore[valid-type]
Protocol = Literal[PLUGIN.protocols]  # type: ignore[valid-type]


class OpcuaTagModel(ConfigModel, Generic[RoleT]):
    """``[[plc.tags]]`` of an OPC UA press: one node (namespace URI + identifier),
    subscribed or polled. ``role`` is a slot whose vocabulary the collector gives."""

    name: str = Field(min_length=1, description="Unique per press; the key in telemetry "
                      "messages.")
    node: str = Field(min_length=1, description="`nsu=<namespace URI>;s=<id>` (also `i=`, "
                      "`g=`, `b=`); namespace 0 as `i=2258`. A bare `ns=<index>;` is refused: "
                      "the index can change when the server restarts.")
    role: RoleT | None = Field(None, description="What the value means for the quality "
                              "workflow, each role at most once per press (docs/roles.md).")
    mode: TagMode = Field("subscribe", description="Subscribed "
                                               "(monitored item) or read every "
                                               "`poll_interval_ms`.")
    sampling_interval_ms: int | None = Field(None, ge=0, le=3_600_000, description="Subscribe "
                                             "only: the server's sampling interval; unset = "
                                             "the publishing interval.")
    queue_size: int = Field(1, ge=1, le=10_000, description="Subscribe only: values queued "
                            "per publish; above 1 every queued value is delivered.")
    deadband_type: DeadbandType = Field("none", description="Subscribe only: data change "
                                        "filter of the server (percent needs an EURange on "
                                        "the node).")
    deadband_value: float = Field(0.0, ge=0, description="Subscribe only: in the node's "
                                  "units (absolute) or 0..100 (percent); needs a "
                                  "deadband_type.")
    def problems(self) -> list[tuple[Loc, str]]:
        """What is wrong with this tag for the driver (a subclass adds its own after)."""
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
        return problems

    @model_validator(mode="after")
    def _check(self) -> OpcuaTagModel[RoleT]:
        raise_problems(self.problems())
        return self


class OpcuaOutputModel(ConfigModel, Generic[RoleT]):
    """``[[plc.outputs]]`` of an OPC UA press: a node the collector writes
    (docs/outputs.md), with the node's own data type (read from the server before each
    write). Never subscribed; every write is read back and compared. ``role`` is a slot
    whose vocabulary the collector gives."""

    role: RoleT = Field(description="What the collector drives into this node, each role "
                        "at most once per press (docs/outputs.md).")
    node: str = Field(min_length=1, description="`nsu=<namespace URI>;s=<id>` of a "
                      "writable node: Boolean (or an integer, written 1 / 0) for a flag, "
                      "an integer type for the heartbeat.")

    @property
    def name(self) -> str:
        """The name the driver writes it under (never a subscribed tag's name)."""
        return f"{OUTPUT_PREFIX}{self.role}"

    def problems(self) -> list[tuple[Loc, str]]:
        try:
            parse_node(self.node)
        except ValueError as exc:
            return [(("node",), str(exc))]
        return []

    @model_validator(mode="after")
    def _check(self) -> OpcuaOutputModel[RoleT]:
        raise_problems(self.problems())
        return self


class OpcuaPlcModel(ConfigModel, Generic[TagT, OutT]):
    """``[plc]`` of a press whose PLC speaks OPC UA (docs/opcua.md). Secrets:
    password_file or the environment."""

    protocol: Protocol = Field(description="`\"opcua\"` (without it the table is "
                                       "Modbus TCP).")
    endpoint: str = Field(min_length=1, description="`opc.tcp://host:port[/path]`; 4840 is "
                          "the usual port.")
    security_policy: Policy = Field(
        "None", description="Basic256Sha256 needs `certificate`, `private_key`, `trust_dir` "
        "and a security_mode Sign or SignAndEncrypt.")
    security_mode: Mode = Field(
        "None", description="None with policy None; Sign or SignAndEncrypt with "
        "Basic256Sha256.")
    # load_config stores these paths absolute.
    certificate: str = Field("", description="Client certificate (DER or PEM; `press-collector "
                             "opcua-cert` makes one); Basic256Sha256 only. Relative to the "
                             "config dir.")
    private_key: str = Field("", description="Client private key (PEM); Basic256Sha256 "
                             "only. Relative to the config dir.")
    trust_dir: str = Field("", description="Directory of the trusted server certificate(s) "
                           "(or its CA); Basic256Sha256 only. Relative to the config dir.")
    username: str = Field("", description="\"\" = anonymous. With security_policy None "
                          "refused unless `allow_plaintext_password`.")
    password_file: str = Field("", description="File holding the password (relative: "
                               "`$CREDENTIALS_DIRECTORY`, then `<config dir>/credentials/`, "
                               "then the config dir); else the "
                               f"environment variable `{OPCUA_PASSWORD_ENV}_<PRESS_ID>`, "
                               f"else `{OPCUA_PASSWORD_ENV}`. Needs `username`.")
    allow_plaintext_password: bool = Field(False, description="true accepts a user name and "
                                           "password over security_policy None (in clear on "
                                           "the network; a warning at every start).")
    publishing_interval_ms: int = Field(100, ge=10, le=60000, description="Subscription "
                                        "publishing interval: one snapshot per publish with "
                                        "changes.")
    poll_interval_ms: int = Field(500, ge=10, le=60000, description="Read interval of the "
                                  "tags with mode poll (late reads skip slots, counted in "
                                  "`late_polls`).")
    heartbeat_ms: int = Field(1000, ge=100, le=60000, description="A snapshot at least this "
                              "often when nothing changes (time-based workflow rules need "
                              "it).")
    timeout_ms: int = Field(4000, ge=100, le=60000, description="Per request.")
    watchdog_ms: int = Field(1000, ge=100, le=60000, description="The server's state is read "
                             "this often; a failed read ends the session.")
    tags: list[TagT] = Field(min_length=1, description="`[[plc.tags]]`: the nodes "
                                       "read, at least one.")
    outputs: list[OutT] = Field(default_factory=list, description="`[[plc.outputs]]`: "
                                "nodes the collector writes (release permissive, lamps, "
                                "heartbeat; docs/outputs.md); none by default.")

    shared_line_keys: ClassVar[tuple[str, ...]] = ()  # sessions are never shared

    def resolve_paths(self, config_dir: Path) -> None:
        """Certificate, key and trust dir: relative to the config dir (stored absolute).

        (password_file stays as written: the daemon looks a relative one up in
        $CREDENTIALS_DIRECTORY, like the broker's.)"""
        for key in ("certificate", "private_key", "trust_dir"):
            value = getattr(self, key)
            if value and not Path(value).is_absolute():
                setattr(self, key, str((config_dir / value).resolve()))

    def bus_key(self) -> str | None:
        """OPC UA sessions are never shared between presses (see PlcConfig.bus_key)."""
        return None
    @model_validator(mode="after")
    def _check(self) -> OpcuaPlcModel[TagT, OutT]:
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
        problems.extend(output_problems(self.outputs, self.tags))
        raise_problems(problems)
        return self

    def role_tags(self) -> dict[str, str]:
        """Tag name -> role for the tags that have one."""
        return {t.name: t.role for t in self.tags if t.role}
