"""A private Mosquitto for the demo and the tests: own config, own port, own data dir.

Synchronous (subprocess) so it serves pytest fixtures, async tests and the demo alike;
``start()`` returns once the port accepts connections. ``stop()`` is SIGTERM (Mosquitto
writes its persistence file on the way out: sessions, queued QoS 1 messages, retained
messages survive a restart); ``kill()`` is SIGKILL (only what the last autosave wrote
survives). ``restart()`` comes back on the same port.

``max_queued_messages`` defaults to 10,000,000, not 0 ("no limit"): measured with
Mosquitto 2.0.11, ``max_queued_messages 0`` plus a restart that restores a persistent
subscriber's session from the persistence file leaves part of that subscriber's queue
stuck: the connected subscriber stops receiving (here ~1,600 of 30,000 messages) until it
reconnects, then gets them all. With a large finite limit the same run delivers
everything. (The default of 1000 drops messages for a slow or offline subscriber.)
"""

from __future__ import annotations

import base64
import hashlib
import os
import pwd
import shutil
from dataclasses import dataclass
from pathlib import Path

from sim.broker_process import BrokerProcess

CANDIDATES = ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto", "/opt/homebrew/sbin/mosquitto")


def find_mosquitto() -> str:
    for path in CANDIDATES:
        if os.access(path, os.X_OK):
            return path
    found = shutil.which("mosquitto")
    if found:
        return found
    raise FileNotFoundError("mosquitto not found (looked in /usr/sbin and on PATH); "
                            "install the 'mosquitto' package")


@dataclass(frozen=True)
class BrokerTls:
    """Server side TLS of a LocalBroker: PEM files; ``require_certificate`` = mTLS."""

    ca_file: str
    cert_file: str
    key_file: str
    require_certificate: bool = False


def password_line(username: str, password: str, iterations: int = 101) -> str:
    """One mosquitto password-file line (PBKDF2-SHA512, the ``$7$`` format of
    ``mosquitto_passwd`` 2.x), so tests need no extra tool."""
    salt = os.urandom(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations, 64)
    return (f"{username}:$7${iterations}${base64.b64encode(salt).decode()}$"
            f"{base64.b64encode(digest).decode()}")


class LocalBroker(BrokerProcess):
    """One Mosquitto process listening on 127.0.0.1:``port`` (0: pick a free port)."""

    kind = "mosquitto"  # as sim.other_brokers (RabbitMQ, NATS): tests pick by these
    protocols = ("3.1.1", "5")

    def __init__(self, port: int = 0, data_dir: str | os.PathLike[str] = "mosquitto",
                 persistence: bool = True, extra_conf: str = "",
                 host: str = "127.0.0.1", max_queued_messages: int = 10_000_000,
                 tls: BrokerTls | None = None, users: dict[str, str] | None = None,
                 acl: str = "") -> None:
        super().__init__(port, data_dir, host)
        self.persistence = persistence
        self.extra_conf = extra_conf
        self.max_queued_messages = max_queued_messages
        self.tls = tls  # TLS on the listener (no plain listener then)
        self.users = users  # username -> password; set = no anonymous access
        self.acl = acl  # mosquitto acl_file text (with users)
        self.conf_path = self.data_dir / "mosquitto.conf"
        self.log_path = self.data_dir / "mosquitto.log"

    def command(self) -> tuple[list[str], dict[str, str]]:
        return [find_mosquitto(), "-c", str(self.conf_path)], dict(os.environ)

    def write_config(self) -> Path:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        lines = [
            f"listener {self.port} {self.host}",
            f"allow_anonymous {'false' if self.users is not None else 'true'}",
            f"max_queued_messages {self.max_queued_messages}",
            f"log_dest file {self.log_path}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "log_timestamp_format %Y-%m-%dT%H:%M:%S",
        ]
        if self.persistence:
            lines += ["persistence true", f"persistence_location {self.data_dir}/"]
        else:
            lines.append("persistence false")
        if os.geteuid() == 0:
            # as root Mosquitto switches to user 'mosquitto', who cannot write data_dir
            lines.append(f"user {pwd.getpwuid(0).pw_name}")
        if self.tls is not None:
            lines += [f"cafile {self.tls.ca_file}", f"certfile {self.tls.cert_file}",
                      f"keyfile {self.tls.key_file}", "tls_version tlsv1.2",
                      f"require_certificate {str(self.tls.require_certificate).lower()}"]
        if self.users is not None:
            pw = self.data_dir / "passwd"
            pw.write_text("".join(password_line(u, p) + "\n" for u, p in self.users.items()))
            pw.chmod(0o600)
            lines.append(f"password_file {pw}")
        if self.acl:
            acl = self.data_dir / "acl"
            acl.write_text(self.acl.strip() + "\n")
            acl.chmod(0o600)
            lines.append(f"acl_file {acl}")
        if self.extra_conf:
            lines.append(self.extra_conf.strip())
        self.conf_path.write_text("\n".join(lines) + "\n")
        return self.conf_path
