"""``collector.toml``: site, broker (and its TLS), buffer, telemetry, metrics."""

from __future__ import annotations

from pydantic import Field, field_validator, model_validator

from collector import mqtt_names
from collector.config.base import ConfigModel, raise_problems, show

PASSWORD_ENV = "PRESS_COLLECTOR_MQTT_PASSWORD"


class SiteConfig(ConfigModel):
    name: str = Field(min_length=1)
    topic_root: str
    host_id: str = ""  # "" = the machine's hostname (resolved by the daemon)

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
    up in ``$CREDENTIALS_DIRECTORY`` (systemd ``LoadCredential=``) first, then in the
    config dir (resolved by collector.security)."""

    ca_file: str = ""  # "" = the system's CA store
    cert_file: str = ""
    key_file: str = ""
    insecure: bool = False  # true = no certificate / host name check (tests only!)

    @model_validator(mode="after")
    def _pair(self) -> BrokerTlsConfig:
        if bool(self.cert_file) != bool(self.key_file):
            missing = "key_file" if self.cert_file else "cert_file"
            raise_problems([((missing,), "required with "
                              f"{'cert_file' if self.cert_file else 'key_file'} (a client "
                              "certificate needs its private key)")])
        return self


class BrokerConfig(ConfigModel):
    host: str = Field("127.0.0.1", min_length=1)
    port: int = Field(1883, ge=1, le=65535)
    client_id: str = ""  # "" = "press-collector-{host_id}" (resolved by the daemon)
    keepalive_s: int = Field(30, ge=1, le=65535)
    max_inflight: int = Field(100, ge=1, le=1000)
    # Longest wait between reconnect attempts (backoff doubles from 0.25 s up to this): the
    # first live message after a broker outage comes at most this long after it is back.
    reconnect_max_s: float = Field(1.0, ge=0.25, le=300)
    username: str = ""
    # The password comes from env PRESS_COLLECTOR_MQTT_PASSWORD or from this file
    # (a relative path is looked up in $CREDENTIALS_DIRECTORY by the daemon).
    password_file: str = ""
    tls: BrokerTlsConfig | None = None  # [broker.tls]; absent = plain MQTT
    # Plain MQTT (no [broker.tls]) to a broker that is not on this machine: refused unless
    # this says so explicitly (then a warning at every start; docs/security.md).
    allow_plaintext: bool = False
    # Replay after an outage: at most this many backlog messages per second (0 = no
    # limit). Retained state and status are never throttled.
    replay_rate: int = Field(2000, ge=0, le=1_000_000)

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
    # A relative path resolves against the config dir; load_config stores it absolute.
    path: str = Field("/var/lib/press-collector/buffer.sqlite", min_length=1)
    # 2 ms: the latency the bench figures are measured with (+~0.5 % of a core at line
    # load vs 50 ms); quality records are fsynced in their batch either way
    commit_interval_ms: int = Field(2, ge=1, le=1000)
    retention_h: float = Field(168.0, gt=0)
    # Size bound of the buffer file (MiB). Over it: delivered history goes first, then the
    # oldest undelivered telemetry; undelivered quality events are never dropped (an
    # `alarm` event and the log say so, collection goes on).
    max_mb: int = Field(1024, ge=1, le=1_000_000)
    # Memory bound of the rows queued while the buffer cannot be written (disk full): over
    # it the oldest queued telemetry is dropped (counted, alarmed); quality events never.
    memory_max_mb: float = Field(64.0, gt=0, le=65536)


class TelemetryConfig(ConfigModel):
    publish: bool = True


class MetricsConfig(ConfigModel):
    """Health (JSON) and Prometheus metrics on 127.0.0.1:port; 0 = off."""

    port: int = Field(0, ge=0, le=65535)


class CollectorConfig(ConfigModel):
    site: SiteConfig
    broker: BrokerConfig = Field(default_factory=BrokerConfig)
    buffer: BufferConfig = Field(default_factory=BufferConfig)
    telemetry: TelemetryConfig = Field(default_factory=TelemetryConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)


