"""The pure parts of issue 10: text safety, the signature encoding (and the worked
example in docs/security.md), the command log's bounds and durability, fail-closed
operator lists and the check warning."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from buffer.commands import CommandLog
from buffer.store import Outbox
from collector import signing, text_safety
from collector.command_gate import CommandGate, Refuse, Run, TokenBucket, command_warnings
from collector.config import CommandsConfig, load_config
from collector.domain import WorkflowSettings
from collector.quality import CommandError, validate_command
from sim.demo import REPO_CONFIG

DOCS = Path(__file__).resolve().parents[1] / "docs" / "security.md"


@pytest.mark.parametrize("text,bad", [
    ("Q12", None), ("Müller-Lüdenscheid", None), ("BRK 100/A", None), ("Ω≤", None),
    ("Q\x0012", "U+0000 NUL"), ("Q\u202e21", "U+202E RIGHT-TO-LEFT OVERRIDE"),
    ("a\u2066b", "U+2066 LEFT-TO-RIGHT ISOLATE"), ("\x1b[2J", "U+001B"),
    ("x\u2028y", "U+2028 LINE SEPARATOR"), ("tab\there", "U+0009"), ("\x85", "U+0085"),
])
def test_unsafe_characters_are_named(text: str, bad: str | None) -> None:
    problem = text_safety.problem(text)
    assert (problem is None) == (bad is None)
    if bad is not None:
        assert problem is not None and bad in problem
        assert text_safety.sanitise(text)[1] >= 1
        assert text_safety.first_unsafe(text_safety.sanitise(text)[0]) is None
    else:
        assert text_safety.sanitise(text) == (text, 0)


def test_the_workflow_refuses_unsafe_operator_ids_and_fields() -> None:
    """Before issue 10 an operator "Q\u202e7" or a reason with NUL went into the context."""
    authorized = {"production": ("*",), "quality": ("*",)}
    for fields in ({"operator": "Q\u202e7", "why": "x"}, {"operator": "Q7", "why": "a\x00b"}):
        with pytest.raises(CommandError) as err:
            validate_command("hold", {"request_id": "r1", **fields}, authorized)
        assert err.value.code == "invalid_field"


def test_operator_lists_fail_closed() -> None:
    """Today "*" is the default: anyone could release. Now an empty list refuses."""
    assert CommandsConfig().quality == [] and CommandsConfig().production == []
    with pytest.raises(CommandError) as err:
        validate_command("release", {"request_id": "r1", "operator": "Q7", "why": "x"},
                         WorkflowSettings().authorized)
    assert err.value.code == "unauthorized" and "list is empty" in err.value.message


def test_check_warns_when_a_press_accepts_any_operator(tmp_path: Path) -> None:
    assert command_warnings(load_config(REPO_CONFIG)) == []  # the example lists operators
    target = tmp_path / "etc"
    subprocess.run(["cp", "-r", str(REPO_CONFIG), str(target)], check=True)
    press = target / "presses" / "p1.toml"
    press.write_text(press.read_text().replace('production = ["OP1", "OP2", "Q7", "Q12"]',
                                               'production = ["*"]'))
    proc = subprocess.run([sys.executable, "-m", "collector.cli", "check", "--config-dir",
                           str(target)], capture_output=True, text=True)
    assert proc.returncode == 0
    assert ('warning: presses/p1.toml: workflow.commands.production: "*" accepts production '
            "commands from any operator id") in proc.stderr


def test_signature_covers_topic_and_every_field() -> None:
    key = Ed25519PrivateKey.generate()
    topic = "plant-1/press-shop/p1/cmd/quality/release"
    payload = signing.sign(key, topic, {"request_id": "r1", "issued_at": "2026-11-25T09:00:00Z",
                                        "operator": "Q7", "why": "ok"})
    public = key.public_key()
    assert signing.verify(public, topic, payload)
    for changed in ({**payload, "why": "not ok"}, {**payload, "request_id": "r2"},
                    {**payload, "issued_at": "2026-11-25T09:05:00Z"},
                    {**payload, "operator": "Q12"}, {**payload, "extra": "x"},
                    {k: v for k, v in payload.items() if k != "why"}):
        assert not signing.verify(public, topic, changed)
    for other in ("plant-1/press-shop/p2/cmd/quality/release",
                  "plant-2/press-shop/p1/cmd/quality/release",
                  "plant-1/press-shop/p1/cmd/quality/hold"):
        assert not signing.verify(public, other, payload)
    assert not signing.verify(public, topic, {**payload, "why": 1})  # strings only


def test_the_worked_example_in_the_docs_verifies() -> None:
    """docs/security.md signs with the key whose 32 private bytes are 0..31: the public
    key, key id, canonical bytes and signature printed there are these."""
    key = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
    topic = "plant-1/press-shop/p1/cmd/quality/release"
    signed = signing.sign(key, topic, {"request_id": "qs-0001",
                                       "issued_at": "2026-11-25T09:00:00.000Z",
                                       "operator": "Q7", "why": "re-measured, process centred"})
    text = DOCS.read_text()
    for shown in (signing.public_text(key.public_key()), signed["key_id"],
                  signed["signature"], signing.canonical_bytes(topic, signed).decode()):
        assert shown in text, shown


def test_token_bucket() -> None:
    bucket = TokenBucket(rate=1.0, burst=3, now=0.0)
    assert [bucket.take(0.0) for _ in range(4)] == [True, True, True, False]
    assert bucket.take(0.5) is False and bucket.take(1.0) is True
    assert bucket.take(100.0) and bucket.take(100.0) and bucket.take(100.0)
    assert not bucket.take(100.0)  # never more than the burst


def test_command_log_is_durable_bounded_and_lives_in_the_buffer_file(tmp_path: Path) -> None:
    path = tmp_path / "buffer.sqlite"
    outbox = Outbox.open(path)
    log = CommandLog.open(path, max_per_press=5, max_age_s=100.0)
    for i in range(8):
        log.put("p1", f"r{i}", "d", 1000.0 + i, b"reply %d" % i)
    log.put("p2", "r0", "d", 1000.0, b"other press")
    assert log.prune("p1", now=1010.0) == 3
    assert log.count("p1") == 5 and log.get("p1", "r0") is None
    log.close()
    outbox.close()
    outbox = Outbox.open(path)  # the outbox still accepts the file with the extra table
    log = CommandLog.open(path, max_per_press=5, max_age_s=100.0)
    answered = log.get("p1", "r7")
    assert answered is not None and answered.reply == b"reply 7"
    assert log.get("p2", "r0") is not None  # per press
    assert log.prune("p1", now=1106.5) == 4  # age bound: only r7 is younger than 100 s
    log.close()
    outbox.close()


def test_gate_order_and_request_id_never_echoed() -> None:
    gate = CommandGate("p1", "root")
    topic = "root/p1/cmd/quality/hold"
    big = b'{"request_id": "' + b"x" * 9000 + b'"}'
    decision = gate.admit(1000.0, topic, "quality", "hold", big)
    assert isinstance(decision, Refuse) and decision.code == "too_large"
    assert decision.request_id is None
    decision = gate.admit(1000.0, topic, "quality", "hold", b'{"request_id": "' +
                          b"y" * 65 + b'", "operator": "Q7"}')
    assert isinstance(decision, Refuse) and decision.request_id is None
    assert "longer than 64" in decision.message
    ok = gate.admit(1000.0, topic, "quality", "hold",
                    b'{"request_id": "r1", "operator": "Q7", "why": "x", '
                    b'"issued_at": "1970-01-01T00:16:40Z"}')
    assert isinstance(ok, Run) and "issued_at" not in ok.data
