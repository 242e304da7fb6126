"""``collector.toml``: site, broker (and its TLS), buffer, telemetry, metrics."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from collector import mqtt_names
from drivers.config_base import ConfigModel, raise_problems, show

PASSWORD_ENV = "PRESS_COLLECTOR_MQTT_PASSWORD"


class SiteConfig(ConfigModel):
    """``[site]``: where this collector is and under which MQTT topics it publishes."""

    name: str = Field(min_length=1, description="Plant / site name, for people (shown by "
                      "`check`; not used in topics).")
    topic_root: str = Field(description="MQTT topic prefix of everything published: "
                            "`{topic_root}/{press id}/events/{kind}`, `.../telemetry`, "
                            "`.../state`, `{topic_root}/_collector/{host_id}/status`. Levels of "
                            "letters, digits, `_`, `-`, `.` joined by `/`; no leading or "
                            "trailing `/`, not starting with `$`, at most 65000 bytes.")
    host_id: str = Field("", description="This collector's name in its status topic; "
                         "\"\" = the machine's hostname (which is then checked too). 1..64 "
                         "letters, digits, `_`, `-`, `.`.")

    @field_validator("topic_root")
    @classmethod
    def _topic_root(cls, value: str) -> str:
        problem = mqtt_names.topic_root_problem(value, show(value))
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("host_id")
    @classmethod
    def _host_id(cls, value: str) -> str:
        problem = value and mqtt_names.topic_level_problem(value, show(value))
        if problem:
            raise ValueError(problem)
        return value


class BrokerTlsConfig(ConfigModel):
    """``[broker.tls]``: present = TLS on, with the server certificate verified against
    ``ca_file`` (or the system CAs) and its host name checked, unless ``insecure``.
    ``cert_file`` + ``key_file``: a client certificate (mTLS). A relative path is looked
    up in ``$CREDENTIALS_DIRECTORY`` (systemd ``LoadCredential=``) first, then in
    ``<config dir>/credentials/``, then in the config dir (collector.security)."""

    ca_file: str = Field("", description="CA certificate(s) (PEM) the broker's certificate "
                         "is checked against; \"\" = the system's CA store.")
    cert_file: str = Field("", description="Client certificate (PEM) for mutual TLS; "
                           "together with `key_file`.")
    key_file: str = Field("", description="Private key (PEM) of `cert_file`; required with "
                          "it.")
    insecure: bool = Field(False, description="true = no certificate and host name check "
                           "(tests only; a warning at every start).")

    @model_validator(mode="after")
    def _pair(self) -> BrokerTlsConfig:
        if bool(self.cert_file) != bool(self.key_file):
            missing = "key_file" if self.cert_file else "cert_file"
            raise_problems([((missing,), "required with "
                              f"{'cert_file' if self.cert_file else 'key_file'} (a client "
                              "certificate needs its private key)")])
        return self


class BrokerConfig(ConfigModel):
    """``[broker]``: the MQTT broker everything is published to (QoS 1); docs/delivery.md,
    docs/security.md."""

    host: str = Field("127.0.0.1", min_length=1, description="Broker host name or IP "
                      "address. Off this machine it needs `[broker.tls]` (or "
                      "`allow_plaintext`).")
    port: int = Field(1883, ge=1, le=65535, description="Broker TCP port; 8883 for MQTT "
                      "over TLS.")
    client_id: str = Field("", description="MQTT client id; \"\" = "
                           "`press-collector-{host_id}`.")
    keepalive_s: int = Field(30, ge=1, le=65535, description="MQTT keepalive, seconds.")
    max_inflight: int = Field(100, ge=1, le=1000, description="Unacknowledged QoS 1 "
                              "messages on the wire at once.")
    # The backoff doubles from 0.25 s up to this: the first live message after a broker
    # outage comes at most this long after it is back.
    reconnect_max_s: float = Field(1.0, ge=0.25, le=300, description="Longest wait between "
                                   "reconnect attempts, seconds (the backoff doubles from "
                                   "0.25 s up to this).")
    username: str = Field("", description="MQTT user name; \"\" = anonymous. The password "
                          "comes from `password_file` or the environment variable "
                          f"`{PASSWORD_ENV}`, never from this file.")
    password_file: str = Field("", description="File holding the MQTT password. Relative: "
                               "looked up in `$CREDENTIALS_DIRECTORY` (systemd "
                               "`LoadCredential=`), then `<config dir>/credentials/`, then "
                               "the config dir.")
    tls: BrokerTlsConfig | None = Field(None, description="`[broker.tls]`: present = MQTT "
                                        "over TLS; absent = plain MQTT.")
    allow_plaintext: bool = Field(False, description="true allows plain MQTT (no "
                                  "`[broker.tls]`) to a broker off this machine: the password "
                                  "and every record cross the network in clear (a warning at "
                                  "every start).")
    replay_rate: int = Field(2000, ge=0, le=1_000_000, description="Replay after an outage: "
                             "at most this many telemetry backlog messages per second (0 = no "
                             "limit). Events, live telemetry, retained state and status are "
                             "never throttled.")
    protocol: Literal["5", "3.1.1"] = Field("5", description="MQTT version of the command "
                                            "connection: \"5\" (retain-as-published, clean "
                                            "start, max packet size; docs/security.md) or "
                                            "\"3.1.1\" for brokers without MQTT 5 (RabbitMQ 3.x, "
                                            "NATS 2.9; what is lost then: docs/brokers.md). The "
                                            "outbox publisher speaks 3.1.1 with every broker.")

    @field_validator("protocol", mode="before")
    @classmethod
    def _protocol_number(cls, value: Any) -> Any:
        return "5" if value == 5 and not isinstance(value, bool) else value  # protocol = 5

    @field_validator("client_id")
    @classmethod
    def _client_id(cls, value: str) -> str:
        problem = mqtt_names.client_id_problem(value, show(value))
        if problem:
            raise ValueError(problem)
        return value

    @model_validator(mode="after")
    def _tls_required(self) -> BrokerConfig:
        """TLS for every broker off this machine, unless ``allow_plaintext`` says otherwise:
        the password and every quality record would otherwise cross the plant network in
        clear, and anyone on the path could forge commands and records."""
        if self.tls is None and not self.allow_plaintext and not is_loopback(self.host):
            raise_problems([(("tls",), f"required: broker host {show(self.host)} is not "
                              "this machine (add [broker.tls] with the broker's CA, port 8883; "
                              "or set broker.allow_plaintext = true to send the password and "
                              "all data in clear)")])
        return self


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 or 'localhost': traffic that never leaves the machine. Names are
    not resolved (a DNS answer could change under us); only 'localhost' is trusted."""
    import ipaddress

    if host.lower() in ("localhost", "localhost.") or host.lower().endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)  # ::ffff:127.0.0.1
    return address.is_loopback or bool(mapped and mapped.is_loopback)


