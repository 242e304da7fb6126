"""Moved to ``drivers.opcua.nodes``; this name stays until the config models move into
``drivers/opcua/config.py`` (issue 13, after the config package lands)."""

from drivers.opcua.nodes import *  # noqa: F403
from drivers.opcua.nodes import NodeRef, parse_node  # noqa: F401
