"""OPC UA node ids as configured: namespace URI + identifier, parsed without asyncua.

A PLC's namespace *index* may change when its server restarts or a new program is
downloaded, its namespace *URI* does not; so configs name nodes as
``nsu=<uri>;s=<string id>`` (or ``i=``, ``g=``, ``b=``) and the driver resolves the
index at each (re)connect. Namespace 0 (the standard OPC UA nodes, e.g. ``i=2258`` for
the server's clock) needs no URI. A bare ``ns=<n>;`` is accepted only where a human types
a one-shot command (the probe), never in a config file.

This module is pure Python so that config validation and ``--help`` do not pay for
importing asyncua (about 260 ms and 27 MB).
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass

ID_KINDS = ("i", "s", "g", "b")
_NODE = re.compile(r"^(?:(?:nsu=(?P<uri>[^;]+)|ns=(?P<ns>\d+));)?(?P<kind>[isgb])=(?P<ident>.+)$",
                   re.DOTALL)
EXAMPLE = "nsu=urn:press-sim;s=Press.Strokes"


@dataclass(frozen=True, slots=True)
class NodeRef:
    """A node id before namespace resolution.

    Exactly one of ``uri`` (a namespace URI) and ``index`` (a namespace index) is used;
    ``uri=""`` with ``index=0`` is namespace 0.
    """

    kind: str  # i, s, g, b
    identifier: str | int
    uri: str = ""
    index: int = 0

    def __str__(self) -> str:
        prefix = f"nsu={self.uri};" if self.uri else (f"ns={self.index};" if self.index else "")
        return f"{prefix}{self.kind}={self.identifier}"


def parse_node(text: str, *, allow_index: bool = False) -> NodeRef:
    """Parse ``nsu=URI;s=Name`` / ``i=2258`` (and ``ns=N;...`` with ``allow_index``).

    Raises ``ValueError`` with a message fit for a config error or a CLI error line.
    """
    match = _NODE.match(text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not a node id (write e.g. '{EXAMPLE}' or 'i=2258')")
    uri, ns, kind, ident = match["uri"], match["ns"], match["kind"], match["ident"]
    index = int(ns) if ns is not None else 0
    if index and not allow_index:
        raise ValueError(f"{text!r} names the namespace by index {index}; write its URI "
                         f"instead (e.g. '{EXAMPLE}'): the index can change when the server "
                         "restarts")
    identifier: str | int = ident
    if kind == "i":
        if not (ident.isascii() and ident.isdigit()) or int(ident) > 0xFFFFFFFF:
            raise ValueError(f"{text!r}: i= needs a number 0..4294967295")
        identifier = int(ident)
    elif kind == "g":
        try:
            identifier = str(uuid.UUID(ident))
        except ValueError:
            raise ValueError(f"{text!r}: g= needs a GUID "
                             "(e.g. 'g=09087e75-8e5e-499b-954f-f2a9603db28a')") from None
    return NodeRef(kind, identifier, uri or "", index)
