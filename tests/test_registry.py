"""The driver registry is the one place protocols are named: the config's vocabularies,
the daemon's drivers, the probes and the demo's simulators all follow from it."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import ClassVar, Literal, get_args

import pytest

from collector import domain
from collector.config import load_config, summary
from collector.config.loader import _check_buses
from collector.config.press import PLC_MODELS, PressConfig, workflow_settings_for
from collector.outputs import PressOutputs
from collector.sparkplug.setup import device_tags
from collector.telemetry_filter import TelemetryFilter
from drivers.config_base import ConfigModel
from drivers.gauge.config import PRESET_LINE, GaugeConfig
from drivers.gauge.presets import PRESETS
from drivers.registry import (
    BuildContext,
    Plugin,
    all_plugins,
    gauge_plugin,
    plc_plugin,
    plc_protocols,
    register,
)
from sim.plc import SIMULATORS


def test_every_protocol_has_its_config_model_and_only_its_own() -> None:
    plc = [p for p in all_plugins() if p.kind == "plc"]
    assert {p.name for p in plc} == set(PLC_MODELS)
    for plugin in plc:
        model = PLC_MODELS[plugin.name]
        assert get_args(model.model_fields["protocol"].annotation) == plugin.protocols
    assert plc_protocols() == ("modbus_tcp", "modbus_rtu", "modbus_rtu_tcp", "opcua")


def test_the_union_picks_the_model_by_the_registry() -> None:
    base = {"id": "p1", "plc": {"host": "h", "tags": [{"name": "s", "address": 0}]}}
    assert type(PressConfig.model_validate(base).plc) is PLC_MODELS["modbus"]
    opcua = {"id": "p1", "plc": {"protocol": "opcua", "endpoint": "opc.tcp://h:4840",
                                 "tags": [{"name": "s", "node": "nsu=urn:x;s=S"}]}}
    assert type(PressConfig.model_validate(opcua).plc) is PLC_MODELS["opcua"]


def test_gauge_vocabulary_is_the_families() -> None:
    assert get_args(GaugeConfig.model_fields["preset"].annotation) == tuple(PRESETS)
    for name, preset in PRESETS.items():
        line = PRESET_LINE[name]
        assert (line["baudrate"], line["bytesize"], line["parity"], line["stopbits"]) == (
            preset.baudrate, preset.bytesize, preset.parity, preset.stopbits)
        assert preset.format is not None  # every family formats its own records (sim)


def test_every_plugin_offers_what_the_collector_calls() -> None:
    for plugin in all_plugins():
        implementation = plugin.load()
        for name in ("build", "summary", "add_probe_commands"):
            assert callable(getattr(implementation, name)), (plugin.name, name)
        if plugin.kind == "plc":
            assert inspect.iscoroutinefunction(implementation.probe_press)
            assert plugin.name in SIMULATORS  # the demo can run every protocol
    assert gauge_plugin().name == "gauge"


def test_a_protocol_claimed_twice_is_refused() -> None:
    with pytest.raises(ValueError, match="already served by 'modbus'"):
        register(Plugin("other", "plc", "x", "drivers.modbus.plugin", ("modbus_tcp",)))
    with pytest.raises(KeyError, match="allowed: modbus_tcp, modbus_rtu, modbus_rtu_tcp, opcua"):
        plc_plugin("profinet")


def test_built_plc_drivers_follow_the_driver_protocol() -> None:
    """Built from config through the registry: run, stats, online, read_once, write."""
    config = PressConfig.model_validate(
        {"id": "p1", "plc": {"host": "127.0.0.1", "tags": [{"name": "s", "address": 0}]}})
    driver = plc_plugin(config.plc.protocol).load().build("p1/plc", config.plc,
                                                           BuildContext())
    for name in ("run", "read_once", "write"):
        assert inspect.iscoroutinefunction(getattr(driver, name))
    assert driver.online is None and driver.stats["polls"] == 0


class _BareTag(ConfigModel):
    name: str
    role: Literal[domain.ROLES] | None = None  # type: ignore[valid-type]
    true_values: list[int | str] | None = None  # the role layer's keys
    true_bit: int | None = None
    enum: list[str] | None = None


class _BarePlc(ConfigModel):
    """A ``[plc]`` model with only what docs/DESIGN.md "How to add a protocol" asks of
    one (protocol, tags, ``resolve_paths``, ``bus_key``, ``shared_line_keys``): no
    ``[[plc.outputs]]``, no per-tag publish keys. (host, port, unit, poll_interval_ms:
    what the Modbus plugin's summary, borrowed here, prints.)"""

    protocol: Literal["modbus_tcp"] = "modbus_tcp"
    host: str = "127.0.0.1"
    port: int = 502
    unit: int = 1
    poll_interval_ms: int = 100
    tags: list[_BareTag]
    shared_line_keys: ClassVar[tuple[str, ...]] = ()

    def resolve_paths(self, config_dir: Path) -> None:
        pass

    def bus_key(self) -> str | None:
        return None


def test_the_collector_needs_no_more_of_a_plc_model_than_the_how_to_names() -> None:
    """check's summary, the bus check, the workflow settings, the telemetry filter, the
    outputs and Sparkplug read a new protocol's [plc] model through the how-to's
    contract only (issue 13: ``check`` crashed on a model without ``outputs``)."""
    config = load_config(Path(__file__).resolve().parent.parent / "config")
    tags = [_BareTag(name="strokes", role="stroke_count"),
            _BareTag(name="run", role="running", true_values=[1])]
    press = config.presses["p1"].model_copy(update={"plc": _BarePlc(tags=tags),
                                                    "gauges": []})
    config.presses["p1"] = press
    line = next(x for x in summary(config).splitlines() if x.startswith("  press p1"))
    assert "2 tags (roles: stroke_count, running)" in line and "outputs" not in line
    assert _check_buses(config.presses, config.press_files) == []
    assert workflow_settings_for(press).role_maps["running"] is not None
    assert TelemetryFilter.from_config(press) is None
    assert PressOutputs.for_press(None, press.plc) is None  # type: ignore[arg-type]
    assert device_tags([press]) == {"p1": [("strokes", None), ("run", None)]}
