"""One press's screen view: what the line-side page shows, built from the daemon's own
state. Pure and read-only.

Inputs: the press's ``PressWorkflow`` (its context, plan and components, read through
their public attributes; nothing is called that changes them), the screen's
``PressFeed`` (recent events: chart history, alarms, the last verdict) and the PLC /
gauge line status the press runtime keeps. Output: a JSON-able dict, language-neutral
(codes and numbers; the page translates), with absolute epoch times and the server's
``now`` so the page can count down between updates.

The view does not read MQTT or the buffer: a press whose broker is unreachable shows
exactly what its workflow decides.

Sections (``docs/operators.md`` shows them):
- head: state, ids, strokes (since the last release), operator, PLC / gauges online;
- ``first_article``: the plan's characteristics in routing order, values of the open
  attempt (or of the last judged attempt of this setup) with their verdict, the next
  one to measure, the attempt's verdict;
- ``characteristics`` (production): the last values against the tolerance, and per
  characteristic the chart: plotted points (individual values or subgroup means) over
  the recent phases, control limits per phase, markers for the annotations (die change,
  repair, material change...) and the points rule signals fired on;
- ``patrol``: the open check (due / overdue, time left) or when the next one falls due;
- ``hold``, ``inspection_100``, ``alarms`` and ``next_steps`` (codes with parameters:
  what to do now);
- ``containment`` and ``confirmations``: shown when the workflow provides them (its
  context or a component of that name, as dicts), absent otherwise.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from collector.screen.feed import PressFeed

if TYPE_CHECKING:
    from collector.domain import Characteristic, Plan
    from collector.workflow import PressWorkflow

NOTICE_S = 120.0  # an "unassigned reading" notice is shown this long
ALARMS_SHOWN = 8
PRODUCTION = ("released", "stopped")
FIRST_ARTICLE_STATES = ("awaiting_first_article", "first_article")
EXTRA_SECTIONS = ("containment", "confirmations")


def press_view(press: str, wf: PressWorkflow, feed: PressFeed, now: float,
               plc_online: bool | None = None,
               gauges: Mapping[str, Mapping[str, Any]] | None = None,
               gauge_ids: list[str] | None = None) -> dict[str, Any]:
    """The screen view of one press (see the module doc)."""
    ctx = wf.context()
    state = ctx["state"]
    shown_state = state
    if state == "offline" and wf.machine.previous:
        shown_state = wf.machine.previous  # what to show under the "offline" banner
    plan = wf.plan()
    mode = _mode(shown_state, plan, feed)
    count = ctx.get("stroke_count")
    released = feed.released if shown_state in (*PRODUCTION, "hold") else None
    since = None
    if released is not None and isinstance(count, int) \
            and isinstance(released.get("stroke_count"), int):
        since = max(0, count - released["stroke_count"])
    view: dict[str, Any] = {
        "press": press, "now": now, "version": feed.version,
        "state": state, "shown_state": shown_state, "mode": mode,
        "plc_online": plc_online,
        "ids": {k: ctx.get(k) for k in ("part_number", "plan_revision", "die_id",
                                        "material_lot", "heat_number")},
        "description": plan.description if plan is not None else None,
        "stroke_count": count, "strokes_since_release": since,
        "released_ts": released.get("ts") if released else None,
        "phase": ctx.get("phase"), "operator": ctx.get("operator"),
        "attempt": ctx.get("first_article_attempt"),
        "unreleased_strokes": ctx.get("unreleased_strokes"),
        "gauges": _gauges(gauges or {}, gauge_ids),
        "first_article": _first_article(wf, plan, feed, shown_state, mode),
        "characteristics": _characteristics(wf, plan, feed) if plan is not None else [],
        "patrol": _patrol(wf, plan, shown_state),
        "hold": _hold(feed) if shown_state == "hold" else None,
        "inspection_100": _inspection(wf, plan),
        "alarms": _alarms(feed, ctx.get("phase")),
        "notice": (feed.unassigned if feed.unassigned is not None
                   and now - float(feed.unassigned["ts"]) <= NOTICE_S else None),
        "last_command": feed.last_command,
        "last_piece_open": wf.last_piece.open is not None,
    }
    for name in EXTRA_SECTIONS:
        view[name] = _extra(wf, ctx, name)
    view["next_steps"] = _next_steps(view, plan)
    return view


# -- sections -----------------------------------------------------------------------------

def _mode(state: str, plan: Plan | None, feed: PressFeed) -> str:
    if state == "offline":
        return "offline"  # never online since the start: nothing known
    if plan is None:
        return "no_plan"
    if state == "setup":
        return "setup"
    if state in FIRST_ARTICLE_STATES:
        return "first_article"
    if state == "hold" and feed.hold is not None \
            and feed.hold.get("cause") == "first_article_fail":
        return "first_article"
    return "production"


def _char_info(c: Characteristic) -> dict[str, Any]:
    return {"id": c.id, "name": c.name, "nominal": _s(c.nominal), "lsl": _s(c.lsl),
            "usl": _s(c.usl), "unit": c.unit, "class": c.char_class, "gauge": c.gauge,
            "channel": c.channel, "resolution": _s(c.resolution)}


def _first_article(wf: PressWorkflow, plan: Plan | None, feed: PressFeed, state: str,
                   mode: str) -> dict[str, Any] | None:
    """The first-article table, or None when there is nothing to show."""
    if plan is None:
        return None
    from collector.workflow.routing import piece_key, pieces

    attempt = wf.first_article.attempt
    last = feed.first_article
    judged = (last if last is not None and last.get("attempt") == attempt and attempt
              and last.get("phase") == wf.spc.phase else None)
    if mode == "production":
        patrol_values = any(v.get("phase") == wf.spc.phase
                            for f in feed.chars.values() for v in f.values)
        if judged is None or patrol_values:
            return None  # production shows its values; the verdict is history
    elif mode not in ("first_article", "setup"):
        return None
    size = plan.first_article_sample_size
    open_attempt = wf.first_article.open if state == "first_article" else None
    results: dict[str, dict[str, Any]] = {}
    if open_attempt is not None:
        results = dict(open_attempt.results)
    elif judged is not None:
        seen: dict[str, int] = {}
        for r in judged["results"]:
            cid = str(r.get("characteristic"))
            seen[cid] = seen.get(cid, 0) + 1
            results[piece_key(cid, seen[cid])] = r
    next_key = None
    if mode in ("first_article", "setup") and (open_attempt is not None
                                               or state == "awaiting_first_article"
                                               or (state == "hold" and judged is None)):
        order = wf.first_article.order(plan, open_attempt is not None)
        if order:
            nxt = plan.characteristics[order[0]]
            next_key = piece_key(nxt.id, pieces(results, nxt.id) + 1)
    rows = []
    for k in range(1, size + 1):
        for c in plan.characteristics:
            key = piece_key(c.id, k)
            r = results.get(key)
            rows.append({**_char_info(c), "piece": k, "key": key,
                         "value": r.get("value") if r else None,
                         "verdict": r.get("verdict") if r else None,
                         "deviation": r.get("deviation") if r else None,
                         "next": key == next_key})
    verdict = judged.get("verdict") if judged is not None and open_attempt is None else None
    return {"attempt": attempt if open_attempt is not None or judged is not None
            else attempt + 1,
            "sample_size": size, "rows": rows, "next": next_key,
            "measured": sum(1 for r in rows if r["value"] is not None), "total": len(rows),
            "verdict": verdict, "verdict_ts": judged.get("ts") if verdict else None,
            "failed": judged.get("failed", []) if verdict else []}


def _characteristics(wf: PressWorkflow, plan: Plan, feed: PressFeed) -> list[dict[str, Any]]:
    out = []
    for c in plan.characteristics:
        cf = feed.chars.get(c.id)
        last = None
        if cf is not None:
            valid = [v for v in cf.values if not v["voided"]]
            if valid:
                last = {k: valid[-1][k] for k in ("value", "verdict", "deviation", "ts",
                                                  "purpose", "phase")}
        out.append({**_char_info(c), "last": last, "chart": _chart(wf, c, cf, feed)})
    return out


def _chart(wf: PressWorkflow, c: Characteristic, cf: Any, feed: PressFeed
           ) -> dict[str, Any]:
    """Points, limits per phase and annotation markers of one characteristic's chart."""
    spc_state = wf.spc.chars.get(c.id)
    chart = spc_state.chart if spc_state is not None else None
    points = []
    if cf is not None:
        for p in cf.points.values():
            stat = p.stat()
            if stat is None:
                continue
            points.append({"sid": p.sid, "phase": p.phase, "value": stat,
                           "n": len(p.values), "size": p.size, "complete": p.complete,
                           "signal": p.signal, "rules": list(p.rules), "ts": p.ts})
    limits: dict[int, dict[str, Any]] = dict(cf.limits) if cf is not None else {}
    if spc_state is not None and spc_state.limits is not None:
        limits[wf.spc.phase] = spc_state.limits.as_dict()
    phases = sorted({p["phase"] for p in points} | {wf.spc.phase})
    if spc_state is not None and spc_state.limits is not None and spc_state.limits_from_plan:
        for phase in phases:  # the plan's fixed limits hold for every phase of the plan
            limits.setdefault(phase, spc_state.limits.as_dict())
    shown_limits = [{"phase": ph, "center": lim["center"], "ucl": lim["ucl"],
                     "lcl": lim["lcl"], "chart": lim.get("chart")}
                    for ph in phases if (lim := limits.get(ph)) is not None]
    if chart is None and shown_limits:
        chart = shown_limits[-1]["chart"]
    markers = []
    first_phase = points[0]["phase"] if points else wf.spc.phase
    for a in feed.annotations:
        phase = a.get("phase")
        if not isinstance(phase, int) or phase < first_phase:
            continue  # before the first plotted point: off the chart
        index = next((i for i, p in enumerate(points) if p["phase"] >= phase), len(points))
        markers.append({"index": index, "type": a.get("type"), "ts": a.get("ts"),
                        "phase": phase})
    return {"chart": chart, "size": spc_state.n if spc_state is not None else None,
            "points": points, "limits": shown_limits, "markers": markers,
            "lsl": _f(c.lsl), "usl": _f(c.usl), "nominal": _f(c.nominal),
            "decimals": _decimals(c)}


