"""Config -> OPC UA driver objects (imported only when a press speaks OPC UA).

Kept out of collector/daemon.py so that the daemon's import of asyncua (about 260 ms and
27 MB) happens only for a config that has an OPC UA press.
"""

from __future__ import annotations

from collector.config import OpcuaPlcConfig, PressConfig
from collector.security import opcua_password_env, read_opcua_password
from drivers.opcua import OpcuaPoller, OpcuaSecurity, OpcuaTag

__all__ = ["build_opcua_poller", "opcua_tags", "password_env", "read_opcua_password",
           "security_of"]

password_env = opcua_password_env  # the name callers used before it moved to security.py


def security_of(press_id: str, plc: OpcuaPlcConfig, password: str | None = None) -> OpcuaSecurity:
    """The driver's security settings; ``password`` as the daemon read it at start (else it
    is read here, from plc.password_file or the environment)."""
    if plc.username and password is None:
        password = read_opcua_password(press_id, plc, None)
    return OpcuaSecurity(
        policy=plc.security_policy, mode=plc.security_mode, certificate=plc.certificate,
        private_key=plc.private_key, trust_dir=plc.trust_dir, username=plc.username,
        password=password if plc.username else None)


def opcua_tags(plc: OpcuaPlcConfig) -> list[OpcuaTag]:
    return [OpcuaTag(name=t.name, node=t.node, mode=t.mode,
                     sampling_interval_ms=(-1.0 if t.sampling_interval_ms is None
                                           else float(t.sampling_interval_ms)),
                     queue_size=t.queue_size, deadband_type=t.deadband_type,
                     deadband_value=t.deadband_value) for t in plc.tags]


def build_opcua_poller(press: PressConfig, password: str | None = None) -> OpcuaPoller:
    plc = press.plc
    assert isinstance(plc, OpcuaPlcConfig)
    return OpcuaPoller(f"{press.id}/plc", plc.endpoint, opcua_tags(plc),
                       security=security_of(press.id, plc, password),
                       publishing_interval_s=plc.publishing_interval_ms / 1000,
                       poll_interval_s=plc.poll_interval_ms / 1000,
                       heartbeat_s=plc.heartbeat_ms / 1000, timeout_s=plc.timeout_ms / 1000,
                       watchdog_s=plc.watchdog_ms / 1000)