class BufferConfig(ConfigModel):
    """``[buffer]``: the SQLite store-and-forward outbox; every event is committed here
    before it is sent (docs/delivery.md)."""

    # load_config stores a relative path absolute.
    path: str = Field("/var/lib/press-collector/buffer.sqlite", min_length=1,
                      description="The buffer file; a relative path resolves against the "
                      "config dir.")
    # 2 ms: the latency the bench figures are measured with (+~0.5 % of a core at line
    # load vs 50 ms); quality records are fsynced in their batch either way
    commit_interval_ms: int = Field(2, ge=1, le=1000, description="Group-commit window, "
                                    "ms: latency against commits per second.")
    retention_h: float = Field(168.0, gt=0, description="Delivered messages are kept this "
                               "long (hours) for replay and export.")
    max_mb: int = Field(1024, ge=1, le=1_000_000, description="Size bound of the buffer "
                        "file, MiB. Over it: delivered history goes first, then the oldest "
                        "undelivered telemetry; undelivered quality events never (an `alarm` "
                        "event says so, collection goes on).")
    memory_max_mb: float = Field(64.0, gt=0, le=65536, description="Memory bound, MiB, of "
                                 "the rows queued while the buffer cannot be written (disk "
                                 "full): over it the oldest queued telemetry is dropped "
                                 "(counted, alarm `buffer_write_failed`); quality events "
                                 "never.")
    cache_mb: int = Field(4, ge=2, le=4096, description="SQLite page-cache budget of the "
                          "buffer, MiB, shared by its connections: the writer half, the "
                          "publisher's reader a quarter, the checkpointer and the prune / "
                          "size-bound passes an eighth each. It bounds the daemon's memory "
                          "(docs/telemetry-and-health.md, \"Memory\"); the OS page cache "
                          "serves the rest. Sized from the bench: 16 gave no faster "
                          "writes or outage replays than 4 and cost ~6 MB of RSS "
                          "(bench/README.md, \"Line RSS\").")
    release_memory: bool = Field(True, description="After each prune round (every 5 "
                                 "minutes) give the heap freed by SQLite and Python back to "
                                 "the system (glibc `malloc_trim`; no effect with another C "
                                 "library). Off: RSS keeps its high-water mark "
                                 "(docs/telemetry-and-health.md, \"Memory\").")


