"""OPC UA (asyncua): the driver (``driver``), node ids (``nodes``), the probes (``probe``)
and the protocol's registry entry (``plugin``). See docs/opcua.md.

Importing this package is light: asyncua (about 260 ms and 27 MB) is imported only when
a name of the driver is used (``from drivers.opcua import OpcuaPoller``) or
``drivers.opcua.driver`` is imported, i.e. only for a config with an OPC UA press.
Config validation needs ``drivers.opcua.nodes`` alone.
"""

from __future__ import annotations

from typing import Any

from drivers.opcua.vocab import DEADBANDS, MODES, POLICIES

__all__ = ["DEADBANDS", "MODES", "PLUGIN", "POLICIES"]

_DRIVER_NAMES = frozenset({
    "LinkDown", "NodesVanished", "OpcuaPoller",
    "OpcuaSecurity", "OpcuaTag", "TagError", "TrustCheck", "close", "connect", "convert",
    "describe", "generate_certificate", "read_once", "read_values", "resolve",
    "status_name", "write_node", "WriteFailed"})


def __getattr__(name: str) -> Any:
    """The driver's names, imported on first use (PEP 562)."""
    if name in _DRIVER_NAMES:
        from drivers.opcua import driver

        return getattr(driver, name)
    raise AttributeError(f"module 'drivers.opcua' has no attribute {name!r}")


from drivers.registry import Plugin, register  # noqa: E402  (after the lazy names)

PLUGIN = register(Plugin(
    "opcua", "plc", "OPC UA client: subscriptions, polled tags, security (docs/opcua.md)",
    "drivers.opcua.plugin", protocols=("opcua",)))
