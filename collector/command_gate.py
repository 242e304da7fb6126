"""What a command must be before the press workflow sees it (docs/security.md).

The workflow (``PressWorkflow.on_command``) checks *what* a command asks (fields, state,
the operator allow-list). This gate, one per press, checks that the message is a fresh,
authentic, bounded request for this press, in this order:

1. a *retained* delivery is never executed: logged once, answered ``retained`` once,
   and the broker is asked to clear it (an empty retained publish; the broker drops it
   when the collector's account may not write command topics, as with the shipped ACL);
2. a per-press token bucket (``rate_per_min``, ``burst``): beyond it ``rate_limited``
   (at most one such reply per second, the rest counted), so a flood cannot fill the
   buffer with replies or quality events;
3. the payload size (``MAX_COMMAND_BYTES``), *before* any JSON parsing: ``too_large``;
4. JSON object with a ``request_id`` of 1..64 characters ``[A-Za-z0-9._:-]`` (a bad one
   is never echoed: the reply carries ``request_id: null``);
5. the topic: ``{root}/{press}/cmd/{role}/{name}`` with the command's own role
   (``production`` or ``quality``; ``confirm_first_article`` takes either, and the
   workflow records which); anything else is ``wrong_topic`` with the right
   topic in the message (the broker ACL gives write on each role's topics only to that
   role's accounts, so the topic *is* the broker identity's role);
6. the request id seen before (the durable command log): the same command gets its
   first reply again, a different command under a used id ``duplicate_request_id``;
7. ``issued_at`` (ISO 8601 with a time zone): older than ``max_age_s`` -> ``expired``,
   ahead of our clock by more than ``max_future_s`` -> ``issued_in_future``;
8. the Ed25519 signature (collector/signing.py) when the command carries one or the
   press has ``require_signature``: ``signature_required`` / ``bad_signature``.

What passes is handed to the workflow without the gate's own fields (``issued_at``,
``key_id``, ``signature``); its reply is recorded in the command log before it is sent.
Pure apart from the command log and the ``clear_retained`` callback; time comes in as
data.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson

from buffer.commands import CommandLog
from collector import signing
from collector.quality import COMMANDS

log = logging.getLogger(__name__)

MAX_COMMAND_BYTES = 8192  # a real command is < 2 KiB (9 fields x 200 chars + signature)
MAX_REQUEST_ID = 64
REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
MAX_ISSUED_AT = 40
GATE_FIELDS = ("issued_at", signing.KEY_ID_FIELD, signing.SIGNATURE_FIELD)
ROLES = ("production", "quality")
GATE_ERROR_CODES = ("retained", "rate_limited", "too_large", "wrong_topic",
                    "duplicate_request_id", "expired", "issued_in_future",
                    "signature_required", "bad_signature")
RETAINED_SEEN_MAX = 256
LIMITED_REPLY_EVERY_S = 1.0
CLEARED = "empty retained message (a clear)"


@dataclass(frozen=True, slots=True)
class CommandKey:
    name: str
    role: str
    key: Any  # Ed25519PublicKey


@dataclass(frozen=True, slots=True)
class CommandPolicy:
    """A press's command settings (``[workflow.commands]`` minus the operator lists)."""

    require_signature: bool = False
    max_age_s: float = 300.0
    max_future_s: float = 30.0
    rate_per_min: float = 60.0
    burst: int = 20
    keys: Mapping[str, CommandKey] = field(default_factory=dict)  # by key id


def policy_from_config(commands: Any) -> CommandPolicy:
    """From a ``collector.config.CommandsConfig`` (validated: keys load)."""
    keys = {}
    for entry in commands.keys:
        key = signing.load_public_key(entry.public_key)
        keys[signing.key_id(key)] = CommandKey(entry.name, entry.role, key)
    return CommandPolicy(require_signature=commands.require_signature,
                         max_age_s=commands.max_age_s, max_future_s=commands.max_future_s,
                         rate_per_min=commands.rate_per_min, burst=commands.burst, keys=keys)


@dataclass(frozen=True, slots=True)
class CommandTopic:
    press: str
    role: str | None  # None: the layout without a role level (refused: wrong_topic)
    name: str


