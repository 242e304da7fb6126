"""Moved to ``drivers.modbus.codec``; this name stays until the config models move into
``drivers/modbus/config.py`` (issue 13, after the config package lands)."""

from drivers.modbus.codec import *  # noqa: F403
