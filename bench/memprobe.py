"""Where the daemon's memory goes: run ``collector.cli`` in this process with tracemalloc
and log, every ``--every`` s, RSS against the Python heap, SQLite's own allocator and
glibc's arenas; at the ``--at`` marks, the tracemalloc diff against the first mark.

Why a wrapper and not a /health field: the figures that matter (``sqlite3_memory_used``,
``mallinfo2``, tracemalloc) cost something or need ctypes, and belong to a probe run, not
to the daemon. Used by ``bench/run memory --probe DIR`` (bench/README.md, "Memory").

    python -m bench.memprobe --out DIR [--at 60,300,900] [--every 15] -- run --config-dir C

Writes ``DIR/probe.jsonl`` (one line per sample), ``DIR/diff-<s>.txt`` (tracemalloc: top
lines by growth since the first mark, and since the previous mark) and
``DIR/types-<s>.txt`` (live objects by type, growth since the first mark).
"""

from __future__ import annotations

import _sqlite3
import argparse
import ctypes
import gc
import json
import sys
import threading
import time
import tracemalloc
import types
from collections import Counter, deque
from pathlib import Path
from typing import Any


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]


def _libs() -> tuple[Any, Any]:
    """(libsqlite3, libc) as ctypes handles, or None each where not found. Symbols are
    looked up through the sqlite3 module's own extension (it and the libsqlite3 it
    links, as tests/test_buffer_memory.py does), so the counters are the daemon's."""
    sqlite = libc = None
    try:
        sqlite = ctypes.CDLL(_sqlite3.__file__)
        sqlite.sqlite3_memory_used.restype = ctypes.c_int64
        sqlite.sqlite3_memory_highwater.restype = ctypes.c_int64
        sqlite.sqlite3_memory_highwater.argtypes = [ctypes.c_int]
    except (OSError, AttributeError):
        sqlite = None
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = _MallInfo2
    except (OSError, AttributeError):
        libc = None
    return sqlite, libc


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def sample(t0: float, sqlite: Any, libc: Any) -> dict[str, Any]:
    mb = 2**20
    out: dict[str, Any] = {"t": round(time.time() - t0, 1),
                           "rss_mb": round(_status_kib("VmRSS") / 1024, 2),
                           "hwm_mb": round(_status_kib("VmHWM") / 1024, 2),
                           "py_blocks": sys.getallocatedblocks(),
                           "gc_objects": len(gc.get_objects())}
    if tracemalloc.is_tracing():
        cur, peak = tracemalloc.get_traced_memory()
        out["traced_mb"] = round(cur / mb, 2)
        out["traced_peak_mb"] = round(peak / mb, 2)
    if sqlite is not None:
        out["sqlite_mb"] = round(sqlite.sqlite3_memory_used() / mb, 2)
        out["sqlite_hw_mb"] = round(sqlite.sqlite3_memory_highwater(0) / mb, 2)
    if libc is not None:
        mi = libc.mallinfo2()
        out.update(malloc_arena_mb=round(mi.arena / mb, 2),
                   malloc_mmap_mb=round(mi.hblkhd / mb, 2),
                   malloc_used_mb=round(mi.uordblks / mb, 2),
                   malloc_free_mb=round(mi.fordblks / mb, 2),
                   malloc_top_free_mb=round(mi.keepcost / mb, 2))
    return out


def _diff_text(new: tracemalloc.Snapshot, old: tracemalloc.Snapshot, top: int) -> str:
    stats = new.compare_to(old, "traceback" if tracemalloc.get_traceback_limit() > 1
                           else "lineno")
    lines = []
    for s in stats[:top]:
        lines.append(str(s))
        if len(s.traceback) > 1:
            lines += [f"    {frame}" for frame in s.traceback.format()[::2]]
    total = sum(s.size_diff for s in stats)
    return f"total traced diff {total / 2**20:+.2f} MiB\n" + "\n".join(lines) + "\n"


def type_counts() -> Counter[str]:
    """Live gc-tracked objects by type (what tracemalloc's line numbers point at)."""
    return Counter(f"{type(o).__module__}.{type(o).__qualname__}" for o in gc.get_objects())


def container_sizes() -> dict[int, tuple[str, int]]:
    """len() of every live dict / list / set / deque with 32 or more items, by id: a
    container that keeps growing holds untracked items (str, int, bytes, atom tuples)
    that no count of objects by type shows."""
    out = {}
    for o in gc.get_objects():
        if isinstance(o, (dict, list, set, deque)) and len(o) >= 32:
            out[id(o)] = (type(o).__qualname__, len(o))
    return out


def _owner(obj: Any, skip: Any) -> str:
    """Who holds ``obj``: for an instance, its class and attribute (3.11 keeps small
    instance dicts inline, so the instance itself is the referrer); for a plain dict, the
    key; else the referrer's type. ``skip``: the probe's own index of objects."""
    names = []
    for ref in gc.get_referrers(obj):
        if ref is skip or isinstance(ref, types.FrameType):
            continue
        attrs = getattr(ref, "__dict__", None) if not isinstance(ref, type) else None
        if isinstance(attrs, dict):
            attr = next((k for k, v in attrs.items() if v is obj), "?")
            names.append(f"{type(ref).__module__}.{type(ref).__qualname__}.{attr}")
        elif isinstance(ref, dict):
            owners = [up for up in gc.get_referrers(ref) if getattr(up, "__dict__", None) is ref]
            attr = next((k for k, v in ref.items() if v is obj), "?")
            names.append(f"{type(owners[0]).__module__}.{type(owners[0]).__qualname__}.{attr}"
                         if owners else f"dict[{attr!r:.40}]")
        else:
            names.append(f"{type(ref).__module__}.{type(ref).__qualname__}")
        if len(names) >= 4:
            break
    return ", ".join(names) or "?"


