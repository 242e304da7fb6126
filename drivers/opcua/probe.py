"""``press-collector probe opcua URL``: commissioning check of an OPC UA PLC.

A thin shell over drivers.opcua.driver (the same connect, security, trust check and node-id
resolution the daemon uses), so that what works here works in the daemon. Without
``--read``/``--browse`` it connects, prints the server's namespaces and browses the
Objects folder one level. Node ids print in the config spelling (``nsu=URI;s=Id``) so
they can be pasted into ``[[plc.tags]]``.

Exit codes: 0 ok, 1 a node could not be read or browsed, 2 no session (unreachable,
rejected, security mismatch).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from typing import Any

OBJECTS = "i=85"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("url", help="endpoint, e.g. opc.tcp://192.168.0.10:4840")
    parser.add_argument("--read", action="append", default=[], metavar="NODE",
                        help="read a node (nsu=URI;s=Id, ns=N;s=Id or i=N); repeatable")
    parser.add_argument("--browse", action="append", default=[], metavar="NODE",
                        help="list a node's children with node ids and values; repeatable")
    parser.add_argument("--security", default="None",
                        help="None, Basic256Sha256,Sign or Basic256Sha256,SignAndEncrypt")
    parser.add_argument("--cert", default="", help="client certificate (DER or PEM)")
    parser.add_argument("--key", default="", help="client private key (PEM)")
    parser.add_argument("--trust-dir", default="", help="directory with trusted server certs")
    parser.add_argument("--user", default="", help="user name (password from env "
                        "PRESS_COLLECTOR_OPCUA_PASSWORD)")
    parser.add_argument("--timeout", type=float, default=4.0, help="seconds per request")


def _security(args: argparse.Namespace) -> Any:
    from drivers.opcua.security import OpcuaSecurity
    from drivers.opcua.vocab import MODES, POLICIES

    policy, _, mode = args.security.partition(",")
    mode = mode or ("None" if policy == "None" else "SignAndEncrypt")
    if policy not in POLICIES or mode not in MODES or (policy == "None") != (mode == "None"):
        raise ValueError(f"--security {args.security!r} is not allowed (allowed: None, "
                         "Basic256Sha256,Sign, Basic256Sha256,SignAndEncrypt)")
    if policy != "None" and not (args.cert and args.key and args.trust_dir):
        raise ValueError("--security with a policy needs --cert, --key and --trust-dir "
                         "(create a client certificate with: press-collector opcua-cert)")
    return OpcuaSecurity(policy=policy, mode=mode, certificate=args.cert, private_key=args.key,
                         trust_dir=args.trust_dir, username=args.user,
                         password=os.environ.get("PRESS_COLLECTOR_OPCUA_PASSWORD"))


def config_spelling(node_id: Any, namespaces: list[str]) -> str:
    """A NodeId as a config would name it: namespace URI instead of index."""
    kind = {"Numeric": "i", "TwoByte": "i", "FourByte": "i", "String": "s", "Guid": "g",
            "ByteString": "b"}.get(node_id.NodeIdType.name, "s")
    ident = node_id.Identifier
    if isinstance(ident, bytes):
        ident = ident.decode(errors="replace")
    if node_id.NamespaceIndex == 0:
        return f"{kind}={ident}"
    uri = (namespaces[node_id.NamespaceIndex] if node_id.NamespaceIndex < len(namespaces)
           else f"ns{node_id.NamespaceIndex}")
    return f"nsu={uri};{kind}={ident}"


async def _browse(client: Any, text: str, out: list[str]) -> bool:
    from drivers.opcua.nodes import parse_node
    from drivers.opcua.session import describe, resolve

    namespaces = await client.get_namespace_array()
    ids, errors = await resolve(client, {text: parse_node(text, allow_index=True)})
    if errors:
        out.append(f"browse {text}: {errors[text]}")
        return False
    node = client.get_node(ids[text])
    try:
        children = await node.get_children()
    except Exception as exc:
        out.append(f"browse {text}: {describe(exc)}")
        return False
    out.append(f"browse {text}: {len(children)} children")
    for child in children:
        name = (await child.read_browse_name()).Name
        cls = (await child.read_node_class()).name
        line = f"  {name:<24} {cls:<10} {config_spelling(child.nodeid, namespaces)}"
        if cls == "Variable":
            try:
                line += f" = {await child.read_value()!r}"
            except Exception as exc:
                line += f" ({describe(exc)})"
        out.append(line)
    return True


async def probe(args: argparse.Namespace) -> tuple[int, list[str]]:
    """Run the probe; returns (exit code, output lines)."""
    from drivers.opcua.nodes import parse_node
    from drivers.opcua.session import LinkDown, TagError, close, connect, read_values, resolve

    out: list[str] = []
    try:
        security = _security(args)
        refs = {text: parse_node(text, allow_index=True) for text in args.read}
        for text in args.browse:
            parse_node(text, allow_index=True)
    except ValueError as exc:
        return 2, [f"error: {exc}"]
    try:
        client = await connect(args.url, security, args.timeout, name="press-collector probe")
    except LinkDown as exc:
        return 2, [f"error: {args.url}: {exc}"]
    ok = True
    try:
        namespaces = await client.get_namespace_array()
        out.append(f"connected to {args.url} (security {security.policy}/{security.mode}, "
                   f"{'user ' + security.username if security.username else 'anonymous'})")
        out.append("namespaces: " + ", ".join(f"{i}={u}" for i, u in enumerate(namespaces)))
        if refs:
            ids, errors = await resolve(client, refs)
            names = list(ids)
            results = await read_values(client, [ids[n] for n in names]) if names else []
            for text in args.read:
                if text in errors:
                    value: Any = TagError(errors[text])
                else:
                    dv = results[names.index(text)]
                    value = (TagError(dv.StatusCode.name) if not dv.StatusCode.is_good()
                             else dv.Value.Value)
                    if not isinstance(value, TagError):
                        value = f"{value!r} ({dv.Value.VariantType.name})"
                if isinstance(value, TagError):
                    ok = False
                    out.append(f"read {text}: error {value.reason}")
                else:
                    out.append(f"read {text}: {value}")
        for text in args.browse or ([] if refs else [OBJECTS]):
            ok = await _browse(client, text, out) and ok
    except (OSError, TimeoutError) as exc:
        return 2, [*out, f"error: {args.url}: {exc or type(exc).__name__}"]
    finally:
        await close(client)
    return (0 if ok else 1), out


async def press_probe(press_id: str, plc: Any, options: Any, out: Any,
                      password: str | None = None) -> int:
    """``probe press`` for an OPC UA press: one session with the press's endpoint and
    security, every tag read by one Read request per round (``--watch``: every
    ``--interval`` or the press's poll interval), printed with its role and node.
    Exit codes as every probe: 0, 1 a tag could not be read, 2 no session."""
    import logging
    import time

    from asyncua import ua

    from drivers.opcua.nodes import parse_node
    from drivers.opcua.plugin import security_of
    from drivers.opcua.session import (
        LinkDown,
        _value_of,
        close,
        connect,
        describe,
        read_values,
        resolve,
    )
    from drivers.probing import EXIT_DEVICE_ERRORS, EXIT_OK, ProbeError

    logging.getLogger("asyncua").setLevel(logging.CRITICAL)  # our lines say what failed
    press = press_id
    tags = list(plc.tags)
    timeout = plc.timeout_ms / 1000
    try:
        security = security_of(plc, password)
        refs = {t.name: parse_node(t.node) for t in tags}
    except (OSError, ValueError) as exc:
        raise ProbeError(f"{press}: {exc}") from None
    try:
        client = await connect(plc.endpoint, security, timeout, name="press-collector probe")
    except LinkDown as exc:
        raise ProbeError(f"cannot open a session with {plc.endpoint}: {exc}") from None

    def line(text: str) -> None:
        out.write(text + "\n")
        out.flush()

    line(f"press {press} (opcua {plc.endpoint}, security {security.policy}/"
         f"{security.mode}), {len(tags)} tags")
    rounds = errors = 0
    try:
        while True:
            try:
                ids, missing = await resolve(client, refs)
                names = [t.name for t in tags if t.name in ids]
                results = await read_values(client, [ids[n] for n in names]) if names else []
            except (OSError, TimeoutError, ua.UaError) as exc:
                raise ProbeError(f"{plc.endpoint}: {describe(exc)}") from None
            got = dict(zip(names, results, strict=True))
            rounds += 1
            if options.watch:
                line(f"-- {time.strftime('%H:%M:%S')} poll {rounds}")
            errors = 0
            for tag in tags:
                if tag.name in missing:
                    text, bad = f"ERROR {missing[tag.name]}", True
                else:
                    value, error = _value_of(got[tag.name])
                    text, bad = (f"ERROR {error}", True) if error else (repr(value), False)
                errors += bad
                line(f"  {tag.name:<16} {tag.role or '':<14} {tag.node:<40} {text}")
            if not options.watch or (options.count and rounds >= options.count):
                break
            await asyncio.sleep(options.interval_s or plc.poll_interval_ms / 1000)
    finally:
        await close(client)
    return EXIT_DEVICE_ERRORS if errors else EXIT_OK


def run(args: argparse.Namespace) -> int:
    import logging

    logging.getLogger("asyncua").setLevel(logging.CRITICAL)  # our lines say what failed
    code, lines = asyncio.run(probe(args))
    for line in lines:
        print(line, file=sys.stderr if line.startswith("error:") else sys.stdout)
    return code


def add_cert_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="directory for client-cert.der and "
                        "client-key.pem (kept if a valid pair exists)")
    parser.add_argument("--app-uri", default="", help="application URI (default "
                        "urn:press-collector:<hostname>)")
    parser.add_argument("--host", default="", help="host name in the certificate "
                        "(default: this machine's)")


def run_cert(args: argparse.Namespace) -> int:
    from pathlib import Path

    from drivers.opcua.security import generate_certificate

    cert, key, created = asyncio.run(generate_certificate(Path(args.out), args.app_uri,
                                                          args.host))
    print(f"{'created' if created else 'kept existing'} {cert} and {key}")
    print("give the certificate to the PLC's OPC UA server (its trusted clients list); "
          "set plc.certificate and plc.private_key to these paths")
    return 0
