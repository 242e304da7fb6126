"""One press at run time: driver events in, workflow decisions, rows into the outbox.

This is the hot path of the daemon. A poll of 40 tags costs one workflow call, one JSON
encoding and one in-memory append to the outbox batch; nothing here awaits, so a slow
disk or broker never stalls polling (the outbox's writer thread and the publisher take
it from there).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from buffer.store import Outbox, OutboxRow
from collector import messages, streams, text_safety
from collector.command_gate import CLEARED, CommandGate, Drop, Refuse, Replay
from collector.domain import Event, Plan, WorkflowSettings
from collector.event_kinds import GaugeConnectionBody, GaugeErrorBody
from collector.messages import EVENTS_STREAM, TELEMETRY_STREAM, Topics
from collector.metrics import PollTiming
from collector.status import gauge_line
from collector.telemetry_filter import TelemetryFilter
from collector.workflow import CommandResult, PressWorkflow, reading
from drivers.base import ConnectionChange, DriverEvent, GaugeError, GaugeValue, PollResult

log = logging.getLogger(__name__)

GAUGE_STREAM = streams.GAUGE
CMD_RESULT_STREAM = streams.CMD_RESULT
# Every poll's full values when the telemetry filter held some back (history only).
TELEMETRY_RAW_STREAM = streams.TELEMETRY_RAW
# The restart snapshot between events (every event and state change writes one at once).
# What changes between events is the stroke counter, and a restart counts the strokes made
# since the snapshot from the PLC's own counter (collector/workflow counter), so a few
# seconds old loses nothing; each snapshot is a dump + JSON + a synced commit per press
# (7.5 % of the daemon's Python time at line load with 1 s: bench.profile_run).
SNAPSHOT_EVERY_S = 5.0
# PLC strings that land in every event's context: sanitised (collector/text_safety.py)
ID_ROLES = ("part_number", "die_id", "material_lot", "heat_number")


def snapshot_key(press: str) -> str:
    return f"workflow/{press}"


class PressRuntime:
    """Feeds one press's workflow and writes everything it produces to the outbox."""

    def __init__(self, press_id: str, role_tags: Mapping[str, str], settings: WorkflowSettings,
                 plans: Mapping[str, Plan], outbox: Outbox, topics: Topics,
                 publish_telemetry: bool = True,
                 on_state: Callable[[str, str], None] | None = None,
                 telemetry_filter: TelemetryFilter | None = None,
                 gate: CommandGate | None = None) -> None:
        self.press = press_id
        self.gate = gate if gate is not None else CommandGate(press_id, topics.root)
        self.telemetry_filter = telemetry_filter
        self.timing = PollTiming()
        self.role_tags = tuple(role_tags.items())  # (tag name, role)
        self._id_role_tags = tuple((t, r) for t, r in self.role_tags if r in ID_ROLES)
        self.sanitised_by_tag: dict[str, int] = {}  # PLC strings with unsafe characters
        self._sanitised_last: dict[str, str] = {}
        self.outbox = outbox
        self.topics = topics
        self.publish_telemetry = publish_telemetry
        self._streams = streams.streams(publish_telemetry)  # collector/streams.py
        self.on_state = on_state
        self.plc_source = f"{press_id}/plc"
        self.plc_online = False
        self.stats: dict[str, int] = {"polls": 0, "events": 0, "gauge_values": 0,
                                      "gauge_errors": 0, "poll_errors": 0, "late_polls": 0}
        # for `press-collector status` (/health): when the PLC last answered, and each
        # gauge line's state (collector/status.py)
        self.last_poll_ts: float | None = None
        self.gauge_lines: dict[str, dict[str, Any]] = {}
        snapshot = outbox.get_kv(snapshot_key(press_id))
        if snapshot:
            self.workflow = PressWorkflow.restore(press_id, settings, plans, snapshot)
        else:
            self.workflow = PressWorkflow(press_id, settings, plans)
        self._last_state = ""
        self._last_unmeasured: int | None = None  # 100 % inspection gap in the state
        self._last_snapshot = 0.0
        self._telemetry_topic = topics.telemetry(press_id)
        # called with (seq, event) for every event written (the line-side screen's feed,
        # collector/screen/); empty unless [screen] is configured
        self.observers: list[Callable[[int, Event], None]] = []

    # -- driver sink -------------------------------------------------------------------
    def sink(self, event: DriverEvent) -> None:
        """The one entry point for every driver of this press (synchronous, cheap)."""
        if isinstance(event, PollResult):
            self._on_poll(event)
        elif isinstance(event, GaugeValue):
            self._on_gauge(event)
        elif isinstance(event, GaugeError):
            self._on_gauge_error(event)
        elif isinstance(event, ConnectionChange):
            self._on_connection(event)

    def _on_poll(self, result: PollResult) -> None:
        stats = self.stats
        stats["polls"] += 1
        stats["late_polls"] = result.late_polls
        self.last_poll_ts = result.ts
        self.timing.add(result.started - result.scheduled)
        values = result.values
        if result.errors:
            stats["poll_errors"] += 1
        errors = result.errors  # a flagged value (NaN, bad text) never drives the workflow
        roles = {role: values[tag] for tag, role in self.role_tags
                 if tag in values and tag not in errors}
        for tag, role in self._id_role_tags:
            value = roles.get(role)
            if value.__class__ is str and not value.isprintable():
                roles[role] = self._sanitise(tag, value)
        events = self.workflow.on_poll(result.ts, roles)
        if self.telemetry_filter is not None and self.publish_telemetry:
            self._filtered_telemetry(result)
            self._emit(events, result.ts)
            return
        seq = self.outbox.next_seq(self.press, TELEMETRY_STREAM)
        payload = messages.encode_telemetry(self.press, seq, result.ts, self.topics.host, values,
                                            result.errors, self.workflow.telemetry_context())
        self.outbox.add(streams.row(self._streams[TELEMETRY_STREAM], self.press, seq,
                                    self._telemetry_topic, payload))
        self._emit(events, result.ts)

    def _sanitise(self, tag: str, value: str) -> str:
        """A PLC id string with control / bidi characters: each becomes U+FFFD, counted
        per tag (``sanitised_by_tag``, /metrics), logged when the raw value changes."""
        clean, replaced = text_safety.sanitise(value)
        if replaced:
            self.stats["plc_strings_sanitised"] = self.stats.get("plc_strings_sanitised", 0) + 1
            self.sanitised_by_tag[tag] = self.sanitised_by_tag.get(tag, 0) + 1
            if self._sanitised_last.get(tag) != value:
                self._sanitised_last[tag] = value
                log.warning("press %s: tag %s delivered %r with %d control/bidi "
                            "character(s); the event context gets %r", self.press, tag,
                            value[:80], replaced, clean[:80])
        return clean

    def _filtered_telemetry(self, result: PollResult) -> None:
        """Every value into the history; only what the filter selects to subscribers."""
        assert self.telemetry_filter is not None
        values = result.values
        publish = self.telemetry_filter.select(values)
        ctx = self.workflow.telemetry_context()
        if publish is not values:
            raw_seq = self.outbox.next_seq(self.press, TELEMETRY_RAW_STREAM)
            self.outbox.add(streams.row(
                self._streams[TELEMETRY_RAW_STREAM], self.press, raw_seq, self._telemetry_topic,
                messages.encode_telemetry(self.press, raw_seq, result.ts, self.topics.host,
                                          values, result.errors, ctx)))
            if not publish and not result.errors:
                return
        seq = self.outbox.next_seq(self.press, TELEMETRY_STREAM)
        payload = messages.encode_telemetry(self.press, seq, result.ts, self.topics.host,
                                            publish, result.errors, ctx,
                                            filtered=publish is not values)
        self.outbox.add(OutboxRow(self.press, TELEMETRY_STREAM, seq, self._telemetry_topic,
                                  payload))

    def _on_gauge(self, value: GaugeValue) -> None:
        self.stats["gauge_values"] += 1
        gauge_line(self.gauge_lines, value.gauge, values=1, last_value_ts=value.ts)
        seq = self.outbox.next_seq(self.press, GAUGE_STREAM)
        reading_id = f"{self.press}/{GAUGE_STREAM}/{seq}"
        payload = messages.dumps({
            "gauge": value.gauge, "channel": value.channel, "value": value.value,
            "unit": value.unit, "flag": value.flag, "ts": messages.iso_utc(value.ts),
            "raw": value.raw, "reading_id": reading_id,
        })
        # Raw gauge values are local history (audit, replay); subscribers get them inside
        # the first_article / measurement events that judged them.
        self.outbox.add(streams.row(self._streams[GAUGE_STREAM], self.press, seq,
                                    f"{self.topics.root}/{self.press}/gauge/{value.gauge}",
                                    payload))
        events = self.workflow.on_reading(reading(
            value.ts, value.gauge, value.channel, value.value, value.unit,
            reading_id=reading_id, calibration_overdue=value.calibration_overdue,
            flag=value.flag))
        self._emit(events, value.ts)

    def _on_gauge_error(self, error: GaugeError) -> None:
        self.stats["gauge_errors"] += 1
        gauge_line(self.gauge_lines, error.gauge, errors=1, last_error=error.reason[:80],
                   last_error_ts=error.ts)
        if not error.reportable:
            return  # garbage is counted and logged by the driver, never an event per line
        body = GaugeErrorBody(gauge=error.gauge, reason=error.reason, raw=error.raw)
        event = Event("gauge_error", error.ts, dict(body), self.workflow.context(),
                      durable=True)
        self._emit([event], error.ts)

    def _on_connection(self, change: ConnectionChange) -> None:
        if change.source == self.plc_source:
            self.plc_online = change.online
            events = self.workflow.on_connection(change.ts, change.online, change.reason)
        else:
            gauge_line(self.gauge_lines, change.source.rsplit("/", 1)[-1],
                       online=change.online, reason=change.reason, since_ts=change.ts)
            body = GaugeConnectionBody(gauge=change.source.rsplit("/", 1)[-1],
                                       online=change.online, reason=change.reason)
            events = [Event("gauge_connection", change.ts, dict(body),
                            self.workflow.context(), durable=True)]
        self._emit(events, change.ts)
        self._publish_state(change.ts, force=True)

    # -- clock and commands (issue 5) --------------------------------------------------
    def tick(self, ts: float) -> None:
        """The daemon's clock: patrol due / overdue checks between polls."""
        events = self.workflow.on_tick(ts)
        if events:
            self._emit(events, ts)

    def set_plans(self, plans: Mapping[str, Plan], ts: float) -> None:
        """Reloaded plans (SIGHUP): a new revision of the running part is annotated now."""
        self.workflow.set_plans(plans)
        self.tick(ts)

    def command(self, ts: float, topic: str, role: str | None, name: str, payload: bytes,
                retained: bool = False) -> CommandResult | None:
        """A command from MQTT: the gate (collector/command_gate.py), then the workflow,
        its events, then the reply (recorded in the command log first). None: nothing
        was executed (a repeat answered again, or a flood dropped)."""
        decision = self.gate.admit(ts, topic, role, name, payload, retained)
        self.stats.update(self.gate.stats)
        if isinstance(decision, Drop) and decision.why == CLEARED:
            return None  # an empty retained message: the clear of a retained command
        self.stats["commands"] = self.stats.get("commands", 0) + 1
        if isinstance(decision, Drop):
            return None
        if isinstance(decision, Replay):
            self._queue_reply(decision.reply)
            return None
        if isinstance(decision, Refuse):
            result = CommandResult(False, decision.code, decision.message, [])
            self.reply(ts, decision.request_id, name, result)
            return result
        result = self.workflow.on_command(ts, name, decision.data, decision.auth["role"])
        for event in result.events:
            if event.kind == "command":  # the audit record says how it was authorised
                event.body["auth"] = decision.auth
        if result.events:
            self._emit(result.events, ts)
        reply = self._reply_payload(ts, decision.request_id, name, result)
        self.gate.answered(decision, ts, reply)
        self.stats.update(self.gate.stats)
        self._queue_reply(reply)
        return result

    def reply(self, ts: float, request_id: str | None, name: str, result: CommandResult) -> None:
        self._queue_reply(self._reply_payload(ts, request_id, name, result))

    def _reply_payload(self, ts: float, request_id: str | None, name: str,
                       result: CommandResult) -> bytes:
        return messages.encode_cmd_result(
            self.press, ts, self.topics.host, request_id, name, result.ok, result.code,
            result.message, [e.kind for e in result.events], self.workflow.state,
            result.effect)

    def _queue_reply(self, payload: bytes) -> None:
        seq = self.outbox.next_seq(self.press, CMD_RESULT_STREAM)
        self.outbox.add(streams.row(self._streams[CMD_RESULT_STREAM], self.press, seq,
                                    self.topics.cmd_result(self.press), payload))

    def publish_stopped(self, ts: float, removed: bool = False) -> None:
        """Clean stop: the retained state says nobody watches this press any more
        (``collector_online`` and ``plc_online`` false, stamped ``ts``; ``removed``: its
        press file was taken away, SIGHUP); the snapshot is written as well. Committed by
        the daemon's flush before the publisher drains."""
        self.save_snapshot()
        self.outbox.put_retained(self.press, self.topics.state(self.press),
                                 messages.encode_state(self.press, ts, self.topics.host,
                                                       self.workflow.state, False,
                                                       self.workflow.context(),
                                                       collector_online=False,
                                                       removed=removed))

    def save_snapshot(self) -> None:
        """The workflow as it is now into the buffer: a runtime started for this press
        later (restart, SIGHUP) resumes from it."""
        self.outbox.put_kv(snapshot_key(self.press), self.workflow.snapshot())

    def record(self, events: list[Event], ts: float) -> None:
        """Events of the press's own parts outside the workflow (``output_alarm`` from
        collector/outputs.py): written like the workflow's, observers told."""
        self._emit(events, ts)

    # -- output ------------------------------------------------------------------------
    def _emit(self, events: list[Event], ts: float) -> None:
        for event in events:
            seq = self.outbox.next_seq(self.press, EVENTS_STREAM)
            payload = messages.encode_event(event, self.press, seq, self.topics.host)
            self.outbox.add(OutboxRow(self.press, EVENTS_STREAM, seq,
                                      self.topics.event(self.press, event.kind), payload,
                                      durable=event.durable))
            for observe in self.observers:
                observe(seq, event)
        self.stats["events"] += len(events)
        self._publish_state(ts, force=bool(events))

    def _publish_state(self, ts: float, force: bool) -> None:
        """Keep the retained state and the restart snapshot current, without a row per poll."""
        state = self.workflow.state
        now = time.monotonic()
        unmeasured = self.workflow.unmeasured_pieces()
        if unmeasured != self._last_unmeasured:  # the retained state shows the 100 % gap
            self._last_unmeasured = unmeasured
            force = True
        if not force and state == self._last_state and now - self._last_snapshot < SNAPSHOT_EVERY_S:
            return
        self._last_snapshot = now
        self.outbox.put_kv(snapshot_key(self.press), self.workflow.snapshot())
        if force or state != self._last_state:
            self.outbox.put_retained(self.press, self.topics.state(self.press),
                                     messages.encode_state(self.press, ts, self.topics.host, state,
                                                           self.plc_online,
                                                           self.workflow.context()))
            if state != self._last_state and self.on_state is not None:
                self.on_state(self.press, state)
            self._last_state = state
