"""What the systemd unit's MemoryMax= and TasksMax= are sized from: the daemon's RSS and
its task count (threads; it starts no child processes) under line load with an OPC UA
press (asyncua is the biggest import), through a broker outage and the drain after it.

    .venv/bin/python -m bench.unit_limits --duration 60 --outage 60

Prints one JSON line: per phase the peak RSS (MiB) and the peak number of tasks, plus the
unit's figures and the margin they leave (docs/DESIGN.md, "Resource limits"). Assert
nothing; a shared machine makes the figures noisy (compare within one run).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import psutil

from bench.rig import PY, REPO, Rig, wait_for
from sim.opcua import NODES, ROLES, node_text
from sim.ports import free_port

UNIT = REPO / "deploy" / "press-collector.service"


class Peaks:
    """RSS and task count of one process, sampled every ``interval`` s, by phase."""

    def __init__(self, proc: psutil.Process, interval: float = 0.2) -> None:
        self.proc, self.interval = proc, interval
        self.phase = "start"
        self.rss: dict[str, int] = {}
        self.tasks: dict[str, int] = {}
        self._stop = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with self.proc.oneshot():
                    rss = self.proc.memory_info().rss
                    tasks = self.proc.num_threads() + len(self.proc.children(recursive=True))
            except psutil.Error:
                return
            self.rss[self.phase] = max(self.rss.get(self.phase, 0), rss)
            self.tasks[self.phase] = max(self.tasks.get(self.phase, 0), tasks)
            self._stop.wait(self.interval)

    def stop(self) -> None:
        self._stop.set()


def opcua_press(url: str) -> str:
    tags = "".join(f'\n[[plc.tags]]\nname = "{n}"\nnode = "{node_text(n)}"\n'
                   + (f'role = "{ROLES[n]}"\n' if n in ROLES else "") for n in NODES)
    return (f'id = "p99"\nname = "OPC UA press"\n[plc]\nprotocol = "opcua"\n'
            f'endpoint = "{url}"\npublishing_interval_ms = 100\n{tags}')


def unit_limits() -> dict[str, str]:
    text = UNIT.read_text()
    return {k: m[1] for k in ("MemoryMax", "MemoryHigh", "TasksMax")
            if (m := re.search(rf"^{k}=(\S+)", text, re.M))}


def wait_backlog_gone(rig: Rig, timeout: float = 600) -> float:
    """Seconds until the outage backlog is delivered (polling goes on meanwhile, so the
    buffer never stays at 0 pending: under one second's worth counts as drained)."""
    start = time.monotonic()
    per_second = rig.presses * 1000 // rig.poll_ms
    while time.monotonic() - start < timeout:
        if rig.pending() < per_second:
            return round(time.monotonic() - start, 1)
        time.sleep(0.2)
    raise TimeoutError(f"backlog not delivered within {timeout} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--presses", type=int, default=10)
    ap.add_argument("--duration", type=float, default=60.0, help="line load, seconds")
    ap.add_argument("--outage", type=float, default=60.0, help="broker down, seconds")
    ap.add_argument("--workdir", type=Path,
                    default=Path(tempfile.gettempdir()) / "press-collector-unit-limits")
    args = ap.parse_args()

    port = free_port()
    sim = subprocess.Popen([PY, "-m", "sim.opcua", "--port", str(port)], cwd=REPO,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    rig = Rig(args.workdir, args.presses, 100, gauge_presses=2)
    try:
        assert sim.stdout is not None
        wait_for(lambda: b"simulator at" in sim.stdout.readline(), 30, "OPC UA simulator")
        rig.start_infra()
        (rig.cfg_dir / "presses" / "p99.toml").write_text(
            opcua_press(f"opc.tcp://127.0.0.1:{port}/press"))
        rig.start_daemon()
        assert rig.daemon is not None
        peaks = Peaks(psutil.Process(rig.daemon.pid))
        rig.wait_health()
        peaks.phase = "line"
        time.sleep(args.duration)
        peaks.phase = "outage"
        rig.broker.stop()
        time.sleep(args.outage)
        peaks.phase = "drain"
        rig.broker.start()
        drained_s = wait_backlog_gone(rig)
        peaks.phase = "after"
        time.sleep(min(10.0, args.duration))
        peaks.stop()
        health = rig.health()
    finally:
        rig.close()
        sim.terminate()
        sim.wait(15)
    mib = {k: round(v / 2**20, 1) for k, v in peaks.rss.items()}
    out = {"scenario": "unit_limits", "presses": args.presses + 1, "opcua_presses": 1,
           "line_s": args.duration, "outage_s": args.outage,
           "rss_peak_mib": mib, "tasks_peak": peaks.tasks,
           "rss_peak_mib_all": max(mib.values()), "tasks_peak_all": max(peaks.tasks.values()),
           "drain_s": drained_s, "outbox_rows": health.get("outbox", {}).get("rows_written"),
           "unit": unit_limits()}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
