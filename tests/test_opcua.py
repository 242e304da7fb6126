"""OPC UA driver, simulator, probe and daemon wiring, against real asyncua servers on
127.0.0.1 (each test its own server: asyncua servers are bound to the test's loop)."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

import pytest

from drivers.base import Backoff
from drivers.opcua import OpcuaSecurity, OpcuaTag, generate_certificate
from drivers.opcua.probe import probe, run_cert
from sim.local_broker import LocalBroker
from sim.opcua import OpcuaPressSimulator, node_text
from sim.ports import free_port
from tests.support.opcua import OpcuaLine, Recorder, poller, press_tags, running, trust

FULL = {"strokes", "die_id", "spm", "part_number", "material_lot", "tonnage", "die_temp",
        "setup_mode", "running", "repair"}


@pytest.fixture
async def sim():
    s = OpcuaPressSimulator(part="4711-A", lot="L1", die=3, spm=600, seed=1)
    await s.start()
    try:
        yield s
    finally:
        await s.close()


def complete(p) -> bool:
    return set(p.values) == FULL


async def test_values_arrive_decoded_by_subscription_and_poll(sim: OpcuaPressSimulator) -> None:
    rec = Recorder()
    p = poller(sim, press_tags(poll=("die_id", "part_number")))
    async with running(p, rec):
        first = await rec.wait_poll(complete)
        assert first.values["die_id"] == 3 and first.values["part_number"] == "4711-A"
        assert first.values["material_lot"] == "L1" and first.values["spm"] == 600
        assert first.values["running"] is False and first.values["die_temp"] == 40.0
        assert first.errors == {}
        sim.set_part("4711-B")        # polled tag
        sim.set_lot("L2")             # subscribed tag
        sim.set_running(True)
        later = await rec.wait_poll(lambda r: r.values.get("part_number") == "4711-B"
                                    and r.values.get("material_lot") == "L2"
                                    and r.values.get("strokes", 0) >= 2)
        assert complete(later)  # every PollResult is a snapshot of all tags
        assert later.values["running"] is True and later.values["tonnage"] > 700
    assert rec.online_flags() == [True]
    assert p.stats["sessions"] == 1 and p.stats["notifications"] > 0


async def test_absolute_deadband_suppresses_small_changes(sim: OpcuaPressSimulator) -> None:
    rec = Recorder()
    tags = press_tags(die_temp={"deadband_type": "absolute", "deadband_value": 5.0})
    async with running(poller(sim, tags), rec):
        await rec.wait_poll(complete)
        sim.set_temperature(42.0)     # inside the deadband
        await sim.flush()
        sim.set_temperature(50.0)
        await rec.wait_poll(lambda r: r.values.get("die_temp") == 50.0)
    seen = {r.values.get("die_temp") for r in rec.polls}
    assert seen == {40.0, 50.0}


async def test_restart_gives_offline_online_and_new_subscriptions(
        sim: OpcuaPressSimulator) -> None:
    rec = Recorder()
    p = poller(sim)
    async with running(p, rec):
        await rec.wait_poll(complete)
        await sim.stop()
        await rec.wait_for(lambda r: r.online_flags() == [True, False])
        sim.namespace_shift = 2   # after the restart our namespace has another index
        await sim.start()
        await rec.wait_for(lambda r: r.online_flags() == [True, False, True])
        sim.set_die(9)            # only a re-created subscription can deliver this
        back = await rec.wait_poll(lambda r: r.values.get("die_id") == 9)
        assert complete(back)
    assert p.stats["sessions"] == 2


async def test_program_download_recovers_without_error_loop(sim: OpcuaPressSimulator) -> None:
    rec = Recorder()
    p = poller(sim, press_tags(poll=("die_id",)))
    async with running(p, rec):
        await rec.wait_poll(complete)
        await sim.remove_nodes()
        gone = await rec.wait_for(lambda r: r.online_flags() == [True, False] and r.changes[-1])
        assert "no configured node exists" in gone.reason
        reconnects = p.stats["reconnects"]
        await sim.add_nodes()
        await rec.wait_for(lambda r: r.online_flags() == [True, False, True])
        sim.set_die(11)
        await rec.wait_poll(lambda r: complete(r) and r.values["die_id"] == 11)
    assert p.stats["vanished"] == 1          # one new session for the vanished nodes
    assert p.stats["reconnects"] - reconnects <= 2
    assert p.stats["sessions"] == 2


async def test_one_wrong_node_is_a_tag_error_not_an_outage(sim: OpcuaPressSimulator) -> None:
    rec = Recorder()
    tags = [*press_tags(), OpcuaTag("typo", "nsu=urn:press-sim;s=Press.Strokez"),
            OpcuaTag("other_ns", "nsu=urn:nowhere;s=X", mode="poll")]
    async with running(poller(sim, tags), rec):
        result = await rec.wait_poll(complete)
    assert result.errors["typo"] == "BadNodeIdUnknown"
    assert result.errors["other_ns"].startswith("BadNodeIdUnknown (namespace 'urn:nowhere'")
    assert rec.online_flags() == [True]


class CountingBackoff(Backoff):
    """Backoff that signals after ``n`` delays (a test awaits reconnect attempts)."""

    def __init__(self, n: int) -> None:
        super().__init__(initial=0.05, maximum=0.1)
        self.n, self.calls, self.reached = n, 0, asyncio.Event()

    def next_delay(self) -> float:
        self.calls += 1
        if self.calls >= self.n:
            self.reached.set()
        return super().next_delay()


async def test_server_unreachable_is_offline_once(tmp_path: Path) -> None:
    dead = OpcuaPressSimulator(port=free_port())
    rec = Recorder()
    backoff = CountingBackoff(4)
    p = poller(dead, backoff=backoff)
    async with running(p, rec):
        await asyncio.wait_for(backoff.reached.wait(), 10)
    assert rec.online_flags() == [False]
    assert rec.changes[0].reason == "connection refused"


# ----------------------------------------------------------------------- security


@pytest.fixture
async def secure_sim(tmp_path: Path):
    s = OpcuaPressSimulator(part="4711-A", die=3, secure=True, username="operator",
                            password="s3cret", cert_dir=tmp_path / "server-pki")
    await s.start()
    try:
        yield s
    finally:
        await s.close()


@pytest.fixture
async def client_pki(tmp_path: Path) -> tuple[Path, Path]:
    cert, key, created = await generate_certificate(tmp_path / "pki")
    assert created
    return cert, key


@pytest.mark.parametrize("mode", ["Sign", "SignAndEncrypt"])
async def test_basic256sha256_with_user_and_trusted_server(
        secure_sim: OpcuaPressSimulator, client_pki: tuple[Path, Path], tmp_path: Path,
        mode: str) -> None:
    cert, key = client_pki
    security = OpcuaSecurity("Basic256Sha256", mode, str(cert), str(key),
                             str(trust(secure_sim.certificate, tmp_path / "trusted")),
                             "operator", "s3cret")
    rec = Recorder()
    async with running(poller(secure_sim, press_tags(poll=("spm",)), security), rec):
        result = await rec.wait_poll(complete)
    assert result.values["die_id"] == 3 and result.values["part_number"] == "4711-A"
    assert rec.online_flags() == [True]


async def test_untrusted_server_certificate_is_refused(
        secure_sim: OpcuaPressSimulator, client_pki: tuple[Path, Path], tmp_path: Path) -> None:
    cert, key = client_pki
    empty = trust(None, tmp_path / "trusted")
    security = OpcuaSecurity("Basic256Sha256", "SignAndEncrypt", str(cert), str(key),
                             str(empty), "operator", "s3cret")
    rec = Recorder()
    async with running(poller(secure_sim, security=security), rec):
        change = await rec.wait_for(lambda r: r.changes and r.changes[0])
    assert change.online is False
    assert change.reason.startswith("BadCertificateUntrusted: server certificate")
    assert f"copy it into {empty}" in change.reason
    assert rec.polls == []


async def test_wrong_password_and_missing_security_are_clear_errors(
        secure_sim: OpcuaPressSimulator, client_pki: tuple[Path, Path], tmp_path: Path) -> None:
    cert, key = client_pki
    trusted = str(trust(secure_sim.certificate, tmp_path / "trusted"))
    wrong = OpcuaSecurity("Basic256Sha256", "Sign", str(cert), str(key), trusted,
                          "operator", "guess")
    rec = Recorder()
    async with running(poller(secure_sim, security=wrong), rec):
        change = await rec.wait_for(lambda r: r.changes and r.changes[0])
    assert change.reason == "BadUserAccessDenied (user name or password rejected)"
    rec = Recorder()
    async with running(poller(secure_sim), rec):  # security None against a secure server
        change = await rec.wait_for(lambda r: r.changes and r.changes[0])
    assert change.reason.startswith("server offers no endpoint with this security")


# ----------------------------------------------------------------------- probe


def probe_args(url: str, **kw) -> argparse.Namespace:
    base = {"read": [], "browse": [], "security": "None", "cert": "", "key": "",
            "trust_dir": "", "user": "", "timeout": 2.0}
    return argparse.Namespace(url=url, **{**base, **kw})


async def test_probe_reads_and_browses_in_config_spelling(sim: OpcuaPressSimulator) -> None:
    code, lines = await probe(probe_args(sim.url, read=[node_text("part_number"),
                                                        "nsu=urn:press-sim;s=Nope"],
                                         browse=["nsu=urn:press-sim;s=Press"]))
    assert code == 1  # one node could not be read
    assert lines[0] == f"connected to {sim.url} (security None/None, anonymous)"
    assert f"read {node_text('part_number')}: '4711-A' (String)" in lines
    assert "read nsu=urn:press-sim;s=Nope: error BadNodeIdUnknown" in lines
    assert "browse nsu=urn:press-sim;s=Press: 16 children" in lines  # 10 values, 6 outputs
    assert any(line.split() == ["DieId", "Variable", node_text("die_id"), "=", "3"]
               for line in lines)
    code, lines = await probe(probe_args(sim.url))
    assert code == 0 and any("nsu=urn:press-sim;s=Press" in line for line in lines)


async def test_probe_errors_unreachable_bad_node_security() -> None:
    url = f"opc.tcp://127.0.0.1:{free_port()}/press"
    assert await probe(probe_args(url)) == (2, [f"error: {url}: connection refused"])
    code, lines = await probe(probe_args(url, read=["Press.Strokes"]))
    assert code == 2 and lines[0].startswith("error: 'Press.Strokes' is not a node id")
    code, lines = await probe(probe_args(url, security="Basic256Sha256,Sign"))
    assert code == 2 and "needs --cert, --key and --trust-dir" in lines[0]


def test_opcua_cert_creates_once_then_keeps(tmp_path: Path, capsys) -> None:
    args = argparse.Namespace(out=str(tmp_path / "pki"), app_uri="urn:test:client", host="lpc1")
    assert run_cert(args) == 0
    assert capsys.readouterr().out.startswith("created ")
    assert run_cert(args) == 0
    assert capsys.readouterr().out.startswith("kept existing ")
    assert (tmp_path / "pki" / "client-key.pem").stat().st_mode & 0o777 == 0o600


# ----------------------------------------------------------------------- end to end


async def test_opcua_press_setup_then_first_article_through_the_broker(
        tmp_path: Path, broker: LocalBroker) -> None:
    line = OpcuaLine(tmp_path, broker, presses=("p1",))
    try:
        await line.start()
        setup = await line.wait_event("p1", "setup")
        assert setup["context"]["part_number"] == "BRK-100"
        assert setup["context"]["die_id"] == "7"
        for gauge in line.gauges["p1"]:
            await line.wait_event("p1", "gauge_connection", gauge=gauge, online=True)
        for gauge, value in [("g1", "25.010"), ("g2", "12.480"), ("g2", "0.020")]:
            line.measure("p1", gauge, value)
        fa = await line.wait_event("p1", "first_article")
        assert fa["data"]["verdict"] == "pass"
        assert line.contract_violations() == []
    finally:
        await line.close()


def test_example_opcua_press_config_validates(tmp_path: Path) -> None:
    import shutil

    from collector.config import OpcuaPlcConfig, load_config, summary

    repo = Path(__file__).resolve().parent.parent
    shutil.copytree(repo / "tests" / "config_cases" / "_base", tmp_path / "cfg")
    shutil.copy(repo / "config" / "presses" / "p4.toml",
                tmp_path / "cfg" / "presses" / "p4.toml")
    cfg = load_config(tmp_path / "cfg")
    plc = cfg.presses["p4"].plc
    assert isinstance(plc, OpcuaPlcConfig)
    assert plc.role_tags()["strokes"] == "stroke_count"
    assert [t.mode for t in plc.tags].count("poll") == 1
    assert "press p4 Press 4 (servo, OPC UA): opcua opc.tcp://127.0.0.1:5024/press" in summary(cfg)
