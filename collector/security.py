"""Broker credentials and TLS: read at start-up, checked, never logged.

Secrets never come from the TOML (the loader rejects ``password = ...``): the password is
read from ``broker.password_file`` (a relative name is looked up in
``$CREDENTIALS_DIRECTORY``, which systemd's ``LoadCredential=`` fills) or from the
environment variable ``PRESS_COLLECTOR_MQTT_PASSWORD``. The TLS context verifies the
broker's certificate (CA file or the system store) and its host name unless
``insecure = true``; ``cert_file`` + ``key_file`` add a client certificate (mTLS).

Every problem raises :class:`StartupError` naming the config key and the file, so that
``press-collector run`` exits with a clear message instead of a traceback or a retry loop
on a file that will not appear by itself.
"""

from __future__ import annotations

import logging
import os
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from collector.config import (
    PASSWORD_ENV,
    BrokerTlsConfig,
    LoadedConfig,
    OpcuaPlcConfig,
)
from drivers.registry import all_plugins, plc_plugin

CREDENTIALS_ENV = "CREDENTIALS_DIRECTORY"


class StartupError(Exception):
    """The daemon cannot start with this configuration (message says what to fix)."""


def resolve_file(name: str, config_dir: Path | None, key: str,
                 file: str = "collector.toml") -> Path:
    """An absolute path as is; a relative one in $CREDENTIALS_DIRECTORY (systemd
    LoadCredential=), then ``<config dir>/credentials/`` (where deploy/INSTALL.md keeps them,
    so that a manual ``press-collector check`` finds them too), then the config dir."""
    path = Path(name)
    if path.is_absolute():
        candidates = [path]
    else:
        candidates = []
        if os.environ.get(CREDENTIALS_ENV):
            candidates.append(Path(os.environ[CREDENTIALS_ENV]) / path)
        if config_dir is not None:
            candidates += [config_dir / "credentials" / path, config_dir / path]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    where = " or ".join(str(c) for c in candidates) or name
    raise StartupError(f"{file}: {key}: file {name!r} not found (looked in {where})")


def read_secret_file(name: str, config_dir: Path | None, key: str,
                     file: str = "collector.toml") -> str:
    """The stripped text of a credential file; StartupError when missing, unreadable or empty."""
    path = resolve_file(name, config_dir, key, file)
    try:
        text = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise StartupError(f"{file}: {key}: cannot read {path}: "
                           f"{getattr(exc, 'strerror', None) or exc}") from None
    if not text:
        raise StartupError(f"{file}: {key}: {path} is empty")
    return text


def read_password(config: LoadedConfig) -> str | None:
    """The broker password from the credential file or the environment (None: no password)."""
    broker = config.collector.broker
    if broker.password_file:
        return read_secret_file(broker.password_file, config.config_dir, "broker.password_file")
    return os.environ.get(PASSWORD_ENV) or None


def tls_context(tls: BrokerTlsConfig, config_dir: Path | None = None) -> ssl.SSLContext:
    """A client SSLContext: TLS >= 1.2, certificate + host name verified unless insecure."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        if tls.ca_file:
            ca = resolve_file(tls.ca_file, config_dir, "broker.tls.ca_file")
            ctx.load_verify_locations(cafile=str(ca))
        else:
            ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
    except ssl.SSLError as exc:
        raise StartupError(f"collector.toml: broker.tls.ca_file: {tls.ca_file!r} is not a "
                           f"PEM CA certificate ({exc.reason or exc})") from None
    if tls.cert_file:
        cert = resolve_file(tls.cert_file, config_dir, "broker.tls.cert_file")
        key = resolve_file(tls.key_file, config_dir, "broker.tls.key_file")
        try:
            ctx.load_cert_chain(str(cert), str(key))
        except (ssl.SSLError, OSError) as exc:
            raise StartupError(f"collector.toml: broker.tls.cert_file/key_file: cannot load "
                               f"the client certificate {cert} with key {key} "
                               f"({getattr(exc, 'reason', None) or exc})") from None
    if tls.insecure:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    else:
        ctx.check_hostname = True
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


# --------------------------------------------------------------------------- PLC logins


def logs_in(plc: Any) -> bool:
    """A ``[plc]`` that logs in: its model has a ``username`` and it is set (any protocol
    whose plugin names a ``password_env``; today OPC UA)."""
    return bool(getattr(plc, "username", ""))


def plc_password_env(plc: Any, press_id: str) -> str:
    """The press's own password variable: the protocol's ``password_env`` + the press id
    (PRESS_COLLECTOR_OPCUA_PASSWORD_P4 for OPC UA press 'p4'; '-' becomes '_')."""
    return f"{plc_plugin(plc.protocol).password_env}_{press_id.upper().replace('-', '_')}"


def read_plc_password(press_id: str, plc: Any, config_dir: Path | None,
                      file: str = "") -> str | None:
    """A PLC's login password, the same for every protocol: ``plc.password_file`` (looked
    up like the broker's), else the environment variable of the press
    (:func:`plc_password_env`), else the protocol's ``password_env`` itself."""
    if getattr(plc, "password_file", ""):
        return read_secret_file(plc.password_file, config_dir, "plc.password_file",
                                file or f"presses/{press_id}.toml")
    shared = plc_plugin(plc.protocol).password_env
    if not shared:  # a protocol without logins: nothing to read
        return None
    return os.environ.get(plc_password_env(plc, press_id)) or os.environ.get(shared)


