"""X.509 certificate files as the OPC UA driver and the start-up checks read them.

Pinning a PLC's self-signed server certificate (copying it into ``trust_dir``) trusts that
exact certificate, but not forever: a pinned certificate past its ``notAfter`` (or before
its ``notBefore``) is refused like an untrusted one, with the dates in the message, so a
technician knows to renew it on the PLC instead of hunting for a network fault. Only
``cryptography`` is imported here (no asyncua), so ``press-collector check`` stays fast.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cryptography import x509

CERT_SUFFIXES = (".der", ".pem", ".crt", ".cer")


def load_certificate(path: Path) -> x509.Certificate:
    """A certificate from a DER or PEM file (raises ValueError / OSError)."""
    from cryptography import x509  # ~9 MB: imported only when a certificate is read

    data = path.read_bytes()
    return (x509.load_pem_x509_certificate(data) if b"-----BEGIN" in data
            else x509.load_der_x509_certificate(data))


def certificate_files(directory: Path) -> list[Path]:
    """The certificate files of a trust directory (by suffix), sorted; [] when missing."""
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if p.suffix.lower() in CERT_SUFFIXES)


def _day(when: datetime) -> str:
    return when.strftime("%Y-%m-%d %H:%M UTC")


def dates_problem(cert: x509.Certificate, now: datetime | None = None) -> str | None:
    """Why ``cert`` is not valid at ``now`` (expired / not yet valid), or None."""
    now = now or datetime.now(UTC)
    subject = cert.subject.rfc4514_string() or "(no subject)"
    before, after = cert.not_valid_before_utc, cert.not_valid_after_utc
    if now > after:
        return (f"certificate {subject} expired on {_day(after)} (valid {_day(before)} to "
                f"{_day(after)}): renew it and replace the file")
    if now < before:
        return (f"certificate {subject} is not valid before {_day(before)} (valid "
                f"{_day(before)} to {_day(after)}): check this machine's clock or the "
                "certificate's dates")
    return None


def validity_problem(path: Path, now: datetime | None = None) -> str | None:
    """:func:`dates_problem` for a file, with the file named; unreadable files are skipped
    (the connection reports those)."""
    try:
        cert = load_certificate(path)
    except (OSError, ValueError):
        return None
    problem = dates_problem(cert, now)
    return f"{path}: {problem}" if problem else None
