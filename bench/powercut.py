"""Power cuts under a running daemon, judged from outside (issue 12): ``bench/run powercut``
or ``python -m bench.powercut --cuts 25`` (``--help``).

Not part of the test suite: it needs FUSE (``/dev/fuse``, root) and LazyFS, a FUSE file
system that keeps every write not yet fsynced in its own cache and drops it on command,
which is what a power cut does to the page cache. LazyFS is built from its public sources
into /tmp by ``bench/lazyfs_build.sh`` (Debian: libfuse3-dev fuse3 cmake g++); nothing of
it goes into this repository.

One run: Mosquitto, the bench simulators (``--presses`` presses x 40 tags every 100 ms,
two gauges on each of the first two presses, so quality events flow too) and a checking
subscriber run throughout, outside LazyFS. The daemon keeps its buffer on the LazyFS
mount. ``--cuts`` times: the daemon runs a random time (``--min-up`` .. ``--max-up`` s
after its /health answers), then the power is cut - the daemon is frozen (SIGSTOP, so it
writes nothing more), LazyFS drops every unsynced write (``lazyfs::clear-cache``), the
daemon is killed (SIGKILL) and LazyFS is unmounted and mounted again (the reboot) - and
the daemon is started again. A last run ends with SIGTERM (graceful: flush, drain).

The subscriber takes ``{root}/#`` (QoS 1, persistent session) and keys every message with
a ``seq`` by ``(press, stream, epoch, seq)`` (``epoch``: the envelope field named by
``--epoch-field``, if the daemon sends one; else None) and remembers its ``id``. Reported:

- ``reused``: keys that came back with a *different* id (the contract says a repeated seq
  is a byte-identical resend): how many, in how many cuts, per press per cut, per stream;
- ``gaps``: seqs missing inside each ``(press, stream, epoch)`` once the last run drained;
- ``not_delivered`` / ``delivered_other_id``: rows of the final buffer file (the witness
  of what the daemon believes it sent) that the subscriber never got, or got with another
  id;
- ``start_failures``: daemon starts that ended by themselves (exit code and the last log
  line), e.g. a buffer refused after a cut.

Exit status 0 whatever the figures (this measures; read them): 2 when the rig cannot run.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import select
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as mqtt

from bench.rig import REPO, ROOT, Rig

BUILD = REPO / "bench" / "lazyfs_build.sh"

LAZYFS_CONFIG = """[faults]
fifo_path = "{fifo}"
fifo_path_completed = "{done}"
[cache]
apply_eviction = false
[cache.simple]
custom_size = "{cache}"
blocks_per_page = 1
[filesystem]
log_all_operations = false
logfile = "{log}"
"""


class LazyFS:
    """One LazyFS mount (foreground process of ours); ``clear_cache`` = the power cut."""

    def __init__(self, binary: Path, workdir: Path, cache: str = "1gb") -> None:
        self.binary = binary
        self.root, self.mnt = workdir / "root", workdir / "mnt"
        self.fifo, self.done = workdir / "faults.fifo", workdir / "done.fifo"
        self.config = workdir / "lazyfs.toml"
        self.log = workdir / "lazyfs.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._done_fd: int | None = None
        for d in (self.root, self.mnt):
            d.mkdir(parents=True, exist_ok=True)
        self.config.write_text(LAZYFS_CONFIG.format(fifo=self.fifo, done=self.done,
                                                    cache=cache, log=self.log))

    def mount(self) -> None:
        for f in (self.fifo, self.done):
            f.unlink(missing_ok=True)  # LazyFS creates its FIFOs
        out = open(self.log.with_suffix(".out"), "ab")  # noqa: SIM115 - the child's
        self.proc = subprocess.Popen(
            [str(self.binary), str(self.mnt), "--config-path", str(self.config), "-o",
             "modules=subdir", "-o", f"subdir={self.root}", "-f"],
            stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while not (os.path.ismount(self.mnt) and self.done.exists()):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"LazyFS did not mount {self.mnt} (see {self.log})")
            time.sleep(0.05)
        # LazyFS opens the completion FIFO for writing and blocks until a reader is there
        self._done_fd = os.open(self.done, os.O_RDWR | os.O_NONBLOCK)

    def clear_cache(self, timeout: float = 30) -> None:
        """Drop every write not yet fsynced (the power cut); returns once LazyFS says so."""
        assert self._done_fd is not None
        with open(self.fifo, "w") as f:
            f.write("lazyfs::clear-cache\n")
        deadline = time.monotonic() + timeout
        got = b""
        while b"finished::clear-cache" not in got:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("LazyFS did not confirm clear-cache")
            if select.select([self._done_fd], [], [], left)[0]:
                got += os.read(self._done_fd, 256)

    def umount(self) -> None:
        if self._done_fd is not None:
            os.close(self._done_fd)
            self._done_fd = None
        if os.path.ismount(self.mnt):
            subprocess.run(["fusermount3", "-u", str(self.mnt)], check=False)
        if self.proc is not None:
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None


class Checker:
    """The judging subscriber: (press, stream, epoch, seq) -> ids seen, with the cut
    number in force when each new id arrived."""

    def __init__(self, port: int, epoch_field: str) -> None:
        self.epoch_field = epoch_field
        self.lock = threading.Lock()
        self.ids: dict[tuple[Any, ...], dict[str, int]] = defaultdict(dict)
        self.messages = 0
        self.cut = 0  # set by the driver: messages arriving now belong to run `cut`
        self.ready = threading.Event()
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="powercut-checker",
                        clean_session=False, protocol=mqtt.MQTTv311)
        c.max_inflight_messages_set(1000)
        c.on_connect = lambda cl, *_: cl.subscribe(f"{ROOT}/#", qos=1)
        c.on_subscribe = lambda *_: self.ready.set()
        c.on_message = self._on_message
        self.client = c
        c.connect("127.0.0.1", port, 30)
        c.loop_start()
        if not self.ready.wait(15):
            raise RuntimeError("checker could not subscribe")

    def _on_message(self, client: Any, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            d = orjson.loads(msg.payload)
        except orjson.JSONDecodeError:
            return
        if not isinstance(d, dict) or "seq" not in d or "stream" not in d:
            return  # status, retained state
        key = (d.get("press"), d["stream"], d.get(self.epoch_field), d["seq"])
        with self.lock:
            self.messages += 1
            self.ids[key].setdefault(str(d.get("id")), self.cut)

    def count(self) -> int:
        with self.lock:
            return self.messages

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def build_lazyfs() -> Path:
    out = subprocess.run(["sh", str(BUILD)], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"LazyFS build failed:\n{out.stdout}\n{out.stderr}")
    return Path(out.stdout.strip().splitlines()[-1])


def wait_quiet(checker: Checker, quiet_s: float = 2.0, timeout: float = 120) -> None:
    """Until the subscriber has received nothing new for ``quiet_s``."""
    deadline = time.monotonic() + timeout
    last, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        n = checker.count()
        if n != last:
            last, since = n, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            return
        time.sleep(0.1)


def buffer_rows(path: Path) -> dict[tuple[str, str, int], str]:
    """(press, stream, seq) -> envelope id of every row in the final buffer file."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        out = {}
        for press, stream, seq, payload in conn.execute(
                "SELECT press, stream, seq, payload FROM messages"):
            try:
                out[(press, stream, seq)] = str(orjson.loads(payload).get("id"))
            except (orjson.JSONDecodeError, AttributeError):
                out[(press, stream, seq)] = "?"
        return out
    finally:
        conn.close()


