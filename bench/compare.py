"""``make bench-compare``: Node-RED (both flows) and press-collector on the same harness.

Runs ``../shared/nodered-bench/compare.sh`` (its simulator, broker, subscriber and
analysis) with this daemon as ``PEER=cmd`` (bench/peer.sh renders its config from the
harness's variables) and ``PAYLOAD_PARSER=bench/parse_batch.py:parse``. Prints the
harness's JSON line per peer, then ``{"ratios": {...}}``: the daemon against each
Node-RED flow, from this one run (the only comparison the harness README allows).

Fresh clone: ``bench/compare`` (the shell wrapper) has set up the project's venv; here the
harness's ``setup.sh`` runs when its venv or Node-RED is missing (into ``$BENCH_HOME``),
and the daemon is told to run on this venv's python (``PEER_PYTHON``). Results go to
``bench/out/`` (ignored by git): a run leaves no untracked file.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
PEER_NAME = "press-collector"


def _origin_dir() -> Path | None:
    """The local repository this one was cloned from (``git clone /work/main /tmp/x``),
    if any: its ``../shared`` holds the harness as well."""
    try:
        url = subprocess.run(["git", "config", "--get", "remote.origin.url"], cwd=REPO,
                             capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        return None
    url = url.removeprefix("file://")
    return Path(url) if url.startswith("/") and Path(url).is_dir() else None


def find_harness() -> Path:
    """``$NODERED_BENCH``, else ``shared/nodered-bench`` beside this repository (or its
    parent, for a worktree), else beside the local repository it was cloned from."""
    origin = _origin_dir()
    candidates = [os.environ.get("NODERED_BENCH", ""), REPO / ".." / "shared" / "nodered-bench",
                  REPO / ".." / ".." / "shared" / "nodered-bench",
                  *([origin / ".." / "shared" / "nodered-bench"] if origin else [])]
    for c in candidates:
        if c and (Path(c) / "compare.sh").exists():
            return Path(c).resolve()
    raise SystemExit("nodered-bench not found: set NODERED_BENCH to the folder with compare.sh")


def ensure_harness(harness: Path) -> None:
    """Run the harness's idempotent ``setup.sh`` when its python venv or Node-RED is
    missing (a fresh machine); its output goes to stderr (stdout carries the JSON)."""
    home = Path(os.environ.get("BENCH_HOME", "/tmp/nodered-bench"))
    ready = (home / "venv" / "bin" / "python").exists() and \
        (home / "nr" / "node_modules" / "node-red" / "red.js").exists()
    if not ready:
        print(f"bench/compare: setting up the Node-RED harness into {home} "
              f"({harness / 'setup.sh'})", file=sys.stderr)
        subprocess.run([str(harness / "setup.sh")], check=True, stdout=sys.stderr)


def _ratio(a: Any, b: Any) -> float | None:
    return round(a / b, 3) if isinstance(a, int | float) and isinstance(b, int | float) and b \
        else None


def _delta(a: Any, b: Any) -> float | None:
    return round(a - b, 2) if isinstance(a, int | float) and isinstance(b, int | float) else None


def ratios(lines: list[dict[str, Any]]) -> dict[str, Any]:
    """The daemon's figures over each Node-RED flow's (cpu, rss, delivered: daemon / NR;
    latency deltas: daemon - NR, in ms)."""
    ours = next((x for x in lines if x.get("peer") == PEER_NAME), None)
    out: dict[str, Any] = {}
    if ours is None:
        return {"error": "no press-collector run in the results"}
    for peer in (x for x in lines if x.get("peer") != PEER_NAME):
        name = peer.get("peer") or peer.get("flow")
        out[f"vs_{name}"] = {
            "cpu": _ratio(ours.get("peer_cpu_pct"), peer.get("peer_cpu_pct")),
            "rss": _ratio(ours.get("peer_rss_peak_mb"), peer.get("peer_rss_peak_mb")),
            "delivered": _ratio(ours.get("delivered_readings_per_s"),
                                peer.get("delivered_readings_per_s")),
            "latency_p99_delta_ms": _delta(ours.get("latency_p99_ms"), peer.get("latency_p99_ms")),
            "latency_from_plc_p99_delta_ms": _delta(ours.get("latency_from_plc_p99_ms"),
                                                    peer.get("latency_from_plc_p99_ms")),
            "startup": _ratio(ours.get("startup_to_first_message_s"),
                              peer.get("startup_to_first_message_s")),
            "lost": [ours.get("lost_total"), peer.get("lost_total")],
        }
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench/compare", description=__doc__)
    p.add_argument("--workload", default="default",
                   choices=["default", "t50", "t25", "heavy", "small", "custom"],
                   help="custom: P= R= T= from the environment (the harness's lib.sh)")
    p.add_argument("--duration", type=int, default=60)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--flows", default="perreading batched",
                   help='Node-RED flows to run besides the daemon (e.g. "batched")')
    args = p.parse_args(argv)
    harness = find_harness()
    ensure_harness(harness)
    venv_python = REPO / ".venv" / "bin" / "python"
    if not venv_python.exists():
        raise SystemExit(f"{venv_python} missing: run `make setup` (bench/compare does)")
    env = {**os.environ, "PEER_NAME": PEER_NAME, "PEER_CMD": str(REPO / "bench" / "peer.sh"),
           "PAYLOAD_PARSER": f"{REPO / 'bench' / 'parse_batch.py'}:parse",
           "PEER_PYTHON": str(venv_python)}
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = args.out or REPO / "bench" / "out" / f"compare-{args.workload}-{stamp}.jsonl"
    out.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        [str(harness / "compare.sh"), "--workload", args.workload, "--duration",
         str(args.duration), "--repeats", str(args.repeats), "--flows", args.flows],
        env=env, cwd=REPO, stdout=subprocess.PIPE, text=True, check=False)
    lines = [json.loads(x) for x in proc.stdout.splitlines() if x.startswith("{")]
    with open(out, "w") as fh:
        for line in lines:
            print(json.dumps(line))
            fh.write(json.dumps(line) + "\n")
        final = {"ratios": ratios(lines), "workload": args.workload, "duration_s": args.duration,
                 "same_run": True}
        print(json.dumps(final))
        fh.write(json.dumps(final) + "\n")
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