def parse_command_topic(root: str, topic: str) -> CommandTopic | None:
    """``{root}/{press}/cmd/{role}/{name}`` (or the old ``{root}/{press}/cmd/{name}``)."""
    if not topic.startswith(root + "/"):
        return None
    parts = topic[len(root) + 1:].split("/")
    if len(parts) == 4 and parts[1] == "cmd":
        return CommandTopic(parts[0], parts[2], parts[3])
    if len(parts) == 3 and parts[1] == "cmd":
        return CommandTopic(parts[0], None, parts[2])
    return None


def command_topic(root: str, press: str, name: str, role: str | None = None) -> str:
    """Where a command goes: its role level is the class of the command, or ``role`` for
    a command several roles send (confirm_first_article)."""
    spec = COMMANDS.get(name)
    if spec is None:
        raise KeyError(f"unknown command {name!r} (allowed: {', '.join(COMMANDS)})")
    if role is not None and role not in spec.roles:
        raise KeyError(f"{name} is not sent as {role} (roles: {', '.join(spec.roles)})")
    return f"{root}/{press}/cmd/{role or spec.cls}/{name}"


class TokenBucket:
    """``rate`` tokens per second up to ``burst``; time comes in as data."""

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate, self.burst = rate, float(burst)
        self.tokens = float(burst)
        self.at = now

    def take(self, now: float) -> bool:
        if now > self.at:
            self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
            self.at = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


@dataclass(frozen=True, slots=True)
class Refuse:
    """Reply with this error; nothing recorded (the sender may try again)."""

    request_id: str | None
    code: str
    message: str


@dataclass(frozen=True, slots=True)
class Replay:
    """A request id answered before: send this reply again, execute nothing."""

    reply: bytes


@dataclass(frozen=True, slots=True)
class Drop:
    """Nothing to send (counted): a flood beyond the reply budget, a retained repeat."""

    why: str


@dataclass(frozen=True, slots=True)
class Run:
    """Hand ``data`` to the workflow; record the reply under ``request_id``."""

    request_id: str
    data: dict[str, Any]
    digest: str
    auth: dict[str, Any]  # for the audit event: role, key (name or None), issued_at


Decision = Refuse | Replay | Drop | Run


def parse_issued_at(text: Any) -> float:
    """Epoch seconds of an ISO 8601 time with a zone; ValueError with the reason."""
    if not isinstance(text, str) or len(text) > MAX_ISSUED_AT:
        raise ValueError("issued_at must be an ISO 8601 time such as "
                         "2026-11-25T09:00:00.000Z")
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"issued_at {text!r} is not an ISO 8601 time (e.g. "
                         "2026-11-25T09:00:00.000Z)") from None
    if when.tzinfo is None:
        raise ValueError(f"issued_at {text!r} has no time zone (write Z for UTC)")
    return when.timestamp()


