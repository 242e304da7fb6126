"""One OPC UA session, as every part of the package uses it: connect (security, trust,
identity) and close without hanging, namespace URIs resolved to indexes, one Read for
many nodes, node writes with read-back, values made JSON-able, reasons in words, and
the one-shot read of the probe. The poller (``driver.py``) keeps such a session alive.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from asyncua import Client, ua
from asyncua.common.subscription import Subscription
from asyncua.crypto import security_policies

from drivers.link import LinkDown, TagError, WriteFailed
from drivers.opcua.nodes import NodeRef, parse_node
from drivers.opcua.security import DEFAULT_APP_URI, OpcuaSecurity, TrustCheck, cert_app_uri

log = logging.getLogger("drivers.opcua.driver")  # one logger name for the package's session


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
            client.application_uri = cert_app_uri(security.certificate)
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
