"""The CLI as an operator uses it: `run` as a real process, SIGTERM, `buffer stats`."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import orjson

from sim.gauge import GaugeSimulator
from sim.local_broker import LocalBroker
from sim.press import PressSimulator
from tests.support.configdir import write_config_dir
from tests.support.subscriber import Subscriber

ROOT = "demo-plant/press-shop"


def cli(*args: str, **kwargs) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "collector.cli", *args], capture_output=True,
                          text=True, timeout=60, **kwargs)


async def test_run_publishes_and_stops_cleanly_on_sigterm(tmp_path: Path,
                                                          broker: LocalBroker) -> None:
    sim = PressSimulator(host="127.0.0.1", port=0, part="BRK-100", die=7, lot="L1", spm=120)
    await sim.start()
    sim.set_running(True)
    gauges = [GaugeSimulator(str(tmp_path / f"p1-{g}")) for g in ("g1", "g2")]
    for g in gauges:
        g.open()
    config_dir = write_config_dir(tmp_path / "etc", broker.port, {"p1": sim.port}, tmp_path)
    status_topic = f"{ROOT}/_collector/line-test/status"
    collector_toml = config_dir / "collector.toml"
    collector_toml.write_text(collector_toml.read_text().replace(
        "[site]\n", '[site]\nhost_id = "line-test"\n', 1))
    with Subscriber("127.0.0.1", broker.port, [f"{ROOT}/#"]) as sub:
        proc = subprocess.Popen([sys.executable, "-m", "collector.cli", "run", "--config-dir",
                                 str(config_dir)], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        try:
            await sub.wait_for(
                lambda msgs: any(m.topic.endswith("/events/setup") for m in msgs), 20)
            await sub.wait_for(lambda msgs: sum(m.topic.endswith("/telemetry") for m in msgs) >= 3)
        finally:
            proc.send_signal(signal.SIGTERM)
            output, _ = proc.communicate(timeout=20)
        assert proc.returncode == 0, output
        await sub.wait_for(lambda msgs: any(
            m.topic == status_topic and orjson.loads(m.payload)["status"] == "offline"
            for m in msgs))
    await sim.stop()
    for g in gauges:
        g.close()
    assert "Traceback" not in output

    stats = cli("buffer", "stats", str(config_dir / "buffer.sqlite"))
    assert stats.returncode == 0, stats.stderr
    figures = json.loads(stats.stdout)
    assert figures["pending"] == 0  # SIGTERM drained the outbox before exiting
    assert figures["rows"] >= 4


def test_buffer_stats_refuses_a_foreign_file(tmp_path: Path) -> None:
    foreign = tmp_path / "notes.sqlite"
    foreign.write_text("not a database")
    result = cli("buffer", "stats", str(foreign))
    assert result.returncode == 2
    assert result.stderr.startswith(f"{foreign}: not an SQLite file; refusing to use or overwrite")
    assert "Traceback" not in result.stderr
    assert foreign.read_text() == "not a database"
