"""OPC UA (asyncua): the driver (``driver``), node ids (``nodes``), the probes (``probe``)
and the protocol's registry entry (``plugin``). See docs/opcua.md.

Importing this package is light: asyncua (about 260 ms and 27 MB) is imported only when
a name of the driver is used (``from drivers.opcua import OpcuaPoller``) or
``drivers.opcua.driver`` is imported, i.e. only for a config with an OPC UA press.
Config validation needs ``drivers.opcua.nodes`` alone.
"""

from __future__ import annotations

from typing import Any

from drivers.opcua.vocab import DEADBANDS, MODES, PASSWORD_ENV, POLICIES

__all__ = ["DEADBANDS", "MODES", "PLUGIN", "POLICIES"]

# name -> the module that defines it (imported on first use)
_LAZY = {
    **dict.fromkeys(("NodesVanished", "OpcuaPoller", "OpcuaTag"), "driver"),
    **dict.fromkeys(("OpcuaSecurity", "TrustCheck", "generate_certificate"), "security"),
    **dict.fromkeys(("LinkDown", "TagError", "WriteFailed", "close", "connect", "convert",
                     "describe", "read_once", "read_values", "resolve", "status_name",
                     "write_node"), "session"),
}


def __getattr__(name: str) -> Any:
    """The driver's names, imported on first use (PEP 562)."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"drivers.opcua.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'drivers.opcua' has no attribute {name!r}")


from drivers.registry import Plugin, register  # noqa: E402  (after the lazy names)

PLUGIN = register(Plugin(
    "opcua", "plc", "OPC UA client: subscriptions, polled tags, security (docs/opcua.md)",
    "drivers.opcua.plugin", protocols=("opcua",), password_env=PASSWORD_ENV))
