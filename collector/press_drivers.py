"""The drivers of one press, built from the registry and supervised.

The daemon starts a press (``Daemon.start_press``, at start-up and on SIGHUP) from
these pieces: the PLC driver and the gauge drivers that ``drivers.registry`` builds
for the press's config, the poll-triggered gauges wired to the PLC's results, and a
supervisor per driver that restarts one crashed by a bug without touching the others.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from collector.config import PressConfig
from collector.gauge_triggers import GaugeTriggers
from drivers.base import Backoff, PlcDriver, Sink

log = logging.getLogger(__name__)


def role_tags(press: PressConfig) -> dict[str, str]:
    return {t.name: t.role for t in press.plc.tags if t.role}


def build_drivers(press: PressConfig, sink: Sink, shared: dict[str, Any] | None = None,
                  plc_password: str | None = None,
                  ) -> dict[str, Callable[[], Awaitable[None]]]:
    """Driver coroutine factories for one press (``build_press`` without the PLC driver)."""
    return build_press(press, sink, shared, plc_password)[1]


def build_press(press: PressConfig, sink: Sink, shared: dict[str, Any] | None = None,
                plc_password: str | None = None,
                ) -> tuple[PlcDriver, dict[str, Callable[[], Awaitable[None]]]]:
    """The PLC driver (its ``write`` drives the outputs) and the driver coroutine
    factories for one press, keyed by a name for logs and metrics.

    The protocol's package builds the PLC driver (``drivers.registry``: no protocol is
    named here). ``shared`` is shared across the presses of one daemon (presses naming
    the same RTU serial port or host:port get one bus). Gauges with poll triggers are
    polled from the PLC's poll results (``GaugeTriggers``) before the press sees them."""
    from drivers.registry import BuildContext, gauge_plugin, plc_plugin

    shared = {} if shared is None else shared
    plc = press.plc
    gauge_impl = gauge_plugin().load()
    gauges = {g.id: gauge_impl.build(f"{press.id}/{g.id}", g, BuildContext(
        shared, settings_where=f"in [[gauges]] {g.id}")) for g in press.gauges}
    triggers = GaugeTriggers(role_tags(press))
    for gauge_cfg in press.gauges:
        triggers.add(gauges[gauge_cfg.id], gauge_cfg.poll_on)
    plc_sink = triggers.wrap(sink) if triggers else sink
    secrets = {"password": plc_password} if plc_password is not None else {}
    plc_driver = plc_plugin(plc.protocol).load().build(f"{press.id}/plc", plc,
                                                       BuildContext(shared, secrets))
    drivers: dict[str, Callable[[], Awaitable[None]]] = {
        f"{press.id}/plc": lambda: plc_driver.run(plc_sink)}
    for gauge_id, gauge in gauges.items():
        drivers[f"{press.id}/gauge/{gauge_id}"] = (lambda g=gauge: g.run(sink))
    return plc_driver, drivers


async def supervise(name: str, factory: Callable[[], Awaitable[None]],
                    failures: dict[str, int], backoff: Backoff | None = None) -> None:
    """Run a driver forever; a crash is a bug, logged with context and restarted. The
    driver itself reports its device offline before it dies (drivers.link.
    report_failure), so a crash-looping driver leaves its press offline, not silent."""
    backoff = backoff or Backoff(initial=1.0, maximum=60.0)
    while True:
        started = time.monotonic()
        try:
            await factory()
            return
        except asyncio.CancelledError:
            raise
        except Exception:
            failures[name] = failures.get(name, 0) + 1
            log.exception("task %s crashed (failure %d); restarting", name, failures[name])
            if time.monotonic() - started > 60:
                backoff.reset()
            await asyncio.sleep(backoff.next_delay())