def _patrol(wf: PressWorkflow, plan: Plan | None, state: str) -> dict[str, Any] | None:
    if plan is None or state not in PRODUCTION or not (
            plan.patrol_every_strokes or plan.patrol_every_min):
        return None
    grace_s = plan.overdue_grace_min * 60.0
    due = wf.patrol.due
    out: dict[str, Any] = {"every_strokes": plan.patrol_every_strokes,
                           "every_min": plan.patrol_every_min,
                           "grace_min": plan.overdue_grace_min, "due": None, "next": None}
    if due is not None:
        out["due"] = {"id": due.id, "ts": due.ts, "reason": due.reason,
                      "overdue": due.overdue, "pending": list(due.pending),
                      "deadline_ts": due.ts + grace_s}
        return out
    base = wf.patrol.base
    count = wf.counter.count
    nxt: dict[str, Any] = {"strokes_left": None, "due_ts": None}
    if base is not None:
        base_strokes, base_ts = base
        if plan.patrol_every_strokes and count is not None and base_strokes is not None:
            nxt["strokes_left"] = max(0, plan.patrol_every_strokes - (count - base_strokes))
        if plan.patrol_every_min:
            nxt["due_ts"] = base_ts + plan.patrol_every_min * 60.0
    out["next"] = nxt
    return out


