"""The protocol registry: which driver package serves which ``[plc] protocol`` and the
gauges, and the seam everything protocol-specific goes through.

The daemon (building drivers), ``check`` (the config summary), ``probe press`` (every
protocol), the ``probe`` subcommands and the demo iterate this registry instead of
asking ``if protocol == ...``. A package registers itself with one :class:`Plugin` in
its ``__init__.py`` (name, kind, the ``protocol`` values it serves, a description, and
where its implementation lives); ``drivers/all.py`` lists the packages, one line each.

Registration is light on purpose: a :class:`Plugin` names its implementation module
(``drivers.<pkg>.plugin``) and it is imported only when used, so that ``check`` and the
daemon of a Modbus-only line never import asyncua (about 260 ms and 27 MB).

What an implementation module offers (duck-typed on the config objects: ``drivers``
never imports ``collector``; each package's config models live with it):

- ``build(source, cfg, ctx: BuildContext) -> Driver``: a driver for one press's ``[plc]``
  table (or one ``[[gauges]]`` entry): ``run(sink)``, ``stats``, ``online``,
  ``read_once()``; PLC drivers also ``write(tag, value)`` (``drivers.base.Driver``);
- ``summary(cfg) -> str``: one line for ``press-collector check``;
- ``probe_press(press_id, cfg, options: ProbeOptions, out) -> int``: ``probe press``;
- ``add_probe_commands(subparsers)``: the package's own ``probe <name>`` commands.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Literal

__all__ = ["BuildContext", "Plugin", "ProbeOptions", "all_plugins", "gauge_plugin",
           "plc_plugin", "plc_protocols", "register"]


@dataclass(frozen=True, slots=True)
class Plugin:
    """One driver package as the registry knows it."""

    name: str  # the package: "modbus", "opcua", "gauge"
    kind: Literal["plc", "gauge"]
    description: str
    implementation: str  # module path, imported on first use
    protocols: tuple[str, ...] = ()  # the [plc] protocol values it serves (kind "plc")
    # Where a PLC that logs in (its [plc] model has ``username`` and ``password_file``)
    # finds its password when no file is named: this environment variable + "_<PRESS_ID>",
    # else the variable itself. "" = the protocol never logs in. The collector reads it
    # for every protocol alike (collector/security.py) and drops it after start.
    password_env: str = ""

    def load(self) -> ModuleType:
        """The implementation module (imports the protocol's libraries)."""
        return importlib.import_module(self.implementation)


@dataclass
class BuildContext:
    """What a driver build may need beyond its own config table.

    ``shared``: objects several presses share, per plugin (the RTU buses: presses naming
    the same serial port get one line); ``secrets``: read once at start by the daemon
    (``password``: the PLC's, when it logs in); ``settings_where``: where a refused
    serial setting is overridden, for the message."""

    shared: dict[str, Any] = field(default_factory=dict)
    secrets: dict[str, Any] = field(default_factory=dict)
    settings_where: str = ""


@dataclass(frozen=True, slots=True)
class ProbeOptions:
    """``probe press`` options every protocol understands."""

    watch: bool = False
    count: int = 0
    interval_s: float = 0.0  # 0: the press's own poll period
    file_name: str = ""  # the press file, named in messages


_PLUGINS: dict[str, Plugin] = {}


def register(plugin: Plugin) -> Plugin:
    """Add a package (called from its ``__init__``); a second plugin claiming a name or a
    protocol value already taken is a programming error."""
    if plugin.name in _PLUGINS and _PLUGINS[plugin.name] != plugin:
        raise ValueError(f"driver package {plugin.name!r} is registered twice")
    for other in _PLUGINS.values():
        taken = set(other.protocols) & set(plugin.protocols)
        if other.name != plugin.name and taken:
            raise ValueError(f"protocol {sorted(taken)} of {plugin.name!r} is already "
                             f"served by {other.name!r}")
    _PLUGINS[plugin.name] = plugin
    return plugin


def _loaded() -> dict[str, Plugin]:
    """Every package of ``drivers/all.py`` imported (they register themselves), in that
    file's order whatever order they were first imported in."""
    from drivers.all import PACKAGES

    for package in PACKAGES:
        importlib.import_module(package)
    rank = {package: i for i, package in enumerate(PACKAGES)}
    return dict(sorted(_PLUGINS.items(), key=lambda item: rank.get(
        item[1].implementation.rsplit(".", 1)[0], len(rank))))


def all_plugins() -> Iterator[Plugin]:
    """Every registered package, in ``drivers/all.py`` order."""
    return iter(list(_loaded().values()))


def plc_protocols() -> tuple[str, ...]:
    """Every ``[plc] protocol`` value, in registry order (config vocabulary, docs)."""
    return tuple(p for plugin in all_plugins() for p in plugin.protocols)


def plc_plugin(protocol: str) -> Plugin:
    """The package serving ``[plc] protocol``; KeyError names the allowed values."""
    for plugin in all_plugins():
        if protocol in plugin.protocols:
            return plugin
    raise KeyError(f"no driver for protocol {protocol!r} "
                   f"(allowed: {', '.join(plc_protocols())})")


def gauge_plugin() -> Plugin:
    """The package serving ``[[gauges]]``."""
    for plugin in all_plugins():
        if plugin.kind == "gauge":
            return plugin
    raise KeyError("no gauge driver registered")
