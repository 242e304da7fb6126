"""``presses/<id>.toml``: the press, its ``[plc]`` (one model per protocol, a tagged
union), its gauges, ``[workflow]`` (timings, commands and who may give them) and
``[telemetry]``; the conversion to ``domain.WorkflowSettings``."""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any, ClassVar, Literal, Union

from pydantic import BaseModel, Discriminator, Field, Tag, field_validator, model_validator

from collector import domain, roles
from collector.config.modbus import PlcConfig, TagConfig
from collector.config.opcua import OPCUA_PASSWORD_ENV, OpcuaPlcConfig
from drivers.config_base import ID_PATTERN, ConfigModel, Loc, raise_problems, show
from drivers.gauge.config import GaugeConfig
from drivers.registry import plc_plugin

# A gauge poll trigger that is not a tag name: every step of the stroke counter.
STROKE_TRIGGER = "stroke"


# The collector's model of each driver package's [plc] table (the driver's model with the
# role vocabulary and the collector's keys added), by the package's registry name.
PLC_MODELS: dict[str, type[BaseModel]] = {"modbus": PlcConfig, "opcua": OpcuaPlcConfig}
DEFAULT_PROTOCOL = "modbus_tcp"  # a [plc] table without `protocol`


def _plc_kind(data: Any) -> str | None:
    """Which [plc] model validates this table: the registry's package for its protocol;
    without one (or with one nobody serves), the default protocol's model, which then
    names every allowed value (errors.translate lists all of the union's)."""
    if isinstance(data, dict):
        protocol = data.get("protocol", DEFAULT_PROTOCOL)
        try:
            return plc_plugin(protocol).name
        except (KeyError, TypeError):
            return plc_plugin(DEFAULT_PROTOCOL).name
    return next((name for name, model in PLC_MODELS.items() if isinstance(data, model)), None)


AnyPlcConfig = Annotated[
    Union[tuple(Annotated[model, Tag(name)] for name, model in PLC_MODELS.items())],  # noqa: UP007
    Discriminator(_plc_kind, custom_error_type="plc_table", custom_error_message="not a table"),
]


class CommandKeyConfig(ConfigModel):
    """``[[workflow.commands.keys]]``: an Ed25519 public key allowed to sign commands of
    one role (docs/security.md, "Signed commands"); ``press-collector keygen`` prints it."""

    name: str = Field(min_length=1, max_length=64, description="Who holds the key; shown "
                      "in the audit (command event `auth.key`).")
    role: Literal["production", "quality"] = Field(description="The command class this key "
                                                   "may sign.")
    public_key: str = Field(description="Base64 of the 32 raw bytes of the Ed25519 public "
                            "key (`press-collector keygen` prints it).")

    @field_validator("public_key")
    @classmethod
    def _public_key(cls, value: str) -> str:
        from collector.signing import SigningError, load_public_key

        try:
            load_public_key(value)
        except SigningError as exc:
            raise ValueError(str(exc)) from None
        return value


