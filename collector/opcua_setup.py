"""Config -> OPC UA driver objects (imported only when a press speaks OPC UA).

Kept out of collector/daemon.py so that the daemon's import of asyncua (about 260 ms and
27 MB) happens only for a config that has an OPC UA press.
"""

from __future__ import annotations

import os
from pathlib import Path

from collector.config import OPCUA_PASSWORD_ENV, OpcuaPlcConfig, PressConfig
from drivers.opcua import OpcuaPoller, OpcuaSecurity, OpcuaTag


def password_env(press_id: str) -> str:
    """PRESS_COLLECTOR_OPCUA_PASSWORD_P4 for press 'p4' ('-' becomes '_')."""
    return f"{OPCUA_PASSWORD_ENV}_{press_id.upper().replace('-', '_')}"


def read_opcua_password(press_id: str, plc: OpcuaPlcConfig) -> str | None:
    """Secrets never come from the TOML: password_file (relative: $CREDENTIALS_DIRECTORY),
    else env PRESS_COLLECTOR_OPCUA_PASSWORD_<PRESS_ID>, else PRESS_COLLECTOR_OPCUA_PASSWORD."""
    if plc.password_file:
        path = Path(plc.password_file)
        if not path.is_absolute() and os.environ.get("CREDENTIALS_DIRECTORY"):
            path = Path(os.environ["CREDENTIALS_DIRECTORY"]) / path
        return path.read_text(encoding="utf-8").strip()
    return os.environ.get(password_env(press_id)) or os.environ.get(OPCUA_PASSWORD_ENV)


def security_of(press_id: str, plc: OpcuaPlcConfig) -> OpcuaSecurity:
    return OpcuaSecurity(
        policy=plc.security_policy, mode=plc.security_mode, certificate=plc.certificate,
        private_key=plc.private_key, trust_dir=plc.trust_dir, username=plc.username,
        password=read_opcua_password(press_id, plc) if plc.username else None)


def opcua_tags(plc: OpcuaPlcConfig) -> list[OpcuaTag]:
    return [OpcuaTag(name=t.name, node=t.node, mode=t.mode,
                     sampling_interval_ms=(-1.0 if t.sampling_interval_ms is None
                                           else float(t.sampling_interval_ms)),
                     queue_size=t.queue_size, deadband_type=t.deadband_type,
                     deadband_value=t.deadband_value) for t in plc.tags]


def build_opcua_poller(press: PressConfig) -> OpcuaPoller:
    plc = press.plc
    assert isinstance(plc, OpcuaPlcConfig)
    return OpcuaPoller(f"{press.id}/plc", plc.endpoint, opcua_tags(plc),
                       security=security_of(press.id, plc),
                       publishing_interval_s=plc.publishing_interval_ms / 1000,
                       poll_interval_s=plc.poll_interval_ms / 1000,
                       heartbeat_s=plc.heartbeat_ms / 1000, timeout_s=plc.timeout_ms / 1000,
                       watchdog_s=plc.watchdog_ms / 1000)
