"""press-collector bench suite: ``python -m bench.run [scenario ...] [--quick] [--long]``.

Scenarios: line, quality (same run as line), outage, ceiling, scale; not in the default
set: memory (30 minutes) and powercut (needs FUSE; bench/powercut.py). Each prints one JSON
line; at the end a Markdown table; both go to ``bench/out/<stamp>.jsonl`` / ``.md``
(ignored by git).
Nothing here asserts a timing: these are measurements, read them (bench/README.md).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import psutil

from bench import powercut, store_bench
from bench import rig as rig_module
from bench.analysis import Capture, latency, ms, pct, window
from bench.rig import REPO, Rig, wait_for

RESULTS = REPO / "bench" / "out"  # ignored (.gitignore): a run leaves no untracked file
TAGS = 40
GAUGE_EXTRA_TAGS = 5  # role tags of the presses that carry gauges


def _context() -> dict[str, Any]:
    return {"cpu_count": psutil.cpu_count(), "loadavg_1m": round(psutil.getloadavg()[0], 2),
            "python": platform.python_version(), "ts": time.strftime("%Y-%m-%dT%H:%M:%S")}


def _jitter(health: dict[str, Any]) -> dict[str, Any]:
    presses = health["presses"].values()
    p50 = [p["jitter_p50_ms"] for p in presses if p["jitter_p50_ms"] is not None]
    p99 = [p["jitter_p99_ms"] for p in presses if p["jitter_p99_ms"] is not None]
    return {"poll_jitter_p50_ms": max(p50) if p50 else None,
            "poll_jitter_p99_ms": max(p99) if p99 else None,
            "poll_jitter_max_ms": max((p["jitter_max_ms"] for p in presses), default=None),
            "late_polls": sum(p["late_polls"] for p in presses)}


def _readings_per_poll(rig: Rig, press: str) -> int:
    return TAGS + (GAUGE_EXTRA_TAGS if int(press[1:]) <= rig.gauge_presses else 0)


def steady(workdir: Path, presses: int, poll_ms: int, duration: float, warmup: float,
           gauge_presses: int = 0, name: str = "line") -> tuple[dict[str, Any], Capture, Rig]:
    """Start everything, warm up, measure ``duration`` s, stop polling, drain, stop."""
    rig = Rig(workdir, presses, poll_ms, gauge_presses)
    try:
        rig.start_infra()
        rig.start_daemon()
        rig.wait_health()
        time.sleep(warmup)
        assert rig.samples is not None
        h0, cpu0, t0 = rig.health(), rig.samples.cpu_s(), time.time()
        time.sleep(duration)
        h1, cpu1, t1 = rig.health(), rig.samples.cpu_s(), time.time()
        rig.stop_sims()
        rig.wait_drained()
        rig.stop_daemon()
        counts = rig.buffer_counts()
    finally:
        rig.close()
    cap = Capture.read(rig.sub_out)
    tele = window(cap.telemetry(), t0, t1)
    span = t1 - t0
    polled = sum((h1["presses"][p]["polls"] - h0["presses"][p]["polls"])
                 * _readings_per_poll(rig, p) for p in h1["presses"])
    integ = cap.integrity()
    committed = int(counts["rows"].get("telemetry", 0))
    stored_readings = committed * (integ["unique_readings"] / max(1, integ["unique_messages"]))
    o0, o1 = h0["outbox"], h1["outbox"]
    assert rig.samples is not None
    line = {
        "scenario": name, "presses": presses, "tags_per_press": TAGS, "poll_ms": poll_ms,
        "gauges": 2 * gauge_presses, "window_s": round(span, 1),
        "expected_readings_per_s": round(sum(_readings_per_poll(rig, p) for p in h1["presses"])
                                         * 1000 / poll_ms),
        "polled_readings_per_s": round(polled / span),
        "delivered_readings_per_s": round(sum(m.n for m in tele) / span),
        "delivered_messages_per_s": round(len(tele) / span, 1),
        **latency(tele),
        **_jitter(h1),
        "cpu_pct": round((cpu1 - cpu0) / span * 100, 1),
        "rss_peak_mb": rig.samples.rss_peak_mb(),
        "bytes_per_reading": round(counts["file_bytes"] / max(1, stored_readings), 1),
        "commits_per_s": round((o1["commits"] - o0["commits"]) / span, 1),
        "fsyncs_per_s": round((o1["commits_full"] - o0["commits_full"]) / span, 1),
        "committed_polls": committed,
        "delivered_unique_polls": integ["unique_messages"],
        "lost": committed - integ["unique_messages"],
        "duplicates": integ["duplicates"], "seq_gaps": integ["seq_gaps"],
        "pending_at_end": counts["pending"],
    }
    return line, cap, rig


def scenario_line(args: argparse.Namespace) -> list[dict[str, Any]]:
    duration = args.duration or (8 if args.quick else 60)
    line, cap, _rig = steady(args.workdir / "line", args.presses, 100, duration,
                             1 if args.quick else 5, gauge_presses=min(2, args.presses))
    out = [{**line, **_context()}]
    # quality path: the same run's gauge lines -> first_article / measurement events
    quality = [m for m in cap.msgs if m.kind in ("first_article", "measurement")]
    lat = [m.recv - m.ts for m in quality]
    out.append({"scenario": "quality", "events": len(quality),
                "first_article": sum(m.kind == "first_article" for m in quality),
                "measurement": sum(m.kind == "measurement" for m in quality),
                "unassigned_reading": sum(m.kind == "unassigned_reading" for m in cap.msgs),
                "latency_p50_ms": ms(pct(lat, 0.5)), "latency_p99_ms": ms(pct(lat, 0.99)),
                "latency_max_ms": ms(max(lat) if lat else None),
                "under": "line load (same run)", "fsync": "synchronous=FULL per event batch"})
    return out


def scenario_outage(args: argparse.Namespace) -> list[dict[str, Any]]:
    outage_s = 600 if args.long else (6 if args.quick else args.outage)
    before = 3 if args.quick else 10
    rig = Rig(args.workdir / "outage", 10, 100, gauge_presses=2)
    try:
        rig.start_infra()
        rig.start_daemon()
        rig.wait_health()
        time.sleep(before)
        t_down = time.time()
        rig.broker.stop()
        time.sleep(outage_s)
        backlog = rig.pending()
        t_up_req = time.time()
        rig.broker.start()
        t_up = time.time()
        drained_at = None
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            if rig.pending() <= 20:  # a few live polls in flight at any moment
                drained_at = time.time()
                break
            time.sleep(0.05)
        time.sleep(3 if args.quick else 10)
        rig.stop_sims()
        rig.wait_drained()
        rig.stop_daemon()
        counts = rig.buffer_counts()
    finally:
        rig.close()
    assert rig.samples is not None
    cap = Capture.read(rig.sub_out)
    tele = cap.telemetry()
    integ = cap.integrity()
    committed = int(counts["rows"].get("telemetry", 0))
    per_msg = integ["unique_readings"] / max(1, integ["unique_messages"])
    # live lane: telemetry on its own topic polled after the broker came back; the backlog
    # goes out meanwhile on {press}/telemetry/replay (docs/delivery.md)
    live = [m for m in tele if m.ts >= t_up and not m.replay]
    first_live = min((m.recv for m in live), default=None)
    # the drain runs from the first message after the broker is back to the last one
    # polled while it was down
    first_any = min((m.recv for m in cap.msgs if m.recv >= t_up), default=None)
    backlog_done = max((m.recv for m in tele if t_down <= m.ts < t_up_req), default=None)
    replayed = sum(1 for m in tele if m.replay)
    if first_any is not None and backlog_done is not None:
        drained_at = backlog_done
    draining = [m for m in live if drained_at is not None and m.recv <= drained_at]
    drain_s = None if drained_at is None or first_any is None else drained_at - first_any
    rss = rig.samples.rss_range_mb(t_down, t_up_req)
    # quality events (gauge lines -> first_article / measurement): those acquired after
    # the broker came back must not wait for the telemetry replay (docs/delivery.md)
    # ("after the reconnect": acquired once the first live telemetry message was out, i.e.
    # the daemon was connected again; before that an event waits for the reconnect backoff)
    quality = [m for m in cap.msgs if m.kind in ("first_article", "measurement")]
    t_conn = first_live if first_live is not None else t_up
    ev_after = [m for m in quality if m.ts >= t_conn]
    ev_draining = [m for m in ev_after if drained_at is not None and m.ts <= drained_at]
    ev_backlog = [m for m in quality if t_down <= m.ts < t_up_req]
    return [{
        "scenario": "outage", "outage_s": outage_s, "presses": 10, "poll_ms": 100,
        "committed_polls": committed, "delivered_unique_polls": integ["unique_messages"],
        "lost": committed - integ["unique_messages"], "duplicates": integ["duplicates"],
        "seq_gaps": integ["seq_gaps"],
        "backlog_rows": backlog, "backlog_readings": round(backlog * per_msg),
        "first_live_after_broker_up_s": None if first_live is None
        else round(first_live - t_up, 3),
        "reconnect_after_broker_up_s": None if first_any is None else round(first_any - t_up, 3),
        "drain_s": None if drain_s is None else round(drain_s, 2),
        "drain_readings_per_s": None if not drain_s else round(backlog * per_msg / drain_s),
        "drain_x_realtime": None if not drain_s else round(outage_s / drain_s, 1),
        "live_latency_while_draining_p99_ms": ms(pct([m.recv - m.ts for m in draining], 0.99)),
        # first 2 s of live messages: what a dashboard sees while the backlog catches up
        "live_latency_after_up_p99_ms": ms(pct([m.recv - m.ts for m in live
                                                if first_live is not None
                                                and m.recv <= first_live + 2], 0.99)),
        "live_msgs_while_draining": len(draining),
        # quality events acquired after the reconnect: gauge line -> subscriber
        "event_latency_after_reconnect_p50_ms": ms(pct([m.recv - m.ts for m in ev_after],
                                                       0.5)),
        "event_latency_after_reconnect_p99_ms": ms(pct([m.recv - m.ts for m in ev_after],
                                                       0.99)),
        "event_latency_after_reconnect_max_ms": ms(max((m.recv - m.ts for m in ev_after),
                                                       default=None)),
        "events_after_reconnect": len(ev_after),
        # the subset acquired while the telemetry backlog was still being replayed
        "event_latency_while_draining_max_ms": ms(max((m.recv - m.ts for m in ev_draining),
                                                      default=None)),
        "events_while_draining": len(ev_draining),
        # the events of the outage itself: all delivered this long after the broker was up
        "backlog_events": len(ev_backlog),
        "backlog_events_out_after_up_s": None if not ev_backlog
        else round(max(m.recv for m in ev_backlog) - t_up, 3),
        "replayed_msgs": replayed,
        "rss_during_outage_min_mb": rss[0] if rss else None,
        "rss_during_outage_max_mb": rss[1] if rss else None,
        "rss_peak_mb": rig.samples.rss_peak_mb(), **_context()}]


def scenario_ceiling(args: argparse.Namespace) -> list[dict[str, Any]]:
    steps = [(10, 100), (10, 50), (10, 25), (20, 20), (20, 10), (40, 10), (60, 10), (80, 10)]
    if args.quick:
        steps = steps[:2]
    duration = args.ceiling_step or (5 if args.quick else 15)
    best: dict[str, Any] | None = None
    points = []
    for presses, poll_ms in steps:
        line, _cap, _rig = steady(args.workdir / f"ceiling-{presses}x{poll_ms}", presses,
                                  poll_ms, duration, 3, name="ceiling-step")
        ok = (line["delivered_readings_per_s"] >= 0.97 * line["expected_readings_per_s"]
              and (line["latency_p99_ms"] or 0) <= 1000 and line["lost"] == 0)
        points.append({k: line[k] for k in ("presses", "poll_ms", "expected_readings_per_s",
                                            "polled_readings_per_s", "delivered_readings_per_s",
                                            "latency_p99_ms", "cpu_pct", "late_polls", "lost")}
                      | {"sustained": ok})
        print(json.dumps(points[-1]), file=sys.stderr, flush=True)
        if ok:
            best = line
        else:
            break
    return [{"scenario": "ceiling",
             "sustained_readings_per_s": best["delivered_readings_per_s"] if best else 0,
             "at": f"{best['presses']}x{TAGS} tags every {best['poll_ms']} ms" if best else None,
             "step_s": duration, "steps": points, **_context()}]


def scenario_scale(args: argparse.Namespace) -> list[dict[str, Any]]:
    out = []
    duration = 6 if args.quick else 20
    curve = []
    for presses in (1, 10, 50):
        line, _cap, _rig = steady(args.workdir / f"scale-{presses}", presses, 100, duration, 3,
                                  name="scale-step")
        rate = line["delivered_readings_per_s"]
        curve.append({"presses": presses, "readings_per_s": rate, "cpu_pct": line["cpu_pct"],
                      "cpu_pct_per_1k_readings_s": round(line["cpu_pct"] / (rate / 1000), 2)
                      if rate else None, "rss_peak_mb": line["rss_peak_mb"]})
    out.append({"scenario": "scale-cpu", "window_s": duration, "points": curve, **_context()})
    sizes = [100_000, 1_000_000] if args.quick else [1_000_000, 10_000_000, 50_000_000]
    points = store_bench.curve(args.workdir / "store", sizes,
                               batch_rows=5_000 if args.quick else 50_000)
    out.append({"scenario": "scale-store", "points": points, **_context()})
    backlog = 1_000_000 if args.quick else 10_000_000
    out.append(startup(args, 0) | startup(args, backlog, "backlog"))
    return out


def startup(args: argparse.Namespace, backlog_readings: int, label: str = "empty") -> dict:
    """Daemon spawn -> first telemetry message at the subscriber, buffer empty or not."""
    rig = Rig(args.workdir / f"startup-{label}", 10, 100)
    try:
        rig.start_infra()
        if backlog_readings:
            store_bench.fill(rig.buffer_path, backlog_readings, pending=True)
        rig.start_daemon()
        wait_for(lambda: rig.sub_lines() > 0 and bool(Capture.read(rig.sub_out).telemetry()),
                 120, "first message", 0.01)
        first = min(m.recv for m in Capture.read(rig.sub_out).telemetry())
    finally:
        rig.close()
    return {"scenario": "startup", f"startup_{label}_s": round(first - rig.daemon_started, 3),
            f"startup_{label}_backlog_readings": backlog_readings}


def scenario_memory(args: argparse.Namespace) -> list[dict[str, Any]]:
    """RSS of the daemon over a long run at line load (10 presses x 40 tags / 100 ms + 4
    gauges), the broker up all along or (``--memory-outage``) down from the first minute
    to the end, then up again while the backlog drains. One figure per minute."""
    duration = args.duration or (60 if args.quick else 1800)
    rig = Rig(args.workdir / "memory", 10, 100, gauge_presses=2)
    try:
        rig.start_infra()
        rig.start_daemon(wrapper=None if args.probe is None else [
            "bench.memprobe", "--out", str(args.probe), "--at", args.probe_at,
            "--frames", str(args.probe_frames), "--every", str(args.probe_every),
            *(["--no-tracemalloc"] if args.probe_frames == 0 else []), "--"])
        rig.wait_health()
        t0 = time.time()
        down_at = up_at = None
        if args.memory_outage:
            time.sleep(min(60, duration / 10))
            rig.broker.stop()
            down_at = time.time()
        time.sleep(max(0.0, t0 + duration - time.time()))
        if args.memory_outage:
            rig.broker.start()
            up_at = time.time()
            wait_for(lambda: rig.pending() <= 20, 900, "backlog drained", 0.5)
            time.sleep(30)
        health = rig.health()
        rig.stop_daemon()
    finally:
        rig.close()
    assert rig.samples is not None
    rss = rig.samples.rss
    end = rss[-1][0] if rss else t0
    minutes = []
    for i in range(int((end - t0) // 60) + 1):
        got = [r for t, r in rss if t0 + 60 * i <= t < t0 + 60 * (i + 1)]
        if got:
            minutes.append(round(max(got) / 2**20, 1))
    last_third = minutes[len(minutes) * 2 // 3:]
    return [{"scenario": "memory", "duration_s": duration,
             "outage_s": None if down_at is None or up_at is None else round(up_at - down_at),
             "cache_mb": args.cache_mb, "rss_mb_by_minute": minutes,
             "rss_start_mb": minutes[0] if minutes else None,
             "rss_max_mb": max(minutes) if minutes else None,
             "rss_last_third_min_max_mb": [min(last_third), max(last_third)]
             if last_third else None,
             "pending_at_end": rig.pending(),
             "buffer_file_mb": round(health["outbox"]["file_bytes"] / 2**20, 1),
             **_context()}]


def scenario_powercut(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Power cuts with LazyFS (bench/powercut.py; needs FUSE, not in the default set)."""
    return [{**powercut.run(args), **_context()}]


