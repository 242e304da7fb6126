"""Who may act on the line-side screen: accounts, password hashes, sessions. Standard
library only (``hashlib.scrypt``, ``secrets``, ``hmac``).

The accounts file (``screen.accounts_file``, never the TOML) has one account per line::

    # name:operator:role:presses:password hash
    p1-panel:OP3:production:p1:scrypt$16384$8$1$<salt hex>$<hash hex>
    qa-lead:Q7:quality:*:scrypt$16384$8$1$...

- ``name``: what is typed at the sign-in (1..32 of ``A-Z a-z 0-9 _ -``); it also names
  the account in each command's request id (``screen.<name>.<random>``), so the audit
  record says which screen account acted;
- ``operator``: the operator id the commands carry (the press's ``[workflow.commands]``
  allow-list decides, as for MQTT commands);
- ``role``: ``production`` or ``quality``: the role level of the command topic, as a
  broker account's role would be (a production account cannot send quality commands);
- ``presses``: comma-separated press ids, or ``*``;
- the scrypt hash of the password (``press-collector screen-account`` makes the line).

A per-terminal account (a panel signed in as ``p1-panel``) and a per-person account
(each setter with a PIN) are both lines of this file; docs/security.md weighs them.

Sessions live in memory only (a restart signs everybody out), expire after
``session_idle_min`` without use, and carry their own CSRF token. Failed sign-ins are
throttled per account name and overall.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from collector import text_safety

NAME = re.compile(r"[A-Za-z0-9_-]{1,32}")
ROLES = ("production", "quality")
SCRYPT_N, SCRYPT_R, SCRYPT_P = 16384, 8, 1  # ~16 MiB, ~50 ms on a line PC
MAX_PASSWORD = 256
FAILS_PER_ACCOUNT = 5  # failed sign-ins in FAIL_WINDOW_S before the account waits
FAILS_OVERALL = 30
FAIL_WINDOW_S = 300.0
MAX_SESSIONS = 200


class AccountsError(Exception):
    """The accounts file cannot be used (message names the file, line and problem)."""


@dataclass(frozen=True, slots=True)
class Account:
    name: str
    operator: str
    role: str
    presses: tuple[str, ...]  # ("*",) = every press
    password_hash: str

    def may_use(self, press: str) -> bool:
        return "*" in self.presses or press in self.presses


def hash_password(password: str, salt: bytes | None = None) -> str:
    """``scrypt$N$r$p$salt$hash`` (hex), for the accounts file."""
    salt = salt if salt is not None else secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R,
                            p=SCRYPT_P, maxmem=64 * 2**20, dklen=32)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${salt.hex()}${digest.hex()}"


def check_password(password: str, stored: str) -> bool:
    """Constant-time comparison against a stored scrypt hash (False for a bad hash)."""
    try:
        kind, n, r, p, salt, digest = stored.split("$")
        if kind != "scrypt":
            return False
        got = hashlib.scrypt(password.encode()[:MAX_PASSWORD * 4], salt=bytes.fromhex(salt),
                             n=int(n), r=int(r), p=int(p), maxmem=64 * 2**20,
                             dklen=len(digest) // 2)
    except (ValueError, TypeError, MemoryError):
        return False
    return hmac.compare_digest(got.hex(), digest)


def account_line(name: str, operator: str, role: str, presses: Iterable[str],
                 password: str) -> str:
    """One line of the accounts file (what ``press-collector screen-account`` prints)."""
    presses = tuple(presses) or ("*",)
    problem = _problem(name, operator, role, presses)
    if problem:
        raise AccountsError(problem)
    if not password:
        raise AccountsError("the password is empty")
    return f"{name}:{operator}:{role}:{','.join(presses)}:{hash_password(password)}"


def new_account_line(name: str, operator: str, role: str, presses: str,
                     password_stdin: bool = False) -> int:
    """``press-collector screen-account``: ask for the password, print the line (exit 0),
    or say what is wrong on stderr (exit 2)."""
    import getpass
    import sys

    try:
        if password_stdin:
            password = sys.stdin.readline().rstrip("\r\n")
        else:
            password = getpass.getpass(f"password for {name}: ")
            if getpass.getpass("again: ") != password:
                raise AccountsError("the two passwords differ")
        line = account_line(name, operator, role, [p.strip() for p in presses.split(",")],
                            password)
    except AccountsError as exc:
        print(f"screen-account: {exc}", file=sys.stderr)
        return 2
    print(line)
    return 0


def _problem(name: str, operator: str, role: str, presses: tuple[str, ...]) -> str | None:
    if not NAME.fullmatch(name):
        return f"account name {name!r} must be 1..32 of A-Z a-z 0-9 _ -"
    if not operator or len(operator) > 200 or ":" in operator \
            or text_safety.problem(operator) is not None or operator != operator.strip():
        return (f"operator id {operator!r} must be 1..200 printable characters without ':' "
                "or leading/trailing spaces")
    if role not in ROLES:
        return f"role {role!r} is not allowed (allowed: {', '.join(ROLES)})"
    if not presses or any(not p or ":" in p or "," in p or p != p.strip() for p in presses):
        return f"presses {','.join(presses)!r}: press ids separated by ',' or '*'"
    return None


def parse_accounts(text: str, where: str) -> dict[str, Account]:
    """Accounts by name; AccountsError listing every bad line."""
    accounts: dict[str, Account] = {}
    problems: list[str] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(":")
        if len(parts) != 5:
            problems.append(f"{where}:{number}: expected name:operator:role:presses:hash "
                            f"({len(parts)} fields)")
            continue
        name, operator, role, presses_text, password_hash = parts
        presses = tuple(p.strip() for p in presses_text.split(","))
        problem = _problem(name, operator, role, presses)
        if problem is None and not password_hash.startswith("scrypt$"):
            problem = "the password hash must be a scrypt$... hash (press-collector " \
                      "screen-account makes it; never a password in clear)"
        if problem is None and name in accounts:
            problem = f"account {name!r} is listed twice"
        if problem is not None:
            problems.append(f"{where}:{number}: {problem}")
            continue
        accounts[name] = Account(name, operator, role, presses, password_hash)
    if problems:
        raise AccountsError("\n".join(problems))
    if not accounts:
        raise AccountsError(f"{where}: no account (add lines made with "
                            "`press-collector screen-account`)")
    return accounts


def load_accounts(path: Path, where: str) -> dict[str, Account]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise AccountsError(f"{where}: cannot read {path}: "
                            f"{getattr(exc, 'strerror', None) or exc}") from None
    return parse_accounts(text, where)


@dataclass(slots=True)
class Session:
    token: str
    csrf: str
    account: Account
    last_used: float


@dataclass
class Sessions:
    """Signed-in accounts by session token (memory only), and the sign-in throttle."""

    accounts: dict[str, Account]
    idle_s: float
    by_token: dict[str, Session] = field(default_factory=dict)
    fails: dict[str, list[float]] = field(default_factory=dict)  # by account name, "" = all

    def throttled(self, name: str, now: float) -> bool:
        """Too many failed sign-ins lately, for this name or overall."""
        for key, limit in ((name, FAILS_PER_ACCOUNT), ("", FAILS_OVERALL)):
            recent = [t for t in self.fails.get(key, []) if now - t < FAIL_WINDOW_S]
            self.fails[key] = recent
            if len(recent) >= limit:
                return True
        return False

    def failed(self, name: str, now: float) -> None:
        key = name if name in self.accounts else "?"  # unknown names share one bucket
        for k in (key, ""):
            self.fails.setdefault(k, []).append(now)

    def open(self, account: Account, now: float) -> Session:
        self.expire(now)
        if len(self.by_token) >= MAX_SESSIONS:  # the oldest goes first
            oldest = min(self.by_token.values(), key=lambda s: s.last_used)
            del self.by_token[oldest.token]
        self.fails.pop(account.name, None)
        session = Session(secrets.token_urlsafe(32), secrets.token_urlsafe(24), account, now)
        self.by_token[session.token] = session
        return session

    def get(self, token: str | None, now: float, touch: bool = False) -> Session | None:
        if not token:
            return None
        session = self.by_token.get(token)
        if session is None:
            return None
        if now - session.last_used > self.idle_s:
            del self.by_token[token]
            return None
        if touch:
            session.last_used = now
        return session

    def close(self, token: str | None) -> None:
        if token:
            self.by_token.pop(token, None)

    def expire(self, now: float) -> None:
        for token in [t for t, s in self.by_token.items() if now - s.last_used > self.idle_s]:
            del self.by_token[token]
