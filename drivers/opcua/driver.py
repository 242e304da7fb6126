"""OPC UA client driver (asyncua): subscriptions first, per-tag polling as fallback.

Same contract as the Modbus drivers (``drivers.modbus.driver``): one ``OpcuaPoller`` per PLC
connection hands ``PollResult`` and ``ConnectionChange`` to a synchronous sink, never
lets device trouble escape ``run()``, reconnects with a capped backoff and reports each
online/offline change once.

Why it looks like this:

- **We own reconnects** (asyncua's ``auto_reconnect`` is off). asyncua's supervisor still
  runs as the *keepalive watchdog*: it reads the server's ``ServerStatus.State`` every
  ``watchdog_s`` and calls ``connection_lost_callback`` when that fails; we then tear the
  session down, report offline once, and build a new session and subscriptions. A hidden
  reconnect inside the client would hide an outage from the collector and would resume
  subscriptions on node ids that may no longer exist.
- **Snapshots, not single values.** The collector's workflow wants every tag's current
  value in each ``PollResult`` (like a Modbus poll). The driver keeps a last-value cache
  and emits one ``PollResult`` per publish response (all data changes of one publish are
  applied together), per poll of the polled tags, and at least every ``heartbeat_s`` so
  that time-based workflow rules ("no stroke for 60 s") still see time pass on an idle
  press. A tag that changed twice inside one publish (queue size > 1) splits the batch,
  so queued values are not folded away.
- **Namespace URIs, resolved per session.** Tags name nodes as ``nsu=URI;s=Id``; the index
  is looked up in the server's NamespaceArray at every (re)connect.
- **Program download.** When a PLC program is downloaded, its nodes vanish and come back
  (``BadNodeIdUnknown``), often with a new namespace index. A monitored item or read that
  reports ``BadNodeIdUnknown`` for a node that existed ends the session; the next session
  re-resolves and re-subscribes. If no configured node exists at all, the PLC is reported
  offline ("no configured node exists") and retried with the capped backoff, so a long
  download is a few log lines, not an error loop. A node that is missing from the start
  (a typo) is reported per tag in ``PollResult.errors`` and retried inside the session
  with its own backoff, without disturbing the other tags.
- **Security.** None, or Basic256Sha256 with Sign / SignAndEncrypt, a client certificate and
  key from files, and the server certificate checked against a trust directory (exact
  certificate match, or signed by a CA certificate in that directory), and refused outside
  its validity dates even when pinned (BadCertificateTimeInvalid, dates in the reason).
  Username/password or anonymous.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from asyncua import Client, ua
from asyncua.common.subscription import DataChangeEvent, StatusChangeEvent, Subscription

from drivers.base import Backoff, PollResult, Sink, json_safe
from drivers.link import POLL_EARLY_S, LinkDown, LinkState, SlotGrid, WriteFailed
from drivers.opcua.nodes import parse_node
from drivers.opcua.security import OpcuaSecurity
from drivers.opcua.session import (
    _next_event,
    _value_of,
    close,
    connect,
    describe,
    read_values,
    resolve,
    status_name,
    write_node,
)
from drivers.opcua.vocab import DEADBANDS

log = logging.getLogger(__name__)

# Status codes that mean "this node id does not exist (any more)".
_GONE_NAMES = ("BadNodeIdUnknown", "BadNodeIdInvalid")
_WAIT_STEP_S = 0.2  # how often the session loop looks at the lost-connection flag


class NodesVanished(Exception):
    """Nodes that existed in this session are gone (program download): new session."""


@dataclass(frozen=True, slots=True)
class OpcuaTag:
    """One configured value. ``node`` is ``nsu=URI;s=Id`` (see drivers.opcua.nodes)."""

    name: str
    node: str
    mode: str = "subscribe"  # or "poll"
    sampling_interval_ms: float = -1.0  # -1: the subscription's publishing interval
    queue_size: int = 1
    deadband_type: str = "none"  # none, absolute, percent
    deadband_value: float = 0.0


# --------------------------------------------------------------------------- poller


class OpcuaPoller:
    """Keeps one OPC UA session per PLC alive and hands snapshots to a synchronous sink.

    ``stats``: ``polls`` (PollResults delivered), ``notifications`` (data changes
    received), ``errors`` (failed sessions and bad per-tag statuses), ``reconnects``
    (session attempts after the first), ``sessions`` (sessions established),
    ``vanished`` (sessions ended because known nodes disappeared).
    """

    def __init__(
        self,
        source: str,
        url: str,
        tags: Sequence[OpcuaTag],
        *,
        security: OpcuaSecurity | None = None,
        publishing_interval_s: float = 0.1,
        poll_interval_s: float = 0.5,
        heartbeat_s: float = 1.0,
        timeout_s: float = 4.0,
        watchdog_s: float = 1.0,
        backoff: Backoff | None = None,
        outputs: Sequence[tuple[str, str]] = (),
    ) -> None:
        """``outputs``: (name, node) pairs that are written (``write``) but never
        subscribed or polled (issue 14's output nodes)."""
        if min(publishing_interval_s, poll_interval_s, heartbeat_s, timeout_s, watchdog_s) <= 0:
            raise ValueError("intervals and timeouts must be > 0")
        self.source = source
        self.url = url
        self.tags = list(tags)
        self.refs = {t.name: parse_node(t.node) for t in self.tags}
        self.write_refs = {**self.refs, **{name: parse_node(node) for name, node in outputs}}
        self.security = security or OpcuaSecurity()
        self.publishing_interval_s = publishing_interval_s
        self.poll_interval_s = poll_interval_s
        self.heartbeat_s = heartbeat_s
        self.timeout_s = timeout_s
        self.watchdog_s = watchdog_s
        self.backoff = backoff or Backoff(initial=0.5, maximum=10.0)
        self.link = LinkState(source, ("notifications", "reconnects", "sessions", "vanished",
                                       "writes", "write_errors"))
        self.stats = self.link.stats
        self._grid = SlotGrid(poll_interval_s, self.link)
        self._client: Client | None = None  # the current session (writes)
        self._values: dict[str, Any] = {}
        self._errors: dict[str, str] = {}
        self._lost: str | None = None

    # -- lifecycle ---------------------------------------------------------------------

    async def run(self, sink: Sink) -> None:
        """Connect, subscribe, poll, reconnect, until cancelled; device trouble never escapes.
        A failure that does escape (a bug, e.g. in the sink) first reports the device
        offline (``report_failure``), then propagates to the supervisor."""
        try:
            await self._run(sink)
        except Exception as exc:
            self.link.report_failure(exc)
            raise

    @property
    def online(self) -> bool | None:
        return self.link.online

    async def _run(self, sink: Sink) -> None:
        self.link.attach(sink)
        attempts = 0
        while True:
            if attempts:
                self.stats["reconnects"] += 1
            attempts += 1
            client: Client | None = None
            try:
                client = await connect(self.url, self.security, self.timeout_s,
                                       self.watchdog_s, name=f"press-collector {self.source}")
                await self._session(client)
            except LinkDown as exc:
                self.stats["errors"] += 1
                self.link.set_online(False, str(exc))
            except NodesVanished as exc:
                self.stats["vanished"] += 1
                log.info("%s: %s; new session", self.source, exc)
            finally:
                self._client = None
                if client is not None:
                    await close(client)
            await asyncio.sleep(self.backoff.next_delay())

    async def _session(self, client: Client) -> None:
        """One session: resolve, subscribe, then deliver until it breaks."""
        self._lost = None

        async def on_lost(exc: Exception) -> None:
            self._lost = describe(exc) or "connection lost"

        client.connection_lost_callback = on_lost
        self._values.clear()
        self._errors.clear()
        try:
            ids, missing = await resolve(client, self.refs)
            sub_tags = [t for t in self.tags if t.mode != "poll" and t.name in ids]
            poll_tags = [t for t in self.tags if t.mode == "poll" and t.name in ids]
            sub: Subscription | None = None
            if sub_tags:
                sub = await client.create_subscription(
                    self.publishing_interval_s * 1000, handler=None, queue_maxsize=100_000)
                missing.update(await self._monitor(sub, sub_tags, ids))
            poll_results = (await read_values(client, [ids[t.name] for t in poll_tags])
                            if poll_tags else [])
        except (LinkDown, asyncio.CancelledError):
            raise
        except Exception as exc:
            raise LinkDown(self._lost or describe(exc)) from exc
        gone = [t.name for t, dv in zip(poll_tags, poll_results, strict=True)
                if _value_of(dv)[1] in _GONE_NAMES]
        if len(missing) + len(gone) == len(self.tags):
            raise LinkDown("no configured node exists on the server (PLC program download "
                           f"in progress, or wrong node ids?), e.g. {self.tags[0].node}")
        self.stats["sessions"] += 1
        self._errors.update(missing)
        self.stats["errors"] += len(missing)
        for name, reason in missing.items():
            log.warning("%s: tag %s (%s): %s", self.source, name, self.refs[name], reason)
        if poll_tags:
            self._apply_reads(poll_tags, poll_results, first_session_read=True)
        self.backoff.reset()
        self._client = client
        self.link.set_online(True, "")
        if poll_tags and not sub_tags:
            self._deliver()
        await self._deliver_loop(client, sub, sub_tags, poll_tags, ids, missing)

    async def _monitor(self, sub: Subscription, tags: Sequence[OpcuaTag],
                       ids: dict[str, ua.NodeId]) -> dict[str, str]:
        """Create monitored items; return {tag: status} for the ones the server refused."""
        requests = []
        for tag in tags:
            params = ua.MonitoringParameters()
            params.ClientHandle = self._handle(tag.name)
            params.SamplingInterval = (tag.sampling_interval_ms if tag.sampling_interval_ms >= 0
                                       else self.publishing_interval_s * 1000)
            params.QueueSize = tag.queue_size
            params.DiscardOldest = True
            if tag.deadband_type != "none":
                flt = ua.DataChangeFilter()
                flt.Trigger = ua.DataChangeTrigger.StatusValue
                flt.DeadbandType = DEADBANDS[tag.deadband_type]
                flt.DeadbandValue = tag.deadband_value
                params.Filter = flt
            request = ua.MonitoredItemCreateRequest()
            request.ItemToMonitor = ua.ReadValueId()
            request.ItemToMonitor.NodeId = ids[tag.name]
            request.ItemToMonitor.AttributeId = ua.AttributeIds.Value
            request.MonitoringMode = ua.MonitoringMode.Reporting
            request.RequestedParameters = params
            requests.append(request)
        results = await sub.create_monitored_items(requests)
        return {tag.name: status_name(result) for tag, result in zip(tags, results, strict=True)
                if isinstance(result, ua.StatusCode)}

    def _handle(self, name: str) -> int:
        return 1000 + [t.name for t in self.tags].index(name)

    @staticmethod
    def _poll_ids(tags: Sequence[OpcuaTag],
                  ids: dict[str, ua.NodeId]) -> tuple[list[str], list[ua.NodeId]]:
        return [t.name for t in tags], [ids[t.name] for t in tags]

    async def _deliver_loop(self, client: Client, sub: Subscription | None,
                            sub_tags: Sequence[OpcuaTag], poll_tags: Sequence[OpcuaTag],
                            ids: dict[str, ua.NodeId], missing: dict[str, str]) -> None:
        """Data changes, polls, heartbeats and retries of missing tags, until LinkDown."""
        by_handle = {self._handle(t.name): t.name for t in self.tags}
        now = time.monotonic()
        grid = self._grid
        grid.restart(now)
        grid.slot = 1  # the session's first read was the poll of slot 0
        next_poll = grid.due if poll_tags else float("inf")
        last_emit = now
        retry = Backoff(initial=1.0, maximum=30.0)
        next_retry = now + retry.next_delay() if missing else float("inf")
        _, poll_ids = self._poll_ids(poll_tags, ids)
        while True:
            if self._lost is not None:
                raise LinkDown(self._lost)
            now = time.monotonic()
            wait = max(0.0, min(next_poll - POLL_EARLY_S - now, last_emit + self.heartbeat_s - now,
                                next_retry - now, _WAIT_STEP_S))
            if sub is not None:
                try:
                    event = await _next_event(sub, wait)
                except StopAsyncIteration:
                    raise LinkDown("subscription closed") from None
                if event is not None:
                    self._on_batch(self._drain(sub, event), by_handle)
                    last_emit = time.monotonic()
            else:
                await asyncio.sleep(wait)
            now = time.monotonic()
            if now >= next_poll - POLL_EARLY_S:  # see POLL_EARLY_S: no busy wait for the rest
                try:
                    results = await read_values(client, poll_ids)
                except (asyncio.CancelledError, LinkDown):
                    raise
                except Exception as exc:
                    raise LinkDown(self._lost or describe(exc)) from exc
                self._apply_reads(poll_tags, results)
                self._deliver(scheduled=next_poll, started=now)
                last_emit = now = time.monotonic()
                grid.advance(now)  # late: skip missed slots (counted) instead of bursting
                next_poll = grid.due
            if now >= next_retry and sub is not None:
                next_retry = await self._retry_missing(client, sub, missing, retry)
            if now - last_emit >= self.heartbeat_s:
                self._deliver()
                last_emit = now

    async def _retry_missing(self, client: Client, sub: Subscription, missing: dict[str, str],
                             retry: Backoff) -> float:
        """Try again to monitor tags whose nodes did not exist; returns the next retry time."""
        tags = [t for t in self.tags if t.name in missing and t.mode != "poll"]
        try:
            ids, still = await resolve(client, {t.name: self.refs[t.name] for t in tags})
            todo = [t for t in tags if t.name in ids]
            if todo:
                still.update(await self._monitor(sub, todo, ids))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            raise LinkDown(self._lost or describe(exc)) from exc
        for tag in tags:
            if tag.name not in still:
                log.info("%s: tag %s now exists", self.source, tag.name)
                missing.pop(tag.name, None)
                self._errors.pop(tag.name, None)
        if not missing:
            return float("inf")
        return time.monotonic() + retry.next_delay()

    @staticmethod
    def _drain(sub: Subscription, first: Any) -> list[Any]:
        """The first event and every event already queued with it.

        asyncua puts all notifications of one publish response into the subscription's
        queue synchronously, so whatever is queued now belongs to this publish (or an
        earlier one we were late for). asyncua offers no public non-blocking get; this is
        the one private access of this module (pinned asyncua, covered by tests).
        """
        events = [first]
        queue = sub._event_queue
        while queue is not None and not queue.empty():
            item = queue.get_nowait()
            if item is None:
                queue.put_nowait(None)  # keep the end marker for next_event
                break
            events.append(item)
        return events

    def _on_batch(self, events: list[Any], by_handle: dict[int, str]) -> None:
        """Apply one publish's data changes to the cache and emit snapshot(s)."""
        changed: set[str] = set()
        vanished: list[str] = []
        for event in events:
            if isinstance(event, StatusChangeEvent):
                raise LinkDown(f"subscription status {status_name(event.notification.Status)}")
            if not isinstance(event, DataChangeEvent):
                continue
            name = by_handle.get(event.data.monitored_item.ClientHandle)
            if name is None:
                continue
            self.stats["notifications"] += 1
            if name in changed:  # a queued second value of the same tag: flush first
                self._deliver()
                changed.clear()
            changed.add(name)
            value, error = _value_of(event.data.monitored_item.Value)
            self._store(name, value, error)
            if error in _GONE_NAMES:
                vanished.append(name)
        self._deliver()
        if vanished:
            raise NodesVanished(f"node(s) vanished: {', '.join(vanished)}")

    def _apply_reads(self, tags: Sequence[OpcuaTag], results: Sequence[ua.DataValue],
                     first_session_read: bool = False) -> None:
        vanished = []
        for tag, dv in zip(tags, results, strict=True):
            value, error = _value_of(dv)
            had_value = tag.name in self._values
            self._store(tag.name, value, error)
            if error in _GONE_NAMES and had_value:
                vanished.append(tag.name)
        if vanished and not first_session_read:
            self._deliver()
            raise NodesVanished(f"node(s) vanished: {', '.join(vanished)}")

    def _store(self, name: str, value: Any, error: str | None) -> None:
        if error is None:
            value, problem = json_safe(value)  # NaN/inf, a String that is not UTF-8
            self._values[name] = value
            if problem is None:
                self._errors.pop(name, None)
            else:
                self.stats["errors"] += 1
                self._errors[name] = problem
        else:
            self.stats["errors"] += 1
            self._values.pop(name, None)
            self._errors[name] = error

    def _deliver(self, scheduled: float | None = None, started: float | None = None) -> None:
        """One snapshot. ``scheduled``/``started``: the poll slot and the moment its read
        began (polled tags: jitter and late slots as for Modbus); now for data changes."""
        self.stats["polls"] += 1
        now = time.monotonic()
        self._emit(PollResult(self.source, time.time(), dict(self._values), dict(self._errors),
                              now if scheduled is None else scheduled,
                              now if started is None else started, self.stats["late_polls"]))

    def _emit(self, event: PollResult) -> None:
        """Call the sink; its exceptions are collector bugs and propagate."""
        self.link.emit(event)

    # -- writes ------------------------------------------------------------------------

    async def write(self, tag: str, value: Any) -> None:
        """Write ``value`` to the node of ``tag`` in the current session, read it back
        and compare (``write_node``). Runs beside the subscription and the polls (asyncua
        multiplexes requests on the session), so it never holds them up. Raises
        ``LinkDown`` when there is no session and ``WriteFailed`` otherwise."""
        client = self._client
        if client is None:
            raise LinkDown(f"{self.source}: no session")
        if tag not in self.write_refs:
            raise WriteFailed(f"{self.source}: no tag {tag!r}")
        self.stats["writes"] += 1
        try:
            ids, errors = await resolve(client, {tag: self.write_refs[tag]})
            if errors:
                raise WriteFailed(f"{self.source}: tag {tag}: {errors[tag]}")
            await write_node(client, ids[tag], value, self.timeout_s)
        except WriteFailed:
            self.stats["write_errors"] += 1
            raise
        except (OSError, TimeoutError, ua.UaError) as exc:
            self.stats["write_errors"] += 1
            raise WriteFailed(f"{self.source}: tag {tag}: {describe(exc)}") from exc