class TelemetryConfig(ConfigModel):
    """``[telemetry]``: the raw tag values (docs/telemetry-and-health.md)."""

    publish: bool = Field(True, description="Publish one message per press per poll on "
                          "`{topic_root}/{press}/telemetry` (a press's `[telemetry]` and a "
                          "tag's own keys thin it out); false = buffer only.")


class SparkplugConfig(ConfigModel):
    """``[sparkplug]``: telemetry as Sparkplug B 3.0 for a SCADA (docs/sparkplug.md);
    events, command replies, alarms and the retained state keep their JSON topics."""

    enabled: bool = Field(False, description="true: the telemetry goes out as Sparkplug B "
                          "(NBIRTH / DBIRTH / DDATA / DDEATH, one device per press) on its own "
                          "connection to the `[broker]`, not as JSON on `.../telemetry`.")
    group_id: str = Field("", description="Sparkplug group id (`spBv1.0/{group_id}/...`); "
                          "required when enabled. 1..64 letters, digits, `_`, `-`, `.`.")
    edge_node_id: str = Field("", description="Sparkplug edge node id; \"\" = the host id "
                              "(`site.host_id`, else the hostname). 1..64 letters, digits, "
                              "`_`, `-`, `.`.")
    primary_host_id: str = Field("", description="The SCADA's primary host application id: "
                                 "births and data wait until its `spBv1.0/STATE/{id}` says "
                                 "online, and stop (NDEATH) when it says offline, the buffer "
                                 "keeping the telemetry meanwhile; \"\" = publish whenever "
                                 "connected.")

    @field_validator("group_id", "edge_node_id", "primary_host_id")
    @classmethod
    def _sparkplug_id(cls, value: str) -> str:
        problem = value and mqtt_names.topic_level_problem(value, show(value))
        if problem:
            raise ValueError(problem)
        return value

    @model_validator(mode="after")
    def _check(self) -> SparkplugConfig:
        if self.enabled and not self.group_id:
            raise_problems([(("group_id",), "required when enabled = true (the Sparkplug "
                              "group this line PC belongs to, e.g. the plant or area)")])
        return self


class MetricsConfig(ConfigModel):
    """``[metrics]``: health (JSON) and Prometheus metrics (docs/telemetry-and-health.md)."""

    port: int = Field(0, ge=0, le=65535, description="`127.0.0.1:port` serves `/health` "
                      "(JSON) and `/metrics` (Prometheus text); 0 = off.")


SCREEN_ACTIONS = ("acknowledge_alarm", "start_last_piece", "repeat_measurement")