@dataclass(frozen=True)
class Secrets:
    """Every secret the daemon needs, read once at start (before the buffer is opened)."""

    broker_password: str | None
    plc_passwords: dict[str, str | None] = field(default_factory=dict)  # by press id


def read_secrets(config: LoadedConfig) -> Secrets:
    """Read the broker and PLC passwords; the first problem raises StartupError."""
    plc = {press.id: read_plc_password(press.id, press.plc, config.config_dir,
                                       config.press_files.get(press.id, ""))
           for press in config.presses.values() if logs_in(press.plc)}
    return Secrets(read_password(config), plc)


def secret_env_names() -> tuple[str, ...]:
    """The password variables: the broker's and every protocol's (prefixes)."""
    return (PASSWORD_ENV, *(p.password_env for p in all_plugins() if p.password_env))


def drop_secret_env() -> list[str]:
    """Remove every password variable from os.environ once the secrets are read, so that
    no child process, crash handler or environment dump sees them. (The kernel's copy in
    /proc/<pid>/environ is the start-up image and stays; only root and the service user
    can read it, and ProtectProc=invisible hides it from other users: docs/security.md.)"""
    prefixes = secret_env_names()
    names = [n for n in os.environ
             if n == PASSWORD_ENV or any(n.startswith(p) for p in prefixes[1:])]
    for name in names:
        del os.environ[name]
    return names


def startup_problems(config: LoadedConfig) -> list[str]:
    """Every StartupError ``run`` would stop on, as lines: ``press-collector check`` prints
    them, so that it refuses what run would refuse, with the same words."""
    problems: list[str] = []
    steps: list[Callable[[], object]] = [lambda: read_password(config)]
    broker_tls = config.collector.broker.tls
    if broker_tls is not None:
        steps.append(lambda: tls_context(broker_tls, config.config_dir))
    for press in config.presses.values():
        plc = press.plc
        if logs_in(plc):
            steps.append(lambda p=press.id, c=plc: read_plc_password(
                p, c, config.config_dir, config.press_files.get(p, "")))
    for step in steps:
        try:
            step()
        except StartupError as exc:
            problems.append(str(exc))
    if config.collector.screen.port:  # the line-side screen's accounts and certificate
        from collector.screen import startup_problems as screen_problems

        problems += screen_problems(config)
    return problems


def startup_warnings(config: LoadedConfig, now: datetime | None = None) -> list[str]:
    """What runs but weakens transport security: logged at every start by the daemon and
    printed by ``press-collector check``. Nothing here stops the daemon."""
    from drivers.certificates import certificate_files, validity_problem

    now = now or datetime.now(UTC)
    out: list[str] = []
    broker = config.collector.broker
    if broker.tls is None and broker.allow_plaintext:
        out.append(f"collector.toml: broker.allow_plaintext = true: MQTT to {broker.host}:"
                   f"{broker.port} is not encrypted; the password and every record cross the "
                   "network in clear and can be read or forged on the way")
    if broker.tls is not None and broker.tls.insecure:
        out.append(f"collector.toml: broker.tls.insecure = true: the certificate and host name "
                   f"of {broker.host} are NOT checked; anyone on the network path can pose as "
                   "the broker")
    for press in config.presses.values():
        plc = press.plc
        if not isinstance(plc, OpcuaPlcConfig):
            continue
        file = config.press_files.get(press.id, f"presses/{press.id}.toml")
        if plc.allow_plaintext_password and plc.username:
            out.append(f"{file}: plc.allow_plaintext_password = true: the OPC UA password of "
                       f"user {plc.username!r} crosses the network in clear "
                       f"(security_policy 'None')")
        certs = [(Path(plc.certificate), "plc.certificate")] if plc.certificate else []
        if plc.trust_dir:
            certs += [(path, "plc.trust_dir") for path in certificate_files(Path(plc.trust_dir))]
        for path, key in certs:
            problem = validity_problem(path, now)
            if problem:
                out.append(f"{file}: {key}: {problem}")
    return out


# --------------------------------------------------------------------------- library logs

# asyncua's loggers that speak about security: a password sent in clear, a certificate
# without the application URI or out of its dates, a deprecated policy, a revoked serial.
ASYNCUA_SECURITY_LOGGERS = ("asyncua.crypto", "asyncua.client.client")


class OncePerMessage(logging.Filter):
    """Let each distinct message through once per process: a warning that asyncua repeats
    at every reconnect is seen, not a flood (bounded memory: at most ``limit`` messages)."""

    def __init__(self, limit: int = 1000) -> None:
        super().__init__()
        self._seen: set[tuple[str, str]] = set()
        self._limit = limit

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, record.getMessage())
        if key in self._seen or len(self._seen) >= self._limit:
            return False
        self._seen.add(key)
        return True


def unmute_security_warnings() -> None:
    """The CLI mutes asyncua (it logs every timeout); its security warnings stay audible
    at WARNING, each message once per process."""
    for name in ASYNCUA_SECURITY_LOGGERS:
        logger = logging.getLogger(name)
        logger.setLevel(logging.WARNING)
        if not any(isinstance(f, OncePerMessage) for f in logger.filters):
            logger.addFilter(OncePerMessage())
