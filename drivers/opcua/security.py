"""OPC UA security: who the collector is (``OpcuaSecurity``), which server certificates
it trusts (``TrustCheck``: pinned certificates or a CA in the trust directory, refused
outside their validity dates even when pinned) and its own application certificate
(``generate_certificate``, the ``opcua-cert`` command). docs/opcua.md, docs/security.md.
"""

from __future__ import annotations

import contextlib
import hashlib
import socket
from dataclasses import dataclass
from pathlib import Path

from asyncua import ua
from asyncua.common.utils import ServiceError
from asyncua.crypto import uacrypto
from asyncua.crypto.truststore import TrustStore
from cryptography import x509

from drivers.certificates import dates_problem

DEFAULT_APP_URI = "urn:press-collector:client"


@dataclass(frozen=True, slots=True)
class OpcuaSecurity:
    """How to open the secure channel and who to be. Paths are files on the line PC."""

    policy: str = "None"
    mode: str = "None"
    certificate: str = ""
    private_key: str = ""
    trust_dir: str = ""
    username: str = ""
    password: str | None = None

    @property
    def secure(self) -> bool:
        return self.policy != "None"



# --------------------------------------------------------------------------- trust


@dataclass
class TrustCheck:
    """Server certificate check against a trust directory (asyncua certificate_validator).

    Trusted when the certificate itself is in the directory (DER or PEM, the usual way for
    a PLC's self-signed certificate), or when a CA certificate there signed it. The last
    rejected certificate is kept for the error message, so that the user knows which file
    to copy where.
    """

    trust_dir: Path
    rejected: str = ""
    status: str = "BadCertificateUntrusted"  # or BadCertificateTimeInvalid (dates)

    async def __call__(self, cert: x509.Certificate, _app: ua.ApplicationDescription) -> None:
        der = uacrypto.der_from_x509(cert)
        trusted = hashlib.sha256(der).hexdigest() in self._fingerprints()
        if not trusted:
            store = TrustStore([self.trust_dir], [])
            with contextlib.suppress(Exception):
                await store.load_trust()
                trusted = store.is_trusted(cert)
        if trusted:
            # pinned is not forever: an expired (or not yet valid) certificate is refused
            problem = dates_problem(cert)
            if problem is None:
                return
            self.status = "BadCertificateTimeInvalid"
            self.rejected = f"server {problem} (trusted in {self.trust_dir})"
            raise ServiceError(ua.StatusCodes.BadCertificateTimeInvalid)
        self.status = "BadCertificateUntrusted"
        self.rejected = (f"server certificate {cert.subject.rfc4514_string()} "
                         f"(SHA-256 {hashlib.sha256(der).hexdigest()[:16]}...) is not trusted: "
                         f"copy it into {self.trust_dir}")
        raise ServiceError(ua.StatusCodes.BadCertificateUntrusted)

    def _fingerprints(self) -> set[str]:
        out: set[str] = set()
        if not self.trust_dir.is_dir():
            return out
        for path in self.trust_dir.iterdir():
            if path.suffix.lower() not in (".der", ".pem", ".crt", ".cer"):
                continue
            with contextlib.suppress(Exception):
                data = path.read_bytes()
                cert = (x509.load_pem_x509_certificate(data) if b"-----BEGIN" in data
                        else x509.load_der_x509_certificate(data))
                out.add(hashlib.sha256(uacrypto.der_from_x509(cert)).hexdigest())
        return out


def cert_app_uri(path: str) -> str:
    """The application URI in a certificate's SubjectAltName (servers check it)."""
    data = Path(path).read_bytes()
    cert = (x509.load_pem_x509_certificate(data) if b"-----BEGIN" in data
            else x509.load_der_x509_certificate(data))
    with contextlib.suppress(x509.ExtensionNotFound):
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        uris = san.value.get_values_for_type(x509.UniformResourceIdentifier)
        if uris:
            return uris[0]
    return DEFAULT_APP_URI


async def generate_certificate(out_dir: Path, app_uri: str = "", host: str = "",
                               server: bool = False) -> tuple[Path, Path, bool]:
    """A self-signed application certificate (DER) and key (PEM) in ``out_dir``.

    Returns (certificate, key, created); an existing valid pair is kept (created False),
    so the command is safe to re-run on a configured line PC.
    """
    from asyncua.crypto.cert_gen import setup_self_signed_certificate
    from cryptography.x509.oid import ExtendedKeyUsageOID

    host = host or socket.gethostname()
    app_uri = app_uri or f"urn:press-collector:{host}"
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = "server" if server else "client"
    cert, key = out_dir / f"{stem}-cert.der", out_dir / f"{stem}-key.pem"
    before = (cert.stat().st_mtime_ns if cert.exists() else None,
              key.stat().st_mtime_ns if key.exists() else None)
    use = [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]
    await setup_self_signed_certificate(key, cert, app_uri, host, use,
                                        {})
    after = (cert.stat().st_mtime_ns, key.stat().st_mtime_ns)
    if not server:
        key.chmod(0o600)
    return cert, key, before != after


