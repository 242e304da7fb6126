"""Private RabbitMQ and NATS brokers (their MQTT listeners) for the tests and the bench.

The same surface as ``sim.local_broker.LocalBroker`` (``host``, ``port``, ``url``,
``start()``, ``stop()`` = SIGTERM, ``kill()`` = SIGKILL, ``restart()`` on the same port,
``log_tail()``), so a test written against Mosquitto runs unchanged against these. Each
instance has its own config file, data dir and ports: the machine's own RabbitMQ (5672)
and NATS (4222) services are never touched (docs/brokers.md).

- **RabbitMQ** (Debian ``rabbitmq-server``, plugin ``rabbitmq_mqtt``): its own node name,
  AMQP port, Erlang distribution port, Mnesia dir, log dir, enabled-plugins file and
  ``HOME`` (so its own Erlang cookie); started with the package's
  ``/usr/lib/rabbitmq/bin/rabbitmq-server`` directly (``/usr/sbin/rabbitmq-server``
  switches to the ``rabbitmq`` user, who cannot write the test's tmp dir). It boots in
  5-10 s on this 2-core machine: start one per test module, not per test. SIGTERM stops it
  cleanly (Erlang's init:stop), durable queues (persistent MQTT sessions) and retained
  messages survive a restart.
- **NATS** (Debian ``nats-server``): MQTT needs JetStream, and JetStream needs a
  ``server_name``; both, the client port, the MQTT port and the store dir are in its own
  config file. Starts in well under a second.

Both speak MQTT 3.1.1 only (RabbitMQ 3.10, NATS 2.9): ``protocols`` says so, and the tests
use it to pick what to run.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from sim.broker_process import BrokerProcess
from sim.ports import free_port

RABBITMQ_SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"
NATS_CANDIDATES = ("/usr/sbin/nats-server", "/usr/local/bin/nats-server")


def find_rabbitmq() -> str:
    """The rabbitmq-server start script with the MQTT plugin next to it, or an error that
    says which Debian package is missing."""
    if not os.access(RABBITMQ_SERVER, os.X_OK):
        raise FileNotFoundError(f"{RABBITMQ_SERVER} not found: install the Debian package "
                                "'rabbitmq-server' (scripts/setup does)")
    plugins = list(Path("/usr/lib/rabbitmq/lib").glob("rabbitmq_server-*/plugins/rabbitmq_mqtt-*"))
    if not plugins:
        raise FileNotFoundError("the RabbitMQ plugin rabbitmq_mqtt is not installed (it ships "
                                "with the Debian package 'rabbitmq-server')")
    return RABBITMQ_SERVER


def find_nats() -> str:
    for path in NATS_CANDIDATES:
        if os.access(path, os.X_OK):
            return path
    found = shutil.which("nats-server")
    if found:
        return found
    raise FileNotFoundError("nats-server not found: install the Debian package 'nats-server' "
                            "(scripts/setup does)")


class LocalRabbitMQ(BrokerProcess):
    """A private RabbitMQ node with only the MQTT plugin enabled.

    ``prefetch`` is the plugin's ``mqtt.prefetch``: how many QoS 1 messages RabbitMQ sends
    a subscriber before it waits for PUBACKs (the plugin's default is 10; docs/brokers.md).
    """

    kind = "rabbitmq"
    start_timeout = 60.0

    def __init__(self, port: int = 0, data_dir: str | os.PathLike[str] = "rabbitmq",
                 host: str = "127.0.0.1", prefetch: int = 10, extra_conf: str = "") -> None:
        super().__init__(port, data_dir, host)
        self.amqp_port = free_port(host)
        self.dist_port = free_port(host)
        self.prefetch = prefetch
        self.extra_conf = extra_conf
        self.node = f"pc{self.port}@localhost"
        self.log_path = self.data_dir / "log" / f"{self.node}.log"

    def write_config(self) -> None:
        d = self.data_dir
        (d / "rabbitmq.conf").write_text("\n".join([
            f"listeners.tcp.default = {self.host}:{self.amqp_port}",
            f"mqtt.listeners.tcp.default = {self.host}:{self.port}",
            "mqtt.allow_anonymous = true",
            f"mqtt.prefetch = {self.prefetch}",
            "loopback_users = none",
            "log.console = false",
            "log.file.level = info",
            self.extra_conf.strip(),
        ]) + "\n")
        (d / "enabled_plugins").write_text("[rabbitmq_mqtt].\n")
        (d / "rabbitmq-env.conf").write_text("")  # not the system's (node name rabbit@...)

    def command(self) -> tuple[list[str], dict[str, str]]:
        d = self.data_dir
        env = {k: v for k, v in os.environ.items() if not k.startswith("RABBITMQ_")}
        env.update({
            "HOME": str(d),  # its own .erlang.cookie
            "RABBITMQ_CONF_ENV_FILE": str(d / "rabbitmq-env.conf"),
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": self.host,
            "RABBITMQ_NODE_PORT": str(self.amqp_port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(d / "mnesia"),
            "RABBITMQ_LOG_BASE": str(d / "log"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(d / "enabled_plugins"),
            "RABBITMQ_CONFIG_FILE": str(d / "rabbitmq.conf"),
            "RABBITMQ_PID_FILE": str(d / "rabbitmq.pid"),
            "RABBITMQ_PLUGINS_EXPAND_DIR": str(d / "plugins-expand"),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
        })
        return [find_rabbitmq()], env


class LocalNats(BrokerProcess):
    """A private nats-server with JetStream and the MQTT listener.

    ``mqtt_conf`` goes inside the ``mqtt {}`` block, e.g. ``ack_wait: "2s"``: NATS
    redelivers an unacknowledged QoS 1 message when its ack_wait (default 30 s) expires,
    not when the subscriber reconnects (docs/brokers.md); tests that kill a subscriber
    shorten it.
    """

    kind = "nats"

    def __init__(self, port: int = 0, data_dir: str | os.PathLike[str] = "nats",
                 host: str = "127.0.0.1", extra_conf: str = "", mqtt_conf: str = "") -> None:
        super().__init__(port, data_dir, host)
        self.client_port = free_port(host)
        self.extra_conf = extra_conf
        self.mqtt_conf = mqtt_conf
        self.conf_path = self.data_dir / "nats.conf"
        self.log_path = self.data_dir / "nats.log"

    def write_config(self) -> None:
        self.conf_path.write_text("\n".join([
            f"server_name: pc_test_{self.port}",  # JetStream (and so MQTT) needs one
            f"listen: {self.host}:{self.client_port}",
            f'jetstream {{ store_dir: "{self.data_dir / "jetstream"}" }}',
            f"mqtt {{\n  listen: {self.host}:{self.port}\n  {self.mqtt_conf.strip()}\n}}",
            self.extra_conf.strip(),
        ]) + "\n")

    def command(self) -> tuple[list[str], dict[str, str]]:
        return [find_nats(), "-c", str(self.conf_path), "-l", str(self.log_path)], dict(os.environ)


BROKER_KINDS = ("mosquitto", "rabbitmq", "nats")


def missing_reason(kind: str) -> str | None:
    """Why a broker kind cannot run here (None: it can): the text of a test's skip."""
    try:
        if kind == "rabbitmq":
            find_rabbitmq()
        elif kind == "nats":
            find_nats()
        else:
            from sim.local_broker import find_mosquitto

            find_mosquitto()
    except FileNotFoundError as exc:
        return str(exc)
    return None
