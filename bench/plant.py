"""``bench/run plant``: a plant on one machine. N daemons (one per simulated line PC, each
with a few simulated presses) -> one Mosquitto -> 2 sinks -> PostgreSQL.

Every process is started here and stopped through its handle; everything listens on
127.0.0.1. The run has three parts of equal length: steady, a broker restart (SIGTERM,
start again) at the first third, a sink SIGKILLed (and started again 2 s later) at the
second third. At the end the daemons stop gracefully (they drain their buffers) and the
bench waits until PostgreSQL holds every record the daemons committed, then reads the
``gaps`` view. Figures (one JSON line, also in bench/out/plant-<stamp>.json):

- latency p50 / p99 from the acquisition time (``ts``, stamped by the daemon when the
  poll returned) to the row's ``stored_at`` (clock_timestamp() inside the sink's INSERT,
  just before its commit), over live telemetry acquired in the steady part; the same over
  the whole run;
- rows/s stored in the steady part; peak rows/s over any 1 s bucket (the catch-up after
  the restart);
- CPU (% of one core) of the broker, each sink, all daemons together, the simulators and
  PostgreSQL's processes, in the steady part; load average;
- lost = committed - stored (must be 0), gaps (must be 0), duplicates the sinks counted.

Sinks split the plant by topic root (each daemon has its own root ``plant/line-NN``; sink
A takes the even lines, sink B the odd ones): the mode that survives a Mosquitto 2.0
restart (docs/brokers.md). ``--share`` runs both on one shared group instead.
Nothing here asserts a timing: read the figures (bench/README.md).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil

from bench.rig import PY, REPO, wait_for, write_config
from sim.local_broker import LocalBroker

RESULTS = REPO / "bench" / "out"  # ignored (.gitignore)
ADMIN_DSN = os.environ.get("PRESS_COLLECTOR_BENCH_PG", "host=127.0.0.1 user=postgres "
                           "dbname=postgres")


def cpu_s(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            t = psutil.Process(pid).cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
        except psutil.Error:
            pass
    return total


def postgres_pids() -> list[int]:
    return [p.pid for p in psutil.process_iter(["name"]) if p.info["name"] == "postgres"]


class Plant:
    def __init__(self, args: argparse.Namespace) -> None:
        self.a = args
        self.work = Path(args.workdir)
        self.dbname = f"pc_plant_{time.strftime('%Y%m%d%H%M%S')}"
        self.dsn = ADMIN_DSN.replace("dbname=postgres", f"dbname={self.dbname}")
        self.broker = LocalBroker(data_dir=self.work / "broker")
        self.sims: subprocess.Popen[bytes] | None = None
        self.daemons: list[subprocess.Popen[bytes]] = []
        self.sinks: dict[str, subprocess.Popen[bytes]] = {}
        self.roots = [f"plant/line-{i:02d}" for i in range(1, args.daemons + 1)]

    # -- processes ------------------------------------------------------------------------
    def start(self) -> None:
        import psycopg

        from sink.store import migrate

        self.work.mkdir(parents=True, exist_ok=True)
        with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{self.dbname}"')
        with psycopg.connect(self.dsn) as conn:
            migrate(conn)
        self.broker.start()
        ready = self.work / "sims.json"
        self.sims = subprocess.Popen(
            [PY, "-m", "bench.sims", "--presses", str(self.a.daemons * self.a.presses),
             "--ready", str(ready), "--stats", str(self.work / "sims-stats.json")],
            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(ready.exists, 60, "simulators")
        ports = json.loads(ready.read_text())["ports"]
        for name in ("A", "B"):
            self.start_sink(name)
        for i, root in enumerate(self.roots):
            cfg = self.work / f"line-{i + 1:02d}"
            write_config(cfg, ports[i * self.a.presses:(i + 1) * self.a.presses], {},
                         self.broker.port, 0, self.a.poll_ms, commit_ms=self.a.commit_ms)
            toml = cfg / "collector.toml"
            text = toml.read_text().replace('topic_root = "bench/pc"', f'topic_root = "{root}"')
            text = text.replace('host_id = "bench"', f'host_id = "line-{i + 1:02d}"')
            text = re.sub(r"(?m)^max_inflight = \d+", "max_inflight = 200\nreconnect_max_s = 1.0",
                          text)
            toml.write_text(text)
            with open(cfg / "daemon.log", "ab") as out:
                self.daemons.append(subprocess.Popen(
                    [PY, "-m", "collector.cli", "--log-level", "WARNING", "run", "--config-dir",
                     str(cfg)], cwd=REPO, stdout=out, stderr=subprocess.STDOUT))

    def start_sink(self, name: str) -> None:
        log = self.work / f"sink-{name}.log"
        mine = [r for i, r in enumerate(self.roots) if self.a.share or i % 2 == "AB".index(name)]
        argv = [PY, "-m", "collector.cli", "sink", "--broker", f"127.0.0.1:{self.broker.port}",
                "--dsn", self.dsn, "--client-id", f"plant-sink-{name}", "--stats-every", "5",
                "--gaps-every", "0", "--batch-max", str(self.a.batch_max)]
        for r in mine:
            argv += ["--root", r]
        if self.a.share:
            argv += ["--group", "plant"]
        start = log.stat().st_size if log.exists() else 0
        with open(log, "ab") as out:
            self.sinks[name] = subprocess.Popen(argv, cwd=REPO, stdout=out,
                                                stderr=subprocess.STDOUT)
        wait_for(lambda: "sink: subscribed" in log.read_text()[start:], 60, f"sink {name}")

    def stop(self) -> None:
        for p in self.daemons + list(self.sinks.values()) + ([self.sims] if self.sims else []):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.daemons + list(self.sinks.values()) + ([self.sims] if self.sims else []):
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.broker.stop()

    def drop_db(self) -> None:
        import psycopg

        with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{self.dbname}" WITH (FORCE)')

    # -- the run --------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        import psycopg

        from buffer.store import Outbox

        a = self.a
        self.start()
        db = psycopg.connect(self.dsn, autocommit=True)
        wait_for(lambda: db.execute("SELECT count(DISTINCT host) FROM record").fetchone()[0]
                 >= a.daemons, 120, "every daemon's first row")
        time.sleep(a.warmup)
        third = a.duration / 3

        def pids() -> dict[str, list[int]]:
            assert self.broker.proc is not None and self.sims is not None
            return {"broker": [self.broker.proc.pid], "sink_A": [self.sinks["A"].pid],
                    "sink_B": [self.sinks["B"].pid], "daemons": [d.pid for d in self.daemons],
                    "sims": [self.sims.pid], "postgres": postgres_pids()}

        p0 = pids()
        c0 = {k: cpu_s(v) for k, v in p0.items()}
        t0 = time.time()
        time.sleep(third)
        c1 = {k: cpu_s(v) for k, v in p0.items()}
        t1 = time.time()
        load = os.getloadavg()[0]
        # broker restart
        self.broker.stop()
        restart_at = time.time()
        time.sleep(a.outage)
        self.broker.start()
        time.sleep(max(0.0, third - a.outage))
        # a sink killed and started again
        kill_at = time.time()
        self.sinks["B"].send_signal(signal.SIGKILL)
        self.sinks["B"].wait()
        time.sleep(2.0)
        self.start_sink("B")
        time.sleep(max(0.0, third - 2.0))
        t_end = time.time()
        for d in self.daemons:
            d.send_signal(signal.SIGTERM)
        for d in self.daemons:
            d.wait(60)
        committed = 0
        for i in range(a.daemons):
            with Outbox.open(self.work / f"line-{i + 1:02d}" / "buffer.sqlite",
                             readonly=True) as ro:
                st = ro.stats()
            committed += sum(v["last_seq"] for k, v in st["streams"].items()
                             if k.split("/")[1] in ("events", "telemetry"))

        def stored() -> int:
            return db.execute("SELECT count(*) FROM record").fetchone()[0]

        drained_from = time.time()
        with contextlib.suppress(TimeoutError):  # then lost > 0 says so
            wait_for(lambda: stored() >= committed, 300, "every committed record in PostgreSQL",
                     step=0.5)
        drain_s = time.time() - drained_from
        n_stored = stored()
        gaps = db.execute("SELECT count(*), coalesce(sum(missing), 0) FROM gaps").fetchone()
        lat = db.execute(
            "SELECT percentile_cont(ARRAY[0.5, 0.99]) WITHIN GROUP (ORDER BY "
            "extract(epoch FROM stored_at - ts)) FROM record WHERE stream = 'telemetry' AND "
            "lane = 'live' AND ts BETWEEN to_timestamp(%s) AND to_timestamp(%s)",
            (t0, t1)).fetchone()[0]
        lat_all = db.execute(
            "SELECT percentile_cont(ARRAY[0.5, 0.99]) WITHIN GROUP (ORDER BY "
            "extract(epoch FROM stored_at - ts)) FROM record WHERE stream = 'telemetry'"
        ).fetchone()[0]
        steady_rows = db.execute("SELECT count(*) FROM record WHERE stored_at BETWEEN "
                                 "to_timestamp(%s) AND to_timestamp(%s)", (t0, t1)).fetchone()[0]
        peak = db.execute("SELECT max(n) FROM (SELECT count(*) AS n FROM record GROUP BY "
                          "date_trunc('second', stored_at)) s").fetchone()[0]
        by_sink = dict(db.execute("SELECT consumer, count(*) FROM record GROUP BY consumer"))
        db.close()
        self.stop()
        dups = 0  # the last stats line of each run of each sink (B ran twice)
        for name in ("A", "B"):
            for run in (self.work / f"sink-{name}.log").read_text().split("sink: subscribed"):
                counts = re.findall(r"duplicates (\d+)", run)
                dups += int(counts[-1]) if counts else 0
        span = t1 - t0
        return {
            "scenario": "plant", "daemons": a.daemons, "presses_per_daemon": a.presses,
            "tags_per_press": 40, "poll_ms": a.poll_ms, "sink_mode": "share" if a.share
            else "roots", "duration_s": a.duration,
            "telemetry_msgs_per_s_offered": round(a.daemons * a.presses * 1000 / a.poll_ms, 1),
            "rows_per_s_steady": round(steady_rows / span, 1), "rows_per_s_peak_1s": peak,
            "latency_p50_ms": round(lat[0] * 1000, 1) if lat else None,
            "latency_p99_ms": round(lat[1] * 1000, 1) if lat else None,
            "latency_all_p50_ms": round(lat_all[0] * 1000, 1) if lat_all else None,
            "latency_all_p99_ms": round(lat_all[1] * 1000, 1) if lat_all else None,
            **{f"cpu_{k}_pct": round((c1[k] - c0[k]) / span * 100, 1) for k in c0},
            "loadavg_1m": round(load, 2), "cpu_count": psutil.cpu_count(),
            "committed": committed, "stored": n_stored, "lost": committed - n_stored,
            "gaps": gaps[0], "gap_seqs": int(gaps[1]), "sink_duplicates": dups,
            "rows_by_sink": by_sink, "drain_after_stop_s": round(drain_s, 1),
            "broker_restart_at_s": round(restart_at - t0, 1), "outage_s": a.outage,
            "sink_kill_at_s": round(kill_at - t0, 1), "end_s": round(t_end - t0, 1),
        }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench/run plant", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--daemons", type=int, default=20, help="line PCs (default 20)")
    p.add_argument("--presses", type=int, default=3, help="presses per line PC (default 3)")
    p.add_argument("--poll-ms", type=int, default=100, help="poll interval (default 100)")
    p.add_argument("--duration", type=float, default=60, help="s, three parts (default 60)")
    p.add_argument("--warmup", type=float, default=5)
    p.add_argument("--outage", type=float, default=5, help="broker down, s (default 5)")
    p.add_argument("--commit-ms", type=int, default=2)
    p.add_argument("--batch-max", type=int, default=1000)
    p.add_argument("--share", action="store_true", help="sinks on one shared group")
    p.add_argument("--workdir", default="/tmp/press-collector-plant")
    p.add_argument("--keep", action="store_true", help="keep the work dir and the database")
    args = p.parse_args(argv)
    if Path(args.workdir).exists():
        shutil.rmtree(args.workdir)
    plant = Plant(args)
    try:
        line = plant.run()
    finally:
        plant.stop()
        if not args.keep:
            plant.drop_db()
            shutil.rmtree(args.workdir, ignore_errors=True)
    text = json.dumps(line)
    print(text, flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"plant-{time.strftime('%Y%m%d-%H%M%S')}.json").write_text(text + "\n")
    return 0 if line["lost"] == 0 and line["gaps"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
