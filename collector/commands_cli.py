"""``press-collector cmd`` and ``press-collector keygen``: an operator terminal in a shell.

``cmd`` reads the broker address, TLS settings (CA, host check) and topic root from the
config dir, publishes ``{root}/{press}/cmd/{role}/{name}`` (QoS 1, MQTT 5, never retained)
with a fresh request id and the issue time, signs it when given a key, and prints the
matching ``{root}/{press}/cmd_result``. It connects with *its own* broker identity: a
username with a password file (or ``PRESS_COLLECTOR_CMD_PASSWORD``) and/or a client
certificate, never the collector's account (that one may not write command topics, and
an operator's command must be traceable to the operator's account).

Every failure ends with one line on stderr and exit code 2 (1: the press refused the
command, 0: accepted), never a traceback: missing or unreadable files, wrong password,
an untrusted broker certificate, an ACL that refuses the command, no reply.
"""

from __future__ import annotations

import json
import os
import ssl
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from collector.config import ConfigError, LoadedConfig, load_config

CMD_PASSWORD_ENV = "PRESS_COLLECTOR_CMD_PASSWORD"
CMD_KEY_ENV = "PRESS_COLLECTOR_CMD_KEY"
EXIT_OK, EXIT_REFUSED, EXIT_ERROR = 0, 1, 2


class CliError(Exception):
    """One line for stderr; the command exits 2."""


@dataclass(frozen=True)
class Identity:
    """Who the terminal is on the broker (never the collector's account)."""

    username: str | None = None
    password_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None


def parse_fields(fields: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in fields:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"{item!r} is not key=value")
        out[key.strip()] = value
    return out


def read_cmd_password(identity: Identity) -> str | None:
    if identity.password_file:
        path = Path(identity.password_file)
        try:
            text = path.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            raise CliError(f"--password-file {path}: no such file") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise CliError(f"--password-file {path}: cannot read: "
                           f"{getattr(exc, 'strerror', None) or exc}") from None
        if not text:
            raise CliError(f"--password-file {path} is empty")
        return text
    return os.environ.get(CMD_PASSWORD_ENV) or None


def tls_for(config: LoadedConfig, identity: Identity) -> ssl.SSLContext | None:
    """The config's CA and host check, with the terminal's own client certificate."""
    from collector.security import StartupError, tls_context

    tls = config.collector.broker.tls
    if tls is None:
        if identity.cert_file:
            raise CliError("--cert given, but the config's broker has no [broker.tls] "
                           "(the connection would not use TLS)")
        return None
    try:
        ctx = tls_context(tls.model_copy(update={"cert_file": "", "key_file": ""}),
                          config.config_dir)
    except StartupError as exc:
        raise CliError(str(exc)) from None
    if identity.cert_file:
        if not identity.key_file:
            raise CliError("--cert needs --cert-key (the client certificate's private key)")
        for flag, name in (("--cert", identity.cert_file), ("--cert-key", identity.key_file)):
            if not Path(name).is_file():
                raise CliError(f"{flag} {name}: no such file")
        try:
            ctx.load_cert_chain(identity.cert_file, identity.key_file)
        except (ssl.SSLError, OSError) as exc:
            raise CliError(f"--cert {identity.cert_file} / --cert-key {identity.key_file}: "
                           f"cannot load the client certificate "
                           f"({getattr(exc, 'reason', None) or exc})") from None
    return ctx


def build_payload(config: LoadedConfig, press: str, name: str, fields: list[str],
                  operator: str | None, key_file: str | None,
                  now: float | None = None, role: str | None = None
                  ) -> tuple[str, dict[str, Any]]:
    """(topic, payload): request id, issue time, operator, fields, signature."""
    from collector import messages, signing
    from collector.command_gate import command_topic

    try:
        payload: dict[str, Any] = parse_fields(fields)
    except ValueError as exc:
        raise CliError(f"bad field: {exc}") from None
    try:
        topic = command_topic(config.collector.site.topic_root, press, name, role)
    except KeyError as exc:
        raise CliError(str(exc.args[0])) from None
    if config.presses and press not in config.presses:
        raise CliError(f"press {press!r} is not in {config.config_dir}/presses "
                       f"(known: {', '.join(sorted(config.presses))})")
    if operator:
        payload.setdefault("operator", operator)
    payload.setdefault("request_id", f"cli-{uuid.uuid4().hex[:12]}")
    payload.setdefault("issued_at", messages.iso_utc(time.time() if now is None else now))
    if key_file:
        try:
            payload = signing.sign(signing.load_private_key(key_file), topic, payload)
        except signing.SigningError as exc:
            raise CliError(str(exc)) from None
    return topic, payload


def send_command(config_dir: Path, press: str, name: str, fields: list[str],
                 operator: str | None = None, timeout: float = 10.0,
                 identity: Identity | None = None, key_file: str | None = None,
                 role: str | None = None) -> int:
    try:
        return _send(config_dir, press, name, fields, operator, timeout,
                     identity or Identity(), key_file or os.environ.get(CMD_KEY_ENV), role)
    except CliError as exc:
        print(f"press-collector cmd: {exc}", file=sys.stderr)
        return EXIT_ERROR


