"""The OPC UA package's registry entry: config -> driver, summary, probes.

Light to import (``check`` and the registry load it): asyncua is imported inside
``build`` and the probes, i.e. only for a config with an OPC UA press.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any, TextIO

from drivers.probing import Runner
from drivers.registry import BuildContext

if TYPE_CHECKING:
    from drivers.opcua.driver import OpcuaPoller, OpcuaTag
    from drivers.opcua.security import OpcuaSecurity

__all__ = ["add_probe_commands", "build", "opcua_tags", "probe_press", "security_of",
           "summary"]


def security_of(plc: Any, password: str | None = None) -> OpcuaSecurity:
    """The driver's security settings; ``password`` as the collector read it (the
    password file or the environment: secrets never pass through config objects)."""
    from drivers.opcua.security import OpcuaSecurity

    return OpcuaSecurity(
        policy=plc.security_policy, mode=plc.security_mode, certificate=plc.certificate,
        private_key=plc.private_key, trust_dir=plc.trust_dir, username=plc.username,
        password=password if plc.username else None)


def opcua_tags(plc: Any) -> list[OpcuaTag]:
    from drivers.opcua.driver import OpcuaTag

    return [OpcuaTag(name=t.name, node=t.node, mode=t.mode,
                     sampling_interval_ms=(-1.0 if t.sampling_interval_ms is None
                                           else float(t.sampling_interval_ms)),
                     queue_size=t.queue_size, deadband_type=t.deadband_type,
                     deadband_value=t.deadband_value) for t in plc.tags]


def build(source: str, plc: Any, ctx: BuildContext) -> OpcuaPoller:
    """The driver of one press's PLC; ``ctx.secrets['password']`` if it logs in."""
    from drivers.opcua.driver import OpcuaPoller

    return OpcuaPoller(source, plc.endpoint, opcua_tags(plc),
                       security=security_of(plc, ctx.secrets.get("password")),
                       publishing_interval_s=plc.publishing_interval_ms / 1000,
                       poll_interval_s=plc.poll_interval_ms / 1000,
                       heartbeat_s=plc.heartbeat_ms / 1000, timeout_s=plc.timeout_ms / 1000,
                       watchdog_s=plc.watchdog_ms / 1000,
                       outputs=[(o.name, o.node) for o in getattr(plc, "outputs", ())])


def summary(plc: Any) -> str:
    """'opcua opc.tcp://... security None/None, publishing every 100 ms' (``check``)."""
    return (f"opcua {plc.endpoint} security {plc.security_policy}/{plc.security_mode}, "
            f"publishing every {plc.publishing_interval_ms} ms")


async def probe_press(press_id: str, plc: Any, options: Any, out: TextIO,
                      secrets: dict[str, Any] | None = None) -> int:
    from drivers.opcua.probe import press_probe

    return await press_probe(press_id, plc, options, out, (secrets or {}).get("password"))


def add_probe_commands(sub: argparse._SubParsersAction, _run: Runner) -> None:
    """``probe opcua URL`` (its own runner: it prints a browse, not a stream of lines)."""
    from drivers.opcua import probe

    probe.add_arguments(sub.add_parser("opcua", help="connect to an OPC UA server, read and "
                                       "browse nodes"))
    sub.choices["opcua"].set_defaults(func=lambda a: probe.run(a))
