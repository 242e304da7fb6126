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

import os
import ssl
from pathlib import Path

from collector.config import PASSWORD_ENV, BrokerTlsConfig, LoadedConfig

CREDENTIALS_ENV = "CREDENTIALS_DIRECTORY"


class StartupError(Exception):
    """The daemon cannot start with this configuration (message says what to fix)."""


def resolve_file(name: str, config_dir: Path | None, key: str) -> Path:
    """An absolute path as is; a relative one in $CREDENTIALS_DIRECTORY, then config_dir."""
    path = Path(name)
    if path.is_absolute():
        candidates = [path]
    else:
        candidates = []
        if os.environ.get(CREDENTIALS_ENV):
            candidates.append(Path(os.environ[CREDENTIALS_ENV]) / path)
        if config_dir is not None:
            candidates.append(config_dir / path)
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    where = " or ".join(str(c) for c in candidates) or name
    raise StartupError(f"collector.toml: {key}: file {name!r} not found (looked in {where})")


def read_password(config: LoadedConfig) -> str | None:
    """The broker password from the credential file or the environment (None: no password)."""
    broker = config.collector.broker
    if broker.password_file:
        path = resolve_file(broker.password_file, config.config_dir, "broker.password_file")
        try:
            text = path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise StartupError(f"collector.toml: broker.password_file: cannot read {path}: "
                               f"{getattr(exc, 'strerror', None) or exc}") from None
        if not text:
            raise StartupError(f"collector.toml: broker.password_file: {path} is empty")
        return text
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
