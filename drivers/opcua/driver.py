"""OPC UA client driver (asyncua): subscriptions first, per-tag polling as fallback.

Same contract as the Modbus drivers (``drivers.modbus.driver``): one ``OpcuaPoller`` per PLC
connection hands ``PollResult`` and ``ConnectionChange`` to a synchronous sink, never
lets device trouble escape ``run()``, reconnects with a capped backoff and reports each
online/offline change once.

Why it looks like this:

- **We own reconnects** (asyncua's ``auto_reconnect`` is off). asyncua's supervisor still
  runs as the *keepalive watchdog*: it reads the server's ``ServerStatus.State`` every
  ``watchdog_s`` and calls ``connection_lost_callback`` when that fails; we then tear the
  session down, report offline once, and build a new session and subscriptions. A hidden
  reconnect inside the client would hide an outage from the collector and would resume
  subscriptions on node ids that may no longer exist.
- **Snapshots, not single values.** The collector's workflow wants every tag's current
  value in each ``PollResult`` (like a Modbus poll). The driver keeps a last-value cache
  and emits one ``PollResult`` per publish response (all data changes of one publish are
  applied together), per poll of the polled tags, and at least every ``heartbeat_s`` so
  that time-based workflow rules ("no stroke for 60 s") still see time pass on an idle
  press. A tag that changed twice inside one publish (queue size > 1) splits the batch,
  so queued values are not folded away.
- **Namespace URIs, resolved per session.** Tags name nodes as ``nsu=URI;s=Id``; the index
  is looked up in the server's NamespaceArray at every (re)connect.
- **Program download.** When a PLC program is downloaded, its nodes vanish and come back
  (``BadNodeIdUnknown``), often with a new namespace index. A monitored item or read that
  reports ``BadNodeIdUnknown`` for a node that existed ends the session; the next session
  re-resolves and re-subscribes. If no configured node exists at all, the PLC is reported
  offline ("no configured node exists") and retried with the capped backoff, so a long
  download is a few log lines, not an error loop. A node that is missing from the start
  (a typo) is reported per tag in ``PollResult.errors`` and retried inside the session
  with its own backoff, without disturbing the other tags.
- **Security.** None, or Basic256Sha256 with Sign / SignAndEncrypt, a client certificate and
  key from files, and the server certificate checked against a trust directory (exact
  certificate match, or signed by a CA certificate in that directory), and refused outside
  its validity dates even when pinned (BadCertificateTimeInvalid, dates in the reason).
  Username/password or anonymous.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from asyncua import Client, ua
from asyncua.common.subscription import DataChangeEvent, StatusChangeEvent, Subscription
from asyncua.common.utils import ServiceError
from asyncua.crypto import security_policies, uacrypto
from asyncua.crypto.truststore import TrustStore
from cryptography import x509

from drivers.base import Backoff, PollResult, Sink, json_safe
from drivers.certificates import dates_problem
from drivers.link import LinkDown, LinkState, SlotGrid, TagError, WriteFailed
from drivers.opcua.nodes import NodeRef, parse_node
from drivers.opcua.vocab import DEADBANDS

log = logging.getLogger(__name__)

DEFAULT_APP_URI = "urn:press-collector:client"
# Status codes that mean "this node id does not exist (any more)".
_GONE_NAMES = ("BadNodeIdUnknown", "BadNodeIdInvalid")
_WAIT_STEP_S = 0.2  # how often the session loop looks at the lost-connection flag


class NodesVanished(Exception):
    """Nodes that existed in this session are gone (program download): new session."""


@dataclass(frozen=True, slots=True)
class OpcuaTag:
    """One configured value. ``node`` is ``nsu=URI;s=Id`` (see drivers.opcua.nodes)."""

    name: str
    node: str
    mode: str = "subscribe"  # or "poll"
    sampling_interval_ms: float = -1.0  # -1: the subscription's publishing interval
    queue_size: int = 1
    deadband_type: str = "none"  # none, absolute, percent
    deadband_value: float = 0.0


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


def status_name(code: Any) -> str:
    """'BadNodeIdUnknown' for a StatusCode, a code int, or a UaStatusCodeError."""
    value = getattr(code, "value", code)
    with contextlib.suppress(Exception):
        return ua.StatusCode(int(value)).name
    return str(code)


def describe(exc: BaseException) -> str:
    """A short, human reason for a failed connect/read (goes into logs and events)."""
    if isinstance(exc, ua.UaStatusCodeError):
        name = type(exc).__name__
        if name in ("UaStatusCodeError", "UaStatusCodeErrors"):
            name = str(exc)
        hints = {
            "BadCertificateUntrusted": "server certificate is not in the trust directory",
            "BadUserAccessDenied": "user name or password rejected",
            "BadIdentityTokenInvalid": "user name or password rejected",
            "BadIdentityTokenRejected": "user name or password rejected",
            "BadSecurityChecksFailed": "security check failed (client certificate not "
                                       "trusted by the server, or wrong key)",
            "BadSecurityPolicyRejected": "security policy rejected by the server",
        }
        return f"{name} ({hints[name]})" if name in hints else name
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return "timeout"
    if isinstance(exc, OSError):
        return exc.strerror or str(exc) or type(exc).__name__
    text = str(exc)
    if text.startswith("No matching endpoints"):
        return f"server offers no endpoint with this security ({text})"
    return text or type(exc).__name__


def convert(value: Any) -> Any:
    """An OPC UA value as plain JSON-able Python (the collector encodes telemetry as JSON)."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bytes | bytearray):
        return bytes(value).hex()
    if isinstance(value, ua.LocalizedText):
        return value.Text
    if isinstance(value, list | tuple):
        return [convert(v) for v in value]
    return str(value)


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


