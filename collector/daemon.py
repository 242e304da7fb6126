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
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from buffer import memory
from buffer.commands import CommandLog
from buffer.store import Outbox
from collector import messages, text_safety
from collector.command_client import CommandClient
from collector.command_gate import CommandGate, parse_command_topic, policy_from_config
from collector.config import LoadedConfig, PressConfig, workflow_settings_for
from collector.messages import Topics
from collector.outputs import PressOutputs
from collector.press import PressRuntime
from collector.press_drivers import build_press, role_tags, supervise
from collector.publisher import Publisher
from collector.streams import streams
from collector.task_guard import TaskGuard
from collector.telemetry_filter import TelemetryFilter

if TYPE_CHECKING:
    from collector.sparkplug.edge import EdgeNode

log = logging.getLogger(__name__)

PASSWORD_ENV = "PRESS_COLLECTOR_MQTT_PASSWORD"
SHUTDOWN_DRAIN_S = 3.0
# Stop budget (systemd TimeoutStopSec=30): commit what the drivers produced (bounded: a
# full disk must not hold the stop), deliver for SHUTDOWN_DRAIN_S, then close the buffer
# (gives up on what cannot be written after STOP_CLOSE_S, saying so in the log).
STOP_FLUSH_S = 5.0
STOP_CLOSE_S = 3.0
PRUNE_EVERY_S = 300.0
TICK_S = 1.0  # the workflow clock: patrol due / overdue
BOUNDS_EVERY_S = 10.0
WRITE_HEALTH_EVERY_S = 1.0


def host_id(config: LoadedConfig) -> str:
    return config.collector.site.host_id or socket.gethostname()


def read_password(config: LoadedConfig) -> str | None:
    """Secrets come from the environment or a credential file, never from the TOML."""
    from collector.security import read_password as read

    return read(config)