class CommandGate:
    """One press's gate; ``admit`` decides, ``answered`` records a reply (see module doc)."""

    def __init__(self, press: str, root: str, policy: CommandPolicy | None = None,
                 command_log: CommandLog | None = None,
                 clear_retained: Callable[[str], None] | None = None,
                 now: float = 0.0) -> None:
        self.press = press
        self.root = root
        self.policy = policy or CommandPolicy()
        self.log = command_log if command_log is not None else CommandLog.open(None)
        self.clear_retained = clear_retained
        self.bucket = TokenBucket(self.policy.rate_per_min / 60.0, self.policy.burst, now)
        self._retained_seen: OrderedDict[str, None] = OrderedDict()
        self._limited_reply_at = float("-inf")
        self._limited_episode = 0
        self.stats: dict[str, int] = {"commands_refused": 0, "commands_dropped": 0,
                                      "commands_replayed": 0, "commands_retained": 0}

    # -- the decision ------------------------------------------------------------------
    def admit(self, ts: float, topic: str, role: str | None, name: str, payload: bytes,
              retained: bool = False) -> Decision:
        decision = self._decide(ts, topic, role, name, payload, retained)
        if isinstance(decision, Refuse):
            self.stats["commands_refused"] += 1
        elif isinstance(decision, Drop) and decision.why != CLEARED:
            self.stats["commands_dropped"] += 1
        elif isinstance(decision, Replay):
            self.stats["commands_replayed"] += 1
        return decision

    def _decide(self, ts: float, topic: str, role: str | None, name: str, payload: bytes,
                retained: bool) -> Decision:
        if retained and not payload:
            return Drop(CLEARED)  # a clear of a retained command (ours, or anyone's)
        if retained:
            return self._retained(topic, payload)
        if not self.bucket.take(ts):
            return self._limited(ts, topic, payload)
        if self._limited_episode:
            log.warning("press %s: command rate limit over; %d command(s) were dropped "
                        "unanswered", self.press, self._limited_episode)
            self._limited_episode = 0
        if len(payload) > MAX_COMMAND_BYTES:
            log.warning("press %s: %d-byte command on %s refused (limit %d bytes)",
                        self.press, len(payload), topic, MAX_COMMAND_BYTES)
            return Refuse(None, "too_large", f"the command is {len(payload)} bytes; the "
                          f"limit is {MAX_COMMAND_BYTES}")
        try:
            data = orjson.loads(payload)
        except orjson.JSONDecodeError as exc:
            return Refuse(None, "malformed", f"not JSON: {exc}")
        if not isinstance(data, dict):
            return Refuse(None, "malformed", "the payload must be a JSON object")
        request_id = data.get("request_id")
        if not isinstance(request_id, str) or not REQUEST_ID.fullmatch(request_id):
            shown = "missing" if request_id is None else (
                f"longer than {MAX_REQUEST_ID} characters"
                if isinstance(request_id, str) and len(request_id) > MAX_REQUEST_ID
                else "not 1..64 characters of A-Z a-z 0-9 . _ : -")
            return Refuse(None, "missing_field" if request_id is None else "invalid_field",
                          f"request_id is {shown}")
        spec = COMMANDS.get(name)
        if spec is None:
            return Refuse(request_id, "unknown_command", f"unknown command {name!r} "
                          f"(allowed: {', '.join(COMMANDS)})")
        if role not in spec.roles:
            right = " or ".join(f"{self.root}/{self.press}/cmd/{r}/{name}"
                                for r in spec.roles)
            what = " or ".join(spec.roles)
            return Refuse(request_id, "wrong_topic", f"{name} is a {what} command: "
                          f"send it to {right} (the broker lets only {what} accounts "
                          "write there)")
        digest = hashlib.sha256(topic.encode() + b"\n" + orjson.dumps(
            data, option=orjson.OPT_SORT_KEYS)).hexdigest()
        answered = self.log.get(self.press, request_id)
        if answered is not None:
            if answered.digest == digest:
                return Replay(answered.reply)
            return Refuse(request_id, "duplicate_request_id", f"request_id {request_id} "
                          "was used for another command; use a fresh request id")
        try:
            issued = parse_issued_at(data.get("issued_at"))
        except ValueError as exc:
            code = "missing_field" if data.get("issued_at") is None else "invalid_field"
            return Refuse(request_id, code, str(exc) if code == "invalid_field"
                          else f"issued_at is required for {name} (ISO 8601, e.g. "
                               "2026-11-25T09:00:00.000Z)")
        age = ts - issued
        if age > self.policy.max_age_s:
            return Refuse(request_id, "expired", f"issued {age:.0f} s ago; commands older "
                          f"than {self.policy.max_age_s:g} s are refused (send it again)")
        if -age > self.policy.max_future_s:
            return Refuse(request_id, "issued_in_future", f"issued {-age:.0f} s in the "
                          f"future by our clock (allowed skew {self.policy.max_future_s:g} "
                          "s): check the clocks of the terminal and the line PC")
        signer = self._signature(topic, role, data)
        if isinstance(signer, Refuse):
            return Refuse(request_id, signer.code, signer.message)
        body = {k: v for k, v in data.items() if k not in GATE_FIELDS}
        return Run(request_id, body, digest,
                   {"role": role, "key": signer, "issued_at": data["issued_at"]})

    def _signature(self, topic: str, role: str, data: dict[str, Any]) -> str | Refuse | None:
        """The signer's key name, None (unsigned and allowed), or a refusal."""
        kid, sig = data.get(signing.KEY_ID_FIELD), data.get(signing.SIGNATURE_FIELD)
        if kid is None and sig is None:
            if self.policy.require_signature:
                return Refuse(None, "signature_required", "this press accepts signed "
                              "commands only (key_id and signature; docs/security.md)")
            return None
        if not isinstance(kid, str) or not isinstance(sig, str):
            return Refuse(None, "bad_signature", "key_id and signature must both be strings")
        key = self.policy.keys.get(kid)
        if key is None:
            return Refuse(None, "bad_signature", f"key_id {kid[:16]!r} is not a key of "
                          "this press")
        if key.role != role:
            return Refuse(None, "bad_signature", f"key {key.name!r} may sign {key.role} "
                          f"commands only")
        if not signing.verify(key.key, topic, data):
            return Refuse(None, "bad_signature", f"the signature does not match this "
                          f"command (key {key.name!r})")
        return key.name

    def _retained(self, topic: str, payload: bytes) -> Decision:
        fingerprint = hashlib.sha256(topic.encode() + b"\n" + payload).hexdigest()
        if fingerprint in self._retained_seen:
            self._retained_seen.move_to_end(fingerprint)
            return Drop("retained command seen before")
        self._retained_seen[fingerprint] = None
        while len(self._retained_seen) > RETAINED_SEEN_MAX:
            self._retained_seen.popitem(last=False)
        self.stats["commands_retained"] += 1
        log.warning("press %s: retained command on %s NOT executed (a command is a request, "
                    "not a state); asking the broker to clear it", self.press, topic)
        if self.clear_retained is not None:
            self.clear_retained(topic)
        return Refuse(self._request_id_of(payload), "retained",
                      "retained commands are never executed; publish commands without "
                      "the retain flag")

    def _limited(self, ts: float, topic: str, payload: bytes) -> Decision:
        if self._limited_episode == 0:
            log.warning("press %s: more than %d commands in a burst (rate %g/min): "
                        "refusing until the rate drops", self.press, self.policy.burst,
                        self.policy.rate_per_min)
        self._limited_episode += 1
        if ts - self._limited_reply_at < LIMITED_REPLY_EVERY_S:
            return Drop("rate limited")
        self._limited_reply_at = ts
        return Refuse(self._request_id_of(payload), "rate_limited",
                      f"more than {self.policy.burst} commands in a burst to press "
                      f"{self.press} (rate {self.policy.rate_per_min:g}/min); try again "
                      "later")

    @staticmethod
    def _request_id_of(payload: bytes) -> str | None:
        """The request id of a payload we refuse anyway, if small and well formed."""
        if len(payload) > MAX_COMMAND_BYTES:
            return None
        try:
            data = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return None
        rid = data.get("request_id") if isinstance(data, dict) else None
        return rid if isinstance(rid, str) and REQUEST_ID.fullmatch(rid) else None

    # -- after the workflow ------------------------------------------------------------
    def answered(self, run: Run, ts: float, reply: bytes) -> None:
        """Record the reply of an executed (or workflow-refused) command before sending."""
        try:
            self.log.put(self.press, run.request_id, run.digest, ts, reply)
        except Exception as exc:  # sqlite3.Error, OSError: disk full, ...
            self.stats["command_log_errors"] = self.stats.get("command_log_errors", 0) + 1
            log.error("press %s: command log write failed (%s): a repeat of request %s "
                      "would run again", self.press, exc, run.request_id)


def command_warnings(config: Any) -> list[str]:
    """``press-collector check``: presses that accept commands from anyone."""
    out = []
    for press in config.presses.values():
        commands = press.workflow.commands
        for role in ROLES:
            if "*" in getattr(commands, role):
                where = config.press_files.get(press.id, f"presses/{press.id}.toml")
                out.append(f"{where}: workflow.commands.{role}: \"*\" accepts "
                           f"{role} commands from any operator id a sender writes; list the "
                           "operator ids instead (docs/security.md)")
    return out
