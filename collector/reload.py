"""SIGHUP: apply the config dir as it is now to the running daemon, press by press.

Why a module of its own: what changed between two configs is a pure question
(:func:`plan_reload`, unit-tested without a daemon) and the order in which a daemon
applies it is one small function (:func:`apply_reload`) over two per-press operations
the daemon provides (:class:`PressHost`: ``start_press`` / ``stop_press``). The daemon
keeps no reload logic of its own.

What a reload does (docs/operators.md, "Changing presses without a restart"):

- a config that fails ``check`` is refused: every problem is logged, the running config
  stays and nothing is stopped;
- a press whose file is new is started; a press whose file is gone is stopped (its
  workflow snapshot stays in the buffer: re-added, it resumes where it was; its retained
  state says ``removed``); a press whose file changed is stopped and started again from
  its snapshot; every other press is not touched (same driver tasks, same runtime, seqs
  go on);
- presses on one shared RTU line share one connection: a change to any press of a line
  restarts every press of that line (the line is rebuilt with the new set of units);
- collector.toml is not applied live (broker, buffer, screen, ... are wired at start):
  each changed key is named in the log as "needs a restart";
- with ``[sparkplug] enabled`` the edge node declares its devices at start, so press
  changes also wait for a restart (named in the log);
- plans are handed to every running press, as before (docs/quality.md).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from collector.config import LoadedConfig, PressConfig
from collector.press import PressRuntime

log = logging.getLogger(__name__)


class PressHost(Protocol):
    """What a reload needs from the daemon: its config, its presses and their OPC UA
    passwords, and the two per-press steps."""

    config: LoadedConfig
    presses: dict[str, PressRuntime]
    plc_passwords: dict[str, str | None]

    def start_press(self, press: PressConfig, plc_password: str | None) -> None: ...

    async def stop_press(self, press_id: str, removed: bool) -> None: ...


@dataclass(frozen=True)
class ReloadPlan:
    """What a reload changes: press ids per fate, and what it leaves for a restart."""

    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()      # stopped and started again (file or line changed)
    unchanged: tuple[str, ...] = ()    # not touched
    with_line: dict[str, str] = field(default_factory=dict)  # unchanged file, line restarted
    deferred: tuple[str, ...] = ()     # changed but not applied ([sparkplug] enabled)
    needs_restart: tuple[str, ...] = ()  # collector.toml keys that changed

    @property
    def touches_presses(self) -> bool:
        return bool(self.added or self.removed or self.changed)

    def summary(self) -> str:
        """The one log line of a reload."""
        def ids(names: Iterable[str]) -> str:
            return ", ".join(names) or "none"

        line = (f"SIGHUP: presses added: {ids(self.added)}; removed: {ids(self.removed)}; "
                f"changed: {ids(self.changed)}; unchanged: {ids(self.unchanged)}")
        if self.with_line:
            line += "; restarted with their line: " + ", ".join(
                f"{p} ({bus})" for p, bus in sorted(self.with_line.items()))
        if self.deferred:
            line += f"; waiting for a restart: {ids(self.deferred)}"
        return line


def _line(press: PressConfig) -> str | None:
    return press.plc.bus_key()


def changed_keys(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted key paths where two ``model_dump()`` trees differ (tables recursed, any other
    value compared whole)."""
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        out: list[str] = []
        for key in sorted(set(old) | set(new), key=str):
            path = f"{prefix}.{key}" if prefix else str(key)
            if key not in old or key not in new:
                out.append(path)
            else:
                out.extend(changed_keys(old[key], new[key], path))
        return out
    return [] if old == new else [prefix]


