"""The screen's side of the daemon: one ``PressFeed`` per press, fed by the press
runtimes, the views, "something changed" for the live page, and the operator actions.

No web library here (``server.py`` is the only module that imports aiohttp), so the
views and the action path are tested without a socket, and the daemon pays for the web
library only when ``[screen]`` is configured.

Actions go the way an MQTT command goes: the press runtime's ``command`` (its
``CommandGate``: rate limit, request id log, issue time, role of the topic, signature;
then the workflow: fields, text safety, the operator allow-list, the state), and the
reply is published on ``cmd_result`` like every other. The account's role is the role
level of the topic, its operator id the command's ``operator``, and its name is in the
request id (``screen.<account>.<random>``).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import orjson

from collector import messages
from collector.screen.feed import PressFeed
from collector.screen.view import press_view

if TYPE_CHECKING:
    from collector.domain import Event
    from collector.press import PressRuntime
    from collector.screen.accounts import Account

log = logging.getLogger(__name__)

ACTION_FIELDS: dict[str, tuple[str, ...]] = {  # what the page may send per action
    "acknowledge_alarm": ("alarm", "note"),
    "start_last_piece": ("why",),
    "repeat_measurement": ("reason",),
}


class ActionRefused(Exception):
    """An action the screen itself refuses before it becomes a command (HTTP status)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class ScreenHub:
    """Feeds, views and actions of every press of the daemon."""

    def __init__(self, runtimes: Mapping[str, PressRuntime], root: str,
                 gauge_ids: Mapping[str, list[str]] | None = None,
                 actions: tuple[str, ...] = (),
                 clock: Callable[[], float] = time.time) -> None:
        self.runtimes = dict(runtimes)
        self.root = root
        self.gauge_ids = dict(gauge_ids or {})
        self.actions = tuple(actions)
        self.clock = clock
        self.feeds = {pid: PressFeed(pid) for pid in self.runtimes}
        self.feed_errors = 0  # events the feed could not take (a bug; logged once)
        self._held: list[tuple[str, int, Event]] | None = None
        self._changed = asyncio.Event()
        self._observers = {pid: self._observer(pid) for pid in self.runtimes}
        for pid, runtime in self.runtimes.items():
            runtime.observers.append(self._observers[pid])

    def _observer(self, press: str) -> Callable[[int, Event], None]:
        def observe(seq: int, event: Event) -> None:
            if self._held is not None:  # the history is being read: in order after it
                self._held.append((press, seq, event))
                return
            self._take(press, seq, event.kind, event.ts, event.body, event.context)
            self._changed.set()

        return observe

    def _take(self, press: str, seq: int, kind: str, ts: float, body: dict[str, Any],
              context: dict[str, Any]) -> None:
        try:  # the press's event path must never fail because of the screen
            self.feeds[press].add(seq, kind, ts, body, context)
        except Exception:
            self.feed_errors += 1
            if self.feed_errors == 1:
                log.exception("screen: press %s event %s could not be shown", press, kind)

    def hold(self) -> None:
        """Keep live events aside while the history is read (``seed``, then ``resume``)."""
        self._held = []

    def resume(self) -> None:
        held, self._held = self._held or [], None
        for press, seq, event in held:
            self._take(press, seq, event.kind, event.ts, event.body, event.context)
        self._changed.set()

    def detach(self) -> None:
        """Stop listening (the server closes; the presses run on)."""
        for pid, runtime in self.runtimes.items():
            if self._observers[pid] in runtime.observers:
                runtime.observers.remove(self._observers[pid])

    def set_press(self, press: str, runtime: PressRuntime, gauge_ids: list[str]) -> None:
        """A press started by a reload (SIGHUP): shown from now on. A restarted press keeps
        its feed (its events go on), the new runtime feeds it."""
        old = self.runtimes.get(press)
        if old is not None and self._observers[press] in old.observers:
            old.observers.remove(self._observers[press])
        self.runtimes[press] = runtime
        self.gauge_ids[press] = list(gauge_ids)
        self.feeds.setdefault(press, PressFeed(press))
        observer = self._observers.setdefault(press, self._observer(press))
        runtime.observers.append(observer)
        self._changed.set()

    def drop_press(self, press: str) -> None:
        """A press removed by a reload (SIGHUP): no longer shown."""
        runtime = self.runtimes.pop(press, None)
        observer = self._observers.pop(press, None)
        if runtime is not None and observer in runtime.observers:
            runtime.observers.remove(observer)
        self.feeds.pop(press, None)
        self.gauge_ids.pop(press, None)
        self._changed.set()

    def seed(self, press: str, events: list[tuple[int, str, float, dict[str, Any],
                                                    dict[str, Any]]]) -> None:
        """Older events of a press (from the buffer at start), oldest first."""
        feed = self.feeds.get(press)
        if feed is None:
            return
        for seq, kind, ts, body, context in events:
            self._take(press, seq, kind, ts, body, context)

    def wake(self) -> None:
        """Wake every live connection (the server is closing)."""
        self._changed.set()

    async def changed(self, timeout: float) -> bool:
        """Wait until some press emitted an event (True) or ``timeout`` passed (False)."""
        event = self._changed
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except TimeoutError:
            return False
        if self._changed is event:
            self._changed = asyncio.Event()  # the next waiters wait for the next change
        return True

    # -- views --------------------------------------------------------------------------
    def view(self, press: str) -> dict[str, Any]:
        runtime = self.runtimes[press]
        return press_view(press, runtime.workflow, self.feeds[press], self.clock(),
                          plc_online=runtime.plc_online, gauges=runtime.gauge_lines,
                          gauge_ids=self.gauge_ids.get(press))

    def overview(self) -> list[dict[str, Any]]:
        """One line per press for the start page."""
        out = []
        for pid, runtime in self.runtimes.items():
            ctx = runtime.workflow.context()
            feed = self.feeds[pid]
            out.append({"press": pid, "state": ctx["state"],
                        "part_number": ctx["part_number"], "die_id": ctx["die_id"],
                        "inspection_100": ctx["inspection_100"],
                        "alarms": sum(a["acknowledged"] is None
                                      for a in feed.alarms.values())})
        return out

    # -- actions ------------------------------------------------------------------------
    def act(self, press: str, account: Account, name: str, fields: Mapping[str, Any]
            ) -> dict[str, Any]:
        """Run one operator action as a command; the reply as the page shows it."""
        if name not in self.actions:
            raise ActionRefused(403, "not_enabled", f"{name} is not enabled on this screen "
                                "(screen.actions)")
        runtime = self.runtimes.get(press)
        if runtime is None:
            raise ActionRefused(404, "unknown_press", f"no press {press!r}")
        if not account.may_use(press):
            raise ActionRefused(403, "unauthorized", f"account {account.name} may not act "
                                f"on press {press}")
        allowed = ACTION_FIELDS[name]
        unknown = sorted(set(fields) - set(allowed))
        if unknown:
            raise ActionRefused(400, "invalid_field", f"unknown field(s) {', '.join(unknown)}"
                                f" (allowed: {', '.join(allowed)})")
        if name == "acknowledge_alarm":
            alarm = self.feeds[press].alarms.get(str(fields.get("alarm")))
            if alarm is None:
                raise ActionRefused(404, "unknown_alarm", "no such alarm on this screen")
        now = self.clock()
        request_id = f"screen.{account.name}.{secrets.token_hex(6)}"
        payload = {**{k: v for k, v in fields.items() if v not in (None, "")},
                   "request_id": request_id, "operator": account.operator,
                   "issued_at": messages.iso_utc(now)}
        topic = f"{self.root}/{press}/cmd/{account.role}/{name}"
        result = runtime.command(now, topic, account.role, name, orjson.dumps(payload))
        self._changed.set()
        if result is None:  # dropped by the rate limit (or a replay): nothing ran
            return {"ok": False, "code": "rate_limited", "request_id": request_id,
                    "message": "too many commands to this press; try again in a moment",
                    "state": runtime.workflow.state}
        return {"ok": result.ok, "code": result.code, "message": result.message,
                "request_id": request_id, "state": runtime.workflow.state}
