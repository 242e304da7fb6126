"""The daemon: one process for every press of the line PC.

Structure (asyncio.TaskGroup, Python 3.11): the outbox writer thread and the publisher
live beside one supervised task per driver. A driver that crashes through a bug is
logged, counted and restarted with backoff by its supervisor; it never takes down
another press, the buffer or the publisher. Shutdown (SIGTERM/SIGINT or ``stop``)
cancels the drivers first, commits what they produced, gives the publisher a bounded
moment to deliver, then closes the outbox.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from buffer.store import Outbox
from collector import messages
from collector.config import LoadedConfig, PressConfig, to_workflow_settings
from collector.messages import Topics
from collector.press import PressRuntime
from collector.publisher import Publisher
from collector.telemetry_filter import TelemetryFilter
from drivers.base import Backoff, Sink
from drivers.modbus_codec import TagSpec
from drivers.modbus_tcp import ModbusPoller
from drivers.serial_gauge import SerialGauge

log = logging.getLogger(__name__)

PASSWORD_ENV = "PRESS_COLLECTOR_MQTT_PASSWORD"
SHUTDOWN_DRAIN_S = 3.0
PRUNE_EVERY_S = 300.0


def host_id(config: LoadedConfig) -> str:
    return config.collector.site.host_id or socket.gethostname()


def read_password(config: LoadedConfig) -> str | None:
    """Secrets come from the environment or a credential file, never from the TOML."""
    broker = config.collector.broker
    if broker.password_file:
        path = Path(broker.password_file)
        if not path.is_absolute() and os.environ.get("CREDENTIALS_DIRECTORY"):
            path = Path(os.environ["CREDENTIALS_DIRECTORY"]) / path
        return path.read_text(encoding="utf-8").strip()
    return os.environ.get(PASSWORD_ENV) or None


def tag_specs(press: PressConfig) -> list[TagSpec]:
    return [TagSpec(name=t.name, area=t.area, address=t.address, type=t.type, order=t.order,
                    length=t.length, scale=t.scale, offset=t.offset) for t in press.plc.tags]


def role_tags(press: PressConfig) -> dict[str, str]:
    return {t.name: t.role for t in press.plc.tags if t.role}


def build_drivers(press: PressConfig, sink: Sink) -> dict[str, Callable[[], Awaitable[None]]]:
    """Driver coroutine factories for one press, keyed by a name for logs and metrics."""
    plc = press.plc
    poller = ModbusPoller(f"{press.id}/plc", plc.host, plc.port, plc.unit, tag_specs(press),
                          poll_interval_s=plc.poll_interval_ms / 1000,
                          timeout_s=plc.timeout_ms / 1000, max_gap=plc.max_gap,
                          max_registers=plc.max_registers, max_bits=plc.max_bits)
    drivers: dict[str, Callable[[], Awaitable[None]]] = {
        f"{press.id}/plc": lambda: poller.run(sink),
    }
    for gauge_cfg in press.gauges:
        gauge = build_gauge(press.id, gauge_cfg)
        drivers[f"{press.id}/gauge/{gauge_cfg.id}"] = (lambda g=gauge: g.run(sink))
    return drivers


def build_gauge(press_id: str, cfg) -> SerialGauge:
    from drivers.gauge_parsers import make_parser

    parser = make_parser(cfg.preset, pattern=cfg.pattern or None,
                         error_strings=tuple(cfg.error_strings))
    terminator = {"CR": b"\r", "LF": b"\n", "CRLF": b"\r\n"}[cfg.terminator]
    return SerialGauge(f"{press_id}/{cfg.id}", cfg.port, parser, name=cfg.id, baudrate=cfg.baudrate,
                       bytesize=cfg.bytesize, parity=cfg.parity, stopbits=cfg.stopbits,
                       terminator=terminator, max_line=cfg.max_line, unit_default=cfg.unit)


async def supervise(name: str, factory: Callable[[], Awaitable[None]],
                    failures: dict[str, int]) -> None:
    """Run a driver forever; a crash is a bug, logged with context and restarted."""
    backoff = Backoff(initial=1.0, maximum=60.0)
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


@dataclass
class Daemon:
    """Everything running for one config; tests and the demo drive it directly."""

    config: LoadedConfig
    outbox: Outbox | None = None
    publisher: Publisher | None = None
    presses: dict[str, PressRuntime] = field(default_factory=dict)
    failures: dict[str, int] = field(default_factory=dict)
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        cfg = self.config.collector
        host = host_id(self.config)
        topics = Topics(cfg.site.topic_root, host)
        self.outbox = outbox = Outbox.open(Path(cfg.buffer.path),
                                           commit_interval_s=cfg.buffer.commit_interval_ms / 1000)
        self.publisher = publisher = Publisher(
            outbox, cfg.broker.host, cfg.broker.port,
            client_id=cfg.broker.client_id or f"press-collector-{host}",
            topic_status=topics.status(), keepalive=cfg.broker.keepalive_s,
            max_inflight=cfg.broker.max_inflight, username=cfg.broker.username or None,
            reconnect_max_s=cfg.broker.reconnect_max_s,
            password=read_password(self.config),
            status_online=messages.encode_status(host, True),
            status_offline=messages.encode_status(host, False))
        plans = self.config.plans
        driver_tasks: list[asyncio.Task[None]] = []
        try:
            async with asyncio.TaskGroup() as group:
                publisher_task = group.create_task(publisher.run(), name="publisher")
                for press in self.config.presses.values():
                    runtime = PressRuntime(press.id, role_tags(press),
                                           to_workflow_settings(press.workflow), plans, outbox,
                                           topics, publish_telemetry=cfg.telemetry.publish,
                                           telemetry_filter=TelemetryFilter.from_config(press))
                    self.presses[press.id] = runtime
                    for name, factory in build_drivers(press, runtime.sink).items():
                        driver_tasks.append(group.create_task(
                            supervise(name, factory, self.failures), name=name))
                prune_task = group.create_task(self._prune_loop(), name="prune")
                metrics_server = None
                if cfg.metrics.port:
                    from collector import metrics
                    metrics_server = await metrics.serve(self.health, cfg.metrics.port)
                self.ready.set()
                notify_systemd("READY=1")
                await self._stop.wait()
                notify_systemd("STOPPING=1")
                for task in driver_tasks:
                    task.cancel()
                prune_task.cancel()
                if metrics_server is not None:
                    metrics_server.close()
                await asyncio.gather(*driver_tasks, return_exceptions=True)
                await outbox.flush()
                await publisher.drain(timeout=SHUTDOWN_DRAIN_S)
                publisher_task.cancel()
        finally:
            outbox.close()

    def health(self) -> dict[str, object]:
        """Health document (``/health``, ``/metrics``): per press polls, late polls and poll
        jitter, outbox and publisher counters, driver task failures."""
        presses = {pid: {**rt.stats, **rt.timing.summary(), "state": rt.workflow.state,
                         "plc_online": rt.plc_online}
                   for pid, rt in self.presses.items()}
        return {"presses": presses,
                "outbox": self.outbox.stats() if self.outbox is not None else {},
                "publisher": self.publisher.stats() if self.publisher is not None else {},
                "task_failures": dict(self.failures)}

    async def _prune_loop(self) -> None:
        retention_s = self.config.collector.buffer.retention_h * 3600
        while True:
            await asyncio.sleep(PRUNE_EVERY_S)
            assert self.outbox is not None
            await asyncio.to_thread(self.outbox.prune, retention_s)


def notify_systemd(message: str) -> None:
    """sd_notify without a dependency: a datagram to $NOTIFY_SOCKET (Type=notify units)."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect(address)
            sock.sendall(message.encode())
        except OSError as exc:
            log.warning("sd_notify failed: %s", exc)


async def run_until_signalled(config: LoadedConfig) -> None:
    daemon = Daemon(config)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, daemon.stop)
    await daemon.run()