class ScreenConfig(ConfigModel):
    """``[screen]``: the line-side screen, a web page for a touch screen beside the press
    (docs/operators.md); its operator actions and their accounts in docs/security.md."""

    port: int = Field(0, ge=0, le=65535, description="TCP port of the screen's web page "
                      "(`http://bind:port/`); 0 = off (the web library is then not even "
                      "imported).")
    bind: str = Field("127.0.0.1", min_length=1, description="Address the page is served "
                      "on: `127.0.0.1` for a browser on this PC; the PC's own address (or "
                      "`0.0.0.0`) for a panel on the network, which needs `tls_cert` / "
                      "`tls_key` (or `allow_plaintext`) when `actions` are on.")
    lang: Literal["en", "zh"] = Field("en", description="Language when neither the page "
                                      "address (`?lang=en` / `?lang=zh`) nor the browser's "
                                      "languages choose one: English or Simplified Chinese.")
    actions: list[Literal["acknowledge_alarm", "start_last_piece", "repeat_measurement"]] = \
        Field(default_factory=list, description="Operator actions offered on the page, "
              "each an ordinary command through the press's command checks "
              "(`[workflow.commands]`); [] = read-only. Needs `accounts_file`.")
    accounts_file: str = Field("", description="File of the screen's accounts (name, "
                               "operator id, role, presses, scrypt password hash; made with "
                               "`press-collector screen-account`). Relative: looked up like "
                               "`broker.password_file`. Required with `actions`.")
    session_idle_min: float = Field(10.0, gt=0, le=1440, description="A signed-in account "
                                    "is signed out after this many minutes without an "
                                    "action (a shared screen must not keep the last "
                                    "person's identity).")
    tls_cert: str = Field("", description="Server certificate (PEM) for HTTPS; together "
                          "with `tls_key`. Relative: looked up like `broker.password_file`.")
    tls_key: str = Field("", description="Private key (PEM) of `tls_cert`.")
    allow_plaintext: bool = Field(False, description="true allows `actions` over plain HTTP "
                                  "on an address other than this machine: passwords and "
                                  "session cookies cross the network in clear.")

    @model_validator(mode="after")
    def _check(self) -> ScreenConfig:
        problems: list[tuple[tuple[str, ...], str]] = []
        if bool(self.tls_cert) != bool(self.tls_key):
            missing = "tls_key" if self.tls_cert else "tls_cert"
            problems.append(((missing,), f"required with "
                             f"{'tls_cert' if self.tls_cert else 'tls_key'} (HTTPS needs the "
                             "certificate and its private key)"))
        if self.actions and not self.accounts_file:
            problems.append((("accounts_file",), "required with actions (who may act: make "
                             "the file with `press-collector screen-account`; or set "
                             "actions = [] for a read-only screen)"))
        if self.actions and self.port and not self.tls_cert and not self.allow_plaintext \
                and not is_loopback(self.bind):
            problems.append((("tls_cert",), f"required: actions on {show(self.bind)} (not "
                             "only this machine) would send passwords in clear (add tls_cert "
                             "and tls_key; or set screen.allow_plaintext = true)"))
        raise_problems(problems)
        return self


class CollectorConfig(ConfigModel):
    """``collector.toml``: one per collector host."""

    site: SiteConfig = Field(description="`[site]`: name and topic root.")
    broker: BrokerConfig = Field(default_factory=BrokerConfig, description="`[broker]`: "
                                 "the MQTT broker.")
    buffer: BufferConfig = Field(default_factory=BufferConfig, description="`[buffer]`: "
                                 "the outbox file.")
    telemetry: TelemetryConfig = Field(default_factory=TelemetryConfig,
                                       description="`[telemetry]`: raw tag values on or off.")
    metrics: MetricsConfig = Field(default_factory=MetricsConfig, description="`[metrics]`: "
                                   "health and metrics endpoint.")
    screen: ScreenConfig = Field(default_factory=ScreenConfig, description="`[screen]`: "
                                 "the line-side screen (web page).")
    sparkplug: SparkplugConfig = Field(default_factory=SparkplugConfig,
                                       description="`[sparkplug]`: telemetry as Sparkplug B.")

    @model_validator(mode="after")
    def _sparkplug_needs_telemetry(self) -> CollectorConfig:
        if self.sparkplug.enabled and not self.telemetry.publish:
            raise_problems([(("sparkplug", "enabled"), "needs telemetry.publish = true (the "
                              "Sparkplug DDATA messages are the published telemetry)")])
        return self


