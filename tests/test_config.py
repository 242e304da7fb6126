"""Config loading: the shipped examples, the error cases in tests/config_cases/, converters."""

from __future__ import annotations

import re
import shutil
from decimal import Decimal
from pathlib import Path

import pytest

from collector import domain
from collector.config import (
    CharacteristicConfig,
    ConfigError,
    ConfigProblem,
    GaugeConfig,
    PlanConfig,
    TagConfig,
    WorkflowConfig,
    check,
    load_config,
    revision_key,
    summary,
    to_plan,
    to_workflow_settings,
)

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "config"
CASES = Path(__file__).resolve().parent / "config_cases"
BASE = CASES / "_base"
CASE_DIRS = sorted(p for p in CASES.iterdir() if p.is_dir() and not p.name.startswith("_")
                   and not (p / "startup.err").exists())
# cases the loader accepts but the start-up check refuses (`check` and `run` alike)
STARTUP_CASES = sorted(p for p in CASES.iterdir() if (p / "startup.err").is_file())
CASE_META = {"expected.err", "startup.err", "remove"}


def build_case(case: Path, target: Path) -> Path:
    """_base, then the case's files on top, then the paths listed in `remove` deleted."""
    shutil.copytree(BASE, target)
    for src in case.rglob("*"):
        rel = src.relative_to(case)
        if src.is_file() and rel.as_posix() not in CASE_META:
            (target / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, target / rel)
    remove = case / "remove"
    if remove.exists():
        for line in remove.read_text(encoding="utf-8").splitlines():
            if line.strip():
                (target / line.strip()).unlink()
    return target


def expected_lines(case: Path) -> list[str]:
    text = (case / "expected.err").read_text(encoding="utf-8")
    return [line for line in text.splitlines() if line.strip()]


# --------------------------------------------------------------------------- examples

def test_examples_validate() -> None:
    assert check(EXAMPLES) == []
    cfg = load_config(EXAMPLES)
    assert sorted(cfg.presses) == ["p1", "p2", "p3", "p4"]
    assert cfg.collector.site.name == "demo-plant"
    assert cfg.collector.site.topic_root == "demo-plant/press-shop"
    assert (cfg.collector.broker.host, cfg.collector.broker.port) == ("127.0.0.1", 1883)
    # relative buffer path resolved against the config dir
    assert Path(cfg.collector.buffer.path) == (EXAMPLES / "buffer.sqlite").resolve()


def test_examples_match_simulator_register_map() -> None:
    cfg = load_config(EXAMPLES)
    modbus = [p for p in cfg.presses.values() if p.plc.protocol == "modbus_tcp"]
    assert len(modbus) == 3  # p4 speaks OPC UA (tests/test_opcua.py checks it)
    for n, press in enumerate(sorted(modbus, key=lambda p: p.id), start=1):
        plc = press.plc
        assert (plc.host, plc.port, plc.unit, plc.poll_interval_ms) == (
            "127.0.0.1", 5020 + n, 1, 100)
        tags = {t.name: t for t in plc.tags}
        assert plc.role_tags() == {
            "strokes": "stroke_count", "die_id": "die_id", "part_number": "part_number",
            "material_lot": "material_lot", "setup_mode": "setup_mode",
            "running": "running", "repair": "repair"}
        strokes = tags["strokes"]
        assert (strokes.area, strokes.address, strokes.type, strokes.order) == (
            "holding", 0, "uint32", "ABCD")
        assert (tags["die_id"].address, tags["die_id"].type) == (2, "uint16")
        assert (tags["spm"].address, tags["spm"].type) == (3, "uint16")
        for name, address in (("part_number", 10), ("material_lot", 20)):
            assert (tags[name].address, tags[name].type, tags[name].length) == (
                address, "string", 8)
        assert (tags["tonnage"].address, tags["tonnage"].type, tags["tonnage"].order) == (
            30, "float32", "CDAB")
        temp = tags["die_temp_c"]
        assert (temp.address, temp.type, temp.scale) == (32, "int16", 0.1)
        for name, address in (("setup_mode", 0), ("running", 1), ("repair", 2)):
            assert (tags[name].area, tags[name].address, tags[name].type) == (
                "coil", address, "bool")
        assert [g.id for g in press.gauges] == ["g1", "g2"]


def test_example_gauges() -> None:
    cfg = load_config(EXAMPLES)
    g1 = cfg.presses["p1"].gauges[0]
    assert g1.port == "/tmp/press-collector-demo/p1-g1"
    assert (g1.preset, g1.baudrate, g1.bytesize, g1.parity, g1.stopbits, g1.terminator) == (
        "mitutoyo", 9600, 8, "N", 1, "CR")
    assert all(g.preset == "mitutoyo" for g in cfg.presses["p2"].gauges)
    for gauge in cfg.presses["p3"].gauges:
        assert gauge.preset == "generic" and gauge.terminator == "CRLF"
        match = re.match(gauge.pattern, "4.285 mm")
        assert match and match["value"] == "4.285" and match["unit"] == "mm"


