"""Transport security on by default (issue 10), against a real Mosquitto (plain and TLS),
the OPC UA press simulator and the real daemon process.

- a broker off this machine without [broker.tls] is refused by `check` and `run` alike,
  unless broker.allow_plaintext = true, which is warned about at every start;
  broker.tls.insecure = true is warned about at every start;
- an OPC UA user name with security_policy None is refused unless
  plc.allow_plaintext_password = true (warned at every start, and asyncua's own
  "plain-text password" warning is no longer muted); a pinned server certificate outside
  its validity dates is refused with the dates;
- `check` refuses what `run` would stop on (missing OPC UA password file: exit 3, not a
  traceback in a restart loop), with the same words;
- the buffer directory and files are 0700 / 0600 whatever the umask;
- the passwords are gone from os.environ once read.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import signal
import socket
import ssl
import stat
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from collector import mqtt_names
from collector.config import OPCUA_PASSWORD_ENV, PASSWORD_ENV, check, is_loopback, load_config
from collector.daemon import Daemon
from collector.messages import Topics
from collector.security import startup_problems, startup_warnings
from drivers.base import Backoff
from drivers.opcua import OpcuaPoller, OpcuaSecurity, generate_certificate
from sim.local_broker import BrokerTls, LocalBroker
from sim.opcua import APP_URI, NODES, OpcuaPressSimulator, node_text
from sim.ports import free_port
from tests.support.opcua import Recorder, press_tags, running, trust
from tests.support.pki import Pki, make_pki
from tests.support.subscriber import Subscriber

REPO = Path(__file__).resolve().parent.parent
ROOT = "plant/transport"
HOST = "h1"
STATUS = Topics(ROOT, HOST).status()
PLAINTEXT_WARNING = "broker.allow_plaintext = true: MQTT to"
INSECURE_WARNING = "broker.tls.insecure = true: the certificate and host name"


# --------------------------------------------------------------------------- helpers

def modbus_press(port: int) -> str:
    """A Modbus press whose PLC is absent (a closed port): the daemon runs, offline."""
    return textwrap.dedent(f"""\
        id = "p1"
        [plc]
        host = "127.0.0.1"
        port = {port}
        [[plc.tags]]
        name = "strokes"
        address = 0
        type = "uint32"
        role = "stroke_count"
        """)


def opcua_press(url: str, extra: str) -> str:
    tags = "".join(f'\n[[plc.tags]]\nname = "{n}"\nnode = "{node_text(n)}"\n' for n in NODES)
    return (f'id = "p4"\n[plc]\nprotocol = "opcua"\nendpoint = "{url}"\n'
            f"publishing_interval_ms = 50\nheartbeat_ms = 200\n{extra}\n{tags}")


def write_config(cfg: Path, broker: str, press: str, buffer: str = "buffer.sqlite") -> Path:
    (cfg / "presses").mkdir(parents=True)
    (cfg / "collector.toml").write_text(textwrap.dedent(f"""\
        [site]
        name = "transport-test"
        topic_root = "{ROOT}"
        host_id = "{HOST}"
        """) + "\n[broker]\n" + textwrap.dedent(broker) + f'\n[buffer]\npath = "{buffer}"\n')
    (cfg / "presses" / "p.toml").write_text(press)
    return cfg


def cli(*args: str, env: dict[str, str] | None = None,
        timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "collector.cli", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=REPO, env=env)


def clean_env() -> dict[str, str]:
    """The test's environment without any credential variables."""
    return {k: v for k, v in os.environ.items()
            if k != "CREDENTIALS_DIRECTORY" and not k.startswith("PRESS_COLLECTOR_")}


async def run_daemon_until(cfg: Path, sub: Subscriber, predicate, log: Path,
                           umask: int | None = None, timeout: float = 20.0) -> str:
    """Start `press-collector run`, wait for ``predicate`` on what the subscriber got,
    stop it with SIGTERM; return its log."""
    def preexec() -> None:
        if umask is not None:
            os.umask(umask)

    with log.open("w") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "collector.cli", "run", "--config-dir", str(cfg),
            stdout=out, stderr=subprocess.STDOUT, cwd=REPO, env=clean_env(),
            preexec_fn=preexec)
        try:
            await sub.wait_for(predicate, timeout)
        finally:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(proc.wait(), 30)
    return log.read_text()