def analyse(checker: Checker, final: dict[tuple[str, str, int], str], cuts: int
            ) -> dict[str, Any]:
    reused: list[tuple[tuple[Any, ...], int]] = []  # (key, cut in which the new id came)
    per_stream: dict[tuple[Any, ...], set[int]] = defaultdict(set)
    received: dict[tuple[str, str, int], set[str]] = defaultdict(set)
    for key, ids in checker.ids.items():
        press, stream, epoch, seq = key
        per_stream[(press, stream, epoch)].add(seq)
        received[(press, stream, seq)].update(ids)
        if len(ids) > 1:
            reused.append((key, max(ids.values())))
    by_cut: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    by_stream: dict[str, int] = defaultdict(int)
    for (press, stream, _epoch, _seq), cut in reused:
        by_cut[cut][f"{press}/{stream}"] += 1
        by_stream[stream] += 1
    per_press_cut = [n for c in by_cut.values() for n in c.values()]
    gaps = {}
    for (press, stream, epoch), seqs in per_stream.items():
        missing = (max(seqs) - min(seqs) + 1) - len(seqs)
        if missing:
            gaps[f"{press}/{stream}/{epoch}"] = missing
    # streams that are local history only (raw gauge values, unfiltered telemetry) are
    # never published: judged are the streams the subscriber sees
    published = {stream for (_p, stream, _e) in per_stream}
    final = {k: i for k, i in final.items() if k[1] in published}
    not_delivered = [k for k in final if k not in received]
    other_id = [k for k, i in final.items() if k in received and i not in received[k]]
    return {
        "cuts": cuts,
        "cuts_with_reuse": len(by_cut),
        "reused_seqs": len(reused),
        "reused_by_stream": dict(by_stream),
        "reused_per_press_per_cut_min": min(per_press_cut, default=0),
        "reused_per_press_per_cut_max": max(per_press_cut, default=0),
        "reused_by_cut": {str(c): dict(v) for c, v in sorted(by_cut.items())},
        "streams": len(per_stream),
        "gaps": gaps,
        "final_buffer_rows": len(final),
        "not_delivered": len(not_delivered),
        "not_delivered_by_stream": {s: sum(1 for k in not_delivered if k[1] == s)
                                    for s in sorted({k[1] for k in not_delivered})},
        "delivered_other_id": len(other_id),
        "examples": [list(k) for k, _ in reused[:5]],
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    if not Path("/dev/fuse").exists():
        raise RuntimeError("no /dev/fuse: the power-cut scenario needs FUSE")
    binary = Path(args.lazyfs) if args.lazyfs else build_lazyfs()
    work = args.workdir / "powercut"
    if work.exists():
        shutil.rmtree(work)
    rng = random.Random(args.seed)
    lazy = LazyFS(binary, work / "lazyfs")
    presses = args.powercut_presses
    rig = Rig(work / "rig", presses, 100, gauge_presses=min(2, presses))
    rig.start_sub = lambda: None  # type: ignore[method-assign]  # the Checker judges
    checker: Checker | None = None
    failures: list[dict[str, Any]] = []
    ups: list[float] = []
    started = time.time()
    try:
        lazy.mount()
        rig.start_infra()
        checker = Checker(rig.broker.port, args.epoch_field)
        buffer = lazy.mnt / "buffer.sqlite"
        toml = rig.cfg_dir / "collector.toml"
        toml.write_text(toml.read_text().replace('path = "buffer.sqlite"',
                                                 f'path = "{buffer}"'))
        cut = 0
        while cut < args.cuts:
            checker.cut = cut
            rig.start_daemon()
            try:
                rig.wait_health(60)
            except RuntimeError as exc:  # the daemon ended by itself
                assert rig.daemon is not None
                failures.append({"after_cut": cut, "exit": rig.daemon.returncode,
                                 "log": str(exc).strip().splitlines()[-1][:300]})
                if len(failures) > args.cuts // 2 + 3:
                    raise RuntimeError(f"the daemon keeps failing to start: {failures[-1]}") \
                        from exc
                continue
            up = rng.uniform(args.min_up, args.max_up)
            ups.append(round(up, 2))
            time.sleep(up)
            daemon = rig.daemon
            assert daemon is not None
            daemon.send_signal(signal.SIGSTOP)  # the power goes: nothing more is written
            lazy.clear_cache()  # every write not fsynced is gone
            daemon.kill()
            daemon.wait(30)
            lazy.umount()  # the reboot
            lazy.mount()
            cut += 1
            print(json.dumps({"cut": cut, "up_s": round(up, 2), "received": checker.count()}),
                  file=sys.stderr, flush=True)
        checker.cut = cut
        rig.start_daemon()  # the last run: graceful stop after the backlog is out
        rig.wait_health(60)
        time.sleep(args.max_up)
        rig.stop_sims()
        wait_quiet(checker)
        rig.stop_daemon()
        assert rig.daemon is not None
        last_exit = rig.daemon.returncode
        wait_quiet(checker)
        final = buffer_rows(buffer)
    finally:
        rig.close()
        if checker is not None:
            checker.stop()
        lazy.umount()
    assert checker is not None
    return {"scenario": "powercut", **analyse(checker, final, args.cuts),
            "start_failures": failures, "last_exit": last_exit, "up_s": ups,
            "presses": presses, "seed": args.seed,
            "commit_ms": rig.commit_ms, "wall_s": round(time.time() - started)}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cuts", type=int, default=25, help="power cuts (default 25)")
    p.add_argument("--seed", type=int, default=12, help="random moments (default 12)")
    p.add_argument("--min-up", type=float, default=1.0, help="s up before a cut, least")
    p.add_argument("--max-up", type=float, default=6.0, help="s up before a cut, most")
    p.add_argument("--lazyfs", default=None, help="LazyFS binary (default: build it)")
    p.add_argument("--powercut-presses", type=int, default=3,
                   help="presses (40 tags / 100 ms; the first two carry two gauges each)")
    p.add_argument("--epoch-field", default="epoch",
                   help="envelope field that tells buffer incarnations apart, if any")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench/powercut", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    p.add_argument("--workdir", type=Path, default=Path("/tmp/press-collector-bench"))
    args = p.parse_args(argv)
    try:
        line = run(args)
    except RuntimeError as exc:
        print(f"powercut: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(line))
    return 0


if __name__ == "__main__":
    sys.exit(main())
