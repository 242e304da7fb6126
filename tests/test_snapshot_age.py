"""The restart snapshot is written at every event and state change, and otherwise at most
every SNAPSHOT_EVERY_S (collector/press.py): a restart from a snapshot older than the last
polls still counts every stroke, because the strokes made since come from the PLC's own
counter. Real buffer file, the example press p1."""

from __future__ import annotations

import asyncio
from pathlib import Path

from collector import press as press_module
from collector.config import load_config, to_workflow_settings
from collector.messages import Topics
from collector.press import PressRuntime, snapshot_key
from collector.press_drivers import role_tags
from sim.demo import REPO_CONFIG
from tests.test_screen import ROOT, Press


def test_a_restart_from_an_older_snapshot_counts_every_stroke(tmp_path: Path) -> None:
    assert press_module.SNAPSHOT_EVERY_S >= 1.0  # the polls below all fall inside it
    p = Press(tmp_path / "buffer.sqlite")
    try:
        p.poll()
        asyncio.run(p.outbox.flush())
        snap_counter = p.outbox.get_kv(snapshot_key("p1"))["counter"]
        for _ in range(7):
            p.poll(strokes=1)  # no event: no new snapshot within SNAPSHOT_EVERY_S
        asyncio.run(p.outbox.flush())
        assert p.outbox.get_kv(snapshot_key("p1"))["counter"] == snap_counter  # older
        before = p.runtime.workflow.context()["stroke_count"]
        config = load_config(REPO_CONFIG)
        p1 = config.presses["p1"]
        p.runtime = PressRuntime("p1", role_tags(p1), to_workflow_settings(p1.workflow),
                                 config.plans, p.outbox, Topics(ROOT, "h1"))  # restart
        p.poll(strokes=3)  # the PLC counted on while the collector was down
        assert p.runtime.workflow.context()["stroke_count"] == before + 3
    finally:
        p.outbox.close()
