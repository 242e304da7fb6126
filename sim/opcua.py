"""Simulated press PLC as a real asyncua OPC UA server (tests, demo, commissioning practice).

Same press behaviour as ``sim.press`` (the Modbus simulator): strokes at ``spm``
while running and not in setup mode, die id, part number, material lot, setup mode,
running, repair, tonnage (noisy per stroke) and die temperature, with the same setters;
``stop()``/``start()`` make the PLC vanish and come back on the same port.

Address space (namespace URI ``urn:press-sim``, string node ids)::

    Objects/Press                       s=Press
        Strokes      UInt32             s=Press.Strokes
        DieId        UInt16             s=Press.DieId
        Spm          UInt16             s=Press.Spm
        PartNumber   String             s=Press.PartNumber
        MaterialLot  String             s=Press.MaterialLot
        Tonnage      Double (kN)        s=Press.Tonnage
        DieTemp      Double (°C)        s=Press.DieTemp
        SetupMode    Boolean            s=Press.SetupMode
        Running      Boolean            s=Press.Running
        Repair       Boolean            s=Press.Repair

``download()`` imitates a PLC program download: the nodes are deleted (monitored items
get ``BadNodeIdUnknown``, reads fail) and re-added after a pause. ``namespace_shift``
registers extra namespaces before ours at the next start, so the namespace *index*
changes while the URI stays (what real PLCs do after a firmware or project change).

With ``secure=True`` the server has a self-signed certificate (generated in a temp dir,
``certificate`` is its path) and offers only Basic256Sha256 Sign and SignAndEncrypt;
with ``username`` it accepts only that user and password (no anonymous sessions).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import random
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from asyncua import Server, ua
from asyncua.common.callback import CallbackType
from asyncua.crypto.permission_rules import User, UserRole

from sim.ports import free_port
from sim.strokes import press_arguments, stroke_loop

log = logging.getLogger(__name__)

_ZERO = {ua.VariantType.Boolean: False, ua.VariantType.UInt16: 0, ua.VariantType.Float: 0.0}

NAMESPACE = "urn:press-sim"
APP_URI = "urn:press-sim:server"
# tag name -> (string node id, browse name, OPC UA type)
NODES: dict[str, tuple[str, str, ua.VariantType]] = {
    "strokes": ("Press.Strokes", "Strokes", ua.VariantType.UInt32),
    "die_id": ("Press.DieId", "DieId", ua.VariantType.UInt16),
    "spm": ("Press.Spm", "Spm", ua.VariantType.UInt16),
    "part_number": ("Press.PartNumber", "PartNumber", ua.VariantType.String),
    "material_lot": ("Press.MaterialLot", "MaterialLot", ua.VariantType.String),
    "tonnage": ("Press.Tonnage", "Tonnage", ua.VariantType.Double),
    "die_temp": ("Press.DieTemp", "DieTemp", ua.VariantType.Double),
    "setup_mode": ("Press.SetupMode", "SetupMode", ua.VariantType.Boolean),
    "running": ("Press.Running", "Running", ua.VariantType.Boolean),
    "repair": ("Press.Repair", "Repair", ua.VariantType.Boolean),
}
# Outputs a client may write (issue 14's signals back to the press): name -> node.
OUTPUTS: dict[str, tuple[str, str, ua.VariantType]] = {
    "release_permissive": ("Press.Out.ReleasePermissive", "ReleasePermissive",
                           ua.VariantType.Boolean),
    "hold_lamp": ("Press.Out.HoldLamp", "HoldLamp", ua.VariantType.Boolean),
    "first_article_request": ("Press.Out.FirstArticleRequest", "FirstArticleRequest",
                              ua.VariantType.Boolean),
    "patrol_due": ("Press.Out.PatrolDue", "PatrolDue", ua.VariantType.Boolean),
    "heartbeat": ("Press.Out.Heartbeat", "Heartbeat", ua.VariantType.UInt16),
    "setpoint": ("Press.Out.Setpoint", "Setpoint", ua.VariantType.Float),
}
ROLES = {"strokes": "stroke_count", "die_id": "die_id", "part_number": "part_number",
         "material_lot": "material_lot", "setup_mode": "setup_mode", "running": "running",
         "repair": "repair"}


def node_text(name: str) -> str:
    """The config spelling of a simulator tag's (or output's) node id."""
    return f"nsu={NAMESPACE};s={(NODES.get(name) or OUTPUTS[name])[0]}"


class _OneUser:
    """asyncua user manager: exactly one user name and password."""

    def __init__(self, username: str, password: str) -> None:
        self.username, self.password = username, password

    def get_user(self, iserver: Any, username: str | None = None, password: str | None = None,
                 certificate: Any = None) -> User | None:
        if username == self.username and password == self.password:
            return User(role=UserRole.User, name=username)
        return None


class OpcuaPressSimulator:
    """One press PLC at ``opc.tcp://host:port/press`` (port 0 picks a free port, kept).

    All methods run on the event loop that called ``start()``. Setters are synchronous
    like the Modbus simulator's; a writer task pushes changed values into the address
    space (one loop turn later), which triggers the server's data-change notifications.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        part: str = "",
        lot: str = "",
        die: int = 0,
        spm: int = 30,
        tonnage_kn: float = 800.0,
        temperature_c: float = 40.0,
        seed: int | None = None,
        secure: bool = False,
        username: str | None = None,
        password: str | None = None,
        cert_dir: Path | None = None,
    ) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.secure = secure
        self.username = username
        self.password = password
        self.namespace_shift = 0
        self._cert_dir = cert_dir
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self.certificate: Path | None = None
        self.private_key: Path | None = None
        self._rng = random.Random(seed)
        self._tonnage_kn = tonnage_kn
        self._state: dict[str, Any] = {
            "strokes": 0, "die_id": die, "spm": spm, "part_number": part, "material_lot": lot,
            "tonnage": 0.0, "die_temp": temperature_c, "setup_mode": False, "running": False,
            "repair": False,
        }
        self._outputs: dict[str, Any] = {}  # last values written into the outputs
        self._write_seen = asyncio.Event()  # set at every write kept in an output
        self._dirty: set[str] = set()
        self._nodes_present = False
        self._server: Server | None = None
        self._ns = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._wake = asyncio.Event()
        self._push = asyncio.Event()
        self._pushed = asyncio.Event()
        self.starts = 0  # how often the server was started (restarts + 1)

    # ------------------------------------------------------------------ lifecycle

    @property
    def url(self) -> str:
        return f"opc.tcp://{self.host}:{self.port}/press"

    @property
    def running_server(self) -> bool:
        return self._server is not None

    async def start(self) -> None:
        """Start (again) on the same port, with the nodes present."""
        if self._server is not None:
            return
        server = Server()
        await server.init()
        server.set_endpoint(self.url)
        server.set_server_name("press-sim")
        await server.set_application_uri(APP_URI)
        for i in range(self.namespace_shift):
            await server.register_namespace(f"urn:press-sim:shift:{i}")
        self._ns = await server.register_namespace(NAMESPACE)
        if self.secure:
            await self._load_certificate(server)
            server.set_security_policy([ua.SecurityPolicyType.Basic256Sha256_Sign,
                                        ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt])
        else:
            server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        if self.username is not None:
            server.iserver.user_manager = _OneUser(self.username, self.password or "")
            server.set_identity_tokens([ua.UserNameIdentityToken])
        self._server = server
        server.subscribe_server_callback(CallbackType.PostWrite, self._post_write)
        await self._add_nodes()
        await server.start()
        self.starts += 1
        self._tasks = [asyncio.create_task(self._stroke_loop(), name="sim-opcua-strokes"),
                       asyncio.create_task(self._writer(), name="sim-opcua-writer")]
        log.info("OPC UA press simulator at %s (ns=%d)", self.url, self._ns)

    async def stop(self) -> None:
        """Stop the server and drop every session: the PLC vanishes."""
        server, self._server = self._server, None
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if server is not None:
            await server.stop()
        self._nodes_present = False

    async def close(self) -> None:
        """Stop and remove the temporary certificate directory."""
        await self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    async def __aenter__(self) -> OpcuaPressSimulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _load_certificate(self, server: Server) -> None:
        from drivers.opcua import generate_certificate

        if self.certificate is None:
            if self._cert_dir is None:
                self._tmp = tempfile.TemporaryDirectory(prefix="press-sim-cert-")
                self._cert_dir = Path(self._tmp.name)
            self.certificate, self.private_key, _ = await generate_certificate(
                self._cert_dir, APP_URI, host=self.host, server=True)
        await server.load_certificate(str(self.certificate))
        await server.load_private_key(str(self.private_key))

    # ------------------------------------------------------------------ nodes

    def node_id(self, name: str) -> ua.NodeId:
        return ua.NodeId(NODES[name][0], self._ns)

    async def _add_nodes(self) -> None:
        assert self._server is not None
        objects = self._server.nodes.objects
        press = await objects.add_object(ua.NodeId("Press", self._ns), ua.QualifiedName("Press",
                                                                                         self._ns))
        for name, (ident, browse, vtype) in NODES.items():
            await press.add_variable(ua.NodeId(ident, self._ns), ua.QualifiedName(browse, self._ns),
                                     ua.Variant(self._state[name], vtype))
        for name, (ident, browse, vtype) in OUTPUTS.items():  # the only writable nodes
            node = await press.add_variable(ua.NodeId(ident, self._ns),
                                            ua.QualifiedName(browse, self._ns),
                                            ua.Variant(self._outputs.get(name, _ZERO[vtype]),
                                                       vtype))
            await node.set_writable()
        self._nodes_present = True

    async def output(self, name: str) -> Any:
        """The value a client last wrote to an output (the PLC's side, for tests)."""
        assert self._server is not None
        value = await self._server.get_node(ua.NodeId(OUTPUTS[name][0], self._ns)).read_value()
        self._outputs[name] = value
        return value

    async def _post_write(self, event: Any, _dispatcher: Any) -> None:
        """asyncua's PostWrite callback: remember what a client wrote into an output and
        wake ``wait_outputs`` (a write that was refused is not kept)."""
        by_ident = {ident: name for name, (ident, _b, _t) in OUTPUTS.items()}
        results = event.response_params or []
        for i, item in enumerate(event.request_params.NodesToWrite):
            name = by_ident.get(item.NodeId.Identifier)
            good = i < len(results) and results[i].is_good()
            if name is not None and good and item.Value.Value is not None:
                self._outputs[name] = item.Value.Value.Value
                self._write_seen.set()

    def written(self, name: str) -> Any:
        """The value a client last wrote into an output (None: none yet)."""
        return self._outputs.get(name)

    async def wait_outputs(self, predicate: Callable[[OpcuaPressSimulator], bool],
                           timeout: float = 10.0) -> None:
        """Until ``predicate(self)`` holds, checked after every write a client made into
        an output (``written``); TimeoutError after ``timeout``."""
        async with asyncio.timeout(timeout):
            while not predicate(self):
                self._write_seen.clear()
                await self._write_seen.wait()

    async def remove_nodes(self) -> None:
        """The first half of a program download: every press node disappears."""
        if self._server is None or not self._nodes_present:
            return
        # What a PLC sends its subscribers when a download removes a node. asyncua's server
        # means to do this itself on delete_nodes, but (2.1.0) calls the async data-change
        # callback without awaiting it, so nothing is sent; we send it before deleting.
        gone = ua.StatusCode(ua.StatusCodes.BadNodeIdUnknown)
        for name, (_ident, _browse, vtype) in NODES.items():
            with contextlib.suppress(Exception):
                await self._server.write_attribute_value(
                    self.node_id(name),
                    ua.DataValue(ua.Variant(self._state[name], vtype), StatusCode=gone))
        self._nodes_present = False
        press = self._server.get_node(ua.NodeId("Press", self._ns))
        await self._server.delete_nodes([press], recursive=True)

    async def add_nodes(self) -> None:
        """The second half of a program download: the nodes are back (current values)."""
        if self._server is None or self._nodes_present:
            return
        await self._add_nodes()

    async def download(self, pause_s: float = 0.5) -> None:
        """Remove the nodes, wait ``pause_s``, add them again."""
        await self.remove_nodes()
        await asyncio.sleep(pause_s)
        await self.add_nodes()

    # ------------------------------------------------------------------ press state

    def set_raw(self, name: str, value: Any) -> None:
        """Any value for a node, as a PLC may send it: NaN, infinities, a String with
        bytes that are not UTF-8 (give lone surrogates: asyncua writes them back as the
        original bytes)."""
        self._set(name, value)

    def _set(self, name: str, value: Any) -> None:
        self._state[name] = value
        self._dirty.add(name)
        self._push.set()

    async def flush(self) -> None:
        """Wait until every value set so far is in the address space (for tests)."""
        while self._dirty and self._server is not None and self._nodes_present:
            self._pushed.clear()
            self._push.set()
            await self._pushed.wait()

    async def _writer(self) -> None:
        while True:
            await self._push.wait()
            self._push.clear()
            if self._server is None or not self._nodes_present:
                self._pushed.set()
                continue
            dirty, self._dirty = self._dirty, set()
            for name in dirty:
                value = ua.DataValue(ua.Variant(self._state[name], NODES[name][2]))
                with contextlib.suppress(Exception):
                    await self._server.write_attribute_value(self.node_id(name), value)
            self._pushed.set()

    @property
    def strokes(self) -> int:
        return self._state["strokes"]

    @property
    def setup_mode(self) -> bool:
        return self._state["setup_mode"]

    @property
    def running(self) -> bool:
        return self._state["running"]

    def set_die(self, die: int) -> None:
        self._set("die_id", die)

    def set_part(self, part: str) -> None:
        self._set("part_number", part)

    def set_lot(self, lot: str) -> None:
        self._set("material_lot", lot)

    def set_spm(self, spm: int) -> None:
        self._set("spm", spm)
        self._wake.set()

    def set_temperature(self, celsius: float) -> None:
        self._set("die_temp", float(celsius))

    def set_tonnage(self, kn: float) -> None:
        """Nominal tonnage; each stroke reports it with about 1 % noise."""
        self._tonnage_kn = kn

    def set_setup_mode(self, on: bool) -> None:
        self._set("setup_mode", bool(on))
        self._wake.set()

    def set_running(self, on: bool) -> None:
        self._set("running", bool(on))
        if not on:
            self._set("tonnage", 0.0)
        self._wake.set()

    def set_repair(self, on: bool) -> None:
        self._set("repair", bool(on))

    def stroke(self, n: int = 1) -> None:
        """Count ``n`` strokes now and refresh the stroke-driven values."""
        self._set("strokes", (self._state["strokes"] + n) & 0xFFFFFFFF)
        noise = self._rng.gauss(0.0, 0.01 * self._tonnage_kn)
        self._set("tonnage", self._tonnage_kn + noise)

    # ------------------------------------------------------------------ stroke generator

    def _stroking(self) -> bool:
        return self.running and not self.setup_mode and self._state["spm"] > 0

    async def _stroke_loop(self) -> None:
        """Stroke at ``spm`` on the monotonic clock while running and not in setup."""
        await stroke_loop(self._wake, self._stroking, lambda: self._state["spm"], self.stroke)


# ---------------------------------------------------------------------- manual runs


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = press_arguments("python -m sim.opcua", __doc__, 4840)
    p.add_argument("--secure", action="store_true", help="Basic256Sha256 only, self-signed cert")
    p.add_argument("--cert-dir", type=Path, default=None,
                   help="where to keep the server certificate (default: a temp dir)")
    p.add_argument("--username", default=None)
    p.add_argument("--password", default=None)
    return p.parse_args(argv)


async def _serve(args: argparse.Namespace) -> None:
    sim = OpcuaPressSimulator(args.host, args.port, part=args.part, lot=args.lot, die=args.die,
                              spm=args.spm, secure=args.secure, username=args.username,
                              password=args.password, cert_dir=args.cert_dir)
    sim.set_running(not args.stopped)
    sim.set_setup_mode(args.setup)
    await sim.start()
    cert = f"; server certificate {sim.certificate}" if sim.certificate else ""
    print(f"OPC UA press simulator at {sim.url} (namespace {NAMESPACE}){cert}; Ctrl-C stops",
          flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await sim.close()


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO)
    logging.getLogger("asyncua").setLevel(logging.WARNING)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(_parse_args(argv)))


if __name__ == "__main__":
    main()
