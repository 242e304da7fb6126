"""Which names may go into the MQTT topics and client id the collector builds.

MQTT itself allows nearly any UTF-8 in a topic name, but the collector's own topics are
built by joining ``site.topic_root``, press ids and ``site.host_id``, and a bad character
there does not fail at once: ``+`` or ``#`` makes paho refuse every publish, a NUL or an
invalid UTF-8 sequence makes the broker drop the connection at the first publish (so the
daemon reconnects forever with nothing delivered), a leading ``$`` lands in the broker's
reserved ``$SYS`` space, and a topic over 65,535 bytes cannot be encoded at all. So the
loader accepts only a safe set, and ``press-collector check`` says so before ``run`` ever
starts (docs/security.md, "Names in topics"):

- a topic level (each level of ``topic_root``, ``host_id``): ASCII letters, digits,
  ``_``, ``-`` and ``.``; ``host_id`` at most 64 characters (Linux's HOST_NAME_MAX);
- a press id: lowercase letters, digits, ``_`` and ``-``, starting with a letter or a
  digit (``_collector`` is the collector's own level), at most 64 characters (config/base.py's
  ``ID_PATTERN``);
- ``topic_root``: levels joined by ``/``, at most ``TOPIC_ROOT_MAX_BYTES`` so that the
  longest topic built below it stays within MQTT's 65,535-byte limit
  (:func:`longest_topic_bytes` is what the tests check that against).
"""

from __future__ import annotations

import re

MQTT_MAX_BYTES = 65535  # MQTT 3.1.1 / 5: a UTF-8 string has a 16-bit length prefix
ID_MAX = 64  # press ids and host_id: one topic level each
# Room left for "/{press id}/" + the longest suffix, or "/_collector/{host_id}/" + suffix,
# including the command topics: 65,535 - 65,000 = 535 bytes, more than twice what any
# topic below the root takes today (see longest_topic_bytes).
TOPIC_ROOT_MAX_BYTES = 65000
SAFE_LEVEL = re.compile(r"[A-Za-z0-9_.-]+")
SAFE_LEVEL_TEXT = "letters A-Z a-z, digits, '_', '-' and '.'"
# The longest suffixes the collector puts below {root}/{press}/ and {root}/_collector/{host}/
# (collector/messages.py); commands get a generous allowance for command names and roles.
PRESS_SUFFIX_MAX = len("events/unassigned_reading")
COMMAND_SUFFIX_MAX = 128
COLLECTOR_SUFFIX_MAX = len("status")


def longest_topic_bytes(root: str, press_id_len: int = ID_MAX, host_len: int = ID_MAX) -> int:
    """Bytes of the longest topic the collector can build below ``root``."""
    below_press = 1 + press_id_len + 1 + max(PRESS_SUFFIX_MAX, COMMAND_SUFFIX_MAX)
    below_host = 1 + len("_collector") + 1 + host_len + 1 + COLLECTOR_SUFFIX_MAX
    return len(root.encode("utf-8")) + max(below_press, below_host)


def _bad_chars(text: str) -> str:
    """The offending characters, shown escaped (a NUL or a tab is visible in the message)."""
    bad = sorted({c for c in text if not SAFE_LEVEL.fullmatch(c)})
    return ", ".join(repr(c) for c in bad[:5]) + (", ..." if len(bad) > 5 else "")


def topic_root_problem(value: str, show: str) -> str | None:
    """Why ``value`` cannot be the topic root (``show``: the value as messages print it)."""
    if not value:
        return "must not be empty (e.g. 'plant/press-shop')"
    for wildcard in ("+", "#"):
        if wildcard in value:
            return f"{show} contains the MQTT wildcard '{wildcard}' (not allowed in a topic root)"
    if value.startswith("/") or value.endswith("/"):
        return f"{show} starts or ends with '/' (write e.g. 'plant/press-shop')"
    if "//" in value:
        return f"{show} has an empty topic level ('//')"
    if value.startswith("$"):
        return (f"{show} starts with '$' (topics starting with '$' are reserved for the "
                "broker, e.g. $SYS)")
    levels = value.replace("/", "")
    if not SAFE_LEVEL.fullmatch(levels):
        return (f"{show} has the character(s) {_bad_chars(levels)} (allowed in each level: "
                f"{SAFE_LEVEL_TEXT}; levels separated by '/')")
    size = len(value.encode("utf-8"))
    if size > TOPIC_ROOT_MAX_BYTES:
        return (f"is {size} bytes long (allowed: at most {TOPIC_ROOT_MAX_BYTES}, so that every "
                f"topic below it stays within MQTT's {MQTT_MAX_BYTES}-byte limit)")
    return None


def topic_level_problem(value: str, show: str) -> str | None:
    """Why ``value`` cannot be one topic level of ours (``host_id``), or None."""
    if not SAFE_LEVEL.fullmatch(value) or len(value) > ID_MAX:
        why = (f"has the character(s) {_bad_chars(value)}" if value and not
               SAFE_LEVEL.fullmatch(value) else f"is {len(value)} characters long")
        return (f"{show} {why} (allowed: 1 to {ID_MAX} {SAFE_LEVEL_TEXT}; it is one MQTT "
                "topic level)")
    return None


def client_id_problem(value: str, show: str) -> str | None:
    """Why ``value`` cannot be an MQTT client id (no control characters, <= 65,535 bytes)."""
    if any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in value):
        return f"{show} has a control character (allowed: printable characters)"
    if len(value.encode("utf-8")) > MQTT_MAX_BYTES:
        return f"is longer than MQTT's {MQTT_MAX_BYTES}-byte limit"
    return None