def _send(config_dir: Path, press: str, name: str, fields: list[str], operator: str | None,
          timeout: float, identity: Identity, key_file: str | None,
          role: str | None = None) -> int:
    import paho.mqtt.client as mqtt

    try:
        config = load_config(config_dir)
    except ConfigError as exc:
        raise CliError(str(exc)) from None
    broker = config.collector.broker
    if identity.username and broker.username and identity.username == broker.username:
        raise CliError(f"--username {identity.username!r} is the collector's own broker "
                       "account; commands are sent with the operator's or terminal's own "
                       "account (docs/security.md)")
    topic, payload = build_payload(config, press, name, fields, operator, key_file,
                                   role=role)
    password = read_cmd_password(identity)
    tls = tls_for(config, identity)
    root = config.collector.site.topic_root
    reply_topic = f"{root}/{press}/cmd_result"
    request_id = payload["request_id"]
    got: dict[str, Any] = {}
    connected, subscribed, published, done = (threading.Event() for _ in range(4))

    def on_connect(client, userdata, flags, reason, properties):
        got["connack"] = reason
        connected.set()
        if not reason.is_failure:
            client.subscribe(reply_topic, qos=1)

    def on_disconnect(client, userdata, flags, reason, properties):
        if "connack" not in got:  # closed before accepting us (TLS 1.3: a missing
            got["closed"] = reason  # client certificate is refused after the handshake)
            connected.set()

    def on_subscribe(client, userdata, mid, reasons, properties):
        got["suback"] = reasons[0] if reasons else None
        subscribed.set()

    def on_publish(client, userdata, mid, reason, properties):
        got["puback"] = reason
        published.set()

    def on_message(client, userdata, msg):
        try:
            data = json.loads(msg.payload)
        except ValueError:
            return
        if isinstance(data, dict) and data.get("request_id") == request_id:
            got["reply"] = data
            done.set()

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                         client_id=f"press-collector-cmd-{uuid.uuid4().hex[:8]}",
                         protocol=mqtt.MQTTv5)
    if identity.username:
        client.username_pw_set(identity.username, password)
    if tls is not None:
        client.tls_set_context(tls)
    client.on_connect, client.on_subscribe = on_connect, on_subscribe
    client.on_publish, client.on_message = on_publish, on_message
    client.on_disconnect = on_disconnect
    who = repr(identity.username) if identity.username else "anonymous"
    where = f"{broker.host}:{broker.port}"
    try:
        client.connect(broker.host, broker.port, keepalive=30, clean_start=True)
    except ssl.SSLCertVerificationError as exc:
        raise CliError(f"TLS: the broker {where} presented a certificate this terminal does "
                       f"not trust ({exc.verify_message}); check broker.tls.ca_file") from None
    except ssl.SSLError as exc:
        raise CliError(f"TLS handshake with {where} failed: {exc.reason or exc}") from None
    except OSError as exc:
        raise CliError(f"cannot connect to {where}: {exc.strerror or exc}") from None
    client.loop_start()
    try:
        if not connected.wait(timeout):
            raise CliError(f"no answer (CONNACK) from {where} within {timeout:g} s")
        if "closed" in got:
            hint = " (does it require a client certificate? --cert / --cert-key)" \
                if tls is not None and not identity.cert_file else ""
            raise CliError(f"the broker {where} closed the connection before accepting the "
                           f"login as {who}{hint}")
        if got["connack"].is_failure:
            raise CliError(f"the broker {where} refused the login as {who}: {got['connack']} "
                           "(check --username / --password-file / --cert)")
        if not subscribed.wait(timeout):
            raise CliError("no subscription acknowledgement from the broker")
        if got["suback"] is not None and got["suback"].is_failure:
            raise CliError(f"the broker refused {who} to read {reply_topic} "
                           f"({got['suback']}); the ACL must grant it read")
        client.publish(topic, json.dumps(payload), qos=1, retain=False)
        if not published.wait(timeout):
            raise CliError("the broker did not acknowledge the command")
        if got["puback"].is_failure:
            raise CliError(f"the broker refused the command: {who} may not write {topic} "
                           f"({got['puback']}); a {topic.split('/')[-2]} account is needed")
        if not done.wait(timeout):
            raise CliError(f"no reply within {timeout:g} s (is the collector running? its "
                           "log says COMMANDS WILL NOT ARRIVE when the broker keeps commands "
                           "from it)")
    finally:
        client.disconnect()
        client.loop_stop()
    reply = got["reply"]
    print(json.dumps(reply, indent=2))
    return EXIT_OK if reply.get("ok") else EXIT_REFUSED


def generate_key(out: Path, name: str, role: str) -> int:
    """``press-collector keygen``: a key pair; prints the press config table."""
    from collector import signing

    try:
        key = signing.generate(out)
    except FileExistsError:
        print(f"press-collector keygen: {out} exists; not overwritten", file=sys.stderr)
        return EXIT_ERROR
    except OSError as exc:
        print(f"press-collector keygen: {out}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_ERROR
    public = key.public_key()
    print(f"# private key: {out} (mode 0600; it stays on this terminal)")
    print(f"# key_id {signing.key_id(public)}; add this to presses/<id>.toml of every press "
          "it may command:")
    print("[[workflow.commands.keys]]")
    print(f"name = {json.dumps(name)}")
    print(f'role = "{role}"')
    print(f'public_key = "{signing.public_text(public)}"')
    return EXIT_OK
