"""One bench rig: Mosquitto, simulators and subscriber in their own processes, the daemon
as ``python -m collector.cli run`` in its own process, sampled with psutil.

Everything listens on 127.0.0.1 on free ports; every process is started by us and
stopped through its Popen handle.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from sim.local_broker import LocalBroker
from sim.ports import free_port

REPO = Path(__file__).resolve().parent.parent
PY = sys.executable
ROOT = "bench/pc"
PLAN = REPO / "config" / "plans" / "brk-100.toml"
COMMIT_MS = 2  # the daemon's buffer.commit_interval_ms in bench configs (--commit-ms)
CACHE_MB: int | None = None  # the daemon's buffer.cache_mb (--cache-mb; None: its default)


def wait_for(predicate, timeout: float, what: str, step: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"bench: {what} not ready within {timeout} s")
        time.sleep(step)


def write_config(cfg_dir: Path, ports: list[int], gauges: dict[str, str], broker_port: int,
                 metrics_port: int, poll_ms: int, max_inflight: int = 200,
                 commit_ms: int = 50) -> None:
    """collector.toml + one press file per simulator: 40 load tags (HR 40-79, one block);
    presses with gauges also carry the workflow roles (HR 0-27, one block with the load:
    max_gap 16) so that gauge lines become first_article / measurement events."""
    (cfg_dir / "presses").mkdir(parents=True, exist_ok=True)
    (cfg_dir / "plans").mkdir(exist_ok=True)
    if gauges:  # a plan naming gauges that no press has is a config error
        (cfg_dir / "plans" / PLAN.name).write_text(PLAN.read_text())
    (cfg_dir / "collector.toml").write_text(f"""
[site]
name = "bench"
topic_root = "{ROOT}"
host_id = "bench"

[broker]
host = "127.0.0.1"
port = {broker_port}
max_inflight = {max_inflight}

[buffer]
path = "buffer.sqlite"
commit_interval_ms = {commit_ms}
{f"cache_mb = {CACHE_MB}" if CACHE_MB else ""}

