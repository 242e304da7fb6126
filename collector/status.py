"""``press-collector status``: one screen for the technician, from the running daemon.

The daemon's own health endpoint (``GET /health`` on 127.0.0.1, collector/metrics.py) is
the one source: presses and their states, when each PLC last answered, the backlog,
the broker connection, every gauge line good or bad. Nothing is read from the buffer or
the broker, so the screen shows what the daemon itself sees, and works while the broker
is down. ``--json`` prints the document as it came (for scripts).

This module also holds the small per-press bookkeeping the daemon keeps for it
(:func:`gauge_line`, :func:`press_status`): kept here so that press.py and daemon.py
change by a line each.

Exit codes of ``status``: 0 all good, 1 something needs attention (broker not
connected, a PLC offline, a gauge line bad, buffer writes failing), 2 no answer (daemon
not running, health endpoint off or unreachable).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from typing import Any

DEFAULT_TIMEOUT_S = 3.0


class StatusError(Exception):
    """No health document (one line for the technician: what is wrong, what to do)."""


# -- daemon side -------------------------------------------------------------------------
def gauge_line(lines: dict[str, dict[str, Any]], gauge: str, values: int = 0, errors: int = 0,
               **fields: Any) -> None:
    """Update one gauge line's record (event loop thread; cheap: a dict update)."""
    line = lines.get(gauge)
    if line is None:
        line = lines[gauge] = {"online": None, "values": 0, "errors": 0}
    line["values"] += values
    line["errors"] += errors
    line.update(fields)


def _age(now: float, ts: Any) -> float | None:
    return None if not isinstance(ts, int | float) else round(max(0.0, now - ts), 1)


def press_status(context: Mapping[str, Any], last_poll_ts: float | None,
                 lines: Mapping[str, Mapping[str, Any]], configured: Iterable[str],
                 now: float) -> dict[str, Any]:
    """The /health fields ``status`` needs for one press: last reading age, what runs
    (part, die, material) and every configured gauge line (a line that never opened
    is bad: online None)."""
    gauges: dict[str, dict[str, Any]] = {}
    for gid in dict.fromkeys([*configured, *lines]):
        line = dict(lines.get(gid, {"online": None, "values": 0, "errors": 0}))
        gauges[gid] = {
            "online": line.get("online"), "reason": line.get("reason") or None,
            "since_s": _age(now, line.get("since_ts")), "values": line.get("values", 0),
            "errors": line.get("errors", 0),
            "last_value_age_s": _age(now, line.get("last_value_ts")),
            "last_error": line.get("last_error"),
        }
    good = sum(1 for g in gauges.values() if g["online"])
    return {"last_reading_age_s": _age(now, last_poll_ts),
            "part_number": context.get("part_number"), "die_id": context.get("die_id"),
            "material_lot": context.get("material_lot"),
            "heat_number": context.get("heat_number"),
            "gauges": gauges, "gauge_lines_good": good, "gauge_lines_bad": len(gauges) - good}


# -- client side -------------------------------------------------------------------------
def fetch_health(port: int, host: str = "127.0.0.1",
                 timeout: float = DEFAULT_TIMEOUT_S) -> dict[str, Any]:
    """GET /health; :class:`StatusError` with the reason in plain words."""
    import urllib.error
    import urllib.request

    url = f"http://{host}:{port}/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            body = resp.read()
    except urllib.error.HTTPError as exc:
        raise StatusError(f"{url} answered {exc.code} {exc.reason}: not a press-collector "
                          "health endpoint (check [metrics] port in collector.toml)") from None
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, ConnectionRefusedError):
            raise StatusError(
                f"no daemon answering on {host}:{port}: press-collector is not running, or "
                "runs with another [metrics] port (systemctl status press-collector; "
                "journalctl -u press-collector)") from None
        if isinstance(reason, TimeoutError):
            raise StatusError(f"{url}: no answer within {timeout:g} s (daemon stuck or the "
                              "machine overloaded; journalctl -u press-collector)") from None
        raise StatusError(f"{url}: {reason}") from None
    except TimeoutError:
        raise StatusError(f"{url}: no answer within {timeout:g} s (daemon stuck or the "
                          "machine overloaded; journalctl -u press-collector)") from None
    except OSError as exc:
        raise StatusError(f"{url}: {exc}") from None
    try:
        doc = json.loads(body)
    except ValueError:
        raise StatusError(f"{url}: the answer is not JSON: not a press-collector health "
                          "endpoint (check [metrics] port in collector.toml)") from None
    if not isinstance(doc, dict) or "presses" not in doc:
        raise StatusError(f"{url}: not a press-collector health document")
    return doc