def _hold(feed: PressFeed) -> dict[str, Any]:
    hold = dict(feed.hold or {})
    cause_alarm = None
    if hold.get("cause") in ("reaction_hold", "measurement_fail"):
        cause_alarm = next((a for a in reversed(feed.alarms.values())
                            if "hold" in a["actions"]), None)
    return {**hold, "alarm": cause_alarm}


def _inspection(wf: PressWorkflow, plan: Plan | None) -> dict[str, Any] | None:
    return wf.inspection.totals(plan, wf.settings.inspection_100_max_unmeasured)


def _alarms(feed: PressFeed, phase: Any) -> list[dict[str, Any]]:
    shown = [a for a in reversed(feed.alarms.values())
             if a["acknowledged"] is None or a.get("phase") == phase]
    return [dict(a) for a in shown[:ALARMS_SHOWN]]


def _gauges(lines: Mapping[str, Mapping[str, Any]], ids: list[str] | None
            ) -> list[dict[str, Any]]:
    out = []
    for gid in ids if ids is not None else sorted(lines):
        line = lines.get(gid, {})
        out.append({"id": gid, "online": line.get("online"),
                    "reason": line.get("reason"), "last_value_ts": line.get("last_value_ts"),
                    "last_error": line.get("last_error")})
    return out


