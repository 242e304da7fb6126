"""``press-collector cmd`` on a secured broker: the config's TLS (CA, host check) with the
terminal's *own* account, and one clear line, no traceback, for every credential layout
deploy/INSTALL.md shows going wrong. Broker: TLS with client certificates required, a
password file and the shipped ACL; the daemon runs as the collector account.

Before issue 10 the command logged in with the collector's username and password and
ignored [broker.tls] altogether (no TLS: every case below ended in a hang or traceback).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from collector.config import BrokerTlsConfig, LoadedConfig
from collector.security import tls_context
from sim.demo import REPO_CONFIG
from sim.local_broker import BrokerTls, LocalBroker
from sim.ports import free_port
from tests.support.line import Line
from tests.support.pki import Pki, make_pki
from tests.support.subscriber import Subscriber
from tests.test_security_acl import COLLECTOR, PASSWORDS, ROOT, SHIPPED_ACL, on_site


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path / "pki")


@pytest.fixture
def tls_broker(tmp_path: Path, pki: Pki, monkeypatch: pytest.MonkeyPatch
               ) -> Iterator[LocalBroker]:
    monkeypatch.setenv("PRESS_COLLECTOR_MQTT_PASSWORD", PASSWORDS[COLLECTOR])
    b = LocalBroker(data_dir=tmp_path / "mq", users=PASSWORDS, acl=SHIPPED_ACL.read_text(),
                    tls=BrokerTls(str(pki.ca), str(pki.server_cert), str(pki.server_key),
                                  require_certificate=True))
    b.start()
    try:
        yield b
    finally:
        b.stop()


def line_pc_config(tmp_path: Path, name: str, port: int, ca: Path, pki: Pki) -> Path:
    """The line PC's config dir as INSTALL.md lays it out: the collector's own account,
    password file and client certificate, and the CA."""
    target = tmp_path / name
    subprocess.run(["cp", "-r", str(REPO_CONFIG), str(target)], check=True)
    (target / "mqtt-password").write_text(PASSWORDS[COLLECTOR])
    (target / "collector.toml").write_text(f"""
[site]
name = "plant-1"
topic_root = "{ROOT}"

[broker]
host = "127.0.0.1"
port = {port}
username = "{COLLECTOR}"
password_file = "mqtt-password"

[broker.tls]
ca_file = "{ca}"
cert_file = "{pki.client_cert}"
key_file = "{pki.client_key}"

[buffer]
path = "buffer.sqlite"
""")
    return target


async def run_cmd(config_dir: Path, *args: str, env: dict[str, str] | None = None
                  ) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "collector.cli", "cmd", "--config-dir", str(config_dir),
        "--timeout", "10", *args, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={k: v for k, v in {**os.environ, **(env or {})}.items()
             if k != "PRESS_COLLECTOR_CMD_PASSWORD" or env})
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_cmd_uses_tls_and_its_own_identity_and_fails_clearly(
        tls_broker: LocalBroker, pki: Pki, tmp_path: Path) -> None:
    def secure(config: LoadedConfig) -> LoadedConfig:
        config = on_site(config)
        col = config.collector
        tls = BrokerTlsConfig(ca_file=str(pki.ca), cert_file=str(pki.client_cert),
                              key_file=str(pki.client_key))
        return config.model_copy(update={"collector": col.model_copy(update={
            "broker": col.broker.model_copy(update={"tls": tls})})})

    line = Line(tmp_path, tls_broker, presses=("p1",), adjust=secure)
    line.sub = Subscriber("127.0.0.1", tls_broker.port, [f"{ROOT}/#"], username="dashboard",
                          password=PASSWORDS["dashboard"], tls=tls_context(BrokerTlsConfig(
                              ca_file=str(pki.ca), cert_file=str(pki.client_cert),
                              key_file=str(pki.client_key)))).start()
    await line.start(subscribe=False)
    try:
        await line.wait_event("p1", "setup")
        etc = line_pc_config(tmp_path, "etc", tls_broker.port, pki.ca, pki)
        wrong_ca = line_pc_config(tmp_path, "wrong-ca", tls_broker.port, pki.other_ca, pki)
        no_ca = line_pc_config(tmp_path, "no-ca", tls_broker.port, tmp_path / "nope.pem",
                               pki)
        closed = line_pc_config(tmp_path, "closed", free_port(), pki.ca, pki)
        pw = tmp_path / "quality-pw"
        pw.write_text(PASSWORDS["quality-lab"] + "\n")
        bad_pw = tmp_path / "bad-pw"
        bad_pw.write_text("not-the-password")
        cert = ("--cert", str(pki.client_cert), "--cert-key", str(pki.client_key))
        me = ("--username", "quality-lab", "--password-file", str(pw), *cert)
        setup = ("--operator", "Q7", "p1", "start_setup", "reason=maintenance")
        cases = {
            # (config dir, args, env) -> (exit code, what stderr says)
            "ok": ((etc, (*me, *setup), None), (0, "")),
            "password from the environment": (
                (etc, ("--username", "quality-lab", *cert, *setup),
                 {"PRESS_COLLECTOR_CMD_PASSWORD": PASSWORDS["quality-lab"]}), (0, "")),
            "wrong password": ((etc, ("--username", "quality-lab", "--password-file",
                                      str(bad_pw), *cert, *setup), None),
                               (2, "refused the login as 'quality-lab'")),
            "never the collector's password": (
                (etc, ("--username", "quality-lab", *cert, *setup), None),
                (2, "refused the login")),
            "missing password file": ((etc, ("--username", "quality-lab", "--password-file",
                                             str(tmp_path / "nope"), *cert, *setup), None),
                                      (2, "no such file")),
            "wrong CA": ((wrong_ca, (*me, *setup), None), (2, "does not trust")),
            "missing CA file": ((no_ca, (*me, *setup), None), (2, "broker.tls.ca_file")),
            "no client certificate": ((etc, ("--username", "quality-lab", "--password-file",
                                             str(pw), *setup), None), (2, "closed the connection")),
            "missing client certificate": (
                (etc, ("--username", "quality-lab", "--password-file", str(pw), "--cert",
                       str(tmp_path / "nope.pem"), "--cert-key", str(pki.client_key),
                       *setup), None), (2, "--cert")),
            "viewer account": ((etc, ("--username", "dashboard", "--password-file",
                                      str(tmp_path / "dash-pw"), *cert, *setup), None),
                               (2, "may not write")),
            "the collector's account": ((etc, ("--username", COLLECTOR, *cert, *setup),
                                         None), (2, "collector's own broker account")),
            "broker not listening": ((closed, (*me, *setup), None), (2, "cannot connect")),
            "unknown command": ((etc, (*me, "p1", "fly"), None), (2, "unknown command")),
        }
        (tmp_path / "dash-pw").write_text(PASSWORDS["dashboard"])
        results = await asyncio.gather(*(run_cmd(d, *a, env=e)
                                         for (d, a, e), _ in cases.values()))
        for (name, (_, (code, says))), (rc, out, err) in zip(cases.items(), results,
                                                            strict=True):
            assert rc == code, (name, rc, out, err)
            assert "Traceback" not in err, (name, err)
            if code == 2:
                assert err.startswith("press-collector cmd: ") and says in err, (name, err)
                assert len(err.strip().splitlines()) == 1, (name, err)
            else:
                assert orjson.loads(out)["ok"] is True, name
        audits = [e for e in line.events(press="p1", kind="command")]
        assert len(audits) == 2  # the two good ones, nothing else got through
    finally:
        await line.close()