def online(msgs) -> bool:
    return any(m.topic == STATUS and b'"online"' in m.payload for m in msgs)


def rsa_certificate(directory: Path, not_before: dt.datetime, not_after: dt.datetime,
                    ) -> tuple[Path, Path]:
    """An OPC UA server certificate (RSA 2048, application URI of the simulator) with the
    given validity dates; DER certificate, PEM key."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "press-sim-dated")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(not_before).not_valid_after(not_after)
            .add_extension(x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier(APP_URI), x509.DNSName("127.0.0.1")]),
                critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=True,
                                         key_encipherment=True, data_encipherment=True,
                                         key_agreement=False, key_cert_sign=False,
                                         crl_sign=False, encipher_only=False,
                                         decipher_only=False), critical=False)
            .sign(key, hashes.SHA256()))
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / "server-cert.der", directory / "server-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.DER))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.TraditionalOpenSSL,
                                           serialization.NoEncryption()))
    return cert_path, key_path


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[LocalBroker]:
    b = LocalBroker(data_dir=tmp_path / "mq")
    b.start()
    try:
        yield b
    finally:
        b.stop()


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path / "pki")


@pytest.fixture
def tls_broker(tmp_path: Path, pki: Pki) -> Iterator[LocalBroker]:
    b = LocalBroker(data_dir=tmp_path / "mq-tls",
                    tls=BrokerTls(str(pki.ca), str(pki.server_cert), str(pki.server_key)))
    b.start()
    try:
        yield b
    finally:
        b.stop()


# --------------------------------------------------------------------------- broker

def test_remote_broker_without_tls_is_refused_by_check_and_run_alike(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "cfg", 'host = "mqtt.plant.local"\nport = 1883\n',
                       modbus_press(free_port()))
    line = ("collector.toml: broker.tls: required: broker host 'mqtt.plant.local' is not this "
            "machine (add [broker.tls] with the broker's CA, port 8883; or set "
            "broker.allow_plaintext = true to send the password and all data in clear)")
    checked = cli("check", "--config-dir", str(cfg))
    assert checked.returncode == 1 and line in checked.stderr.splitlines()
    ran = cli("run", "--config-dir", str(cfg))
    assert ran.returncode == 2 and ran.stderr.splitlines() == [line]
    assert not (cfg / "buffer.sqlite").exists()


def test_loopback_means_this_machine_only() -> None:
    for host in ("127.0.0.1", "127.9.9.9", "::1", "[::1]", "localhost", "LOCALHOST",
                 "::ffff:127.0.0.1", "a.localhost"):
        assert is_loopback(host), host
    for host in ("10.0.0.1", "mqtt.plant.local", "localhost.example.com", "0.0.0.0",
                 "::ffff:10.0.0.1", socket.gethostname() + ".invalid"):
        assert not is_loopback(host), host


async def test_allow_plaintext_delivers_and_warns_at_every_start(
        broker: LocalBroker, tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "cfg", f"host = \"127.0.0.1\"\nport = {broker.port}\n"
                       "allow_plaintext = true\n", modbus_press(free_port()))
    assert not check(cfg)
    for start in (1, 2):
        with Subscriber("127.0.0.1", broker.port, [f"{ROOT}/#"]) as sub:
            log = await run_daemon_until(cfg, sub, online, tmp_path / f"run{start}.log")
        warnings = [x for x in log.splitlines() if PLAINTEXT_WARNING in x]
        assert len(warnings) == 1 and " WARNING " in warnings[0], log[-2000:]
    checked = cli("check", "--config-dir", str(cfg), env=clean_env())
    assert checked.returncode == 0
    assert any(x.startswith("warning: ") and PLAINTEXT_WARNING in x
               for x in checked.stderr.splitlines())


async def test_insecure_tls_warns_at_every_start_verified_tls_does_not(
        tls_broker: LocalBroker, pki: Pki, tmp_path: Path) -> None:
    base = f'host = "127.0.0.1"\nport = {tls_broker.port}\n[broker.tls]\nca_file = "{pki.ca}"\n'
    insecure = write_config(tmp_path / "insecure", base + "insecure = true\n",
                            modbus_press(free_port()))
    verified = write_config(tmp_path / "verified", base, modbus_press(free_port()))
    logs = {}
    for name, cfg in (("insecure", insecure), ("verified", verified)):
        with Subscriber("127.0.0.1", tls_broker.port, [f"{ROOT}/#"],
                        tls=ssl.create_default_context(cafile=str(pki.ca))) as sub:
            logs[name] = await run_daemon_until(cfg, sub, online, tmp_path / f"{name}.log")
    assert sum(INSECURE_WARNING in x for x in logs["insecure"].splitlines()) == 1
    assert INSECURE_WARNING not in logs["verified"]
    assert PLAINTEXT_WARNING not in logs["verified"]


async def test_broker_password_is_gone_from_the_environment_once_read(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    password = "env-pw-0815"
    mq = LocalBroker(data_dir=tmp_path / "mq-auth",
                     users={"collector": password, "reader": "reader-pw"})
    mq.start()
    try:
        cfg = write_config(tmp_path / "cfg", f'host = "127.0.0.1"\nport = {mq.port}\n'
                           'username = "collector"\n', modbus_press(free_port()))
        monkeypatch.setenv(PASSWORD_ENV, password)
        monkeypatch.setenv(f"{OPCUA_PASSWORD_ENV}_P9", "opcua-pw")
        daemon = Daemon(load_config(cfg))
        task = asyncio.create_task(daemon.run())
        try:
            with Subscriber("127.0.0.1", mq.port, [f"{ROOT}/#"], username="reader",
                            password="reader-pw") as sub:
                await sub.wait_for(online, 15)  # it did log in with the password
            assert PASSWORD_ENV not in os.environ
            assert f"{OPCUA_PASSWORD_ENV}_P9" not in os.environ
        finally:
            daemon.stop()
            await asyncio.wait_for(task, 15)
    finally:
        mq.stop()


# --------------------------------------------------------------------------- names

def test_every_topic_stays_within_the_mqtt_limit_at_the_longest_names() -> None:
    root = "/".join(["r" * 99] * 700)[: mqtt_names.TOPIC_ROOT_MAX_BYTES].rstrip("/")
    assert mqtt_names.topic_root_problem(root, "x") is None
    press, host = "p" * mqtt_names.ID_MAX, "h" * mqtt_names.ID_MAX
    topics = Topics(root, host)
    built = [topics.event(press, "unassigned_reading"), topics.telemetry(press) + "/replay",
             topics.state(press), topics.status(), topics.alarm(), topics.cmd_result(press),
             f"{root}/{press}/cmd/" + "c" * (mqtt_names.COMMAND_SUFFIX_MAX - 4)]
    longest = max(len(t.encode()) for t in built)
    assert longest <= mqtt_names.longest_topic_bytes(root) <= mqtt_names.MQTT_MAX_BYTES


def test_hostname_as_default_host_id_is_checked(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = write_config(tmp_path / "cfg", 'host = "127.0.0.1"\n', modbus_press(free_port()))
    text = (cfg / "collector.toml").read_text().replace(f'host_id = "{HOST}"\n', "")
    (cfg / "collector.toml").write_text(text)
    monkeypatch.setattr(socket, "gethostname", lambda: "Line PC #3")
    assert check(cfg) == [
        "collector.toml: site.host_id: not set, and this machine's hostname 'Line PC #3' has "
        "the character(s) ' ', '#' (allowed: 1 to 64 letters A-Z a-z, digits, '_', '-' and "
        "'.'; it is one MQTT topic level): set site.host_id"]
    monkeypatch.setattr(socket, "gethostname", lambda: "line-pc-3.plant")
    assert check(cfg) == []


# --------------------------------------------------------------------------- OPC UA

def secure_opcua_press(tmp_path: Path, url: str, password_file: str) -> str:
    return opcua_press(url, textwrap.dedent(f"""\
        security_policy = "Basic256Sha256"
        security_mode = "SignAndEncrypt"
        certificate = "{tmp_path}/pki/client-cert.der"
        private_key = "{tmp_path}/pki/client-key.pem"
        trust_dir = "{tmp_path}/pki/trusted"
        username = "operator"
        password_file = "{password_file}"
        """))


def test_missing_opcua_password_file_is_refused_by_check_as_run_refuses_it(
        tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "cfg", 'host = "127.0.0.1"\n',
                       secure_opcua_press(tmp_path, "opc.tcp://127.0.0.1:4840/press",
                                          "opcua-password"))
    line = (f"presses/p.toml: plc.password_file: file 'opcua-password' not found (looked in "
            f"{cfg}/credentials/opcua-password or {cfg}/opcua-password)")
    checked = cli("check", "--config-dir", str(cfg), env=clean_env())
    assert checked.returncode == 1, checked.stdout
    assert line in checked.stderr.splitlines()
    ran = cli("run", "--config-dir", str(cfg), env=clean_env())
    assert ran.returncode == 3, ran.stderr  # RestartPreventExitStatus: no restart loop
    assert ran.stderr.splitlines() == [f"press-collector: cannot start: {line}"]
    assert not (cfg / "buffer.sqlite").exists()
    # found where systemd's LoadCredential= puts it: check and run both pass that point
    (cfg / "credentials").mkdir()
    (cfg / "credentials" / "opcua-password").write_text("s3cret\n")
    assert startup_problems(load_config(cfg)) == []


def test_opcua_password_in_clear_is_refused_by_run_too(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "cfg", 'host = "127.0.0.1"\n', opcua_press(
        "opc.tcp://127.0.0.1:4840/press", 'username = "operator"\n'))
    ran = cli("run", "--config-dir", str(cfg), env=clean_env())
    assert ran.returncode == 2
    assert ran.stderr.splitlines() == [
        "presses/p.toml: plc.username: with security_policy 'None' the password would cross "
        "the network in clear (use security_policy 'Basic256Sha256' with security_mode "
        "'SignAndEncrypt'; or set plc.allow_plaintext_password = true to accept that)"]


async def test_opcua_plaintext_password_when_allowed_works_and_is_warned_about(
        broker: LocalBroker, tmp_path: Path) -> None:
    sim = OpcuaPressSimulator(part="4711-A", die=3, username="operator", password="s3cret")
    await sim.start()
    try:
        cfg = write_config(tmp_path / "cfg", f'host = "127.0.0.1"\nport = {broker.port}\n',
                           opcua_press(sim.url, 'username = "operator"\npassword_file = "pw"\n'
                                       "allow_plaintext_password = true\n"))
        (cfg / "pw").write_text("s3cret\n")
        telemetry = Topics(ROOT, HOST).telemetry("p4")
        with Subscriber("127.0.0.1", broker.port, [f"{ROOT}/#"]) as sub:
            log = await run_daemon_until(
                cfg, sub, lambda m: any(x.topic == telemetry for x in m), tmp_path / "run.log")
    finally:
        await sim.close()
    ours = [x for x in log.splitlines() if "plc.allow_plaintext_password = true" in x]
    assert len(ours) == 1 and "WARNING" in ours[0]
    # asyncua's own security warning is no longer muted (and said once, not per reconnect)
    assert sum("Sending plain-text password" in x for x in log.splitlines()) == 1, log[-3000:]
    assert "s3cret" not in log


@pytest.mark.parametrize("when", ["expired", "not_yet_valid"])
async def test_pinned_server_certificate_outside_its_dates_is_refused(
        tmp_path: Path, when: str) -> None:
    now = dt.datetime.now(dt.UTC)
    if when == "expired":
        dates = (now - dt.timedelta(days=400), now - dt.timedelta(days=35))
    else:
        dates = (now + dt.timedelta(days=30), now + dt.timedelta(days=400))
    cert, key = rsa_certificate(tmp_path / "server-pki", *dates)
    sim = OpcuaPressSimulator(part="4711-A", die=3, secure=True)
    sim.certificate, sim.private_key = cert, key
    client_cert, client_key, _ = await generate_certificate(tmp_path / "client",
                                                           host="127.0.0.1")
    trusted = trust(cert, tmp_path / "trusted")  # pinned: the exact certificate
    security = OpcuaSecurity("Basic256Sha256", "SignAndEncrypt", str(client_cert),
                             str(client_key), str(trusted))
    await sim.start()
    try:
        rec = Recorder()
        poller = OpcuaPoller("p4/plc", sim.url, press_tags(), security=security,
                             timeout_s=2.0, backoff=Backoff(initial=0.1, maximum=0.4))
        async with running(poller, rec):
            change = await rec.wait_for(lambda r: next(iter(r.changes), None), 20)
    finally:
        await sim.close()
    assert not change.online
    assert change.reason.startswith("BadCertificateTimeInvalid: server certificate "
                                    "CN=press-sim-dated"), change.reason
    words = "expired on" if when == "expired" else "is not valid before"
    assert words in change.reason and str(trusted) in change.reason
    assert (dates[1] if when == "expired" else dates[0]).strftime("%Y-%m-%d") in change.reason
    # check warns about the pinned file before anyone waits for a connection
    cfg = write_config(tmp_path / "cfg", 'host = "127.0.0.1"\n', opcua_press(
        sim.url, textwrap.dedent(f"""\
            security_policy = "Basic256Sha256"
            security_mode = "SignAndEncrypt"
            certificate = "{client_cert}"
            private_key = "{client_key}"
            trust_dir = "{trusted}"
            """)))
    warnings = startup_warnings(load_config(cfg))
    assert len(warnings) == 1
    assert warnings[0].startswith(f"presses/p.toml: plc.trust_dir: {trusted / cert.name}: "
                                  "certificate CN=press-sim-dated ")
    assert words in warnings[0]


# --------------------------------------------------------------------------- buffer files

OPEN_AND_WRITE = """
import asyncio, os, sys
from buffer.store import Outbox, OutboxRow
os.umask(0)
async def main():
    box = Outbox.open(sys.argv[1], commit_interval_s=0.001)
    rows = [OutboxRow("p1", "events", box.next_seq("p1", "events"), "t", b"x", durable=True)]
    box.add_many(rows)
    await box.flush()
    print(sorted(os.listdir(os.path.dirname(sys.argv[1]))))
    box.close()
