"""The daemon's command subscription, checked twice on every connect.

A collector that cannot receive commands looks healthy: it polls, publishes, and a quality
engineer's ``release`` simply never arrives. Two ways a broker makes it deaf:

1. it refuses the subscription: the SUBACK carries a failure code (0x80 / 0x87) for the
   topic filter (HiveMQ, EMQX, Mosquitto's dynamic-security plugin do this);
2. it *grants* the subscription and then filters every message by its read ACL: what
   Mosquitto 2.0 does with an ``acl_file`` (measured with 2.0.11: a subscription to a
   filter the account may not read is granted, QoS 1, and nothing is ever delivered).

So after subscribing the collector publishes a small probe to
``{root}/_collector/cmd/probe/{host}`` (inside the command filter ``{root}/+/cmd/#``; no
press is called ``_collector``) and expects it back within ``probe_timeout_s``. A refused
SUBACK or a probe that does not come back is logged at ERROR, once per change, naming the
ACL lines the broker needs, and shows in ``/health`` (``commands.deaf`` = 1).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from typing import Any

from collector import messages

log = logging.getLogger(__name__)

PROBE_TIMEOUT_S = 5.0
OK, PENDING, REFUSED, DEAF, OFF = "ok", "pending", "refused", "deaf", "off"


def probe_payload(host: str, nonce: str, ts: float | None = None) -> bytes:
    """``collector/schemas/command_probe.json``."""
    return messages.dumps({
        "schema": messages.SCHEMA_PREFIX + "command_probe",
        "schema_version": messages.SCHEMA_VERSION, "host": host, "nonce": nonce,
        "ts": messages.iso_utc(time.time() if ts is None else ts)})


class CommandSubscription:
    """Subscribe ``topic`` on every connect and prove it delivers (see module doc)."""

    def __init__(self, topic: str, probe_topic: str | None, account: str = "",
                 probe_timeout_s: float | None = None) -> None:
        self.topic = topic
        self.probe_topic = probe_topic
        self.account = account or "(anonymous)"
        self.probe_timeout_s = PROBE_TIMEOUT_S if probe_timeout_s is None else probe_timeout_s
        self.state = OFF
        self._mid: int | None = None
        self._nonce = ""
        self._timer: asyncio.TimerHandle | None = None
        self._logged = OK  # the last state reported in the log (start quiet)
        self._sent_at = 0.0
        self.changed = asyncio.Event()  # set at every settled state (ok, refused, deaf)

    @property
    def deaf(self) -> bool:
        return self.state in (REFUSED, DEAF)

    def start(self, subscribe: Callable[[], int | None],
              publish: Callable[[str, bytes], None], loop: asyncio.AbstractEventLoop) -> None:
        """After CONNACK (event loop thread): SUBSCRIBE (``subscribe`` returns its mid, None
        when the connection is already gone), then the probe; the broker handles the two
        in order."""
        self.stop()
        self._mid = subscribe()
        if self._mid is None:
            return
        self.state = PENDING
        if self.probe_topic is None:
            return
        self._nonce = os.urandom(8).hex()
        host = self.probe_topic.rsplit("/", 1)[-1]
        self._sent_at = time.monotonic()
        publish(self.probe_topic, probe_payload(host, self._nonce))
        self._timer = loop.call_later(self.probe_timeout_s, self._timeout)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def on_suback(self, mid: int, reason_codes: list[Any]) -> None:
        if mid != self._mid or not reason_codes:
            return
        code = reason_codes[0]
        if getattr(code, "is_failure", False):
            self.stop()
            self._set(REFUSED, f"the broker REFUSED the command subscription {self.topic} "
                      f"({code}): account {self.account!r} needs `topic read "
                      f"{self.topic}` in the broker ACL (deploy/etc/mosquitto/)")
        elif self.probe_topic is None:
            self._set(OK, "")

    def on_message(self, topic: str, payload: bytes) -> bool:
        """True when the message is a probe (ours or a stale one): never a command."""
        if self.probe_topic is None or topic != self.probe_topic:
            return False
        if self._nonce and self._nonce.encode() in payload and self.state in (PENDING, DEAF):
            self.stop()
            log.debug("command subscription %s delivers (probe back in %.0f ms)",
                      self.topic, (time.monotonic() - self._sent_at) * 1000)
            self._set(OK, "")
        return True

    def _timeout(self) -> None:
        self._timer = None
        if self.state == PENDING:
            self._set(DEAF, f"the broker granted the command subscription {self.topic} but "
                      f"did not deliver the collector's own probe on {self.probe_topic} "
                      f"within {self.probe_timeout_s:g} s: its ACL must let account "
                      f"{self.account!r} read {self.topic} and write {self.probe_topic} "
                      "(deploy/etc/mosquitto/press-collector.acl)")

    def reset(self) -> None:
        """Disconnected: nothing is known about the next connection's subscription."""
        self.stop()
        if self.state == PENDING:
            self.state = OFF

    async def settled(self, timeout: float = 10.0) -> str:
        """Wait until the current subscription is ok, refused or deaf (tests, health)."""
        async with asyncio.timeout(timeout):
            while self.state in (OFF, PENDING):
                self.changed.clear()
                await self.changed.wait()
        return self.state

    def _set(self, state: str, why: str) -> None:
        self.state = state
        self.changed.set()
        if state == self._logged:
            return
        self._logged = state
        if state == OK:
            log.warning("command subscription %s delivers again", self.topic)
        else:
            log.error("COMMANDS WILL NOT ARRIVE: %s", why)
