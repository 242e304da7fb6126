"""Fault test 2: the daemon process killed with SIGKILL ten times at random moments
during a stream, five times with the broker up and five with it down.

The daemon runs as ``python -m collector.cli run --config-dir ...`` against press
simulators and gauge ptys run by the test, a real Mosquitto and a persistent subscriber.
After the last restart every record the daemon committed (the buffer file is the
witness) must arrive, first copies in seq order without gaps; duplicates must be exact
resends (same message id) and no more than one in-flight window per interruption.
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import orjson

from buffer.store import Outbox
from sim.demo import REPO_CONFIG
from sim.gauge import GaugeSimulator
from sim.local_broker import LocalBroker
from sim.press import PressSimulator
from tests.support.subscriber import Subscriber

REPO = Path(__file__).resolve().parents[1]
PRESSES = {"p1": ("BRK-100", 7, "L2411-01"), "p2": ("BRK-200", 12, "L2411-07")}
WINDOW = 20
KILLS = 10


def write_config(dst: Path, broker_port: int, sims: dict[str, PressSimulator],
                 gauges: dict[str, Path]) -> Path:
    shutil.copytree(REPO_CONFIG, dst)
    for extra in set(p.stem for p in (dst / "presses").glob("*.toml")) - set(sims):
        (dst / "presses" / f"{extra}.toml").unlink()
    for press, sim in sims.items():
        path = dst / "presses" / f"{press}.toml"
        text = re.sub(r"(?m)^port = \d+", f"port = {sim.port}", path.read_text())
        for gid, link in gauges.items():
            if gid.startswith(press + "-"):
                text = text.replace(f"/tmp/press-collector-demo/{gid}", str(link))
        path.write_text(text)
    toml = dst / "collector.toml"
    text = toml.read_text()
    text = re.sub(r"(?m)^port = 1883", f"port = {broker_port}", text)
    text = re.sub(r"(?m)^max_inflight = \d+", f"max_inflight = {WINDOW}", text)
    text = re.sub(r"(?m)^reconnect_max_s = [0-9.]+", "reconnect_max_s = 1.0", text)
    text = text.replace('# host_id = "line-pc-1"', 'host_id = "kill-test"')
    toml.write_text(text)
    return dst


def spawn(config_dir: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, "-m", "collector.cli", "run", "--config-dir",
                                 str(config_dir)], cwd=REPO, env=env, stdout=out,
                                stderr=subprocess.STDOUT)


async def test_sigkill_ten_times_every_committed_record_arrives(tmp_path: Path,
                                                                broker: LocalBroker) -> None:
    rng = random.Random(4)
    sims: dict[str, PressSimulator] = {}
    gauge_sims: list[GaugeSimulator] = []
    links: dict[str, Path] = {}
    for press, (part, die, lot) in PRESSES.items():
        sim = PressSimulator(host="127.0.0.1", port=0, part=part, die=die, lot=lot, spm=120,
                             seed=1)
        await sim.start()
        sim.set_running(True)
        sims[press] = sim
        for g in ("g1", "g2"):
            links[f"{press}-{g}"] = tmp_path / f"{press}-{g}"
            gsim = GaugeSimulator(str(links[f"{press}-{g}"]))
            gsim.open()
            gauge_sims.append(gsim)
    config_dir = write_config(tmp_path / "cfg", broker.port, sims, links)
    log = tmp_path / "daemon.log"
    root = "demo-plant/press-shop"
    sub = Subscriber("127.0.0.1", broker.port, [f"{root}/+/events/#", f"{root}/+/telemetry",
                                                     f"{root}/+/telemetry/replay"],
                     client_id="kill-test-sub").start()
    proc: subprocess.Popen[bytes] | None = None
    started = time.monotonic()
    try:
        for i in range(KILLS):
            if i == KILLS // 2:
                broker.stop()  # the second half: killed while the broker is away
            proc = spawn(config_dir, log)
            await asyncio.sleep(rng.uniform(0.4, 2.0))  # a random moment of its life
            proc.send_signal(signal.SIGKILL)
            await asyncio.to_thread(proc.wait, 10)
        broker.start()
        proc = spawn(config_dir, log)
        await sub.wait_for(lambda m: any(x.topic.endswith("/telemetry") for x in m
                                         if x.at > time.monotonic() - 0.5), 30)
        await asyncio.sleep(1.0)  # a little more stream after the last restart
        proc.send_signal(signal.SIGTERM)  # graceful: flush, deliver, 'offline'
        assert await asyncio.to_thread(proc.wait, 20) == 0
        proc = None
        with Outbox.open(config_dir / "buffer.sqlite", readonly=True) as ro:
            stats = ro.stats()
        assert stats["pending"] == 0, "the last run delivered everything committed"
        committed = {tuple(k.split("/")): v["last_seq"] for k, v in stats["streams"].items()
                     if k.split("/")[1] in ("events", "telemetry")}
        assert set(committed) == {(p, s) for p in PRESSES for s in ("events", "telemetry")}

        def arrived(msgs) -> dict[tuple[str, str], list[dict]]:
            out: dict[tuple[str, str], list[dict]] = defaultdict(list)
            for m in msgs:
                p = orjson.loads(m.payload)
                p["_replay"] = m.topic.endswith("/replay")
                out[(p["press"], p["stream"])].append(p)
            return out

        await sub.wait_for(lambda m: all(
            max((p["seq"] for p in arrived(m)[k]), default=0) >= last
            for k, last in committed.items()), 20)
        got = arrived(sub.snapshot())
        sent = received = dups = 0
        for key, last in committed.items():
            first: dict[int, str] = {}
            order = []
            for p in got[key]:
                if p["seq"] in first:
                    assert first[p["seq"]] == p["id"], f"{key} seq {p['seq']}: another record"
                    dups += 1
                else:
                    first[p["seq"]] = p["id"]
                    order.append(p["seq"])
            # telemetry after a backlog: live and /replay topics, each in order on its own
            for replay in (False, True):
                one = list(dict.fromkeys(p["seq"] for p in got[key] if p["_replay"] == replay))
                assert one == sorted(one), f"{key} (replay={replay}): reordered"
            if key[1] == "telemetry":
                order.sort()
            assert order == list(range(1, last + 1)), f"{key}: gaps or reordering"
            sent += last
            received += len(got[key])
        # each kill (and each broker outage) can resend at most one window
        assert dups <= (KILLS + 2) * WINDOW
        print(f"\nfault 2 ({KILLS} SIGKILLs, half with the broker down, "
              f"{time.monotonic() - started:.0f} s): {sent} records committed, {received} "
              f"received, {dups} duplicates (same id; bound {(KILLS + 2) * WINDOW})")
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        sub.stop()
        for sim in sims.values():
            await sim.stop()
        for g in gauge_sims:
            g.close()