asyncio.run(main())
"""


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_buffer_directory_and_files_are_private_whatever_the_umask(tmp_path: Path) -> None:
    db = tmp_path / "state" / "deep" / "buffer.sqlite"
    out = subprocess.run([sys.executable, "-c", OPEN_AND_WRITE, str(db)], capture_output=True,
                         text=True, timeout=60, cwd=REPO, check=True).stdout
    # the listing was taken while the buffer was open: WAL and SHM were there
    assert "buffer.sqlite-wal" in out and "buffer.sqlite-shm" in out
    assert mode(tmp_path / "state") == 0o700 and mode(db.parent) == 0o700
    assert mode(db) == 0o600
    # a file an older version left wide open is narrowed at open, with its WAL and SHM
    os.chmod(db, 0o666)
    side = subprocess.run([sys.executable, "-c", OPEN_AND_WRITE.replace(
        "box.close()", "print(oct(os.stat(sys.argv[1] + '-wal').st_mode & 0o777), "
        "oct(os.stat(sys.argv[1] + '-shm').st_mode & 0o777)); box.close()"), str(db)],
        capture_output=True, text=True, timeout=60, cwd=REPO, check=True).stdout
    assert mode(db) == 0o600
    assert side.splitlines()[-1] == "0o600 0o600"


async def test_daemon_started_with_umask_000_keeps_its_buffer_private(
        broker: LocalBroker, tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "cfg", f'host = "127.0.0.1"\nport = {broker.port}\n',
                       modbus_press(free_port()), buffer="state/buffer.sqlite")
    seen: dict[str, int] = {}

    def modes_while_running(msgs) -> bool:
        if not online(msgs):
            return False
        for name in ("buffer.sqlite", "buffer.sqlite-wal", "buffer.sqlite-shm"):
            seen[name] = mode(cfg / "state" / name)
        return True

    with Subscriber("127.0.0.1", broker.port, [f"{ROOT}/#"]) as sub:
        await run_daemon_until(cfg, sub, modes_while_running, tmp_path / "run.log", umask=0)
    assert mode(cfg / "state") == 0o700
    assert seen == {"buffer.sqlite": 0o600, "buffer.sqlite-wal": 0o600,
                    "buffer.sqlite-shm": 0o600}


# --------------------------------------------------------------------------- deploy

def test_production_template_uses_tls_on_8883_and_validates(tmp_path: Path) -> None:
    cfg = tmp_path / "etc"
    (cfg / "presses").mkdir(parents=True)
    (cfg / "collector.toml").write_text((REPO / "deploy/etc/collector.toml").read_text())
    (cfg / "presses" / "p1.toml").write_text(modbus_press(502))
    assert check(cfg) == []
    broker = load_config(cfg).collector.broker
    assert broker.port == 8883 and broker.tls is not None and not broker.tls.insecure
    assert not broker.allow_plaintext and broker.password_file


def test_unit_limits_resources_and_keeps_state_private() -> None:
    unit = (REPO / "deploy/press-collector.service").read_text()
    settings = dict(line.split("=", 1) for line in unit.splitlines()
                    if "=" in line and not line.startswith("#"))
    assert settings["StateDirectoryMode"] == "0700" and settings["UMask"] == "0077"
    # sized from bench/unit_limits.py (docs/DESIGN.md): numbers, not "infinity"
    assert settings["MemoryMax"].endswith("M") and int(settings["MemoryMax"][:-1]) >= 256
    assert int(settings["MemoryHigh"][:-1]) < int(settings["MemoryMax"][:-1])
    assert 32 <= int(settings["TasksMax"]) <= 256


# --------------------------------------------------------------------------- any protocol


def test_a_second_protocol_that_logs_in_gets_its_password_the_same_way(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """PLC passwords are read by the protocol's ``password_env`` (drivers/registry.py),
    not by an OPC UA special case: a new protocol that logs in needs no collector edit
    (docs/DESIGN.md, "How to add a protocol")."""
    from types import SimpleNamespace

    from collector import security
    from drivers import registry

    registry.all_plugins()  # the real packages first, then the trial one beside them
    monkeypatch.setitem(registry._PLUGINS, "trialpw", registry.Plugin(
        "trialpw", "plc", "trial", "drivers.modbus.plugin", ("trialpw",),
        password_env="PRESS_COLLECTOR_TRIALPW_PASSWORD"))
    plc = SimpleNamespace(protocol="trialpw", username="op", password_file="")
    assert security.logs_in(plc)
    monkeypatch.setenv("PRESS_COLLECTOR_TRIALPW_PASSWORD", "shared-pw")
    assert security.read_plc_password("line-7", plc, tmp_path) == "shared-pw"
    monkeypatch.setenv("PRESS_COLLECTOR_TRIALPW_PASSWORD_LINE_7", "own-pw")
    assert security.read_plc_password("line-7", plc, tmp_path) == "own-pw"
    (tmp_path / "pw").write_text("file-pw\n")
    with_file = SimpleNamespace(protocol="trialpw", username="op",
                                password_file=str(tmp_path / "pw"))
    assert security.read_plc_password("line-7", with_file, tmp_path) == "file-pw"
    dropped = security.drop_secret_env()
    assert {"PRESS_COLLECTOR_TRIALPW_PASSWORD",
            "PRESS_COLLECTOR_TRIALPW_PASSWORD_LINE_7"} <= set(dropped)
    assert "PRESS_COLLECTOR_TRIALPW_PASSWORD_LINE_7" not in os.environ
    # a protocol without logins reads nothing, whatever the environment holds
    assert security.read_plc_password("p1", SimpleNamespace(
        protocol="modbus_tcp", username="x", password_file=""), tmp_path) is None