@dataclass
class Daemon:
    """Everything running for one config; tests and the demo drive it directly."""

    config: LoadedConfig
    outbox: Outbox | None = None
    publisher: Publisher | None = None
    commands: CommandClient | None = None
    sparkplug: EdgeNode | None = None  # [sparkplug] enabled: telemetry as Sparkplug B
    presses: dict[str, PressRuntime] = field(default_factory=dict)
    outputs: dict[str, PressOutputs] = field(default_factory=dict)  # [[plc.outputs]]
    failures: dict[str, int] = field(default_factory=dict)
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _topics: Topics = field(default_factory=lambda: Topics("", ""))
    bounds_every_s: float = BOUNDS_EVERY_S
    # buffer bound, write failures and their alarms (part of the /health document)
    bounds: dict[str, object] = field(default_factory=dict)
    write_health_every_s: float = WRITE_HEALTH_EVERY_S
    _unknown_presses: set[str] = field(default_factory=set)  # command log lines, bounded
    prune_every_s: float = PRUNE_EVERY_S
    guard: TaskGuard | None = None  # failure episodes of the background loops
    started: float = field(default_factory=time.time)  # /health daemon.uptime_s
    screen: Any = None  # the line-side screen's server ([screen]; collector/screen/)
    plc_passwords: dict[str, str | None] = field(default_factory=dict)  # by press id
    # the running presses' driver tasks and line key; what the presses of a line share
    _press_tasks: dict[str, tuple[str, list[asyncio.Task[None]]]] = field(default_factory=dict)
    _shared: dict[str, dict[str, Any]] = field(default_factory=dict)
    _group: asyncio.TaskGroup | None = None
    _command_log: CommandLog | None = None
    _reload_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _reloads: set[asyncio.Task[bool]] = field(default_factory=set)

    def stop(self) -> None:
        self._stop.set()

    def request_reload(self) -> None:
        """SIGHUP: apply the config dir as it is now (collector/reload.py), in a task of
        its own; reloads run one at a time, none once the daemon is stopping."""
        task = asyncio.get_running_loop().create_task(self.reload(), name="reload")
        self._reloads.add(task)
        task.add_done_callback(self._reloads.discard)

    async def reload(self) -> bool:
        """Read the config dir again: presses added, removed or changed are started,
        stopped or restarted, the others untouched, plans handed to every press; a
        config with errors is refused (logged) and the running one stays. False: refused
        or not running."""
        from collector import reload

        async with self._reload_lock:
            if not self.ready.is_set() or self._group is None or self._stop.is_set():
                log.warning("SIGHUP ignored: the daemon is not running (starting or stopping)")
                return False
            return await reload.reload(self)

    # -- one press: started at start-up and by a reload, stopped by a reload -----------
    def start_press(self, press: PressConfig, plc_password: str | None = None) -> None:
        """Start one press in the daemon's task group: its command gate, its runtime
        (resumed from its workflow snapshot in the buffer, if any) and one supervised task
        per driver. Presses on one RTU line share the line's objects (``_shared``)."""
        assert self._group is not None and self.outbox is not None
        assert self.commands is not None and self._command_log is not None
        cfg, topics, spb = self.config.collector, self._topics, self.sparkplug
        gate = CommandGate(press.id, topics.root, policy_from_config(press.workflow.commands),
                           self._command_log, self.commands.clear_retained, time.time())
        runtime = PressRuntime(press.id, role_tags(press), workflow_settings_for(press),
                               self.config.plans, self.outbox, topics,
                               publish_telemetry=cfg.telemetry.publish,
                               telemetry_filter=TelemetryFilter.from_config(press), gate=gate,
                               on_state=spb.on_press_state if spb else None)
        self.presses[press.id] = runtime
        line = press.plc.bus_key() or f"press/{press.id}"
        # [[plc.outputs]] (collector/outputs.py): they watch the PLC link and write to it
        outputs = PressOutputs.for_press(runtime, press.plc)
        plc_driver, factories = build_press(
            press, outputs.watch(runtime.sink) if outputs else runtime.sink,
            self._shared.setdefault(line, {}), plc_password)
        tasks = [self._group.create_task(supervise(name, factory, self.failures), name=name)
                 for name, factory in factories.items()]
        if outputs is not None:
            outputs.attach(plc_driver)
            self.outputs[press.id] = outputs
            tasks.append(self._group.create_task(outputs.run(), name=f"{press.id}/outputs"))
        self._press_tasks[press.id] = (line, tasks)
        if self.screen is not None:
            self.screen.hub.set_press(press.id, runtime, [g.id for g in press.gauges])

    def press_tasks(self, press_id: str) -> list[asyncio.Task[None]]:
        """The driver tasks of a running press (what a reload leaves alone or replaces)."""
        return list(self._press_tasks[press_id][1])

    async def stop_press(self, press_id: str, removed: bool = False) -> None:
        """Stop one press: cancel its driver tasks and wait for them, then keep its
        workflow snapshot in the buffer (started again, it resumes there). ``removed``:
        its retained state says the collector no longer watches it."""
        runtime = self.presses.pop(press_id)
        outputs = self.outputs.pop(press_id, None)
        if outputs is not None:  # the permissive false while the PLC link still runs
            await outputs.stop()
        line, tasks = self._press_tasks.pop(press_id)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if removed:
            runtime.publish_stopped(time.time(), removed=True)
            if self.screen is not None:
                self.screen.hub.drop_press(press_id)
        else:
            runtime.save_snapshot()
        if all(other != line for other, _ in self._press_tasks.values()):
            self._shared.pop(line, None)  # the line's last press: a new line next time

    async def run(self) -> None:
        cfg = self.config.collector
        host = host_id(self.config)
        topics = Topics(cfg.site.topic_root, host)
        # secrets and certificates first: a StartupError here leaves the buffer untouched
        from collector.security import drop_secret_env, read_secrets, startup_warnings

        secrets = read_secrets(self.config)
        drop_secret_env()  # read once: no longer in os.environ (docs/security.md)
        password = secrets.broker_password
        for warning in startup_warnings(self.config):
            log.warning("%s", warning)
        screen_setup = None
        if cfg.screen.port:  # the line-side screen: accounts and certificate read now
            from collector import screen

            screen_setup = screen.prepare(self.config)
        tls = None
        if cfg.broker.tls is not None:
            from collector.security import tls_context

            tls = tls_context(cfg.broker.tls, self.config.config_dir)
        policies = streams(publish_telemetry=cfg.telemetry.publish)  # collector/streams.py
        self.outbox = outbox = Outbox.open(Path(cfg.buffer.path),
                                           commit_interval_s=cfg.buffer.commit_interval_ms / 1000,
                                           max_queued_bytes=int(cfg.buffer.memory_max_mb * 2**20),
                                           cache_mb=cfg.buffer.cache_mb,
                                           streams=policies)
        self._topics = topics
        self.guard = TaskGuard(
            lambda kind, active, data: emit_alarm(outbox, topics, kind, active, data),
            self.failures)
        if outbox.rollback:  # seqs taken before and not in the buffer: tell subscribers
            lost = [{"press": x.press, "stream": x.stream, "first_seq": x.first_seq,
                     "last_seq": x.last_seq} for x in outbox.rollback]
            for active in (True, False):  # a notice: raised and cleared at once
                emit_alarm(outbox, topics, "buffer_rolled_back", active, {"lost": lost})
        # [sparkplug]: the edge node owns the telemetry (docs/sparkplug.md), the JSON
        # publisher everything else
        spb = self._sparkplug(outbox, host, password, tls)
        self.publisher = publisher = Publisher(  # live lane: the policies' live streams
            outbox, cfg.broker.host, cfg.broker.port,
            client_id=cfg.broker.client_id or f"press-collector-{host}",
            topic_status=topics.status(), keepalive=cfg.broker.keepalive_s,
            max_inflight=cfg.broker.max_inflight, username=cfg.broker.username or None,
            password=password, tls=tls, replay_rate=cfg.broker.replay_rate,
            reconnect_max_s=cfg.broker.reconnect_max_s,
            status_online=messages.encode_status(host, True),
            status_offline=messages.encode_status(host, False),
            live_streams=() if spb else policies.live(),
            skip_streams=(messages.TELEMETRY_STREAM,) if spb else ())
        self.commands = commands = CommandClient(
            cfg.broker.host, cfg.broker.port,
            client_id=f"{cfg.broker.client_id or f'press-collector-{host}'}-cmd",
            topic=topics.commands(), probe_topic=topics.command_probe(),
            on_command=self._on_command, username=cfg.broker.username or None,
            password=password, tls=tls, keepalive=cfg.broker.keepalive_s,
            reconnect_max_s=cfg.broker.reconnect_max_s, protocol=cfg.broker.protocol)
        self._command_log = command_log = CommandLog.open(cfg.buffer.path)
        self.plc_passwords = dict(secrets.plc_passwords)
        close_s = STOP_CLOSE_S
        try:
            async with asyncio.TaskGroup() as group:
                publisher_task = group.create_task(publisher.run(), name="publisher")
                commands_task = group.create_task(commands.run(), name="commands")
                spb_task = group.create_task(spb.run(), name="sparkplug") if spb else None
                self._group = group
                for press in self.config.presses.values():
                    self.start_press(press, self.plc_passwords.get(press.id))
                prune_task = group.create_task(self._prune_loop(), name="prune")
                tick_task = group.create_task(self._tick_loop(), name="tick")
                bounds_task = group.create_task(self._bounds_loop(topics), name="bounds")
                write_task = group.create_task(self._write_health_loop(topics),
                                               name="write-health")
                watchdog_task = group.create_task(watchdog_loop(), name="watchdog")
                if screen_setup is not None:
                    self.screen = await screen.start(self, screen_setup)
                metrics_server = None
                if cfg.metrics.port:
                    from collector import metrics
                    metrics_server = await metrics.serve(self.health, cfg.metrics.port)
                self.ready.set()
                notify_systemd("READY=1")
                await self._stop.wait()
                notify_systemd("STOPPING=1")
                async with self._reload_lock:  # a reload under way finishes first
                    self._group = None
                # the permissive written false while the PLC drivers still run (bounded)
                await asyncio.gather(*(o.stop() for o in self.outputs.values()))
                driver_tasks = [t for _, tasks in self._press_tasks.values() for t in tasks]
                for task in driver_tasks:
                    task.cancel()
                prune_task.cancel()
                commands_task.cancel()
                tick_task.cancel()
                bounds_task.cancel()
                write_task.cancel()
                watchdog_task.cancel()
                if metrics_server is not None:
                    metrics_server.close()
                if self.screen is not None:
                    await self.screen.close()
                await asyncio.gather(*driver_tasks, return_exceptions=True)
                # clean stop (issue 11): each press's retained state says the collector is
                # offline, and the retained status carries the stop time
                stopped_at = time.time()
                for runtime in self.presses.values():
                    runtime.publish_stopped(stopped_at)
                publisher.status_offline = messages.encode_status(host, False, stopped_at)
                close_s = await self._stop_flush(outbox, publisher)
                if spb is not None and spb_task is not None:
                    await spb.drain(timeout=SHUTDOWN_DRAIN_S)
                    spb_task.cancel()  # then NDEATH and DISCONNECT
                publisher_task.cancel()
        finally:
            command_log.close()
            outbox.close(timeout=close_s)

    def _sparkplug(self, outbox: Outbox, host: str, password: str | None,
                   tls: object) -> EdgeNode | None:
        if not self.config.collector.sparkplug.enabled:
            return None
        from collector.sparkplug.setup import edge_node_from_config  # protobuf only then

        self.sparkplug = edge_node_from_config(
            self.config, outbox, host, password, tls,
            plc_online=lambda p: p in self.presses and self.presses[p].plc_online)
        return self.sparkplug

    async def _stop_flush(self, outbox: Outbox, publisher: Publisher) -> float:
        """Commit and deliver what the drivers produced, bounded whatever the disk does:
        a buffer that cannot be written (disk full) gets one more immediate try, then the
        stop goes on (delivery marks could not be recorded either, so no drain). Returns
        the close timeout (after which the outbox gives up on what it still holds and logs
        it)."""
        failing = bool(outbox.write_health()["failing"])
        budget = 1.0 if failing else STOP_FLUSH_S
        try:
            async with asyncio.timeout(budget):
                await outbox.flush()
        except (TimeoutError, RuntimeError) as exc:
            log.error("stop: the buffer could not commit within %.0f s (%s); giving up on "
                      "what it holds (listed below)", budget,
                      outbox.write_health()["last_write_error"] or exc)
            return 1.0
        publisher.publish_retained_now()  # before the 'offline' status (in order)
        await publisher.drain(timeout=SHUTDOWN_DRAIN_S)
        return STOP_CLOSE_S

    def _on_command(self, topic: str, payload: bytes, retained: bool = False) -> None:
        """``{root}/{press}/cmd/{role}/{name}`` -> the press runtime (event loop thread)."""
        parsed = parse_command_topic(self._topics.root, topic)
        if parsed is None:
            return
        # the name is echoed in the reply: bounded and without control / bidi characters
        name = text_safety.sanitise(parsed.name[:64])[0]
        runtime = self.presses.get(parsed.press)
        if runtime is None:
            unknown = self._unknown_presses
            if parsed.press not in unknown and len(unknown) < 100:
                unknown.add(parsed.press)
                log.warning("command %s for unknown press %r ignored (logged once per press)",
                            name, parsed.press[:64])
            return
        runtime.command(time.time(), topic, parsed.role, name, payload, retained)

    async def _tick_loop(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            now = time.time()
            try:
                for runtime in self.presses.values():
                    runtime.tick(now)
            except Exception as exc:
                self._guarded_failure("tick", exc)
            else:
                self._guarded_ok("tick")

    def _guarded_failure(self, task: str, exc: BaseException) -> None:
        if self.guard is not None:
            self.guard.failed(task, exc)
        else:
            log.error("background task %s failed: %s", task, exc)

    def _guarded_ok(self, task: str) -> None:
        if self.guard is not None:
            self.guard.ok(task)
    def health(self) -> dict[str, object]:
        """Health document (``/health``, ``/metrics``): per press polls, late polls and poll
        jitter, outbox and publisher counters, driver task failures."""
        from collector.status import daemon_section, press_status

        now = time.time()
        cfg = self.config.collector
        presses = {pid: {**rt.stats, **rt.timing.summary(), "state": rt.workflow.state,
                         "plc_online": rt.plc_online,
                         "sanitised_by_tag": dict(rt.sanitised_by_tag),
                         **({"outputs": self.outputs[pid].stats()} if pid in self.outputs
                            else {}),
                         **press_status(rt.workflow.context(), rt.last_poll_ts,
                                        rt.gauge_lines, self._gauge_ids(pid), now)}
                   for pid, rt in self.presses.items()}
        return {"daemon": daemon_section(host_id(self.config), os.getpid(), self.started,
                                         f"{cfg.broker.host}:{cfg.broker.port}", now),
                "presses": presses,
                "outbox": self.outbox.stats() if self.outbox is not None else {},
                "publisher": self.publisher.stats() if self.publisher is not None else {},
                "commands": self.commands.stats() if self.commands is not None else {},
                **({"sparkplug": self.sparkplug.stats()} if self.sparkplug is not None
                   else {}),
                "buffer": dict(self.bounds),
                "task_failures": dict(self.failures)}

    def _gauge_ids(self, press_id: str) -> list[str]:
        press = self.config.presses.get(press_id)
        return [g.id for g in press.gauges] if press is not None else []

    async def _prune_loop(self) -> None:
        """Delete delivered history older than retention_h, then give the heap the pass
        freed back to the system (``buffer.release_memory``: glibc keeps what the prune
        connection's page cache freed, and RSS rose in steps, issue 12); an error (a full
        disk: even a DELETE needs WAL space) is the guard's, and the next round tries
        again."""
        buf = self.config.collector.buffer
        retention_s = buf.retention_h * 3600
        while True:
            await asyncio.sleep(self.prune_every_s)
            assert self.outbox is not None
            try:
                await asyncio.to_thread(self.outbox.prune, retention_s)
                if buf.release_memory:
                    trimmed = await asyncio.to_thread(memory.trim)
                    if trimmed is not None:
                        self.bounds["heap_trims"] = \
                            int(self.bounds.get("heap_trims", 0)) + 1  # type: ignore[call-overload]
                        self.bounds["heap_trim_ms"] = round(trimmed.seconds * 1000, 2)
            except Exception as exc:
                self._guarded_failure("prune", exc)
            else:
                self._guarded_ok("prune")


    async def _bounds_loop(self, topics: Topics) -> None:
        """Keep the buffer under buffer.max_mb; raise an alarm when only undelivered quality
        events are left (they are never dropped: collection goes on, the file grows)."""
        max_bytes = self.config.collector.buffer.max_mb * 1024 * 1024
        assert self.outbox is not None
        outbox = self.outbox
        active = False
        while True:
            await asyncio.sleep(self.bounds_every_s)
            try:
                report = await asyncio.to_thread(outbox.enforce_size, max_bytes)
            except Exception as exc:  # a busy or failing disk: try again next round
                self._guarded_failure("bounds", exc)
                continue
            self._guarded_ok("bounds")
            self.bounds.update(buffer_used_bytes=report.used_bytes,
                               buffer_max_bytes=max_bytes, buffer_full=report.quality_only)
            self.bounds["telemetry_dropped"] = int(self.bounds.get("telemetry_dropped", 0)) \
                + report.telemetry_dropped  # type: ignore[call-overload]
            if report.quality_only != active:
                active = report.quality_only
                if active:
                    log.error("buffer full: %.1f MiB used > max_mb %d and only undelivered "
                              "quality events are left; they are kept (never dropped), "
                              "collection goes on and the file grows until the broker takes "
                              "them", report.used_bytes / 2**20, max_bytes // 2**20)
                else:
                    log.warning("buffer back under max_mb (%.1f MiB)", report.used_bytes / 2**20)
                self.bounds["buffer_full_alarms"] = \
                    int(self.bounds.get("buffer_full_alarms", 0)) + int(active)  # type: ignore[call-overload]
                emit_alarm(outbox, topics, "buffer_full", active,
                           {"used_bytes": report.used_bytes, "max_bytes": max_bytes,
                            "pending": outbox.pending_count(),
                            "telemetry_dropped": report.telemetry_dropped})

    async def _write_health_loop(self, topics: Topics) -> None:
        """Disk full / unwritable buffer: metrics every second, and an alarm raised when
        commits start failing and cleared when they work again (both are queued events:
        they reach the broker once the buffer can be written), with the telemetry dropped
        from memory meanwhile."""
        active = False
        shed_at_start = 0
        while True:
            await asyncio.sleep(self.write_health_every_s)
            try:
                active, shed_at_start = self._write_health_round(topics, active, shed_at_start)
            except Exception as exc:
                self._guarded_failure("write-health", exc)
            else:
                self._guarded_ok("write-health")

    def _write_health_round(self, topics: Topics, active: bool, shed_at_start: int
                            ) -> tuple[bool, int]:
        """One round of :meth:`_write_health_loop`; returns its new (active, shed_at_start)."""
        assert self.outbox is not None
        outbox = self.outbox
        h = outbox.write_health()
        if h.get("checkpoint_failing"):  # the outbox's checkpoint thread, same guard
            self._guarded_failure("checkpoint", RuntimeError(str(h.get("checkpoint_error"))))
        elif self.guard is not None and self.guard.failing("checkpoint"):
            self.guard.ok("checkpoint")
        shed = int(h["telemetry_shed"])
        self.bounds.update(write_errors=h["write_errors"], buffer_write_failing=h["failing"],
                           last_write_error=h["last_write_error"], telemetry_shed=shed,
                           buffer_queued_rows=h["queued_rows"])
        if h["failing"] == active:
            return active, shed_at_start
        active = bool(h["failing"])
        if active:
            shed_at_start = shed
        emit_alarm(outbox, topics, "buffer_write_failed", active,
                   {"write_errors": int(h["write_errors"]),
                    "error": str(h["last_write_error"] or ""),
                    "telemetry_dropped": shed - shed_at_start})
        return active, shed_at_start


def emit_alarm(outbox: Outbox, topics: Topics, kind: str, active: bool,
               data: dict[str, object]) -> None:
    """A collector-level alarm: topic {root}/_collector/{host}/alarm, durable, own seq."""
    from buffer.store import OutboxRow

    press = messages.COLLECTOR_PRESS
    seq = outbox.next_seq(press, messages.EVENTS_STREAM)
    payload = messages.encode_alarm(seq, topics.host, kind, active, data)
    outbox.add(OutboxRow(press, messages.EVENTS_STREAM, seq, topics.alarm(), payload,
                         durable=True))


async def watchdog_loop() -> None:
    """systemd WatchdogSec=: ping from the event loop, so a stuck loop gets restarted."""
    usec = os.environ.get("WATCHDOG_USEC")
    if not usec or not os.environ.get("NOTIFY_SOCKET"):
        return
    interval = max(0.5, int(usec) / 1e6 / 3)
    while True:
        notify_systemd("WATCHDOG=1")
        await asyncio.sleep(interval)


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
    loop.add_signal_handler(signal.SIGHUP, daemon.request_reload)
    await daemon.run()