def test_example_plans_resolve() -> None:
    cfg = load_config(EXAMPLES)
    assert sorted(cfg.plans) == ["BRK-100", "BRK-200", "CLP-300"]
    brk = cfg.plans["BRK-100"]
    assert brk.revision == "B" and len(brk.characteristics) == 3
    c1, c2, c3 = brk.characteristics
    assert (c1.nominal, c1.lsl, c1.usl, c1.gauge) == (
        Decimal("25.00"), Decimal("24.95"), Decimal("25.05"), "g1")
    assert (c2.lsl, c2.usl, c2.gauge) == (Decimal("12.40"), Decimal("12.60"), "g2")
    assert (c3.lsl, c3.usl, c3.gauge) == (None, Decimal("0.05"), "g2")
    assert (cfg.plans["BRK-200"].revision, len(cfg.plans["BRK-200"].characteristics)) == ("A", 2)
    assert (cfg.plans["CLP-300"].revision, len(cfg.plans["CLP-300"].characteristics)) == ("A", 2)
    gauges = {g.id for p in cfg.presses.values() for g in p.gauges}
    for plan in cfg.plans.values():
        assert all(c.gauge in gauges for c in plan.characteristics)


def test_summary_reports_counts() -> None:
    text = summary(EXAMPLES)
    assert "4 presses, 37 tags, 8 gauges, 3 plans" in text
    for press in ("p1", "p2", "p3", "p4"):
        assert f"press {press}" in text
    assert "plan BRK-100 rev B: 3 characteristics" in text


# --------------------------------------------------------------------------- error cases

def test_enough_cases() -> None:
    assert len(CASE_DIRS) >= 18
    for case in CASE_DIRS:
        assert (case / "expected.err").is_file(), f"{case.name} has no expected.err"


def test_base_is_valid() -> None:
    assert check(BASE) == []


@pytest.mark.parametrize("case", CASE_DIRS, ids=[c.name for c in CASE_DIRS])
def test_error_case(case: Path, tmp_path: Path) -> None:
    config_dir = build_case(case, tmp_path / "cfg")
    expected = expected_lines(case)
    assert expected, f"{case.name}: expected.err is empty"
    assert check(config_dir) == expected
    with pytest.raises(ConfigError) as info:
        load_config(config_dir)
    assert [str(p) for p in info.value.problems] == expected
    assert str(info.value) == "\n".join(expected)