class CommandsConfig(ConfigModel):
    """Who may command this press, and how a command must look (docs/security.md).

    Operator ids allowed per command class; "*" = any non-empty operator id; an empty
    list (the default) refuses every command of that class (fail closed).
    production: set_material, start_setup, start_first_article, start_last_piece,
    repeat_measurement, request_capability, missed_check_reason, acknowledge_alarm;
    quality: release, hold.
    """

    production: list[str] = Field(default_factory=list, description="Operator ids allowed "
                                  "to give production commands (set_material, start_setup, "
                                  "start_first_article, start_last_piece, repeat_measurement, "
                                  "request_capability, missed_check_reason, "
                                  "acknowledge_alarm); `\"*\"` = any; "
                                  "[] = none (fail closed).")
    quality: list[str] = Field(default_factory=list, description="Operator ids allowed to "
                               "give quality commands (release, hold); `\"*\"` = any; [] = "
                               "none.")
    require_signature: bool = Field(False, description="true: only commands signed by one of "
                                    "`keys` are accepted.")
    max_age_s: float = Field(300.0, gt=0, le=86400, description="A command issued longer ago "
                             "than this (seconds) is refused as expired.")
    max_future_s: float = Field(30.0, ge=0, le=3600, description="A command issued further "
                                "ahead of our clock than this (seconds) is refused.")
    rate_per_min: float = Field(60.0, gt=0, le=6000, description="Commands per minute to this "
                                "press (token bucket refill).")
    burst: int = Field(20, ge=1, le=1000, description="Token bucket size: commands accepted "
                       "in a burst.")
    keys: list[CommandKeyConfig] = Field(default_factory=list, description="`[[workflow."
                                         "commands.keys]]`: public keys allowed to sign "
                                         "commands.")

    @model_validator(mode="after")
    def _consistent(self) -> CommandsConfig:
        from collector.text_safety import problem

        problems: list[tuple[Loc, str]] = []
        for role in ("production", "quality"):
            for i, operator in enumerate(getattr(self, role)):
                bad = problem(operator)
                if not operator.strip() or len(operator) > 200:
                    problems.append(((role, i), f"{show(operator)} is not an operator id "
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
        raise_problems(problems)
        return self


class WorkflowConfig(ConfigModel):
    """``[workflow]``: the press's quality workflow timings and rules (README, "The press
    workflow"; docs/quality.md)."""

    long_stop_min: float = Field(30.0, ge=0, description="Idle longer than this, minutes "
                                 "(also over a restart): the next production needs a new "
                                 "setup.")
    stopped_after_s: float = Field(60.0, gt=0, description="A released press idle this long, "
                                   "seconds, shows state `stopped`.")
    hold_on_measurement_fail: bool = Field(False, description="true: an out-of-tolerance "
                                           "patrol value puts the press on hold.")
    commands: CommandsConfig = Field(default_factory=CommandsConfig, description="`[workflow."
                                     "commands]`: who may command this press.")
    refuse_overdue_for_first_article: bool = Field(False, description="true: a reading from "
                                                   "a gauge past its calibration due date is "
                                                   "refused for first article (it is flagged "
                                                   "in any case).")
    inspection_100_max_unmeasured: int = Field(10, ge=0, description="Under 100 % "
                                               "inspection: more strokes than this without a "
                                               "measured piece (every characteristic) raise "
                                               "an alarm `unmeasured_pieces`.")
    max_strokes_per_min: float = Field(2000.0, gt=0, le=100_000, description="The press's top "
                                       "speed: a stroke counter step beyond it (or a drop) is "
                                       "a `counter_anomaly` alarm, not strokes "
                                       "(docs/roles.md).")
    stroke_counter_wrap: int | None = Field(None, ge=2, le=2**64, description="Where the "
                                            "stroke counter returns to 0; unset = from the "
                                            "tag type (uint16: 65536, uint32: 4294967296; an "
                                            "OPC UA node: none).")
    spc_history_subgroups: int = Field(domain.SPC_HISTORY_DEFAULT, ge=2, le=100_000,
                                       description="Complete SPC subgroups kept whole in "
                                       "memory per characteristic (never fewer than the "
                                       "plan's `baseline_subgroups` and longest run-rule "
                                       "window); older subgroups of the "
                                       "phase are kept as exact sums, so limits and "
                                       "capability still cover the whole phase "
                                       "(docs/quality.md, \"How much history is kept\").")


class PressTelemetryConfig(ConfigModel):
    """``[telemetry]`` of a press: publish defaults for its tags (a tag's own keys win;
    docs/telemetry-and-health.md). The buffer keeps every reading whatever these say."""

    on_change: bool = Field(False, description="Publish a tag only when its value changed "
                            "(or left its deadband).")
    publish_every: int = Field(1, ge=1, le=100000, description="Publish every Nth poll "
                               "(N x `plc.poll_interval_ms`).")


class PressConfig(ConfigModel):
    """``presses/<id>.toml``: one press (its PLC, gauges and workflow)."""

    # The [plc] union's tag is not a key the user wrote ("plc.tags[0].node", not
    # "plc.opcua.tags[0].node"); a password under [plc] gets the OPC UA hint.
    union_tags: ClassVar[dict[str, dict[str, type[BaseModel]]]] = {
        "plc": PLC_MODELS,
    }
    secret_hints: ClassVar[dict[str, dict[str, str]]] = {
        "plc": {"password": "passwords are not allowed in config files; use password_file "
                f"or the environment variable {OPCUA_PASSWORD_ENV}_<PRESS_ID>"},
    }

    id: str = Field(pattern=ID_PATTERN, description="Unique; used in MQTT topics "
                    "(`{topic_root}/{id}/...`). 1..64 lowercase letters, digits, `_`, `-`, "
                    "starting with a letter or digit.")
    name: str = Field("", description="Free text for people.")
    plc: AnyPlcConfig = Field(description="`[plc]`: the PLC connection and its tags; the keys "
                              "depend on `protocol` (one table per protocol below).")
    gauges: list[GaugeConfig] = Field(default_factory=list, description="`[[gauges]]`: serial "
                                      "measuring instruments at this press.")
    workflow: WorkflowConfig = Field(default_factory=WorkflowConfig, description="`[workflow]`: "
                                     "timings, rules and commands.")
    telemetry: PressTelemetryConfig = Field(default_factory=PressTelemetryConfig,
                                            description="`[telemetry]`: publish defaults of "
                                            "the tags.")

    @model_validator(mode="after")
    def _check(self) -> PressConfig:
        problems: list[tuple[Loc, str]] = []
        seen: dict[str, int] = {}
        for i, gauge in enumerate(self.gauges):
            if gauge.id in seen:
                problems.append((("gauges", i, "id"), f"{show(gauge.id)} is already used by "
                                 f"gauges[{seen[gauge.id]}] (gauge ids must be unique per "
                                 "press)"))
            else:
                seen[gauge.id] = i
        raise_problems(problems)
        return self

    @model_validator(mode="after")
    def _check_counter_wrap(self) -> PressConfig:
        """A stroke counter cannot wrap beyond what its Modbus type holds."""
        wrap = self.workflow.stroke_counter_wrap
        tag = next((t for t in self.plc.tags if t.role == "stroke_count"), None)
        bits = roles.TYPE_BITS.get(getattr(tag, "type", "") or "")
        if wrap is not None and tag is not None and bits is not None and wrap > 2**bits:
            raise_problems([(("workflow", "stroke_counter_wrap"), f"{wrap} is more than the "
                              f"stroke_count tag {show(tag.name)} of type {show(tag.type)} "
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
                    problems.append((("gauges", i, "poll_on", j), f"{show(trigger)} is not a "
                                     f"tag of this press (allowed: stroke, "
                                     f"{', '.join(sorted(tags))})"))
        raise_problems(problems)
        return self



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
                                   stroke_counter_wrap=workflow.stroke_counter_wrap,
                                   spc_history_subgroups=workflow.spc_history_subgroups)


