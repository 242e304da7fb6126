"""Summarise a py-spy raw (collapsed) profile: inclusive and self share per function.

    py-spy record --pid PID --duration 20 --rate 250 --format raw -o prof.txt --nonblocking
    python bench/profile_summary.py prof.txt
"""

from __future__ import annotations

import collections
import sys


def _name(frame: str) -> str:
    """'func (path/to/file.py:12)' -> 'func (to/file.py)'."""
    frame = frame.strip()
    if "(" not in frame:
        return frame
    fn, _, loc = frame.partition(" (")
    loc = loc.rstrip(")").rsplit(":", 1)[0]
    return f"{fn} ({'/'.join(loc.split('/')[-2:])})"


def main(path: str, top: int = 30) -> None:
    incl: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    total = 0
    with open(path) as fh:
        for line in fh:
            stack, _, n = line.rstrip().rpartition(" ")
            if not stack:
                continue
            count = int(n)
            total += count
            names = [_name(f) for f in stack.split(";")]
            for name in set(names):
                incl[name] += count
            own[names[-1]] += count
    print("samples", total)
    print("== inclusive")
    for name, count in incl.most_common(top):
        print(f"{100 * count / total:5.1f}% {name}")
    print("== self")
    for name, count in own.most_common(top):
        print(f"{100 * count / total:5.1f}% {name}")


if __name__ == "__main__":
    main(sys.argv[1])