def _cert_app_uri(path: str) -> str:
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


# --------------------------------------------------------------------------- session


async def connect(url: str, security: OpcuaSecurity, timeout_s: float = 4.0,
                  watchdog_s: float = 1.0, name: str = "press-collector") -> Client:
    """Open a session (secure channel, identity) or raise ``LinkDown`` with the reason."""
    client = Client(url, timeout=timeout_s, watchdog_intervall=watchdog_s, auto_reconnect=False)
    client.name = client.description = name
    client.application_uri = DEFAULT_APP_URI
    client.session_timeout = max(10_000, int(watchdog_s * 10_000))
    check: TrustCheck | None = None
    try:
        if security.secure:
            client.application_uri = _cert_app_uri(security.certificate)
            check = TrustCheck(Path(security.trust_dir))
            client.certificate_validator = check
            policy = getattr(security_policies, f"SecurityPolicy{security.policy}")
            mode = getattr(ua.MessageSecurityMode, security.mode)
            await asyncio.wait_for(
                client.set_security(policy, security.certificate, security.private_key, mode=mode),
                timeout_s * 2)
        if security.username:
            client.set_user(security.username)
            client.set_password(security.password or "")
        await asyncio.wait_for(client.connect(), timeout_s * 3)
    except asyncio.CancelledError:
        await close(client)
        raise
    except Exception as exc:
        await close(client)
        if check is not None and check.rejected:
            raise LinkDown(f"{check.status}: {check.rejected}") from exc
        raise LinkDown(describe(exc)) from exc
    return client


async def close(client: Client, timeout_s: float = 2.0) -> None:
    """Close a session; never hangs on a dead server, raises nothing but a cancel.

    A cancel that arrives while closing is passed on after the socket is dropped: it
    used to be swallowed here, and a driver cancelled during a close (daemon stop, a
    supervisor restarting it) kept running for ever."""
    try:
        async with asyncio.timeout(timeout_s):
            await client.disconnect()
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            client.disconnect_socket()
        raise
    except Exception:  # a dead or rude server: the socket is dropped below anyway
        log.debug("session close failed", exc_info=True)
    with contextlib.suppress(Exception):
        client.disconnect_socket()


