"""Memory, snapshot size and CPU of one characteristic's SPC state over a long phase:
the window of ``spc_history_subgroups`` (issue 12) against the whole history kept (the
code before it, reproduced with a window larger than the phase).

    python -m bench.spc_history [--values 1000,10000,50000] [--n 1,5] [--keep 100]

Prints one JSON line per (n, values, keep): ``heap_kib`` (what the CharSpc holds after
the phase: ``sys.getsizeof`` over its objects, each counted once), ``snapshot_bytes``
(its part of the workflow snapshot, JSON), ``add_us_last_1000`` (mean CPU per value over
the last 1,000 values: the run rules and the limits look at the history), ``dump_ms``
(one snapshot of it: written at every event).
The whole-history runs stop at 10,000 values per n (``--max-unbounded``): their cost per
value grows with the phase (quadratic in all), which is the point.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import sys
import time
from decimal import Decimal
from typing import Any

from collector.domain import Characteristic
from collector.quality import CharSpc
from collector.workflow import codec

UNBOUNDED = 10**9


def deep_size(obj: Any, seen: set[int] | None = None) -> int:
    """Bytes of ``obj`` and everything it holds (containers, dataclass fields), once each."""
    seen = set() if seen is None else seen
    if id(obj) in seen:
        return 0
    seen.add(id(obj))
    size = sys.getsizeof(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        size += sum(deep_size(getattr(obj, f.name), seen) for f in dataclasses.fields(obj))
    elif isinstance(obj, dict):
        size += sum(deep_size(k, seen) + deep_size(v, seen) for k, v in obj.items())
    elif isinstance(obj, (list, tuple, set, frozenset)):
        size += sum(deep_size(v, seen) for v in obj)
    return size


def phase(n: int, values: int, keep: int, seed: int = 1) -> dict[str, object]:
    char = Characteristic("C1", "hole", Decimal("25.00"), Decimal("24.95"),
                          Decimal("25.05"))
    rng = random.Random(seed)
    stream = [round(25.0 + rng.gauss(0, 0.012), 3) for _ in range(values)]
    st = CharSpc.new(char, 1, n)
    t_last = 0.0
    for i, v in enumerate(stream):
        t0 = time.perf_counter()
        st.add(char, f"p1/gauge/{i}", v, keep)
        if i >= values - 1000:
            t_last += time.perf_counter() - t0
    heap = deep_size(st)
    t0 = time.perf_counter()
    text = json.dumps(codec.dump(st), separators=(",", ":"))
    dump_ms = (time.perf_counter() - t0) * 1000
    return {"bench": "spc_history", "n": n, "values": values,
            "keep": "whole" if keep >= UNBOUNDED else keep,
            "groups_in_memory": len(st.groups), "subgroups_summed": st.history.subgroups,
            "heap_kib": round(heap / 1024, 1), "snapshot_bytes": len(text),
            "add_us_last_1000": round(t_last / min(1000, values) * 1e6, 1),
            "dump_ms": round(dump_ms, 2)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench.spc_history", description=__doc__)
    p.add_argument("--values", default="1000,10000,50000")
    p.add_argument("--n", default="1,5")
    p.add_argument("--keep", type=int, default=100)
    p.add_argument("--max-unbounded", type=int, default=10_000)
    args = p.parse_args(argv)
    for n in (int(x) for x in args.n.split(",")):
        for values in (int(x) for x in args.values.split(",")):
            print(json.dumps(phase(n, values, args.keep)), flush=True)
            if values <= args.max_unbounded:
                print(json.dumps(phase(n, values, UNBOUNDED)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
