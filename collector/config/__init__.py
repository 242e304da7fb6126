"""Config files (TOML) -> validated pydantic models -> domain objects.

A config dir holds ``collector.toml``, ``presses/*.toml`` (one per press) and
``plans/*.toml`` (measurement plans). Every key, its type, default, allowed values and
meaning: docs/config-reference.md, generated from these models (``reference``) by
``scripts/gen-docs``; tests/test_docs.py fails when it is stale. The commented examples
in ``config/`` show the keys in use; docs/DESIGN.md says how to add one.

Validation rules:

- every model forbids unknown keys and is strict (no silent ``"502"`` -> ``502``);
- every problem of every file is collected before anything is raised, so that a user
  fixes them all in one go; :class:`ConfigError` carries the list;
- messages are our own, never pydantic's raw text, and read
  ``{file}: {key.path}: {message}``, e.g.
  ``presses/p1.toml: plc.tags[2].type: 'float33' is not allowed (allowed: bool, ...)``.

The package, by layer: ``base`` (the strict base model, problem helpers, shared
vocabularies), ``errors`` (problems, pydantic error translation), one module per file kind
(``site``, ``press``, ``plan``) and per driver (``modbus``, ``opcua``, ``gauge``; these
depend on ``base`` and the role vocabulary only), ``loader`` (reading a dir, cross-file
checks, ``check``, ``summary``), ``reference`` (the generated key reference). This
module re-exports the public API: import from ``collector.config``, not from the modules.
"""

from __future__ import annotations

from collector.config.errors import ConfigError, ConfigProblem
from collector.config.loader import (
    COLLECTOR_FILE,
    PLANS_DIR,
    PRESSES_DIR,
    LoadedConfig,
    check,
    load_config,
    load_press_file,
    summary,
)
from collector.config.modbus import (
    BIT_AREAS,
    INTEGER_TYPES,
    ROLE_TYPES,
    RTU_PROTOCOLS,
    RTU_SERIAL_KEYS,
    TYPE_WIDTH,
    PlcConfig,
    TagConfig,
)
from collector.config.opcua import OPCUA_PASSWORD_ENV, OpcuaPlcConfig, OpcuaTagConfig
from collector.config.plan import (
    CapabilityConfig,
    CharacteristicConfig,
    FirstArticleConfig,
    PatrolConfig,
    PlanConfig,
    ReactionConfig,
    ReactionPlanConfig,
    SpcConfig,
    revision_key,
    to_plan,
)
from collector.config.press import (
    STROKE_TRIGGER,
    AnyPlcConfig,
    CommandKeyConfig,
    CommandsConfig,
    PressConfig,
    PressTelemetryConfig,
    WorkflowConfig,
    to_workflow_settings,
    workflow_settings_for,
)
from collector.config.site import (
    PASSWORD_ENV,
    BrokerConfig,
    BrokerTlsConfig,
    BufferConfig,
    CollectorConfig,
    MetricsConfig,
    ScreenConfig,
    SiteConfig,
    SparkplugConfig,
    TelemetryConfig,
    is_loopback,
)
from drivers.gauge.config import PRESET_LINE, GaugeConfig

__all__ = [
    "BIT_AREAS",
    "COLLECTOR_FILE",
    "INTEGER_TYPES",
    "OPCUA_PASSWORD_ENV",
    "PASSWORD_ENV",
    "PLANS_DIR",
    "PRESET_LINE",
    "PRESSES_DIR",
    "ROLE_TYPES",
    "RTU_PROTOCOLS",
    "RTU_SERIAL_KEYS",
    "STROKE_TRIGGER",
    "TYPE_WIDTH",
    "AnyPlcConfig",
    "BrokerConfig",
    "BrokerTlsConfig",
    "BufferConfig",
    "CapabilityConfig",
    "CharacteristicConfig",
    "CollectorConfig",
    "CommandKeyConfig",
    "CommandsConfig",
    "ConfigError",
    "ConfigProblem",
    "FirstArticleConfig",
    "GaugeConfig",
    "LoadedConfig",
    "MetricsConfig",
    "OpcuaPlcConfig",
    "OpcuaTagConfig",
    "PatrolConfig",
    "PlanConfig",
    "PlcConfig",
    "PressConfig",
    "PressTelemetryConfig",
    "ReactionConfig",
    "ReactionPlanConfig",
    "ScreenConfig",
    "SiteConfig",
    "SparkplugConfig",
    "SpcConfig",
    "TagConfig",
    "TelemetryConfig",
    "WorkflowConfig",
    "check",
    "is_loopback",
    "load_config",
    "load_press_file",
    "revision_key",
    "summary",
    "to_plan",
    "to_workflow_settings",
    "workflow_settings_for",
]