def plan_reload(old: LoadedConfig, new: LoadedConfig) -> ReloadPlan:
    """Compare the running config with a freshly loaded (valid) one. Pure."""
    site = tuple(changed_keys(old.collector.model_dump(mode="json"),
                              new.collector.model_dump(mode="json")))
    added = [p for p in new.presses if p not in old.presses]
    removed = [p for p in old.presses if p not in new.presses]
    changed = [p for p in new.presses if p in old.presses and
               old.presses[p].model_dump(mode="json") != new.presses[p].model_dump(mode="json")]
    # a shared RTU line is rebuilt as a whole: every press on a touched line restarts
    touched = {_line(cfg.presses[p]) for cfg, ids in ((new, added), (old, removed))
               for p in ids}
    touched |= {_line(c.presses[p]) for p in changed for c in (old, new)}
    touched.discard(None)
    with_line = {p: str(_line(new.presses[p])) for p in new.presses
                 if p in old.presses and p not in changed
                 and (_line(old.presses[p]) in touched or _line(new.presses[p]) in touched)}
    changed += sorted(with_line)
    unchanged = tuple(p for p in new.presses if p in old.presses and p not in changed)
    if old.collector.sparkplug.enabled and (added or removed or changed):
        deferred = tuple(sorted({*added, *removed, *changed}))
        return ReloadPlan(unchanged=tuple(p for p in old.presses), deferred=deferred,
                          needs_restart=(*site, f"presses/*.toml ({', '.join(deferred)}): "
                                         "[sparkplug] declares its devices at start"))
    return ReloadPlan(tuple(added), tuple(removed), tuple(changed), unchanged, with_line,
                      needs_restart=site)


class SecretRefused(Exception):
    """An added or changed press's secret cannot be read: the reload is refused."""


def plc_passwords(plan: ReloadPlan, new: LoadedConfig,
                  running: Mapping[str, str | None]) -> dict[str, str | None]:
    """The PLC passwords of the presses a reload starts: read again (a password file
    may have changed); a press that had one keeps it when its environment variable is
    gone (the daemon drops them after start: docs/security.md)."""
    from collector.security import StartupError, logs_in, read_plc_password

    out: dict[str, str | None] = {}
    for pid in (*plan.added, *plan.changed):
        plc = new.presses[pid].plc
        if not logs_in(plc):
            continue
        try:
            password = read_plc_password(pid, plc, new.config_dir,
                                         new.press_files.get(pid, ""))
        except StartupError as exc:
            raise SecretRefused(str(exc)) from None
        if password is None:
            password = running.get(pid)
        if password is None:
            raise SecretRefused(
                f"{new.press_files.get(pid, f'presses/{pid}.toml')}: plc.username: no "
                "password for this press: the environment variables are read at start only; "
                "set plc.password_file (or restart the service)")
        out[pid] = password
    return out


def applied_config(old: LoadedConfig, new: LoadedConfig, plan: ReloadPlan) -> LoadedConfig:
    """The config the daemon runs after the reload: the new presses and plans, the old
    collector.toml (its changes need a restart), the old presses if they were deferred."""
    update: dict[str, Any] = {"collector": old.collector}
    if plan.deferred:
        update.update(presses=old.presses, press_files=old.press_files)
    return new.model_copy(update=update)


async def apply_reload(host: PressHost, old: LoadedConfig, new: LoadedConfig,
                       plan: ReloadPlan, passwords: Mapping[str, str | None]) -> None:
    """Stop what goes (every press of a rebuilt line before any of them starts again),
    start what comes, and give the untouched presses the new plans."""
    for key in plan.needs_restart:
        log.warning("SIGHUP: %s changed: needs a restart (not applied)", key)
    for pid in (*plan.removed, *plan.changed):
        await host.stop_press(pid, removed=pid in plan.removed)
    for pid in (*plan.changed, *plan.added):
        host.start_press(new.presses[pid], passwords.get(pid))
    now = time.time()
    for pid in plan.unchanged:
        runtime = host.presses.get(pid)
        if runtime is not None:
            runtime.set_plans(new.plans, now)
    log.info("%s", plan.summary())
    log.info("SIGHUP: plans: %s", ", ".join(
        f"{p.part_number} rev {p.revision}" for p in new.plans.values()) or "none")


async def reload(host: PressHost) -> bool:
    """Read the config dir again and apply it (the SIGHUP handler's body). False: refused,
    with every problem in the log, and nothing changed."""
    from collector.config import ConfigError, load_config

    old = host.config
    try:
        new = load_config(old.config_dir)
    except ConfigError as exc:
        log.error("SIGHUP: config refused (%d problem(s)); the running config is kept:\n%s",
                  len(exc.problems), exc)
        return False
    plan = plan_reload(old, new)
    try:
        passwords = plc_passwords(plan, new, host.plc_passwords)
    except SecretRefused as exc:
        log.error("SIGHUP: config refused; the running config is kept:\n%s", exc)
        return False
    await apply_reload(host, old, new, plan, passwords)
    host.config = applied_config(old, new, plan)
    for pid in plan.removed:
        host.plc_passwords.pop(pid, None)
    host.plc_passwords.update(passwords)
    return True