async def resolve(client: Client, refs: dict[str, NodeRef]) -> tuple[dict[str, ua.NodeId],
                                                                    dict[str, str]]:
    """Namespace URIs -> indexes now: (node ids by tag, errors by tag)."""
    namespaces = await client.get_namespace_array()
    ids: dict[str, ua.NodeId] = {}
    errors: dict[str, str] = {}
    for name, ref in refs.items():
        if ref.uri:
            if ref.uri not in namespaces:
                errors[name] = f"BadNodeIdUnknown (namespace {ref.uri!r} not on server)"
                continue
            index = namespaces.index(ref.uri)
        else:
            index = ref.index
        ids[name] = _node_id(ref, index)
    return ids, errors


def _node_id(ref: NodeRef, index: int) -> ua.NodeId:
    if ref.kind == "i":
        return ua.NodeId(int(ref.identifier), index, ua.NodeIdType.Numeric)
    if ref.kind == "g":
        import uuid

        return ua.NodeId(uuid.UUID(str(ref.identifier)), index, ua.NodeIdType.Guid)
    if ref.kind == "b":
        return ua.NodeId(str(ref.identifier).encode(), index, ua.NodeIdType.ByteString)
    return ua.NodeId(str(ref.identifier), index, ua.NodeIdType.String)


async def read_values(client: Client, ids: Sequence[ua.NodeId]) -> list[ua.DataValue]:
    """One Read request for many nodes; per-node status in each DataValue."""
    params = ua.ReadParameters()
    for node_id in ids:
        rv = ua.ReadValueId()
        rv.NodeId = node_id
        rv.AttributeId = ua.AttributeIds.Value
        params.NodesToRead.append(rv)
    return await client.uaclient.read(params)


_INTEGER_TYPES = frozenset({"SByte", "Byte", "Int16", "UInt16", "Int32", "UInt32", "Int64",
                            "UInt64"})


def _coerce(value: Any, vtype: ua.VariantType) -> Any:
    """``value`` as the node's own data type wants it (a bool for Boolean, an int for an
    integer type, ...); ValueError when it cannot be that without loss."""
    name = vtype.name
    if name == "Boolean":
        if not isinstance(value, bool | int) or value not in (0, 1):
            raise ValueError(f"{value!r} is not a Boolean")
        return bool(value)
    if name in _INTEGER_TYPES:
        if isinstance(value, float) and not value.is_integer():
            raise ValueError(f"{value!r} is not an integer ({name})")
        return int(value)
    if name in ("Float", "Double"):
        return float(value)
    if name == "String":
        return str(value)
    raise ValueError(f"nodes of type {name} cannot be written by the collector")


def _same(written: Any, back: Any, vtype: ua.VariantType) -> bool:
    if vtype.name == "Float" and isinstance(back, float):  # float32 on the server
        import struct

        return struct.pack("<f", written) == struct.pack("<f", back)
    return bool(written == back)


async def write_node(client: Client, node_id: ua.NodeId, value: Any, timeout_s: float) -> Any:
    """Write ``value`` with the node's own data type, read it back and compare.

    Returns the value written; raises ``WriteFailed`` (refused: BadNotWritable,
    BadUserAccessDenied, BadTypeMismatch ...; or read back different) and ValueError for
    a value the node's type cannot hold."""
    node = client.get_node(node_id)
    async with asyncio.timeout(timeout_s * 3):
        current = await node.read_data_value()
        vtype = current.Value.VariantType if current.Value is not None else None
        if vtype is None:
            raise WriteFailed(f"node {node_id.to_string()} has no value to learn its type from")
        want = _coerce(value, vtype)
        try:
            await node.write_value(ua.DataValue(ua.Variant(want, vtype)))
        except ua.UaStatusCodeError as exc:
            raise WriteFailed(f"refused: {describe(exc)}") from exc
        back = (await node.read_data_value()).Value
    got = back.Value if back is not None else None
    if not _same(want, got, vtype):
        raise WriteFailed(f"read back {got!r}, wrote {want!r}")
    return want


def _value_of(dv: ua.DataValue) -> tuple[Any, str | None]:
    """(value, None) or (None, status name)."""
    status = dv.StatusCode
    if status is not None and not status.is_good():
        return None, status_name(status)
    return convert(dv.Value.Value if dv.Value is not None else None), None


