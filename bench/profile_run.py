"""Profile the daemon under a steady load: the rig of ``bench/run`` (simulators, broker,
subscriber) at P presses x 40 tags every T ms, py-spy on the daemon's PID, then
:mod:`bench.profile_summary` of the raw profile.

    .venv/bin/python -m bench.profile_run --presses 10 --poll-ms 10 --duration 20

Why a script: the profile must come from the real daemon with its real peers (sockets,
SQLite file, MQTT), at a load where it is busy enough to sample well, and the same way
before and after a change. The raw profile goes to ``bench/out/profile-<stamp>.txt``
(ignored by git). py-spy is in the ``bench`` extra (``pip install -e '.[bench]'``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import psutil

from bench import profile_summary
from bench.rig import REPO, Rig


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench.profile_run", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--presses", type=int, default=10)
    p.add_argument("--poll-ms", type=int, default=10)
    p.add_argument("--duration", type=int, default=20, help="seconds sampled")
    p.add_argument("--warmup", type=float, default=5.0)
    p.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    p.add_argument("--top", type=int, default=40)
    p.add_argument("--gil", action="store_true",
                   help="only samples of the thread holding the GIL (Python CPU, no waits)")
    args = p.parse_args(argv)
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        raise SystemExit("py-spy not found: pip install -e '.[bench]'")
    out_dir = REPO / "bench" / "out"
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"profile-{args.presses}x{args.poll_ms}-{time.strftime('%Y%m%d-%H%M%S')}.txt"
    rig = Rig(Path(f"/tmp/press-collector-profile-{Path.cwd().name}-{time.time_ns()}"),
              args.presses, args.poll_ms)
    try:
        rig.start_infra()
        rig.start_daemon()
        rig.wait_health()
        time.sleep(args.warmup)
        assert rig.daemon is not None and rig.samples is not None
        proc = psutil.Process(rig.daemon.pid)
        c0, x0, t0 = proc.cpu_times(), proc.num_ctx_switches(), time.time()
        subprocess.run([spy, "record", "--pid", str(rig.daemon.pid), "--duration",
                        str(args.duration), "--rate", str(args.rate), "--format", "raw",
                        "-o", str(out), "--nonblocking", *(["--gil"] if args.gil else [])],
                       check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        c1, x1, span = proc.cpu_times(), proc.num_ctx_switches(), time.time() - t0
        polls = sum(p["polls"] for p in rig.health()["presses"].values())
        rig.stop_sims()
        rig.stop_daemon()
    finally:
        rig.close()
        shutil.rmtree(rig.workdir, ignore_errors=True)
    print(f"daemon CPU while sampled, % of a core: user {(c1.user - c0.user) / span * 100:.1f}, "
          f"system {(c1.system - c0.system) / span * 100:.1f}; context switches/s: voluntary "
          f"{(x1.voluntary - x0.voluntary) / span:.0f}, involuntary "
          f"{(x1.involuntary - x0.involuntary) / span:.0f}; polls so far {polls}; "
          f"load average {os.getloadavg()[0]:.1f}; raw profile {out}")
    profile_summary.main(str(out), args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