def _containers_text(new: dict[int, tuple[str, int]], old: dict[int, tuple[str, int]],
                     top: int) -> str:
    grown = sorted(((n - old[i][1], i, kind, n) for i, (kind, n) in new.items()
                    if i in old and old[i][0] == kind and n > old[i][1]), reverse=True)
    by_id = {id(o): o for o in gc.get_objects()} if grown else {}
    lines = []
    for d, i, kind, n in grown[:top]:
        obj = by_id.get(i)
        sample = ""
        if isinstance(obj, dict) and obj:
            k, v = next(reversed(obj.items()))
            sample = f" last item {k!r:.60}: {type(v).__qualname__}"
        elif isinstance(obj, (list, deque)) and obj:
            sample = f" last item {obj[-1]!r:.60}"
        holder = _owner(obj, by_id) if obj is not None else "?"
        lines.append(f"{d:+7d} {n:8d} {kind} held by {holder}{sample}")
    return "\n".join(lines) + "\n"


def _types_text(new: Counter[str], old: Counter[str], top: int) -> str:
    grown = sorted(((new[k] - old.get(k, 0), k) for k in new), reverse=True)[:top]
    return "\n".join(f"{d:+7d} {new[k]:8d} {k}" for d, k in grown if d) + "\n"


def _probe(out: Path, every: float, marks: list[float], top: int, stop: threading.Event
           ) -> None:
    sqlite, libc = _libs()
    t0 = time.time()
    first: tracemalloc.Snapshot | None = None
    previous: tracemalloc.Snapshot | None = None
    first_types: Counter[str] | None = None
    first_sizes: dict[int, tuple[str, int]] = {}
    first_at = prev_at = 0.0
    pending = sorted(marks)
    with open(out / "probe.jsonl", "a") as f:
        while not stop.wait(every if not pending else
                            max(0.0, min(every, pending[0] - (time.time() - t0)))):
            now = time.time() - t0
            f.write(json.dumps(sample(t0, sqlite, libc)) + "\n")
            f.flush()
            if not pending or now < pending[0] - 0.5:
                continue
            mark = pending.pop(0)
            counts = type_counts()
            sizes = container_sizes()
            snap = None
            if tracemalloc.is_tracing():
                snap = tracemalloc.take_snapshot().filter_traces(
                    [tracemalloc.Filter(False, tracemalloc.__file__)])
            if first_types is None:
                first, first_types, first_sizes, first_at = snap, counts, sizes, mark
            else:
                (out / f"types-{mark:.0f}.txt").write_text(
                    f"# objects by type, {mark:.0f} s vs {first_at:.0f} s (growth, count, "
                    "type)\n" + _types_text(counts, first_types, top)
                    + f"\n# containers that grew, {mark:.0f} s vs {first_at:.0f} s (growth, "
                    "len, type, holder)\n" + _containers_text(sizes, first_sizes, top))
                if snap is not None and first is not None and previous is not None:
                    (out / f"diff-{mark:.0f}.txt").write_text(
                        f"# {mark:.0f} s vs {first_at:.0f} s\n" + _diff_text(snap, first, top)
                        + f"\n# {mark:.0f} s vs {prev_at:.0f} s\n"
                        + _diff_text(snap, previous, top))
            previous, prev_at = snap, mark


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--" not in argv:
        raise SystemExit("usage: python -m bench.memprobe --out DIR [options] -- <cli args>")
    split = argv.index("--")
    p = argparse.ArgumentParser(prog="bench.memprobe", description=__doc__)
    p.add_argument("--out", type=Path, required=True, help="directory for the probe files")
    p.add_argument("--every", type=float, default=15.0, help="s between samples")
    p.add_argument("--at", default="60,300,900",
                   help="s of the tracemalloc snapshots; the first is the base of the diffs")
    p.add_argument("--frames", type=int, default=1, help="tracemalloc frames per trace")
    p.add_argument("--top", type=int, default=25, help="lines per diff")
    p.add_argument("--no-tracemalloc", action="store_true",
                   help="RSS / SQLite / glibc only (tracemalloc costs CPU and memory)")
    args = p.parse_args(argv[:split])
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.no_tracemalloc:
        tracemalloc.start(args.frames)
    stop = threading.Event()
    marks = [float(x) for x in args.at.split(",") if x.strip()]
    threading.Thread(target=_probe, args=(args.out, args.every, marks, args.top, stop),
                     daemon=True, name="memprobe").start()
    from collector.cli import main as cli_main

    try:
        return cli_main(argv[split + 1:])
    finally:
        stop.set()


if __name__ == "__main__":
    sys.exit(main())