async def _next_event(sub: Subscription, timeout: float) -> Any:
    """``sub.next_event(timeout)`` without ``asyncio.wait_for``: on Python 3.11 a cancel
    that met wait_for there waited for the inner queue getter's own cancellation, which
    after a crashed session never came, so the driver could not be stopped (daemon stop,
    supervisor restart). Same private queue as ``_drain`` (pinned asyncua)."""
    if sub._event_queue is None:
        sub._event_queue = asyncio.Queue(maxsize=sub._queue_maxsize)
    getter = asyncio.ensure_future(sub._event_queue.get())
    try:
        done, _ = await asyncio.wait({getter}, timeout=timeout)
    finally:
        if not getter.done():
            getter.cancel()
    if getter not in done:
        return None
    item = getter.result()
    if item is None:
        raise StopAsyncIteration
    return item


# --------------------------------------------------------------------------- poller


class OpcuaPoller:
    """Keeps one OPC UA session per PLC alive and hands snapshots to a synchronous sink.

    ``stats``: ``polls`` (PollResults delivered), ``notifications`` (data changes
    received), ``errors`` (failed sessions and bad per-tag statuses), ``reconnects``
    (session attempts after the first), ``sessions`` (sessions established),
    ``vanished`` (sessions ended because known nodes disappeared).
    """

    def __init__(
        self,
        source: str,
        url: str,
        tags: Sequence[OpcuaTag],
        *,
        security: OpcuaSecurity | None = None,
        publishing_interval_s: float = 0.1,
        poll_interval_s: float = 0.5,
        heartbeat_s: float = 1.0,
        timeout_s: float = 4.0,
        watchdog_s: float = 1.0,
        backoff: Backoff | None = None,
    ) -> None:
        if min(publishing_interval_s, poll_interval_s, heartbeat_s, timeout_s, watchdog_s) <= 0:
            raise ValueError("intervals and timeouts must be > 0")
        self.source = source
        self.url = url
        self.tags = list(tags)
        self.refs = {t.name: parse_node(t.node) for t in self.tags}
        self.security = security or OpcuaSecurity()
        self.publishing_interval_s = publishing_interval_s
        self.poll_interval_s = poll_interval_s
        self.heartbeat_s = heartbeat_s
        self.timeout_s = timeout_s
        self.watchdog_s = watchdog_s
        self.backoff = backoff or Backoff(initial=0.5, maximum=10.0)
        self.link = LinkState(source, ("notifications", "reconnects", "sessions", "vanished",
                                       "writes", "write_errors"))
        self.stats = self.link.stats
        self._grid = SlotGrid(poll_interval_s, self.link)
        self._client: Client | None = None  # the current session (writes)
        self._values: dict[str, Any] = {}
        self._errors: dict[str, str] = {}
        self._lost: str | None = None

    # -- lifecycle ---------------------------------------------------------------------

    async def run(self, sink: Sink) -> None:
        """Connect, subscribe, poll, reconnect, until cancelled; device trouble never escapes.
        A failure that does escape (a bug, e.g. in the sink) first reports the device
        offline (``report_failure``), then propagates to the supervisor."""
        try:
            await self._run(sink)
        except Exception as exc:
            self.link.report_failure(exc)
            raise

    @property
    def online(self) -> bool | None:
        return self.link.online

    async def _run(self, sink: Sink) -> None:
        self.link.attach(sink)
        attempts = 0
        while True:
            if attempts:
                self.stats["reconnects"] += 1
            attempts += 1
            client: Client | None = None
            try:
                client = await connect(self.url, self.security, self.timeout_s,
                                       self.watchdog_s, name=f"press-collector {self.source}")
                await self._session(client)
            except LinkDown as exc:
                self.stats["errors"] += 1
                self.link.set_online(False, str(exc))
            except NodesVanished as exc:
                self.stats["vanished"] += 1
                log.info("%s: %s; new session", self.source, exc)
            finally:
                self._client = None
                if client is not None:
                    await close(client)
            await asyncio.sleep(self.backoff.next_delay())

    async def _session(self, client: Client) -> None:
        """One session: resolve, subscribe, then deliver until it breaks."""
        self._lost = None

        async def on_lost(exc: Exception) -> None:
            self._lost = describe(exc) or "connection lost"

        client.connection_lost_callback = on_lost
        self._values.clear()
        self._errors.clear()
        try:
            ids, missing = await resolve(client, self.refs)
            sub_tags = [t for t in self.tags if t.mode != "poll" and t.name in ids]
            poll_tags = [t for t in self.tags if t.mode == "poll" and t.name in ids]
            sub: Subscription | None = None
            if sub_tags:
                sub = await client.create_subscription(
                    self.publishing_interval_s * 1000, handler=None, queue_maxsize=100_000)
                missing.update(await self._monitor(sub, sub_tags, ids))
            poll_results = (await read_values(client, [ids[t.name] for t in poll_tags])
                            if poll_tags else [])
        except (LinkDown, asyncio.CancelledError):
            raise
        except Exception as exc:
            raise LinkDown(self._lost or describe(exc)) from exc
        gone = [t.name for t, dv in zip(poll_tags, poll_results, strict=True)
                if _value_of(dv)[1] in _GONE_NAMES]
        if len(missing) + len(gone) == len(self.tags):
            raise LinkDown("no configured node exists on the server (PLC program download "
                           f"in progress, or wrong node ids?), e.g. {self.tags[0].node}")
        self.stats["sessions"] += 1
        self._errors.update(missing)
        self.stats["errors"] += len(missing)
        for name, reason in missing.items():
            log.warning("%s: tag %s (%s): %s", self.source, name, self.refs[name], reason)
        if poll_tags:
            self._apply_reads(poll_tags, poll_results, first_session_read=True)
        self.backoff.reset()
        self._client = client
        self.link.set_online(True, "")
        if poll_tags and not sub_tags:
            self._deliver()
        await self._deliver_loop(client, sub, sub_tags, poll_tags, ids, missing)

    async def _monitor(self, sub: Subscription, tags: Sequence[OpcuaTag],
                       ids: dict[str, ua.NodeId]) -> dict[str, str]:
        """Create monitored items; return {tag: status} for the ones the server refused."""
        requests = []
        for tag in tags:
            params = ua.MonitoringParameters()
            params.ClientHandle = self._handle(tag.name)
            params.SamplingInterval = (tag.sampling_interval_ms if tag.sampling_interval_ms >= 0
                                       else self.publishing_interval_s * 1000)
            params.QueueSize = tag.queue_size
            params.DiscardOldest = True
            if tag.deadband_type != "none":
                flt = ua.DataChangeFilter()
                flt.Trigger = ua.DataChangeTrigger.StatusValue
                flt.DeadbandType = DEADBANDS[tag.deadband_type]
                flt.DeadbandValue = tag.deadband_value
                params.Filter = flt
            request = ua.MonitoredItemCreateRequest()
            request.ItemToMonitor = ua.ReadValueId()
            request.ItemToMonitor.NodeId = ids[tag.name]
            request.ItemToMonitor.AttributeId = ua.AttributeIds.Value
            request.MonitoringMode = ua.MonitoringMode.Reporting
            request.RequestedParameters = params
            requests.append(request)
        results = await sub.create_monitored_items(requests)
        return {tag.name: status_name(result) for tag, result in zip(tags, results, strict=True)
                if isinstance(result, ua.StatusCode)}

    def _handle(self, name: str) -> int:
        return 1000 + [t.name for t in self.tags].index(name)

    @staticmethod
    def _poll_ids(tags: Sequence[OpcuaTag],
                  ids: dict[str, ua.NodeId]) -> tuple[list[str], list[ua.NodeId]]:
        return [t.name for t in tags], [ids[t.name] for t in tags]

    async def _deliver_loop(self, client: Client, sub: Subscription | None,
                            sub_tags: Sequence[OpcuaTag], poll_tags: Sequence[OpcuaTag],
                            ids: dict[str, ua.NodeId], missing: dict[str, str]) -> None:
        """Data changes, polls, heartbeats and retries of missing tags, until LinkDown."""
        by_handle = {self._handle(t.name): t.name for t in self.tags}
        now = time.monotonic()
        grid = self._grid
        grid.restart(now)
        grid.slot = 1  # the session's first read was the poll of slot 0
        next_poll = grid.due if poll_tags else float("inf")
        last_emit = now
        retry = Backoff(initial=1.0, maximum=30.0)
        next_retry = now + retry.next_delay() if missing else float("inf")
        _, poll_ids = self._poll_ids(poll_tags, ids)
        while True:
            if self._lost is not None:
                raise LinkDown(self._lost)
            now = time.monotonic()
            wait = max(0.0, min(next_poll - now, last_emit + self.heartbeat_s - now,
                                next_retry - now, _WAIT_STEP_S))
            if sub is not None:
                try:
                    event = await _next_event(sub, wait)
                except StopAsyncIteration:
                    raise LinkDown("subscription closed") from None
                if event is not None:
                    self._on_batch(self._drain(sub, event), by_handle)
                    last_emit = time.monotonic()
            else:
                await asyncio.sleep(wait)
            now = time.monotonic()
            if now >= next_poll:
                try:
                    results = await read_values(client, poll_ids)
                except (asyncio.CancelledError, LinkDown):
                    raise
                except Exception as exc:
                    raise LinkDown(self._lost or describe(exc)) from exc
                self._apply_reads(poll_tags, results)
                self._deliver(scheduled=next_poll, started=now)
                last_emit = now = time.monotonic()
                grid.advance(now)  # late: skip missed slots (counted) instead of bursting
                next_poll = grid.due
            if now >= next_retry and sub is not None:
                next_retry = await self._retry_missing(client, sub, missing, retry)
            if now - last_emit >= self.heartbeat_s:
                self._deliver()
                last_emit = now

    async def _retry_missing(self, client: Client, sub: Subscription, missing: dict[str, str],
                             retry: Backoff) -> float:
        """Try again to monitor tags whose nodes did not exist; returns the next retry time."""
        tags = [t for t in self.tags if t.name in missing and t.mode != "poll"]
        try:
            ids, still = await resolve(client, {t.name: self.refs[t.name] for t in tags})
            todo = [t for t in tags if t.name in ids]
            if todo:
                still.update(await self._monitor(sub, todo, ids))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            raise LinkDown(self._lost or describe(exc)) from exc
        for tag in tags:
            if tag.name not in still:
                log.info("%s: tag %s now exists", self.source, tag.name)
                missing.pop(tag.name, None)
                self._errors.pop(tag.name, None)
        if not missing:
            return float("inf")
        return time.monotonic() + retry.next_delay()

    @staticmethod
    def _drain(sub: Subscription, first: Any) -> list[Any]:
        """The first event and every event already queued with it.

        asyncua puts all notifications of one publish response into the subscription's
        queue synchronously, so whatever is queued now belongs to this publish (or an
        earlier one we were late for). asyncua offers no public non-blocking get; this is
        the one private access of this module (pinned asyncua, covered by tests).
        """
        events = [first]
        queue = sub._event_queue
        while queue is not None and not queue.empty():
            item = queue.get_nowait()
            if item is None:
                queue.put_nowait(None)  # keep the end marker for next_event
                break
            events.append(item)
        return events

    def _on_batch(self, events: list[Any], by_handle: dict[int, str]) -> None:
        """Apply one publish's data changes to the cache and emit snapshot(s)."""
        changed: set[str] = set()
        vanished: list[str] = []
        for event in events:
            if isinstance(event, StatusChangeEvent):
                raise LinkDown(f"subscription status {status_name(event.notification.Status)}")
            if not isinstance(event, DataChangeEvent):
                continue
            name = by_handle.get(event.data.monitored_item.ClientHandle)
            if name is None:
                continue
            self.stats["notifications"] += 1
            if name in changed:  # a queued second value of the same tag: flush first
                self._deliver()
                changed.clear()
            changed.add(name)
            value, error = _value_of(event.data.monitored_item.Value)
            self._store(name, value, error)
            if error in _GONE_NAMES:
                vanished.append(name)
        self._deliver()
        if vanished:
            raise NodesVanished(f"node(s) vanished: {', '.join(vanished)}")

    def _apply_reads(self, tags: Sequence[OpcuaTag], results: Sequence[ua.DataValue],
                     first_session_read: bool = False) -> None:
        vanished = []
        for tag, dv in zip(tags, results, strict=True):
            value, error = _value_of(dv)
            had_value = tag.name in self._values
            self._store(tag.name, value, error)
            if error in _GONE_NAMES and had_value:
                vanished.append(tag.name)
        if vanished and not first_session_read:
            self._deliver()
            raise NodesVanished(f"node(s) vanished: {', '.join(vanished)}")

    def _store(self, name: str, value: Any, error: str | None) -> None:
        if error is None:
            value, problem = json_safe(value)  # NaN/inf, a String that is not UTF-8
            self._values[name] = value
            if problem is None:
                self._errors.pop(name, None)
            else:
                self.stats["errors"] += 1
                self._errors[name] = problem
        else:
            self.stats["errors"] += 1
            self._values.pop(name, None)
            self._errors[name] = error

    def _deliver(self, scheduled: float | None = None, started: float | None = None) -> None:
        """One snapshot. ``scheduled``/``started``: the poll slot and the moment its read
        began (polled tags: jitter and late slots as for Modbus); now for data changes."""
        self.stats["polls"] += 1
        now = time.monotonic()
        self._emit(PollResult(self.source, time.time(), dict(self._values), dict(self._errors),
                              now if scheduled is None else scheduled,
                              now if started is None else started, self.stats["late_polls"]))

    def _emit(self, event: PollResult) -> None:
        """Call the sink; its exceptions are collector bugs and propagate."""
        self.link.emit(event)

    # -- writes ------------------------------------------------------------------------

    async def write(self, tag: str, value: Any) -> None:
        """Write ``value`` to the node of ``tag`` in the current session, read it back
        and compare (``write_node``). Runs beside the subscription and the polls (asyncua
        multiplexes requests on the session), so it never holds them up. Raises
        ``LinkDown`` when there is no session and ``WriteFailed`` otherwise."""
        client = self._client
        if client is None:
            raise LinkDown(f"{self.source}: no session")
        if tag not in self.refs:
            raise WriteFailed(f"{self.source}: no tag {tag!r}")
        self.stats["writes"] += 1
        try:
            ids, errors = await resolve(client, {tag: self.refs[tag]})
            if errors:
                raise WriteFailed(f"{self.source}: tag {tag}: {errors[tag]}")
            await write_node(client, ids[tag], value, self.timeout_s)
        except WriteFailed:
            self.stats["write_errors"] += 1
            raise
        except (OSError, TimeoutError, ua.UaError) as exc:
            self.stats["write_errors"] += 1
            raise WriteFailed(f"{self.source}: tag {tag}: {describe(exc)}") from exc


# --------------------------------------------------------------------------- one-shot


async def read_once(url: str, nodes: Sequence[str], security: OpcuaSecurity | None = None,
                    timeout_s: float = 4.0) -> dict[str, Any]:
    """Read nodes once (CLI probe): ``{node text: value | TagError}``.

    Raises ``ConnectionError`` when no session can be opened, ``ValueError`` for a node
    text that is not a node id.
    """
    refs = {text: parse_node(text, allow_index=True) for text in nodes}
    try:
        client = await connect(url, security or OpcuaSecurity(), timeout_s,
                               name="press-collector probe")
    except LinkDown as exc:
        raise ConnectionError(f"{url}: {exc}") from exc
    try:
        ids, errors = await resolve(client, refs)
        names = list(ids)
        results = await read_values(client, [ids[n] for n in names]) if names else []
    except (OSError, TimeoutError, ua.UaError) as exc:
        raise ConnectionError(f"{url}: {describe(exc)}") from exc
    finally:
        await close(client)
    out: dict[str, Any] = {}
    for text in nodes:
        if text in errors:
            out[text] = TagError(errors[text])
            continue
        value, error = _value_of(results[names.index(text)])
        out[text] = TagError(error) if error else value
    return out
