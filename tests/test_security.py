"""Security against a real Mosquitto: TLS with CA verification, client certificates,
password file, ACL; wrong password and wrong CA are refused with a clear log line,
retried with backoff, and nothing waiting in the buffer is lost."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from buffer.store import Outbox, OutboxRow
from collector.config import BrokerTlsConfig
from collector.publisher import Publisher
from collector.security import StartupError, read_password, tls_context
from sim.demo import REPO_CONFIG
from sim.local_broker import BrokerTls, LocalBroker
from tests.support.pki import Pki, make_pki
from tests.support.subscriber import Subscriber

ROOT = "plant/secure"
STATUS = f"{ROOT}/_collector/h1/status"
COLLECTOR_PW = "s3cret-collector-pw"
READER_PW = "reader-pw"
ACL = f"""
user collector
topic write {ROOT}/#
user reader
topic read #
"""


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path / "pki")


@pytest.fixture
def secure_broker(tmp_path: Path, pki: Pki) -> Iterator[LocalBroker]:
    """TLS only, client certificate required, password file, ACL."""
    b = LocalBroker(data_dir=tmp_path / "mq", tls=BrokerTls(str(pki.ca), str(pki.server_cert),
                                                            str(pki.server_key),
                                                            require_certificate=True),
                    users={"collector": COLLECTOR_PW, "reader": READER_PW}, acl=ACL)
    b.start()
    try:
        yield b
    finally:
        b.stop()


def client_tls(pki: Pki, ca: Path | None = None) -> ssl.SSLContext:
    return tls_context(BrokerTlsConfig(ca_file=str(ca or pki.ca), cert_file=str(pki.client_cert),
                                       key_file=str(pki.client_key)))


def fill(outbox: Outbox, n: int) -> None:
    rows = []
    for _ in range(n):
        seq = outbox.next_seq("p1", "events")
        rows.append(OutboxRow("p1", "events", seq, f"{ROOT}/p1/events/x", b"%d" % seq,
                              durable=True))
    outbox.add_many(rows)


@contextlib.asynccontextmanager
async def running(publisher: Publisher) -> AsyncIterator[None]:
    task = asyncio.create_task(publisher.run())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def reader(broker: LocalBroker, pki: Pki) -> Subscriber:
    return Subscriber("127.0.0.1", broker.port, ["#"], username="reader", password=READER_PW,
                      tls=client_tls(pki))


async def test_mtls_password_and_acl_deliver_and_confine(secure_broker: LocalBroker, pki: Pki,
                                                         tmp_path: Path) -> None:
    outbox = Outbox.open(tmp_path / "b.sqlite")
    fill(outbox, 50)
    publisher = Publisher(outbox, "127.0.0.1", secure_broker.port, "pc-sec-1", STATUS,
                          username="collector", password=COLLECTOR_PW, tls=client_tls(pki))
    with reader(secure_broker, pki) as sub:
        async with running(publisher):
            assert await publisher.drain(15)
            await sub.wait_for(lambda m: sum("/events/" in x.topic for x in m) >= 50, 10)
        # ACL: the collector's credentials may write below its root only
        rogue = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="rogue")
        rogue.username_pw_set("collector", COLLECTOR_PW)
        rogue.tls_set_context(client_tls(pki))
        rogue.connect("127.0.0.1", secure_broker.port)
        rogue.loop_start()
        try:
            rogue.publish("other/line/cmd", b"forbidden", qos=1).wait_for_publish(5)
            rogue.publish(f"{ROOT}/marker", b"allowed", qos=1).wait_for_publish(5)
            got = await sub.wait_for(lambda m: any(x.topic == f"{ROOT}/marker" for x in m), 10)
        finally:
            rogue.disconnect()
            rogue.loop_stop()
    assert not [m for m in got if m.topic.startswith("other/")]
    seqs = [int(m.payload) for m in got if "/events/" in m.topic]
    assert seqs == list(range(1, 51))
    assert outbox.pending_count() == 0
    outbox.close()


async def test_wrong_password_is_refused_logged_once_retried_and_nothing_lost(
        secure_broker: LocalBroker, pki: Pki, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    outbox = Outbox.open(tmp_path / "b.sqlite")
    fill(outbox, 20)
    bad = Publisher(outbox, "127.0.0.1", secure_broker.port, "pc-sec-2", STATUS,
                    username="collector", password="wrong-password-xyz", tls=client_tls(pki),
                    reconnect_min_s=0.05, reconnect_max_s=0.4)
    async with running(bad):
        while bad.stats()["connect_failures"] < 4:
            await asyncio.sleep(0.05)
    st = bad.stats()
    assert st["backoff_s"] > bad.reconnect_min_s  # backoff grew
    assert "not authorized" in st["last_error"].lower()
    refusals = [r for r in caplog.records if "refused" in r.getMessage()]
    assert len(refusals) == 1, "one log line per distinct error, not one per retry"
    assert "retrying with backoff" in refusals[0].getMessage()
    assert "wrong-password-xyz" not in caplog.text
    assert outbox.pending_count() == 20  # nothing lost, nothing marked
    good = Publisher(outbox, "127.0.0.1", secure_broker.port, "pc-sec-2", STATUS,
                     username="collector", password=COLLECTOR_PW, tls=client_tls(pki))
    with reader(secure_broker, pki) as sub:
        async with running(good):
            assert await good.drain(15)
            got = await sub.wait_for(lambda m: sum("/events/" in x.topic for x in m) >= 20, 10)
    assert sorted(int(m.payload) for m in got if "/events/" in m.topic) == list(range(1, 21))
    assert COLLECTOR_PW not in caplog.text
    outbox.close()


async def test_wrong_ca_fails_the_handshake_clearly_and_nothing_is_lost(
        secure_broker: LocalBroker, pki: Pki, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    outbox = Outbox.open(tmp_path / "b.sqlite")
    fill(outbox, 10)
    bad = Publisher(outbox, "127.0.0.1", secure_broker.port, "pc-sec-3", STATUS,
                    username="collector", password=COLLECTOR_PW,
                    tls=client_tls(pki, ca=pki.other_ca), reconnect_min_s=0.05,
                    reconnect_max_s=0.4)
    async with running(bad):
        while bad.stats()["connect_failures"] < 3:
            await asyncio.sleep(0.05)
    assert "certificate verify failed" in bad.stats()["last_error"].lower()
    lines = [r.getMessage() for r in caplog.records if "verify failed" in r.getMessage()]
    assert len(lines) == 1
    # insecure=false is the default: a TLS config without ca_file uses the system store,
    # which does not know our test CA either
    no_ca = tls_context(BrokerTlsConfig())
    assert no_ca.verify_mode == ssl.CERT_REQUIRED and no_ca.check_hostname
    assert outbox.pending_count() == 10
    good = Publisher(outbox, "127.0.0.1", secure_broker.port, "pc-sec-3", STATUS,
                     username="collector", password=COLLECTOR_PW, tls=client_tls(pki))
    async with running(good):
        assert await good.drain(15)
    assert outbox.pending_count() == 0
    outbox.close()


def test_password_from_credentials_directory_or_env_never_from_toml(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from collector.config import load_config

    config = load_config(REPO_CONFIG)
    broker = config.collector.broker.model_copy(update={"password_file": "mqtt-password"})
    cfg = config.model_copy(update={"collector": config.collector.model_copy(
        update={"broker": broker})})
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "mqtt-password").write_text("from-systemd\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    assert read_password(cfg) == "from-systemd"
    monkeypatch.delenv("CREDENTIALS_DIRECTORY")
    with pytest.raises(StartupError, match=r"broker\.password_file: file 'mqtt-password' not"):
        read_password(cfg)
    monkeypatch.setenv("PRESS_COLLECTOR_MQTT_PASSWORD", "from-env")
    assert read_password(config) == "from-env"
    # the TOML itself may not hold a password
    bad = tmp_path / "cfg"
    subprocess.run(["cp", "-r", str(REPO_CONFIG), str(bad)], check=True)
    text = (bad / "collector.toml").read_text()
    (bad / "collector.toml").write_text(text.replace("keepalive_s", 'password = "x"\nkeepalive_s',
                                                     1))
    result = subprocess.run([sys.executable, "-m", "collector.cli", "check", "--config-dir",
                             str(bad)], capture_output=True, text=True, timeout=60)
    assert "broker.password: passwords are not allowed in config files" in result.stderr


def test_run_exits_cleanly_on_a_missing_ca_file_and_on_a_foreign_buffer(tmp_path: Path) -> None:
    cfg = tmp_path / "cfg"
    subprocess.run(["cp", "-r", str(REPO_CONFIG), str(cfg)], check=True)
    toml = cfg / "collector.toml"
    original = toml.read_text()
    toml.write_text(original.replace("[buffer]", '[broker.tls]\nca_file = "nope.pem"\n\n[buffer]'))
    run = [sys.executable, "-m", "collector.cli", "run", "--config-dir", str(cfg)]
    result = subprocess.run(run, capture_output=True, text=True, timeout=60)
    assert result.returncode == 3
    assert "broker.tls.ca_file: file 'nope.pem' not found" in result.stderr
    assert "Traceback" not in result.stderr
    foreign = cfg / "buffer.sqlite"
    subprocess.run([sys.executable, "-c", "import sqlite3; c = sqlite3.connect("
                    f"{str(foreign)!r}); c.execute('create table invoices (n)'); c.commit()"],
                   check=True)
    before = foreign.read_bytes()
    toml.write_text(original)
    result = subprocess.run(run, capture_output=True, text=True, timeout=60)
    assert result.returncode == 4
    assert "buffer file refused" in result.stderr and "invoices" in result.stderr
    assert foreign.read_bytes() == before  # never overwritten