def problems(doc: Mapping[str, Any]) -> list[str]:
    """What needs the technician's attention (empty: all good)."""
    out: list[str] = []
    pub = doc.get("publisher") or {}
    if pub and not pub.get("connected"):
        out.append("broker not connected: events wait in the buffer")
    sub = (doc.get("commands") or {}).get("subscription")
    if sub in ("refused", "deaf"):
        out.append(f"command subscription {sub}: commands from the broker are not received "
                   "(broker ACL, docs/security.md)")
    elif sub == "off" and pub.get("connected"):
        out.append("command connection down: commands from the broker are not received")
    buf = doc.get("buffer") or {}
    if buf.get("buffer_write_failing"):
        out.append(f"buffer writes failing: {buf.get('last_write_error')}")
    if buf.get("buffer_full"):
        out.append("buffer over max_mb with only undelivered quality events")
    for pid, st in sorted((doc.get("presses") or {}).items()):
        if not st.get("plc_online"):
            out.append(f"{pid}: PLC offline")
        for gid, g in sorted((st.get("gauges") or {}).items()):
            if not g.get("online"):
                why = g.get("reason") or ("never connected" if g.get("online") is None
                                          else "offline")
                out.append(f"{pid}/{gid}: gauge line bad ({why})")
        for role, o in sorted((st.get("outputs") or {}).items()):
            if o.get("alarm"):  # docs/outputs.md
                out.append(f"{pid}: output {role} not written ({o.get('write_errors')} "
                           "failed writes; output_alarm)")
    for task, n in sorted((doc.get("task_failures") or {}).items()):
        out.append(f"task {task} crashed {n} time(s) (restarted; see the log)")
    return out


def _fmt_age(age: Any) -> str:
    if not isinstance(age, int | float):
        return "never"
    if age < 60:
        return f"{age:.1f} s ago"
    if age < 3600:
        return f"{age / 60:.0f} min ago"
    return f"{age / 3600:.1f} h ago"


def _fmt_uptime(s: Any) -> str:
    if not isinstance(s, int | float):
        return "?"
    h, rem = divmod(int(s), 3600)
    return f"{h} h {rem // 60} min" if h else f"{rem // 60} min {rem % 60} s"


def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
            for r in rows]


def render(doc: Mapping[str, Any], where: str = "") -> str:
    """The plain-text screen."""
    d = doc.get("daemon") or {}
    pub = doc.get("publisher") or {}
    out = doc.get("outbox") or {}
    buf = doc.get("buffer") or {}
    lines = [f"press-collector on {d.get('host', '?')} (pid {d.get('pid', '?')}, up "
             f"{_fmt_uptime(d.get('uptime_s'))}){f' - health at {where}' if where else ''}"]
    broker = d.get("broker", "broker")
    if pub.get("connected"):
        lines.append(f"broker {broker}: connected ({pub.get('reconnects', 0)} reconnects, "
                     f"{pub.get('inflight', 0)} in flight)")
    else:
        lines.append(f"broker {broker}: NOT CONNECTED ({pub.get('connects', 0)} connects so "
                     "far); events wait in the buffer")
    pending = out.get("pending", pub.get("pending", 0))
    oldest = out.get("oldest_pending_age_s")
    size = out.get("file_bytes")
    lines.append(
        f"backlog: {pending} rows waiting"
        + (f" (oldest {_fmt_age(oldest)})" if pending and oldest is not None else "")
        + (f", buffer file {size / 2**20:.1f} MiB" if isinstance(size, int) else "")
        + (f", write errors {buf.get('write_errors')}" if buf.get("write_errors") else ""))
    presses = doc.get("presses") or {}
    rows = [["press", "state", "PLC", "last reading", "part", "die", "lot", "events",
             "poll errors"]]
    gauges: list[list[str]] = [["gauge", "line", "values", "errors", "last value",
                                "note"]]
    good = bad = 0
    for pid, st in sorted(presses.items()):
        rows.append([pid, str(st.get("state", "?")),
                     "online" if st.get("plc_online") else "OFFLINE",
                     _fmt_age(st.get("last_reading_age_s")), str(st.get("part_number") or "-"),
                     str(st.get("die_id") or "-"), str(st.get("material_lot") or "-"),
                     str(st.get("events", 0)), str(st.get("poll_errors", 0))])
        for gid, g in sorted((st.get("gauges") or {}).items()):
            ok = bool(g.get("online"))
            good += ok
            bad += not ok
            note = g.get("reason") or ""
            if g.get("online") is None:
                note = note or "never connected"
            if g.get("last_error"):
                note = (note + "; " if note else "") + f"last error: {g['last_error']}"
            gauges.append([f"{pid}/{gid}", "good" if ok else "BAD", str(g.get("values", 0)),
                           str(g.get("errors", 0)), _fmt_age(g.get("last_value_age_s")),
                           note])
    lines.append("")
    lines += _table(rows) if presses else ["no presses configured"]
    lines.append("")
    lines.append(f"gauge lines: {good} good, {bad} bad")
    if len(gauges) > 1:
        lines += ["  " + line for line in _table(gauges)]
    issues = problems(doc)
    lines.append("")
    lines.append("all good" if not issues else "needs attention:")
    lines += [f"  - {p}" for p in issues]
    return "\n".join(lines) + "\n"


def daemon_section(host: str, pid: int, started: float, broker: str,
                   now: float | None = None) -> dict[str, Any]:
    """The /health ``daemon`` block: who answers, since when, which broker."""
    now = time.time() if now is None else now
    return {"host": host, "pid": pid, "uptime_s": round(now - started, 1), "broker": broker}


__all__ = ["StatusError", "daemon_section", "fetch_health", "gauge_line", "press_status",
           "problems", "render"]
