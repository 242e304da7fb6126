"""Telemetry publish options: on_change, deadband (absolute / percent), publish_every.

The filter is pure; the runtime test runs it through PressRuntime into a real SQLite
outbox and checks the one promise that matters: every polled value is in the buffer,
only the selected ones are published, and the published payload honours its schema.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import orjson
import pytest

from buffer.store import Outbox
from collector.config import PressConfig
from collector.contract import validate_message
from collector.domain import WorkflowSettings
from collector.messages import Topics
from collector.press import TELEMETRY_RAW_STREAM, PressRuntime
from collector.telemetry_filter import TagRule, TelemetryFilter
from drivers.base import PollResult

ROOT = "plant/press-shop"


def press_config(telemetry: dict | None = None, **tag_options) -> PressConfig:
    tags = [{"name": "force", "address": 0, **tag_options},
            {"name": "temp", "address": 1}]
    data = {"id": "p1", "plc": {"host": "127.0.0.1", "tags": tags}}
    if telemetry is not None:
        data["telemetry"] = telemetry
    return PressConfig.model_validate(data)


def test_defaults_install_no_filter() -> None:
    assert TelemetryFilter.from_config(press_config()) is None


def test_on_change_publishes_first_value_then_changes_only() -> None:
    f = TelemetryFilter({"a": TagRule(on_change=True)})
    assert f.select({"a": 1, "b": 5}) == {"a": 1, "b": 5}
    assert f.select({"a": 1, "b": 5}) == {"b": 5}
    assert f.select({"a": 2, "b": 5}) == {"a": 2, "b": 5}
    assert f.select({"a": True}) == {"a": True}  # bool/str compare by equality


def test_absolute_deadband_measures_from_last_published() -> None:
    f = TelemetryFilter({"a": TagRule(on_change=True, deadband=1.0)})
    assert f.select({"a": 10.0}) == {"a": 10.0}
    assert f.select({"a": 10.9}) == {}
    assert f.select({"a": 11.5}) == {"a": 11.5}  # 1.5 from 10.0 (not 0.6 from 10.9)
    assert f.select({"a": 10.6}) == {}
    assert f.select({"a": 10.4}) == {"a": 10.4}


def test_percent_deadband_and_the_larger_threshold_wins() -> None:
    f = TelemetryFilter({"a": TagRule(on_change=True, deadband_pct=10.0),
                         "b": TagRule(on_change=True, deadband=0.5, deadband_pct=1.0)})
    f.select({"a": 200, "b": 100})
    assert f.select({"a": 219, "b": 100.9}) == {}  # 19 <= 20; 0.9 <= max(0.5, 1.0)
    assert f.select({"a": 221, "b": 101.1}) == {"a": 221, "b": 101.1}


def test_publish_every_is_a_multiple_of_the_poll() -> None:
    f = TelemetryFilter({"slow": TagRule(every=3)})
    published = [f.select({"slow": i, "fast": i}) for i in range(7)]
    assert [("slow" in p) for p in published] == [True, False, False, True, False, False, True]
    assert all("fast" in p for p in published)


def test_press_defaults_and_tag_overrides() -> None:
    f = TelemetryFilter.from_config(press_config({"on_change": True, "publish_every": 2},
                                                 on_change=False, publish_every=1))
    assert f is not None
    assert f.rules["force"] == TagRule(every=1, on_change=False)
    assert f.rules["temp"] == TagRule(every=2, on_change=True)
    assert TelemetryFilter.from_config(press_config(deadband=2.0)).rules["force"].on_change


@pytest.fixture
def outbox(tmp_path: Path):
    box = Outbox.open(tmp_path / "buffer.sqlite", commit_interval_s=0.005)
    yield box
    box.close()


def rows(path: Path) -> list[tuple[str, int, bytes, float | None]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT stream, seq, payload, delivered FROM messages "
                            "WHERE stream LIKE 'telemetry%' ORDER BY id").fetchall()
    finally:
        conn.close()


def test_runtime_keeps_every_value_and_publishes_the_selection(outbox: Outbox,
                                                               tmp_path: Path) -> None:
    topics = Topics(ROOT, "host1")
    flt = TelemetryFilter.from_config(press_config(on_change=True))
    runtime = PressRuntime("p1", {}, WorkflowSettings(), {}, outbox, topics,
                           telemetry_filter=flt)
    for i, force in enumerate((5, 5, 7)):
        runtime.sink(PollResult("p1/plc", 1_764_000_000.0 + i, {"force": force, "temp": 20 + i},
                                scheduled=10.0 + i, started=10.001 + i, late_polls=i))
    outbox.flush_sync(5)
    got = rows(tmp_path / "buffer.sqlite")
    published = [orjson.loads(p) for s, _, p, d in got if s == "telemetry" and d is None]
    history = [orjson.loads(p) for s, _, p, d in got if s == TELEMETRY_RAW_STREAM]
    # poll 1 publishes everything (one row, no raw copy); poll 2 holds 'force' back
    assert [m["data"]["values"] for m in published] == [
        {"force": 5, "temp": 20}, {"temp": 21}, {"force": 7, "temp": 22}]
    assert [m["seq"] for m in published] == [1, 2, 3]  # no gaps for subscribers
    assert [m["data"].get("filtered") for m in published] == [None, True, None]
    assert [m["data"]["values"] for m in history] == [{"force": 5, "temp": 21}]
    assert all(d is not None for s, _, _, d in got if s == TELEMETRY_RAW_STREAM)
    for m in published:
        assert validate_message(f"{ROOT}/p1/telemetry", ROOT, m) == []
    assert runtime.stats["late_polls"] == 2
    assert runtime.timing.count == 3 and runtime.timing.max_ms == pytest.approx(1.0, abs=0.01)


def test_an_opcua_press_takes_the_press_defaults() -> None:
    """OPC UA tags have no per-tag publish keys; the filter must not need them."""
    from collector.config import load_config
    from sim.demo import REPO_CONFIG

    p4 = load_config(REPO_CONFIG).presses["p4"]
    assert p4.plc.protocol == "opcua"
    assert TelemetryFilter.from_config(p4) is None  # every tag on every poll, as configured
