"""Signed commands: Ed25519 over a canonical encoding of the command (docs/security.md).

A plant that does not trust every broker account (a shared HMI login, a leaked password,
a misconfigured ACL) lets an operator terminal sign each command with a private key that
never leaves the terminal; the press config lists the public keys allowed per role.

Canonical encoding (what is signed), version 1: the UTF-8 bytes of the JSON object

    {"fields": {<every member of the command payload except "signature">},
     "topic": "<the full command topic, e.g. plant-1/press-shop/p1/cmd/quality/release>",
     "v": 1}

serialised with keys sorted by code point at every level, no whitespace
(separators ``,`` and ``:``), non-ASCII characters as themselves (UTF-8), every value a
JSON string. For string-valued objects with ASCII keys this is exactly RFC 8785 (JCS),
so a terminal written in another language can produce it; Python's
``json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)`` does.
The topic carries the topic root (site), the press, the role and the command name; the
fields carry ``request_id``, ``issued_at``, ``operator``, ``key_id`` and the command's
own fields. So a signature is valid for exactly one command to one press of one site,
once (request id), for a few minutes (issued_at).

``signature`` = base64 (standard alphabet, padded) of the 64-byte Ed25519 signature;
``key_id`` = the first 16 hex digits of SHA-256 over the 32 raw public key bytes;
public keys in the config: base64 of the 32 raw bytes; private keys: PKCS#8 PEM files.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

# cryptography costs ~9 MB of RSS at import: loaded when a key is first used (a press
# that lists public keys, `cmd --key`, `keygen`), not by every daemon at start
if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )

CANONICAL_VERSION = 1
SIGNATURE_FIELD = "signature"
KEY_ID_FIELD = "key_id"


class SigningError(ValueError):
    """A key that cannot be loaded or a command that cannot be signed/verified."""


def canonical_bytes(topic: str, payload: Mapping[str, Any]) -> bytes:
    """The bytes an Ed25519 signature of a command covers (see the module docstring)."""
    fields = {k: v for k, v in payload.items() if k != SIGNATURE_FIELD}
    for key, value in fields.items():
        if not isinstance(value, str):
            raise SigningError(f"signed commands carry string values only ({key} is "
                               f"{type(value).__name__})")
    doc = {"fields": fields, "topic": topic, "v": CANONICAL_VERSION}
    return json.dumps(doc, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False).encode("utf-8")


def public_raw(key: Ed25519PublicKey) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(key: Ed25519PublicKey) -> str:
    """Short fingerprint a command names its key by (16 hex digits of SHA-256)."""
    return hashlib.sha256(public_raw(key)).hexdigest()[:16]


def public_text(key: Ed25519PublicKey) -> str:
    """The form the press config holds: base64 of the 32 raw bytes."""
    return base64.b64encode(public_raw(key)).decode("ascii")


def load_public_key(text: str) -> Ed25519PublicKey:
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise SigningError(f"{text[:60]!r} is not base64 (expected the 44 characters "
                           "`press-collector keygen` prints)") from None
    if len(raw) != 32:
        raise SigningError(f"an Ed25519 public key is 32 bytes, this one is {len(raw)} "
                           "(expected the 44 base64 characters `press-collector keygen` "
                           "prints)")
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    return Ed25519PublicKey.from_public_bytes(raw)


def load_private_key(path: str | os.PathLike[str]) -> Ed25519PrivateKey:
    """A PKCS#8 PEM private key file, with errors that name the file and say why."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise SigningError(f"signing key {p}: no such file (make one with "
                           "`press-collector keygen --out FILE`)") from None
    except OSError as exc:
        raise SigningError(f"signing key {p}: cannot read: {exc.strerror}") from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise SigningError(f"signing key {p}: not an unencrypted PEM private key "
                           f"({exc})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningError(f"signing key {p}: a {type(key).__name__}, not an Ed25519 key")
    return key


def generate(out: str | os.PathLike[str]) -> Ed25519PrivateKey:
    """A new key pair; the private key written to ``out`` (mode 0600, never overwritten)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    return key


def sign(key: Ed25519PrivateKey, topic: str, payload: dict[str, Any]) -> dict[str, Any]:
    """``payload`` with ``key_id`` and ``signature`` added (the payload must already hold
    request_id, issued_at and operator)."""
    signed = {**payload, KEY_ID_FIELD: key_id(key.public_key())}
    signed.pop(SIGNATURE_FIELD, None)
    signature = key.sign(canonical_bytes(topic, signed))
    signed[SIGNATURE_FIELD] = base64.b64encode(signature).decode("ascii")
    return signed


def verify(key: Ed25519PublicKey, topic: str, payload: Mapping[str, Any]) -> bool:
    """True when ``payload['signature']`` is the key's signature of this command."""
    from cryptography.exceptions import InvalidSignature

    text = payload.get(SIGNATURE_FIELD)
    if not isinstance(text, str) or len(text) > 100:
        return False
    try:
        signature = base64.b64decode(text, validate=True)
        key.verify(signature, canonical_bytes(topic, payload))
    except (binascii.Error, ValueError, InvalidSignature):
        return False
    return True