[metrics]
port = {metrics_port}
""")
    for i, port in enumerate(ports, start=1):
        pid = f"p{i}"
        lines = [f'id = "{pid}"', "[plc]", 'host = "127.0.0.1"', f"port = {port}",
                 f"poll_interval_ms = {poll_ms}", "max_gap = 16"]
        press_gauges = {k.split("/")[1]: v for k, v in gauges.items() if k.startswith(f"{pid}/")}
        if press_gauges:
            lines += ['[[plc.tags]]\nname = "strokes"\naddress = 0\ntype = "uint32"\n'
                      'role = "stroke_count"',
                      '[[plc.tags]]\nname = "die_id"\naddress = 2\nrole = "die_id"',
                      '[[plc.tags]]\nname = "setup"\naddress = 4\nrole = "setup_mode"',
                      '[[plc.tags]]\nname = "part_number"\naddress = 10\ntype = "string"\n'
                      'length = 8\nrole = "part_number"',
                      '[[plc.tags]]\nname = "material_lot"\naddress = 20\ntype = "string"\n'
                      'length = 8\nrole = "material_lot"']
        lines += [f'[[plc.tags]]\nname = "load_{k:02d}"\naddress = {40 + k}' for k in range(40)]
        for gid, path in sorted(press_gauges.items()):
            lines.append(f'[[gauges]]\nid = "{gid}"\nport = "{path}"\npreset = "mitutoyo"')
        (cfg_dir / "presses" / f"{pid}.toml").write_text("\n".join(lines) + "\n")


@dataclass
class Samples:
    """CPU and RSS of the daemon process, sampled every ``interval`` s in a thread."""

    proc: psutil.Process
    interval: float = 0.5
    rss: list[tuple[float, int]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> Samples:
        threading.Thread(target=self._run, daemon=True).start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.rss.append((time.time(), self.proc.memory_info().rss))
            except psutil.Error:
                return
            self._stop.wait(self.interval)

    def stop(self) -> None:
        self._stop.set()

    def cpu_s(self) -> float:
        t = self.proc.cpu_times()
        return t.user + t.system

    def rss_peak_mb(self, t0: float = 0.0, t1: float = float("inf")) -> float | None:
        got = [r for t, r in self.rss if t0 <= t <= t1]
        return round(max(got) / 2**20, 1) if got else None

    def rss_range_mb(self, t0: float, t1: float) -> tuple[float, float] | None:
        got = [r for t, r in self.rss if t0 <= t <= t1]
        return (round(min(got) / 2**20, 1), round(max(got) / 2**20, 1)) if got else None


class Rig:
    def __init__(self, workdir: Path, presses: int, poll_ms: int = 100, gauge_presses: int = 0,
                 max_inflight: int = 200, spm: int = 120, commit_ms: int | None = None) -> None:
        self.commit_ms = commit_ms or COMMIT_MS
        self.workdir = workdir
        self.presses = presses
        self.poll_ms = poll_ms
        self.gauge_presses = gauge_presses
        self.max_inflight = max_inflight
        self.spm = spm
        self.cfg_dir = workdir / "config"
        self.broker = LocalBroker(data_dir=workdir / "mosquitto")
        self.metrics_port = free_port()
        self.sims: subprocess.Popen[bytes] | None = None
        self.sub: subprocess.Popen[bytes] | None = None
        self.daemon: subprocess.Popen[bytes] | None = None
        self.samples: Samples | None = None
        self.sub_out = workdir / "sub.tsv"
        self.daemon_started = 0.0
        self.sim_info: dict[str, Any] = {}

    @property
    def buffer_path(self) -> Path:
        return self.cfg_dir / "buffer.sqlite"

    def start_infra(self) -> None:
        if self.workdir.exists():
            shutil.rmtree(self.workdir)
        self.workdir.mkdir(parents=True)
        self.broker.start()
        ready = self.workdir / "sims.ready"
        self.sims = subprocess.Popen(
            [PY, "-m", "bench.sims", "--presses", str(self.presses), "--gauge-presses",
             str(self.gauge_presses), "--gauge-dir", str(self.workdir / "gauges"),
             "--ready", str(ready), "--stats", str(self.workdir / "sims.json"),
             "--spm", str(self.spm)], cwd=REPO)
        wait_for(ready.exists, 30, "simulators")
        self.sim_info = json.loads(ready.read_text())
        write_config(self.cfg_dir, self.sim_info["ports"], self.sim_info["gauges"],
                     self.broker.port, self.metrics_port, self.poll_ms, self.max_inflight,
                     self.commit_ms)
        self.start_sub()

    def start_sub(self) -> None:
        ready = self.workdir / "sub.ready"
        ready.unlink(missing_ok=True)
        self.sub = subprocess.Popen(
            [PY, "-m", "bench.sub", "--port", str(self.broker.port), "--topic", f"{ROOT}/#",
             "--out", str(self.sub_out), "--ready", str(ready)], cwd=REPO)
        wait_for(ready.exists, 15, "subscriber")

    def start_daemon(self, env: dict[str, str] | None = None,
                     wrapper: list[str] | None = None) -> None:
        """``wrapper``: module and arguments that run the daemon's command line in-process
        (``["bench.memprobe", "--out", DIR, "--"]``); default ``collector.cli`` itself."""
        log = open(self.workdir / "daemon.log", "ab")  # noqa: SIM115 - handed to the child
        self.daemon_started = time.time()
        module = wrapper or ["collector.cli"]
        self.daemon = subprocess.Popen(
            [PY, "-m", *module, "--log-level", "WARNING", "run", "--config-dir",
             str(self.cfg_dir)], cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})})
        self.samples = Samples(psutil.Process(self.daemon.pid)).start()

    def health(self) -> dict[str, Any]:
        url = f"http://127.0.0.1:{self.metrics_port}/health"
        with urllib.request.urlopen(url, timeout=10) as resp:
            return json.loads(resp.read())

    def wait_health(self, timeout: float = 30) -> None:
        def ok() -> bool:
            if self.daemon is not None and self.daemon.poll() is not None:
                log = (self.workdir / "daemon.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"bench: the daemon exited ({self.daemon.returncode}):\n{log}")
            try:
                self.health()
                return True
            except OSError:
                return False
        wait_for(ok, timeout, "daemon /health", 0.05)

    def pending(self) -> int:
        """Rows waiting for delivery, from the buffer's counters (no scan)."""
        conn = sqlite3.connect(f"file:{self.buffer_path}?mode=ro", uri=True, timeout=5)
        try:
            return int(conn.execute(
                "SELECT value FROM counters WHERE name='pending'").fetchone()[0])
        finally:
            conn.close()

    def sub_lines(self) -> int:
        try:
            return self.sub_out.stat().st_size
        except OSError:
            return 0

    def stop_sims(self) -> None:
        if self.sims is not None and self.sims.poll() is None:
            self.sims.send_signal(signal.SIGTERM)
            self.sims.wait(30)

    def wait_drained(self, timeout: float = 120) -> None:
        """Until the buffer has nothing pending and the subscriber got nothing for 1 s."""
        deadline = time.monotonic() + timeout
        last, since = -1, time.monotonic()
        while time.monotonic() < deadline:
            size = self.sub_lines()
            if size != last:
                last, since = size, time.monotonic()
            elif time.monotonic() - since > 1.0 and self.pending() == 0:
                return
            time.sleep(0.1)

    def stop_daemon(self) -> None:
        if self.daemon is not None and self.daemon.poll() is None:
            self.daemon.send_signal(signal.SIGTERM)
            try:
                self.daemon.wait(30)
            except subprocess.TimeoutExpired:
                self.daemon.kill()
                self.daemon.wait()
        if self.samples is not None:
            self.samples.stop()

    def close(self) -> None:
        self.stop_daemon()
        self.stop_sims()
        if self.sub is not None and self.sub.poll() is None:
            self.sub.send_signal(signal.SIGTERM)
            try:
                self.sub.wait(15)
            except subprocess.TimeoutExpired:
                self.sub.kill()
        self.broker.stop()

    def buffer_counts(self) -> dict[str, Any]:
        conn = sqlite3.connect(f"file:{self.buffer_path}?mode=ro", uri=True, timeout=5)
        try:
            rows = dict(conn.execute(
                "SELECT stream, sum(rows) FROM streams GROUP BY stream").fetchall())
            pending = conn.execute("SELECT value FROM counters WHERE name='pending'").fetchone()
        finally:
            conn.close()
        size = sum(os.path.getsize(f"{self.buffer_path}{s}") for s in ("", "-wal", "-shm")
                   if os.path.exists(f"{self.buffer_path}{s}"))
        return {"rows": rows, "pending": int(pending[0]), "file_bytes": size}