@pytest.mark.parametrize("case", STARTUP_CASES, ids=[c.name for c in STARTUP_CASES])
def test_startup_case(case: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from collector.security import startup_problems

    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    config_dir = build_case(case, tmp_path / "cfg")
    text = (case / "startup.err").read_text(encoding="utf-8")
    expected = [line.replace("{config_dir}", str(config_dir))
                for line in text.splitlines() if line.strip()]
    assert expected, f"{case.name}: startup.err is empty"
    assert check(config_dir) == []
    assert startup_problems(load_config(config_dir)) == expected


def test_missing_config_dir(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    assert check(missing) == [f"{missing}: config directory not found"]


# --------------------------------------------------------------------------- problems

def test_problem_str() -> None:
    problem = ConfigProblem("presses/p1.toml", "plc.tags[2].type", "bad")
    assert str(problem) == "presses/p1.toml: plc.tags[2].type: bad"
    assert str(ConfigProblem("collector.toml", "", "file not found")) == (
        "collector.toml: file not found")


# --------------------------------------------------------------------------- converters

def plan(revision: str = "A", **limits: object) -> PlanConfig:
    char = {"id": "C1", "name": "Width", **limits}
    return PlanConfig.model_validate({"part_number": "X-1", "revision": revision,
                                      "characteristics": [char]})


def test_limits_from_tolerances_are_exact_decimals() -> None:
    ch = to_plan(plan(nominal="25.00", lower_tol="-0.05", upper_tol="0.05")).characteristics[0]
    assert (ch.nominal, ch.lsl, ch.usl) == (Decimal("25.00"), Decimal("24.95"), Decimal("25.05"))
    assert str(ch.lsl) == "24.95"


def test_limits_from_float_numbers() -> None:
    ch = to_plan(plan(nominal=12.5, lower_tol=-0.1, upper_tol=0.1)).characteristics[0]
    assert (ch.lsl, ch.usl) == (Decimal("12.4"), Decimal("12.6"))


def test_absolute_limits_and_midpoint_nominal() -> None:
    ch = to_plan(plan(lsl="1.45", usl="1.55")).characteristics[0]
    assert (ch.nominal, ch.lsl, ch.usl) == (Decimal("1.50"), Decimal("1.45"), Decimal("1.55"))


def test_one_sided_limit() -> None:
    ch = to_plan(plan(nominal="0", usl="0.05")).characteristics[0]
    assert (ch.lsl, ch.usl) == (None, Decimal("0.05"))


def test_to_plan_fields() -> None:
    cfg = PlanConfig.model_validate({
        "part_number": "P", "revision": "C", "description": "d",
        "characteristics": [{"id": "C1", "nominal": 1, "upper_tol": "0.1", "gauge": "g1",
                             "channel": 2, "class": "critical", "unit": "um"}]})
    result = to_plan(cfg)
    assert isinstance(result, domain.Plan)
    assert (result.part_number, result.revision, result.description) == ("P", "C", "d")
    ch = result.characteristics[0]
    assert (ch.name, ch.gauge, ch.channel, ch.char_class, ch.unit) == (
        "C1", "g1", 2, "critical", "um")


def test_to_workflow_settings() -> None:
    settings = to_workflow_settings(WorkflowConfig(long_stop_min=30, stopped_after_s=45,
                                                   hold_on_measurement_fail=True))
    assert settings == domain.WorkflowSettings(long_stop_s=1800.0, stopped_after_s=45.0,
                                               hold_on_measurement_fail=True,
                                               max_strokes_per_min=2000.0)
    gap = to_workflow_settings(WorkflowConfig(inspection_100_max_unmeasured=0))
    assert settings.max_strokes_per_min == 2000.0  # the product default (docs/roles.md)
    assert gap.inspection_100_max_unmeasured == 0


def test_revision_order_is_natural() -> None:
    assert sorted(["B", "A", "C"], key=revision_key) == ["A", "B", "C"]
    assert sorted(["10", "9", "2"], key=revision_key) == ["2", "9", "10"]
    assert sorted(["A10", "A9", "A"], key=revision_key) == ["A", "A9", "A10"]


def write_plan(path: Path, revision: str, nominal: str) -> None:
    path.write_text(f'part_number = "BRK-100"\nrevision = "{revision}"\n\n'
                    f'[[characteristics]]\nid = "C1"\nnominal = "{nominal}"\n'
                    'lower_tol = "-0.05"\nupper_tol = "0.05"\n', encoding="utf-8")


def test_highest_revision_wins(tmp_path: Path) -> None:
    config_dir = tmp_path / "cfg"
    shutil.copytree(BASE, config_dir)
    (config_dir / "plans" / "brk-100.toml").unlink()
    # file names deliberately in the opposite order of the revisions
    write_plan(config_dir / "plans" / "a.toml", "10", "3.00")
    write_plan(config_dir / "plans" / "b.toml", "9", "2.00")
    write_plan(config_dir / "plans" / "c.toml", "2", "1.00")
    cfg = load_config(config_dir)
    assert cfg.plans["BRK-100"].revision == "10"
    assert cfg.plans["BRK-100"].characteristics[0].nominal == Decimal("3.00")
    assert sorted(cfg.plans_all) == [("BRK-100", "10"), ("BRK-100", "2"), ("BRK-100", "9")]


# --------------------------------------------------------------------------- models

def test_tag_fields_match_tagspec_contract() -> None:
    assert list(TagConfig.model_fields)[:9] == ["name", "area", "address", "type", "order",
                                                "length", "scale", "offset", "role"]
    # the rest are telemetry publish options (collector/telemetry_filter.py), not TagSpec
    assert list(TagConfig.model_fields)[9:] == ["on_change", "deadband", "deadband_pct",
                                                "publish_every",
                                                # role maps (collector/roles.py)
                                                "true_values", "true_bit", "enum"]


def test_tag_type_defaults_by_area() -> None:
    assert TagConfig.model_validate({"name": "x", "area": "coil", "address": 1}).type == "bool"
    assert TagConfig.model_validate({"name": "x", "address": 1}).type == "uint16"


def test_gauge_preset_defaults_can_be_overridden() -> None:
    gauge = GaugeConfig.model_validate({"id": "g1", "port": "/dev/ttyUSB0",
                                        "preset": "mitutoyo", "baudrate": 4800})
    assert (gauge.baudrate, gauge.terminator) == (4800, "CR")


def test_characteristic_accepts_class_alias_only() -> None:
    ch = CharacteristicConfig.model_validate({"id": "C1", "lsl": "1", "usl": "2",
                                              "class": "significant"})
    assert ch.char_class == "significant"


def test_revision_key_takes_unicode_digits_as_text() -> None:
    from collector.config import revision_key

    assert revision_key("B¹")[0] == ((1, 0, "B¹"),)
