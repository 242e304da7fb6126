"""The driver registry is the one place protocols are named: the config's vocabularies,
the daemon's drivers, the probes and the demo's simulators all follow from it."""

from __future__ import annotations

import inspect
from typing import get_args

import pytest

from collector.config.press import PLC_MODELS, PressConfig
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