SCENARIOS = {"line": scenario_line, "outage": scenario_outage, "ceiling": scenario_ceiling,
             "scale": scenario_scale, "memory": scenario_memory, "powercut": scenario_powercut}


def table(lines: list[dict[str, Any]]) -> str:
    out = ["| scenario | figure | value |", "| --- | --- | --- |"]
    for line in lines:
        for key, value in line.items():
            if key in ("scenario", "ts", "python", "cpu_count"):
                continue
            if isinstance(value, list):
                value = "; ".join(json.dumps(v, separators=(",", ":")) for v in value)
            out.append(f"| {line['scenario']} | {key} | {value} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench/run", description=__doc__)
    p.add_argument("scenarios", nargs="*", default=["line", "outage", "ceiling", "scale"],
                   help=f"any of {', '.join(SCENARIOS)} (default: all)")
    p.add_argument("--quick", action="store_true", help="seconds-long smoke sizes")
    p.add_argument("--long", action="store_true", help="outage of 10 minutes")
    p.add_argument("--duration", type=float, default=None,
                   help="line window, s (default 60, --quick 8)")
    p.add_argument("--presses", type=int, default=10, help="line: presses (default 10)")
    p.add_argument("--outage", type=float, default=30, help="broker down, s")
    p.add_argument("--ceiling-step", type=float, default=None,
                   help="s per ceiling step (default 15, --quick 5)")
    # one work dir per run: two helpers' runs on one machine never delete each other's
    p.add_argument("--workdir", type=Path,
                   default=Path(f"/tmp/press-collector-bench-{os.getpid()}"))
    p.add_argument("--results", type=Path, default=RESULTS)
    p.add_argument("--commit-ms", type=int, default=2,
                   help="buffer.commit_interval_ms of the daemon under test")
    p.add_argument("--keep", action="store_true", help="keep the work dir")
    p.add_argument("--memory-outage", action="store_true",
                   help="memory: broker down from the first minute to the end")
    p.add_argument("--probe", type=Path, default=None,
                   help="memory: run the daemon under bench.memprobe (tracemalloc, SQLite, "
                        "glibc figures every 15 s) writing into this directory")
    p.add_argument("--probe-at", default="60,300,900",
                   help="memory --probe: s of the tracemalloc snapshots (diffs vs the first)")
    p.add_argument("--probe-every", type=float, default=15.0,
                   help="memory --probe: s between samples")
    p.add_argument("--probe-frames", type=int, default=1,
                   help="memory --probe: tracemalloc frames per allocation (0: no "
                        "tracemalloc, RSS / SQLite / glibc and objects by type only)")
    p.add_argument("--cache-mb", type=int, default=None,
                   help="buffer.cache_mb of the daemon under test (default: its default)")
    powercut.add_arguments(p.add_argument_group("powercut"))
    args = p.parse_args(argv)
    rig_module.COMMIT_MS = args.commit_ms
    rig_module.CACHE_MB = args.cache_mb
    for name in args.scenarios:
        if name not in SCENARIOS:
            p.error(f"unknown scenario {name!r} (allowed: {', '.join(SCENARIOS)})")
    if args.workdir.exists():
        shutil.rmtree(args.workdir)
    args.results.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    lines: list[dict[str, Any]] = []
    with open(args.results / f"{stamp}.jsonl", "w") as jf:
        for name in args.scenarios:
            for line in SCENARIOS[name](args):
                text = json.dumps(line)
                print(text, flush=True)
                jf.write(text + "\n")
                lines.append(line)
    md = table(lines)
    (args.results / f"{stamp}.md").write_text(md + "\n")
    print(md)
    if not args.keep:
        shutil.rmtree(args.workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
