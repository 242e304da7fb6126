"""Reading a version 1 snapshot (the one-module workflow, until 2026-12-05).

A daemon upgraded in place finds its presses' version 1 snapshots in the buffer
(``kv`` table, ``workflow/<press>``); ``upgrade`` turns one into the version 2 layout,
which the components then load and check as usual. This is the one place that still
names the old keys. The old quality block was all or nothing: a malformed one gave fresh
quality parts (and no open setup, no PLC-reported ids); ``upgrade`` keeps that by
leaving the quality sections out, which version 2 treats the same way. Older version 1
snapshots without the keys added later (issue 11: ``stroke_raw``, ``count_ts``,
``counter_suspect``, ``open_setup``; issue 5: ``i100``, ``overdues``) read as before.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

VERSION = 1


def upgrade(old: Mapping[str, Any]) -> dict[str, Any]:
    """The version 2 snapshot of a version 1 snapshot (``KeyError`` / ``TypeError``
    when it is malformed; the caller starts fresh then)."""
    count = old.get("stroke_count")
    raw = old.get("stroke_raw", count) if count is not None else None
    raw_ts = old.get("count_ts", old.get("last_stroke_ts")) if raw is not None else None
    q = old.get("quality")
    new: dict[str, Any] = {
        "version": 2, "press_id": old.get("press_id"),
        "machine": {"state": old.get("state"), "previous": old.get("previous_state"),
                    "online": old.get("online"), "baselined": old.get("baselined")},
        "setup": {"ids": old.get("ids"), "setup_mode": old.get("setup_mode"),
                  "repair": old.get("repair"), "plc_ids": [], "open": None},
        "counter": {"count": count, "last_stroke_ts": old.get("last_stroke_ts"), "raw": raw,
                    "raw_ts": raw_ts, "suspect": old.get("counter_suspect")},
        "first_article": {"attempt": old.get("attempt"),
                          "unreleased": old.get("unreleased_strokes"),
                          "open": _mapping(old.get("first_article"))},
    }
    try:
        quality = _quality(q, old.get("patrol_last"))
    except (KeyError, TypeError, ValueError, AttributeError):
        return new  # no quality sections: fresh quality parts, as version 1 did
    new["setup"]["plc_ids"] = list(q["plc_ids"])
    new["setup"]["open"] = q.get("open_setup")
    return {**new, **quality}


def _quality(q: Any, patrol_last: Any) -> dict[str, Any]:
    if not isinstance(q, Mapping):
        raise TypeError("quality")
    lp, op, die = q["last_piece_open"], q["operator"], q["compare_die"]
    on = bool(q["inspection_100"])
    track = q.get("i100") if on else None
    return {
        "spc": {"phase": q["phase"], "key": q["spc_key"], "chars": q["spc"]},
        "patrol": {"position": patrol_last, "base": q["patrol_base"], "due": _mapping(q["due"]),
                   "due_seq": q["due_seq"], "missed": q.get("overdues", [])},
        # on, without a track (a snapshot older than the track): counted from now
        "inspection_100": {"track": (track if track is not None else {"since_ts": None})
                           if on else None},
        "last_piece": {"open": lp if isinstance(lp, Mapping)
                       and isinstance(lp.get("results"), Mapping) else None,
                       "stored": q["last_pieces"],
                       "compare_die": die if isinstance(die, str) else None},
        "operator_log": {"operator": op if isinstance(op, str) else None,
                         "last": _mapping(q["last_meas"])},
    }


def _mapping(value: Any) -> Any:
    return value if isinstance(value, Mapping) else None