def _extra(wf: PressWorkflow, ctx: Mapping[str, Any], name: str) -> dict[str, Any] | None:
    """``containment`` / ``confirmations`` as the workflow's context carries them (present
    only while a containment is open / a joint sign-off is waiting)."""
    value: Any = ctx.get(name)
    if not isinstance(value, Mapping) or not value:
        return None
    return _jsonable(value)


def _next_steps(view: dict[str, Any], plan: Plan | None) -> list[dict[str, Any]]:
    """What to do now, most urgent first (codes; the page words them)."""
    steps: list[dict[str, Any]] = []
    state, shown = view["state"], view["shown_state"]
    if state == "offline":
        steps.append({"code": "plc_offline"})
    if plan is None and view["mode"] != "offline":
        steps.append({"code": "no_plan", "part_number": view["ids"]["part_number"]})
        return steps
    fa = view["first_article"]
    if shown == "setup":
        steps.append({"code": "finish_setup"})
    elif shown in FIRST_ARTICLE_STATES and fa is not None:
        row = next((r for r in fa["rows"] if r["next"]), None)
        steps.append({"code": "measure_first_article" if shown == "awaiting_first_article"
                      else "measure_next",
                      "characteristic": row["id"] if row else None,
                      "name": row["name"] if row else None,
                      "gauge": row["gauge"] if row else None,
                      "piece": row["piece"] if row else None})
    elif shown == "hold":
        hold = view["hold"] or {}
        cause = hold.get("cause")
        if cause == "first_article_fail":
            steps.append({"code": "first_article_failed",
                          "failed": fa["failed"] if fa else [],
                          "strokes": view["unreleased_strokes"]})
        elif cause == "hold_command":
            steps.append({"code": "hold_command", "operator": hold.get("operator"),
                          "why": hold.get("why")})
        else:
            alarm = hold.get("alarm") or {}
            # the workflow's suspect range when it has one (since the last good check of
            # that characteristic), else everything since the release
            containment = view["containment"] or {}
            parts = containment.get("parts")
            steps.append({"code": "hold_reaction", "cause": alarm.get("cause"),
                          "characteristic": alarm.get("characteristic"),
                          "strokes": view["strokes_since_release"] if parts is None else parts})
    if view["containment"] is not None:
        steps.append({"code": "containment"})
    if view["confirmations"] is not None:
        steps.append({"code": "confirmations"})
    insp = view["inspection_100"]
    if insp is not None:
        steps.append({"code": "inspection_100", "unmeasured": insp["unmeasured_pieces"],
                      "max_unmeasured": insp["max_unmeasured"]})
    patrol = view["patrol"]
    if patrol is not None and patrol["due"] is not None:
        due = patrol["due"]
        steps.append({"code": "patrol_overdue" if due["overdue"] else "patrol_due",
                      "pending": due["pending"], "deadline_ts": due["deadline_ts"]})
    if any(a["acknowledged"] is None for a in view["alarms"]):
        steps.append({"code": "acknowledge_alarms",
                      "count": sum(a["acknowledged"] is None for a in view["alarms"])})
    if not steps and shown in PRODUCTION:
        steps.append({"code": "running"})
    return steps


# -- helpers --------------------------------------------------------------------------------

def _decimals(c: Characteristic) -> int:
    """Digits after the point for the chart's numbers: the gauge's resolution, else one
    more than the plan's tolerance is written with."""
    def places(d: Decimal | None) -> int:
        exponent = d.as_tuple().exponent if d is not None else 0
        return -exponent if isinstance(exponent, int) and exponent < 0 else 0

    if c.resolution is not None:
        return min(6, places(c.resolution))
    return min(6, max(places(c.nominal), places(c.lsl), places(c.usl)) + 1)


def _s(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


def _f(value: Decimal | None) -> float | None:
    return None if value is None else float(value)


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_jsonable(v) for v in value]
    if isinstance(value, Decimal):
        return str(value)
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)
